"""``concordose sites …``: the site lifecycle — add a site, add a known calibration, show them.

``concordose sites --sites FILE [--publish]`` (no subcommand) still shows the sites as before
issue 16; it is deprecated in favour of ``concordose sites show`` and says so.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from concordose.cli.console import console, error_console, run_or_exit, styled
from concordose.cli.output import echo_json
from concordose.errors import ConcordoseError

__all__ = ["sites_app"]

sites_app = typer.Typer(
    help="The consortium's sites: add a site, add a calibration, show them.\n\n"
    "Example: concordose sites show --sites sites.yaml\n\n"
    "Deprecated (since 0.1.0, issue 16; will be removed): `concordose sites --sites FILE "
    "[--publish] [--output …]` without a subcommand, which is `concordose sites show`.",
    invoke_without_command=True,
)

SitesFileOption = Annotated[Path, typer.Option("--sites", help="Site registry YAML (sites.yaml).")]
PublishOption = Annotated[
    bool, typer.Option("--publish", help="Also publish every record as table site_calibrations.")
]
OutputOption = Annotated[
    str | None,
    typer.Option(help="Folder or s3://bucket/prefix to publish to (default from settings)."),
]


@sites_app.callback()
def _sites(
    ctx: typer.Context,
    sites_file: Annotated[
        Path | None,
        typer.Option(
            "--sites", help="Deprecated form: `concordose sites --sites FILE` = `sites show`."
        ),
    ] = None,
    publish: PublishOption = False,
    output: OutputOption = None,
) -> None:
    """The consortium's sites: add a site, add a calibration, show them."""
    if ctx.invoked_subcommand is not None:
        return
    if sites_file is None:
        console.print(ctx.get_help())
        raise typer.Exit(0)
    error_console.print(
        styled(
            "deprecated:",
            "yellow",
            " `concordose sites --sites FILE` is now `concordose sites show --sites FILE`; "
            "the old form will be removed",
        ),
        highlight=False,
    )
    _show(sites_file, publish=publish, output=output, as_json=False)


@sites_app.command("add")
def add(
    sites_file: SitesFileOption,
    site: Annotated[str, typer.Option(help="Site id (lower case, digits, - and _).")],
    ae_title: Annotated[
        list[str],
        typer.Option(help="A calling AE title the site's PACS sends with (repeat for more)."),
    ],
    institution: Annotated[str | None, typer.Option(help="The institution's name.")] = None,
) -> None:
    """Add a site to sites.yaml (created if absent), or AE titles to a site already there.

    A running receiver picks the change up on SIGHUP (`kill -HUP <pid>`).

    Example: concordose sites add --sites sites.yaml --site padua --ae-title PADUA_NM
    --institution "Istituto Oncologico Veneto"
    """
    from concordose.calibration.sites_file import add_site

    edit = run_or_exit(lambda: add_site(sites_file, site, ae_title, institution))
    if edit.created:
        console.print(f"created {sites_file}", highlight=False)
    for line in edit.changes or (f"site {site} already registered as given; nothing changed",):
        console.print(line, highlight=False)


def _energy_window(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lower, upper = (float(part) for part in text.split(","))
    except ValueError:
        raise ConcordoseError(
            f"--energy-window-kev: expected LO,HI in keV (e.g. 187.5,229.2), found {text!r}"
        ) from None
    if not 0 < lower < upper:
        raise ConcordoseError(
            f"--energy-window-kev: expected 0 < LO < HI, found {lower:g},{upper:g}"
        )
    return lower, upper


@sites_app.command("add-calibration")
def add_calibration(  # noqa: PLR0917 (typer maps each option to a parameter)
    sites_file: SitesFileOption,
    site: Annotated[str, typer.Option(help="Site id (see `concordose sites show`).")],
    record_id: Annotated[str, typer.Option(help="Id of the new record (unique).")],
    camera_model: Annotated[
        str, typer.Option(help="Camera model as the studies' ManufacturerModelName says.")
    ],
    collimator: Annotated[str, typer.Option(help="Collimator (e.g. MEGP, MELP).")],
    cf: Annotated[
        float,
        typer.Option(
            "--cf", help="Calibration factor, cps/MBq (counts per second per MBq, reconstructed)."
        ),
    ],
    valid_from: Annotated[str, typer.Option(help="First day the record applies (YYYY-MM-DD).")],
    cf_uncertainty: Annotated[
        float | None,
        typer.Option(help="Relative standard uncertainty of the CF (e.g. 0.05 for 5 %)."),
    ] = None,
    energy_window_kev: Annotated[
        str | None,
        typer.Option(help="Photopeak window calibrated, LO,HI keV (e.g. 187.5,229.2)."),
    ] = None,
) -> None:
    """Add a calibration record with a known CF (no phantom scans yet) to a site.

    The CF must be plausible for Lu-177 at 208 keV (2–40 cps/MBq): a unit slip such as cps/GBq
    is refused with its likely cause. Derive a CF from phantom scans with `concordose calibrate`.

    Example: concordose sites add-calibration --sites sites.yaml --site padua --record-id
    padua-known-cf-2026 --camera-model "Symbia Intevo" --collimator MEGP --cf 9.1
    --cf-uncertainty 0.05 --valid-from 2026-01-01 --energy-window-kev 187.5,229.2
    """
    from concordose.calibration.plausibility import check_calibration_factor
    from concordose.calibration.records import CalibrationRecord
    from concordose.calibration.sites_file import add_calibration as add_record

    def run() -> None:
        window = _energy_window(energy_window_kev)
        try:
            first_day = date.fromisoformat(valid_from)
        except ValueError:
            raise ConcordoseError(
                f"--valid-from: expected a date YYYY-MM-DD, found {valid_from!r}"
            ) from None
        if cf_uncertainty is not None and not 0 <= cf_uncertainty < 1:
            raise ConcordoseError(
                f"--cf-uncertainty: expected a fraction in [0, 1) (0.05 = 5 %), found "
                f"{cf_uncertainty:g}"
            )
        if not cf > 0:
            raise ConcordoseError(f"--cf: expected a calibration factor > 0, found {cf:g}")
        check_calibration_factor(cf, window, where="--cf")
        record = CalibrationRecord(
            record_id=record_id,
            camera_model=camera_model,
            collimator=collimator,
            energy_window_kev=window,
            calibration_factor_cps_per_mbq=cf,
            calibration_factor_relative_uncertainty=cf_uncertainty,
            valid_from=first_day,
        )
        for line in add_record(sites_file, site, record).changes:
            console.print(line, highlight=False)

    run_or_exit(run)


@sites_app.command("show")
def show(
    sites_file: SitesFileOption,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the registry as JSON (ledger records included).")
    ] = False,
    publish: PublishOption = False,
    output: OutputOption = None,
) -> None:
    """List the consortium's sites and their calibration records (ledger included).

    Example: concordose sites show --sites sites.yaml --json
    """
    _show(sites_file, publish=publish, output=output, as_json=as_json)


def _show(sites_file: Path, *, publish: bool, output: str | None, as_json: bool) -> None:
    from concordose.calibration.registry import SiteRegistry
    from concordose.results.calibration_table import build_site_calibrations
    from concordose.results.object_store import open_object_store
    from concordose.results.provenance import Provenance, new_run_id
    from concordose.results.publish import publish_tables
    from concordose.settings import Settings

    registry = run_or_exit(lambda: SiteRegistry.load(sites_file))
    if as_json:
        echo_json(registry.model_dump(mode="json"))
    else:
        table = Table(title=f"Sites in {sites_file}")
        columns = ("site", "AE titles", "record", "camera", "collimator", "CF cps/MBq", "valid")
        for column in columns:
            table.add_column(column)
        for site in registry.sites:
            if not site.calibrations:
                table.add_row(
                    site.site_id,
                    ", ".join(site.ae_titles),
                    Text("no calibration", style="red"),
                    "",
                    "",
                    "",
                    "",
                )
            for record in site.calibrations:
                table.add_row(
                    site.site_id,
                    ", ".join(site.ae_titles),
                    record.record_id,
                    record.camera_model or "any",
                    record.collimator or "any",
                    f"{record.calibration_factor_cps_per_mbq:.3f}",
                    f"{record.valid_from} … {record.valid_to or 'open'}",
                )
        console.print(table)
    if not publish:
        return

    def publish_registry() -> str:
        settings = Settings()
        store = open_object_store(output or settings.output_uri, settings)
        provenance = Provenance(run_id=new_run_id())
        records = [
            (site.site_id, record) for site in registry.sites for record in site.calibrations
        ]
        table = build_site_calibrations(records, provenance)
        run = publish_tables(store, {"site_calibrations": [table]}, provenance)
        return f"published {table.num_rows} calibration record(s): {run.manifest_path}"

    message = run_or_exit(publish_registry)
    (error_console if as_json else console).print(message, soft_wrap=True)
