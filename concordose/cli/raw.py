"""``concordose raw …``: the raw payload store of issue 19 (``CONCORDOSE_RAW_STORE_URI``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from concordose.cli.console import console, run_or_exit
from concordose.cli.output import echo_json
from concordose.errors import ConfigurationError

__all__ = ["raw_app"]

raw_app = typer.Typer(
    help="The raw payload store workers read cycles from.\n\n"
    "Example: concordose raw prune --retention-days 30",
    no_args_is_help=True,
)


@raw_app.command("prune")
def prune_command(
    store: Annotated[
        str | None,
        typer.Option(help="The raw store (default: CONCORDOSE_RAW_STORE_URI)."),
    ] = None,
    retention_days: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Days a processed cycle's payloads are kept (default: "
            "CONCORDOSE_RAW_RETENTION_DAYS; unset keeps everything).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would go; delete nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
) -> None:
    """Delete the raw payloads of cycles processed at least the retention ago (manifests, then
    instances no kept manifest names). Exit 0 done (or nothing to do), 2 bad input.

    Example: concordose raw prune --store s3://concordose-raw/site-a --retention-days 30
    """
    from datetime import UTC, datetime

    from concordose.payloads import RawStore, prune
    from concordose.settings import Settings

    settings = Settings()
    uri = run_or_exit(lambda: _store_uri(store or settings.raw_store_uri))
    days = retention_days if retention_days is not None else settings.raw_retention_days
    if days is None:
        console.print("raw payloads kept: no retention set (CONCORDOSE_RAW_RETENTION_DAYS)")
        return
    report = run_or_exit(
        lambda: prune(RawStore.open(uri, settings), days, datetime.now(UTC), dry_run=dry_run)
    )
    if as_json:
        echo_json(
            {
                "store": uri,
                "retention_days": days,
                "dry_run": dry_run,
                "cycles": list(report.cycles),
                "manifests_deleted": report.manifests_deleted,
                "instances_deleted": report.instances_deleted,
                "instances_kept": report.instances_kept,
            }
        )
        return
    verb = "would delete" if dry_run else "deleted"
    console.print(
        f"{uri}: {len(report.cycles)} cycle(s) processed ≥ {days} day(s) ago; {verb} "
        f"{report.manifests_deleted} manifest(s) and {report.instances_deleted} instance(s); "
        f"{report.instances_kept} instance(s) kept for younger manifests",
        highlight=False,
        soft_wrap=True,
    )


@raw_app.command("upload")
def upload_command(
    spool: Annotated[Path, typer.Option(help="The receiver's spool folder.")],
    cycle_id: Annotated[str, typer.Option(help="The cycle (`concordose spool status`).")],
    store: Annotated[
        str | None,
        typer.Option(help="The raw store (default: CONCORDOSE_RAW_STORE_URI)."),
    ] = None,
) -> None:
    """Upload one cycle's instances and manifest as the receiver's hook does (only what the
    store lacks); prints the manifest URI for `concordose process-cycle --manifest`. Exit 0
    done, 2 bad input.

    Example: concordose raw upload --spool /var/lib/concordose/spool --cycle-id 3f2a…
    """
    from concordose.payloads import RawStore, upload_cycle
    from concordose.settings import Settings
    from concordose.spool.store import Spool

    settings = Settings()
    uri = run_or_exit(lambda: _store_uri(store or settings.raw_store_uri))

    def upload() -> str:
        opened = Spool.open_existing(spool)
        report = upload_cycle(opened, opened.cycle(cycle_id), RawStore.open(uri, settings))
        return (
            f"cycle {cycle_id}: {report.uploaded} instance(s) uploaded, {report.present} "
            f"already there; manifest {report.manifest_uri}"
        )

    console.print(run_or_exit(upload), highlight=False, soft_wrap=True)


@raw_app.command("sync-outcomes")
def sync_outcomes_command(
    spool: Annotated[Path, typer.Option(help="The receiver's spool folder.")],
    store: Annotated[
        str | None,
        typer.Option(help="The raw store (default: CONCORDOSE_RAW_STORE_URI)."),
    ] = None,
) -> None:
    """Record in the spool the outcomes workers recorded in the raw store (cycles they ran from
    their manifests), so `spool status` shows them and the sweep does not run them again. Run it
    beside the receiver before the nightly sweep. Exit 0 done, 2 bad input.

    Example: concordose raw sync-outcomes --spool /var/lib/concordose/spool
    """
    from concordose.payloads import RawStore, import_outcomes
    from concordose.settings import Settings
    from concordose.spool.store import Spool

    settings = Settings()
    uri = run_or_exit(lambda: _store_uri(store or settings.raw_store_uri))
    count = run_or_exit(
        lambda: import_outcomes(Spool.open_existing(spool), RawStore.open(uri, settings))
    )
    console.print(f"{spool}: {count} outcome(s) recorded from {uri}", highlight=False)


def _store_uri(uri: str | None) -> str:
    """The raw store to prune.

    Raises:
        ConfigurationError: none given or configured.
    """
    if not uri:
        raise ConfigurationError(
            "expected a raw store (--store or CONCORDOSE_RAW_STORE_URI), found none"
        )
    return uri
