"""``concordose protocol …``: the site protocol in force and the files it comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from concordose.cli.console import console, run_or_exit
from concordose.cli.output import echo_json

__all__ = ["protocol_app"]

protocol_app = typer.Typer(
    help="Site protocols: what a site's studies are checked against and which methods run.\n\n"
    "Example: concordose protocol show --site padua --sites sites.yaml",
    no_args_is_help=True,
)


@protocol_app.command("show")
def show(
    site: Annotated[str, typer.Option(help="Site id.")],
    sites_file: Annotated[
        Path | None,
        typer.Option(
            "--sites",
            help="Site registry YAML whose protocol_dir holds the site overrides (without it: "
            "CONCORDOSE_PROTOCOL_DIR or the packaged protocols).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON: site, source files, protocol.")
    ] = False,
) -> None:
    """Print the effective protocol of a site (YAML, or JSON with --json) and the files it was
    merged from, in order: the packaged default.yaml, then the override folder's default.yaml
    and <site>.yaml (CONCORDOSE_PROTOCOL_DIR, else protocol_dir in sites.yaml).

    Example: concordose protocol show --site padua --sites sites.yaml --json
    """
    from concordose.calibration.protocol import load_protocol, protocol_sources
    from concordose.calibration.registry import SiteRegistry

    def run() -> tuple[list[Path], dict[str, object]]:
        folder = None
        if sites_file is not None:
            registry = SiteRegistry.load(sites_file)
            registry.site(site)
            folder = registry.protocol_dir
        protocol = load_protocol(site, folder)
        return protocol_sources(site, folder), protocol.model_dump(mode="json")

    sources, protocol = run_or_exit(run)
    if as_json:
        document = {"site_id": site, "sources": [str(p) for p in sources], "protocol": protocol}
        echo_json(document)
        return
    lines = [f"# effective protocol of site {site}, merged from (later files win):"]
    lines += [f"#   {path}" for path in sources]
    console.print("\n".join(lines), highlight=False, soft_wrap=True)
    typer.echo(yaml.safe_dump(protocol, sort_keys=False, allow_unicode=True), nl=False)
