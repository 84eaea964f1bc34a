"""The one entry point: ``concordose …``.

Errors caused by input (:class:`~concordose.errors.ConcordoseError`) are printed as one clear
message and exit with status 2; anything else is a bug and keeps its traceback. Commands that
orchestrate import ``flows`` lazily, so the library itself never imports Prefect.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pyarrow as pa
import typer
from pydicom.uid import NuclearMedicineImageStorage
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from concordose import __version__
from concordose.calibration.findings import Severity
from concordose.cli.console import (
    EXIT_HELD,
    EXIT_INPUT_ERROR,
    console,
    error_console,
    progress_bar,
    run_or_exit,
    styled,
)
from concordose.cli.observability import (
    LogFormatOption,
    MetricsPortOption,
    apply_log_format,
    configure_cli_logging,
    metrics_app,
    start_receiver_metrics,
)
from concordose.cli.output import csv_text, echo_json
from concordose.cli.prediction import prediction_app  # issue 20 item 3
from concordose.cli.protocol import protocol_app
from concordose.cli.raw import raw_app
from concordose.cli.report import report as report_command
from concordose.cli.sites import sites_app
from concordose.cli.spool import spool_app
from concordose.errors import ConcordoseError
from concordose.kinetics.comparison import bland_altman
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.quant.pvc import psf_from_record
from concordose.settings import default_workdir, resolve_task_runner

__all__ = ["EXIT_INPUT_ERROR", "app", "main"]

if TYPE_CHECKING:
    from concordose.calibration.registry import SiteRegistry
    from concordose.flows.sweep import SweepResult
    from concordose.ingest.receiver import StorageReceiver
    from concordose.observability import MetricsServer
    from concordose.phantoms.imaging import ImagingMode

app = typer.Typer(
    name="concordose",
    help="Multicentre harmonisation platform for Lu-177 radioligand-therapy dosimetry.\n\n"
    "Example: concordose demo --preset test",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"concordose {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    log_format: LogFormatOption = None,  # issue 19
) -> None:
    """Multicentre harmonisation platform for Lu-177 radioligand-therapy dosimetry.

    Example: concordose demo --preset test
    """
    apply_log_format(log_format)


VOI_DOSE_METHOD_PREFERENCE: dict[str, tuple[str, ...]] = {
    "lesion": ("sphere",),
    "organ": ("organ_s_am", "organ_s_af"),
}
"""Which dose method a VOI's one-line summary shows, by VOI type, when the run computed it and it
applies (status ok): the sphere model for lesions, organ S-values for organs (the adult male
phantom first: the phantom is not chosen by the patient's sex yet); otherwise the first dose
method of the run that applies. Display only: every pair is published."""


SUMMARY_FALLBACK_KINETICS = "mono_exponential"
"""The kinetics method a VOI's one-line summary shows where the reference gave no TIA (a cycle
with fewer than six points): the full-data fit the flow ran alone before issue 14."""


def _reference_method(tables: dict[str, pa.Table]) -> str:
    """The reference kinetics method of the run: named by ``method_comparison``; without
    comparison rows, the consortium default if it was run, else the first method run."""
    comparison = tables.get("method_comparison")
    if comparison is not None and comparison.num_rows:
        return str(comparison.column("reference_kinetics_method")[0].as_py())
    run = [str(name) for name in tables["absorbed_dose"].column("kinetics_method").to_pylist()]
    return REFERENCE_METHOD_NAME if REFERENCE_METHOD_NAME in run or not run else run[0]


def _voi_dose_methods(rows: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """Per (cycle, VOI) of ``absorbed_dose`` rows, the dose method its one-line summaries show:
    the first of :data:`VOI_DOSE_METHOD_PREFERENCE` for its type that gave it a dose with some
    kinetics method, else the first dose method of the run that did, else the run's first."""
    run_order = list(dict.fromkeys(row["dose_method"] for row in rows))
    applies: dict[tuple[str, str], set[str]] = {}
    types: dict[tuple[str, str], str] = {}
    for row in rows:
        key = (row["cycle_key"], row["voi_label"])
        types[key] = row["voi_type"]
        if row["status"] == "ok":
            applies.setdefault(key, set()).add(row["dose_method"])
    chosen: dict[tuple[str, str], str] = {}
    for key, voi_type in types.items():
        ranked = [*VOI_DOSE_METHOD_PREFERENCE.get(voi_type, ()), *run_order]
        usable = [method for method in ranked if method in applies.get(key, set())]
        chosen[key] = usable[0] if usable else run_order[0]
    return chosen


def _summary_rows(tables: dict[str, pa.Table]) -> list[dict[str, Any]]:
    """One ``absorbed_dose`` row per cycle and VOI: the reference's TIA where it has one (else
    :data:`SUMMARY_FALLBACK_KINETICS`'s, else the first kinetics method of the run that has
    one), dosed by the VOI's dose method (:func:`_voi_dose_methods`)."""
    rows = tables["absorbed_dose"].to_pylist()
    reference = _reference_method(tables)
    dose_method = _voi_dose_methods(rows)
    candidates: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["cycle_key"], row["voi_label"])
        if row["dose_method"] == dose_method[key]:
            candidates.setdefault(key, []).append(row)
    return [
        min(
            options,
            key=lambda r: (
                r["tia_mbq_h"] is None,
                r["kinetics_method"] != reference,
                r["kinetics_method"] != SUMMARY_FALLBACK_KINETICS,
            ),
        )
        for options in candidates.values()
    ]


def _dose_table(tables: dict[str, pa.Table], truth: dict[str, dict[str, Any]] | None) -> Table:
    """Per VOI: the reference's TIA (another method's where the reference has none) and the
    dose by the VOI's dose method (sphere for lesions, organ S-values for organs)."""
    rows = _summary_rows(tables)
    kinetics = {row["kinetics_method"] for row in rows}
    single = next(iter(kinetics)) if len(kinetics) == 1 else None
    table = Table(title=f"Absorbed dose per VOI ({single or 'kinetics as stated'} TIA)")
    columns = ["VOI", "mass g", "TIA MBq·h", "dose Gy", "dose method"]
    if single is None:
        columns.append("kinetics")
    for column in columns:
        table.add_column(
            column, justify="right" if column in ("mass g", "TIA MBq·h", "dose Gy") else "left"
        )
    if truth is not None:
        table.add_column("true TIA MBq·h", justify="right")
    for row in sorted(rows, key=lambda r: (r["voi_type"], r["voi_label"])):
        tia = row["tia_mbq_h"]
        dose = row["mean_dose_gy"]
        cells = [
            row["voi_label"],
            f"{row['mass_g']:.1f}",
            f"{tia:,.0f}" if tia is not None else "—",
            f"{dose:.2f}" if dose is not None else f"— ({row['status']})",
            row["dose_method"],
        ]
        if single is None:
            cells.append(row["kinetics_method"])
        if truth is not None:
            voi_truth = truth.get(row["voi_label"])
            cells.append(f"{voi_truth['tia_mbq_h']:,.0f}" if voi_truth else "—")
        table.add_row(*cells)
    return table


def _header(name: str) -> str:
    """A name as a narrow column header (one line per underscore-separated word)."""
    return name.replace("_", "\n")


def _methods_side_by_side(tables: dict[str, pa.Table]) -> tuple[Table, Table, list[str]]:
    """Every kinetics method side by side for every VOI of one cycle: its TIA (MBq·h) and the
    VOI's mean dose (Gy, by the VOI's dose method, :func:`_voi_dose_methods`), one row per
    method (reference first) and one column per VOI so that it fits a terminal; and, per method,
    why it gave no TIA where it did not ("not applicable: …")."""
    reference = _reference_method(tables)
    kinetics_rows = tables["kinetics"].to_pylist()
    methods = list(dict.fromkeys(row["kinetics_method"] for row in kinetics_rows))
    methods.sort(key=lambda name: name != reference)  # reference first, then the run's order
    vois = [label for _, label in sorted({(r["voi_type"], r["voi_label"]) for r in kinetics_rows})]
    tia = {(row["voi_label"], row["kinetics_method"]): row["tia_mbq_h"] for row in kinetics_rows}
    dose_rows = tables["absorbed_dose"].to_pylist()
    dose_method = _voi_dose_methods(dose_rows)  # one per VOI, the same for every method
    chosen = {
        (row["voi_label"], row["kinetics_method"]): row
        for row in dose_rows
        if row["dose_method"] == dose_method[(row["cycle_key"], row["voi_label"])]
    }
    tia_table = Table(title=f"TIA by kinetics method, MBq·h (reference {reference})")
    dose_table = Table(title="Mean absorbed dose by kinetics method, Gy")
    for table in (tia_table, dose_table):
        table.add_column("method")
        for label in vois:
            table.add_column(_header(label), justify="right")
    for method in methods:
        tias = [tia.get((label, method)) for label in vois]
        tia_table.add_row(method, *("—" if v is None else f"{v:,.0f}" for v in tias))
        doses = [chosen.get((label, method)) for label in vois]
        dose_table.add_row(
            method,
            *(
                "—" if r is None or r["mean_dose_gy"] is None else f"{r['mean_dose_gy']:.2f}"
                for r in doses
            ),
        )
    by_dose_method: dict[str, list[str]] = {}
    for (_, label), method in dose_method.items():
        by_dose_method.setdefault(method, []).append(label)
    dose_table.caption = "dose method: " + "; ".join(
        f"{method} ({', '.join(labels)})" for method, labels in by_dose_method.items()
    )
    reasons: list[str] = []
    for method in methods:
        why = sorted(
            {r["status"] for r in kinetics_rows if r["kinetics_method"] == method} - {"ok"}
        )
        if why:
            reasons.append(f"{method}: {'; '.join(why)}")
    return tia_table, dose_table, reasons


def _agreement_table(tables: dict[str, pa.Table]) -> Table:
    """Bland–Altman of every other kinetics method's TIA against the reference's over the VOIs
    of the run (:func:`concordose.kinetics.comparison.bland_altman`: relative differences to the
    pair's mean, bias ± 1.96 SD)."""
    reference = _reference_method(tables)
    rows = tables["kinetics"].to_pylist()
    vois = sorted({(row["cycle_key"], row["voi_label"]) for row in rows})
    tia: dict[str, dict[tuple[str, str], float]] = {}
    for row in rows:
        value = row["tia_mbq_h"]
        tia.setdefault(row["kinetics_method"], {})[(row["cycle_key"], row["voi_label"])] = (
            float("nan") if value is None else float(value)
        )
    reference_tia = np.array([tia.get(reference, {}).get(voi, np.nan) for voi in vois])
    table = Table(title=f"Agreement with {reference}: TIA over the VOIs, Bland–Altman")
    for column in ("method", "VOIs", "bias %", "95 % limits of agreement, %"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, values in tia.items():
        if method == reference:
            continue
        agreement = bland_altman(
            np.array([values.get(voi, np.nan) for voi in vois]),
            reference_tia,
            method=method,
            reference=reference,
        )
        if agreement.n_pairs == 0:
            table.add_row(method, "0", "—", "no TIA pairs")
            continue
        limits = (
            "—"
            if not np.isfinite(agreement.sd_percent)
            else f"{agreement.loa_lower_percent:+.1f} to {agreement.loa_upper_percent:+.1f}"
        )
        table.add_row(method, str(agreement.n_pairs), f"{agreement.bias_percent:+.1f}", limits)
    return table


def _voxel_dose_table(voxel_dose: pa.Table) -> Table:
    """VOI mean dose ± SD by each voxel method (rows of table ``voxel_dose``)."""
    rows = voxel_dose.to_pylist()
    methods = sorted({(row["kinetics_method"], row["dose_method"]) for row in rows})
    kinetics = ", ".join(sorted({k for k, _ in methods}))
    table = Table(title=f"Voxel dose per VOI, mean ± SD Gy ({kinetics})")
    table.add_column("VOI")
    for _, method in methods:
        table.add_column(method, justify="right")
    cells: dict[str, dict[tuple[str, str], str]] = {}
    for row in rows:
        dose, sd = row["mean_dose_gy"], row["dose_sd_gy"]
        text = "—" if dose is None else f"{dose:.2f}" + ("" if sd is None else f" ± {sd:.2f}")
        cells.setdefault(row["voi_label"], {})[(row["kinetics_method"], row["dose_method"])] = text
    for label in sorted(cells):
        table.add_row(label, *(cells[label].get(method, "—") for method in methods))
    return table


KineticsMethodsOption = Annotated[
    str | None,
    typer.Option(
        "--kinetics-methods",
        help="Kinetics methods to run, comma-separated registry names or 'all' (default: the "
        "site protocol's kinetics_methods; its reference_method is always run).",
    ),
]
DoseMethodsOption = Annotated[
    str | None,
    typer.Option(
        "--dose-methods",
        help="VOI dose methods to run, comma-separated registry names or 'all' (default: the "
        "site protocol's dose_methods).",
    ),
]


def _method_overrides(
    kinetics_methods: str | None, dose_methods: str | None
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """The run's ``--kinetics-methods`` / ``--dose-methods``, checked against the registries
    before anything runs (an unknown name is a ConfigurationError listing the valid ones)."""
    from concordose.dose.registry import DOSE_METHODS
    from concordose.kinetics.registry import KINETICS_METHODS

    kinetics = (
        None
        if kinetics_methods is None
        else KINETICS_METHODS.select(kinetics_methods, where="--kinetics-methods")
    )
    dose = (
        None if dose_methods is None else DOSE_METHODS.select(dose_methods, where="--dose-methods")
    )
    return kinetics, dose


@app.command()
def demo(  # noqa: PLR0917 (typer maps each option to a parameter)
    workdir: Annotated[
        Path | None,
        typer.Option(help="Folder for the demo's input, spool and output (emptied first)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic patient.")] = 20261124,
    preset: Annotated[str, typer.Option(help="Phantom size preset: 'demo' or 'test'.")] = "demo",
    output: Annotated[
        str | None,
        typer.Option(help="Where to publish: folder or s3://bucket/prefix (default: in workdir)."),
    ] = None,
    kinetics_methods: KineticsMethodsOption = None,
    dose_methods: DoseMethodsOption = None,
) -> None:
    """Run the whole path on a synthetic patient: DICOM → C-STORE → Prefect flow → Parquet.

    The patient is imaged at 4, 24, 48, 96, 168 and 240 h (SPECTacular); every kinetics method
    is shown side by side for every VOI, with its agreement with the reference.

    Example: concordose demo --workdir /tmp/concordose-demo --preset test
    """
    kinetics, dose = run_or_exit(lambda: _method_overrides(kinetics_methods, dose_methods))
    from concordose.flows.demo import run_demo  # lazy: only orchestration imports Prefect

    folder = (workdir or default_workdir()).resolve()
    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        sending = progress.add_task("C-STORE", total=None, visible=False)

        def on_step(message: str) -> None:
            progress.console.print(styled("•", "cyan", f" {message}"))

        def on_sent(_path: Path) -> None:
            progress.update(sending, advance=1, visible=True)

        result = run_or_exit(
            lambda: run_demo(
                folder,
                seed=seed,
                preset=preset,
                output_uri=output,
                on_step=on_step,
                on_sent=on_sent,
                kinetics_methods=kinetics,
                dose_methods=dose,
            )
        )
    truth = json.loads(result.patient.ground_truth_path.read_text())
    truth_by_label = {voi["label"]: voi for voi in truth["vois"]}
    console.print(_dose_table(result.run.tables, truth_by_label))
    if "voxel_dose" in result.run.tables:
        console.print(_voxel_dose_table(result.run.tables["voxel_dose"]))
    tia_table, dose_table, reasons = _methods_side_by_side(result.run.tables)
    console.print(tia_table)
    console.print(dose_table)
    for reason in reasons:
        console.print(f"  no TIA from {reason}", highlight=False, soft_wrap=True)
    console.print(_agreement_table(result.run.tables))
    console.print(
        f"received {result.send_report.sent} instances into {result.spool_dir}", soft_wrap=True
    )
    published = result.run.published
    assert published is not None  # run_demo returns a processed (hence published) cycle
    console.print(f"published run {published.run_id} under {result.output_uri}:", soft_wrap=True)
    base = result.output_uri.rstrip("/") + "/"
    width = max((len(obj.table) for obj in published.objects), default=8)
    for obj in published.objects:
        console.print(
            f"  {obj.table:<{width}} {obj.rows:>4} rows  {obj.path.removeprefix(base)}",
            soft_wrap=True,
        )
    manifest = published.manifest_path.removeprefix(base)
    console.print(f"  {'manifest':<{width + 11}}{manifest}", soft_wrap=True)
    if result.run.report_path is not None:  # the cycle's report (issue 17)
        console.print(f"report: {result.run.report_path}", soft_wrap=True)
    console.print(f"ground truth: {result.patient.ground_truth_path}", soft_wrap=True)


SitesOption = Annotated[Path, typer.Option(help="Site registry YAML (sites.yaml).")]
OutputOption = Annotated[
    str | None,
    typer.Option(help="Folder or s3://bucket/prefix (default CONCORDOSE_OUTPUT_URI)."),
]
ConcurrencyOption = Annotated[
    int | None,
    typer.Option(help="Cycles processed at once (default CONCORDOSE_MAX_CONCURRENT_CYCLES)."),
]


# --- task runner (issue 19: Dask scale-out) ----------------------------------------------------
TaskRunnerOption = Annotated[
    str | None,
    typer.Option(
        help="Where cycles and their voxel chunks run: default (this process), dask (a local "
        "Dask cluster for the run) or dask:ADDRESS (a Dask scheduler, e.g. "
        "dask:tcp://dask-scheduler:8786); default CONCORDOSE_TASK_RUNNER."
    ),
]


def _task_runner(value: str | None) -> str:
    """The run's task runner, checked before any flow starts (exit 2 on a bad one)."""
    return run_or_exit(lambda: resolve_task_runner(value))


# --- end task runner ---------------------------------------------------------------------------


def _check_before_processing(source: Path, sites: Path, site: str | None) -> int:
    """Bad input before any orchestration starts, as one message (exit 2): a missing folder,
    an unreadable file, a bad site registry or site protocol (e.g. an unknown method name), a
    folder without --site, no pseudonymisation key, or nothing to process. Returns the number of
    cycles found (headers only); prints how many files were skipped as not DICOM."""
    from concordose.calibration.protocol import load_protocol
    from concordose.calibration.registry import SiteRegistry
    from concordose.dicom.pseudonym import subject_key
    from concordose.pipeline.catalogue import CycleSource
    from concordose.settings import Settings

    registry = SiteRegistry.load(sites)
    site_ids = {entry.site_id for entry in registry.sites}
    for site_id in sorted(site_ids if site is None else site_ids | {site}):
        # a bad protocol (e.g. an unknown method) before any cycle runs
        load_protocol(site_id, registry.protocol_dir)
    cycle_source = CycleSource(source)
    if cycle_source.spool is None and site is None:
        raise ConcordoseError(
            f"{source} is not a spool, so the site of its files is unknown; pass --site"
        )
    cycles = cycle_source.cycles()
    skipped = cycle_source.skipped_files
    if skipped:
        names = ", ".join(path.name for path in skipped[:3]) + (", …" if len(skipped) > 3 else "")
        console.print(
            styled("•", "cyan", f" skipped {len(skipped)} non-DICOM file(s) in {source} ({names})"),
            highlight=False,
        )
    if not cycles:
        raise ConcordoseError(
            f"no reconstructed SPECT with patient and injection data found in {source}: "
            "nothing to process"
        )
    subject_key("", Settings().pseudonym_key)
    return len(cycles)


def _report_sweep(result: SweepResult, source: Path) -> None:
    """Print a sweep's outcome. A failed cycle is exit status 2; else any held cycle is exit
    status 1 (:data:`EXIT_HELD`), with the reasons."""
    for run in result.held:
        console.print(
            styled("held", "yellow", f" cycle {run.cycle_id}: {run.reason}"), highlight=False
        )
    for cycle_id, reason in result.failed.items():
        console.print(styled("failed", "red", f" cycle {cycle_id}: {reason}"), highlight=False)
    if "absorbed_dose" in result.tables:
        console.print(_dose_table(result.tables, None))
    for run in result.runs:
        if run.published is not None:
            console.print(
                f"cycle {run.cycle_id} {run.outcome}: run {run.published.run_id}, "
                f"manifest {run.published.manifest_path}",
                soft_wrap=True,
            )
        if run.report_path is not None:  # the cycle's report (issue 17)
            console.print(f"  report: {run.report_path}", highlight=False, soft_wrap=True)
    console.print(
        f"{len(result.processed)} processed, {len(result.held)} held, {len(result.failed)} "
        f"failed of {result.considered} cycle(s) in {source}"
    )
    if result.dashboard is not None:  # the consortium dashboard (issue 17)
        if result.dashboard.path is not None:
            console.print(f"dashboard: {result.dashboard.path}", highlight=False, soft_wrap=True)
        elif result.dashboard.error is not None:
            error_console.print(
                styled("warning:", "yellow", f" dashboard not rebuilt: {result.dashboard.error}"),
                highlight=False,
                soft_wrap=True,
            )
    if result.receiving:
        console.print(
            f"{result.receiving} cycle(s) still receiving were left alone: wait for the quiet "
            "period or complete their time points with `concordose spool complete`"
        )
    if result.failed:
        raise ConcordoseError(f"{len(result.failed)} cycle(s) failed; see above")
    if result.held:
        reasons = "\n  ".join(f"{run.cycle_id}: {run.reason}" for run in result.held)
        which = "every cycle is" if not result.processed else f"{len(result.held)} cycle(s)"
        error_console.print(f"{which} held by the checks:\n  {reasons}", highlight=False)
        raise typer.Exit(EXIT_HELD)


@app.command()
def process(  # noqa: PLR0917 (typer maps each option to a parameter)
    spool: Annotated[Path, typer.Option(help="Spool folder (or any folder of DICOM files).")],
    sites: SitesOption,
    output: OutputOption = None,
    site: Annotated[
        str | None, typer.Option(help="Site of the files when the folder is not a spool.")
    ] = None,
    max_concurrent_cycles: ConcurrencyOption = None,
    kinetics_methods: KineticsMethodsOption = None,
    dose_methods: DoseMethodsOption = None,
    task_runner: TaskRunnerOption = None,
) -> None:
    """Process every complete cycle in a spool or folder (re-runs replace rows) and publish.

    Each cycle is one `process-cycle` run; a held cycle publishes its findings to qc_findings.
    Methods: each cycle's site protocol's, unless --kinetics-methods / --dose-methods. In a
    plain folder, files that are not DICOM (no DICM preamble, e.g. a JSON or text file) are
    skipped and counted. Exit 0 all processed, 1 a cycle held, 2 bad input or a cycle failed.

    Example: concordose process --spool incoming/ --sites sites.yaml --site milan
    """
    kinetics, dose = run_or_exit(lambda: _method_overrides(kinetics_methods, dose_methods))
    runner = _task_runner(task_runner)
    found = run_or_exit(lambda: _check_before_processing(spool, sites, site))
    console.print(styled("•", "cyan", f" {found} cycle(s) in {spool}"))
    from concordose.flows.sweep import process_spool

    result = process_spool(
        spool,
        sites,
        output_uri=output,
        site_id=site,
        kinetics_methods=kinetics,
        dose_methods=dose,
        max_concurrent_cycles=max_concurrent_cycles,
        task_runner=runner,
    )
    run_or_exit(lambda: _report_sweep(result, spool))


def _check_manifest(manifest_uri: str, sites: Path) -> None:
    """Bad input of a run from the raw store before any orchestration starts, as one message
    (exit 2): a bad site registry, a URI that is no manifest's, a missing bucket or manifest."""
    from concordose.calibration.registry import SiteRegistry
    from concordose.payloads import open_manifest
    from concordose.settings import Settings

    SiteRegistry.load(sites)
    open_manifest(manifest_uri, Settings())


@app.command("process-cycle")
def process_cycle_command(  # noqa: PLR0917 (typer maps each option to a parameter)
    spool: Annotated[Path, typer.Option(help="Spool folder (or any folder of DICOM files).")],
    sites: SitesOption,
    cycle_id: Annotated[str, typer.Option(help="The cycle (`concordose spool status`).")],
    content_revision: Annotated[
        str | None,
        typer.Option(help="Process only if the cycle's content is still this revision."),
    ] = None,
    output: OutputOption = None,
    site: Annotated[
        str | None, typer.Option(help="Site of the files when the folder is not a spool.")
    ] = None,
    kinetics_methods: KineticsMethodsOption = None,
    dose_methods: DoseMethodsOption = None,
    manifest: Annotated[
        str | None,
        typer.Option(
            help="The cycle's manifest in the raw store (CONCORDOSE_RAW_STORE_URI): read the "
            "instances from there; --spool need not exist here."
        ),
    ] = None,
    task_runner: TaskRunnerOption = None,
) -> None:
    """Process one treatment cycle (what the receiver's worker runs). Exit 0 processed or
    skipped, 1 held, 2 bad input. With --task-runner dask[:ADDRESS] its voxel chunks run on
    a Dask cluster.

    Example: concordose process-cycle --spool /var/lib/concordose/spool --sites sites.yaml \\
    --cycle-id 3f2a…
    """
    kinetics, dose = run_or_exit(lambda: _method_overrides(kinetics_methods, dose_methods))
    runner = _task_runner(task_runner)
    if manifest is None:
        run_or_exit(lambda: _check_before_processing(spool, sites, site))
    else:
        run_or_exit(lambda: _check_manifest(manifest, sites))
    from concordose.flows.process_cycle import OUTCOME_HELD, process_cycle

    result = process_cycle(
        spool,
        sites,
        cycle_id,
        content_revision=content_revision,
        output_uri=output,
        site_id=site,
        kinetics_methods=kinetics,
        dose_methods=dose,
        manifest_uri=manifest,
        task_runner=runner,
    )
    console.print(
        f"cycle {result.cycle_id} {result.outcome}"
        + (f": {result.reason}" if result.reason else ""),
        highlight=False,
    )
    if result.report_path is not None:  # the cycle's report (issue 17)
        console.print(f"report: {result.report_path}", highlight=False, soft_wrap=True)
    if result.outcome == OUTCOME_HELD:
        raise typer.Exit(EXIT_HELD)


@app.command()
def sweep(  # noqa: PLR0917 (typer maps each option to a parameter)
    spool: Annotated[Path, typer.Option(help="Spool folder.")],
    sites: SitesOption,
    output: OutputOption = None,
    max_concurrent_cycles: ConcurrencyOption = None,
    kinetics_methods: KineticsMethodsOption = None,
    dose_methods: DoseMethodsOption = None,
    task_runner: TaskRunnerOption = None,
) -> None:
    """Process the cycles that need it: complete but unprocessed, failed, or held for a reason
    that has gone away (what the nightly `sweep` deployment runs).

    Example: concordose sweep --spool /var/lib/concordose/spool --sites /etc/concordose/sites.yaml
    """
    kinetics, dose = run_or_exit(lambda: _method_overrides(kinetics_methods, dose_methods))
    runner = _task_runner(task_runner)

    def check() -> None:
        from concordose.spool.store import Spool

        Spool.open_existing(spool)
        _check_before_processing(spool, sites, None)

    run_or_exit(check)
    from concordose.flows.sweep import sweep as sweep_flow

    result = sweep_flow(
        spool,
        sites,
        output_uri=output,
        kinetics_methods=kinetics,
        dose_methods=dose,
        max_concurrent_cycles=max_concurrent_cycles,
        task_runner=runner,
    )
    run_or_exit(lambda: _report_sweep(result, spool))


SEVERITY_STYLES = {
    str(Severity.ERROR): "red",
    str(Severity.WARNING): "yellow",
    str(Severity.INFO): "dim",
}
"""How ``check`` colours a finding by severity (info: how a value was obtained, not a problem)."""


def _print_findings(findings: Sequence[dict[str, str]]) -> None:
    """The findings of one checked file (``check``'s ``findings`` entries) as a table."""
    if not findings:
        return
    table = Table(title="Findings")
    for column in ("severity", "rule", "file", "finding"):
        table.add_column(column, overflow="fold")
    for finding in findings:
        style = SEVERITY_STYLES.get(finding["severity"], "yellow")
        table.add_row(
            Text(finding["severity"], style=style),
            finding["rule"],
            Path(finding["source"]).name,
            finding["message"],
        )
    console.print(table)


@app.command()
def check(
    paths: Annotated[list[Path], typer.Argument(help="NM files or folders to check.")],
    sites: SitesOption,
    site: Annotated[str, typer.Option(help="Site the files come from.")],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON document instead: {held, files: [{file, held, "
            "calibration_record, findings: [{severity, rule, source, message}]}], "
            "skipped_non_dicom: [paths]}.",
        ),
    ] = False,
) -> None:
    """Check SPECT files against the site's protocol and calibrations; exit 1 if any is held.

    Example: concordose check incoming/tp01/nm.dcm --sites sites.yaml --site milan --json
    """
    from concordose.calibration.findings import malformed_header_finding
    from concordose.calibration.gate import gate_time_point
    from concordose.calibration.registry import SiteRegistry
    from concordose.dicom.nm import read_nm_header
    from concordose.errors import MalformedHeaderError
    from concordose.pipeline.catalogue import catalogue

    skipped: list[Path] = []

    def run() -> list[dict[str, Any]]:
        registry = SiteRegistry.load(sites)
        files: list[Path] = []
        for path in paths:
            if path.is_dir():
                files.extend(
                    i.path
                    for i in catalogue(path, on_skipped=skipped.append)
                    if i.sop_class_uid == NuclearMedicineImageStorage
                )
            elif path.is_file():
                files.append(path)
            else:
                raise ConcordoseError(f"{path} does not exist")
        if not files:
            raise ConcordoseError(f"no NM Image Storage file among {', '.join(map(str, paths))}")
        checked = []
        for file in files:
            try:
                acquisition = read_nm_header(file)
            except MalformedHeaderError as exc:  # issue 18: a finding holding it, no crash
                held, record, findings = True, None, [malformed_header_finding(exc)]
            else:
                result = gate_time_point(acquisition, registry, calling_ae_title=None, site_id=site)
                held, findings = result.held, list(result.findings)
                record = result.calibration.record_id if result.calibration else None
            checked.append(
                {
                    "file": str(file),
                    "held": held,
                    "calibration_record": record,
                    "findings": [
                        {
                            "severity": str(finding.severity),
                            "rule": finding.rule,
                            "source": finding.source,
                            "message": finding.message,
                        }
                        for finding in findings
                    ],
                }
            )
        return checked

    checked = run_or_exit(run)
    any_held = any(item["held"] for item in checked)
    if as_json:
        echo_json(
            {
                "held": any_held,
                "files": checked,
                "skipped_non_dicom": [str(path) for path in skipped],
            }
        )
    else:
        if skipped:
            console.print(f"skipped {len(skipped)} non-DICOM file(s)", highlight=False)
        for item in checked:
            verdict = Text("held", "red") if item["held"] else Text("passes", "green")
            record = item["calibration_record"] or "no calibration"
            console.print(Text.assemble(f"{item['file']}: ", verdict, f" ({record})"))
            _print_findings(item["findings"])
    if any_held:
        raise typer.Exit(EXIT_HELD)


@app.command()
def calibrate(
    *,
    site: Annotated[str, typer.Option(help="Site id the phantoms were scanned at.")],
    cylinder: Annotated[Path, typer.Option(help="Uniform cylinder's calibration_sheet.yaml.")],
    nema: Annotated[Path, typer.Option(help="NEMA IEC body phantom's calibration_sheet.yaml.")],
    sites_file: Annotated[
        Path, typer.Option("--sites", help="Site registry YAML naming the calibration ledger.")
    ],
    record_id: Annotated[str, typer.Option(help="Id of the new calibration record.")],
    valid_from: Annotated[str, typer.Option(help="First day the record applies (YYYY-MM-DD).")],
    nema_second: Annotated[
        list[Path] | None,
        typer.Option(
            help=(
                "The NEMA phantom's calibration_sheet.yaml at another sphere-to-background "
                "ratio (EARL: 4:1 and 10:1); repeatable. Gives the contrast-dependent lesion "
                "threshold of gtm_platform_voi."
            )
        ),
    ] = None,
) -> None:
    """Derive CF and the RC curve from a site's phantom scans; append them to the ledger.

    When the site's protocol corrects partial volume through its reconstruction
    (perturbation_gtm), the photopeak window's scatter-to-primary ratio is fitted on the NEMA
    phantom's lung insert too (two to four OSEM reconstructions of it, μ from its CT).

    Example: concordose calibrate --site milan --sites sites.yaml \\
    --record-id milan-2026-01 --valid-from 2026-01-01 \\
    --cylinder cyl/calibration_sheet.yaml --nema nema/calibration_sheet.yaml
    """
    from datetime import date

    from concordose.calibration.calibrate import calibrate_site
    from concordose.calibration.protocol import load_protocol
    from concordose.calibration.registry import SiteRegistry

    def run() -> None:
        registry = SiteRegistry.load(sites_file)
        registry.site(site)
        if registry.calibration_ledger is None:
            raise ConcordoseError(
                f"{sites_file} names no calibration_ledger; add e.g. "
                "`calibration_ledger: calibrations.jsonl`"
            )
        try:
            first_day = date.fromisoformat(valid_from)
        except ValueError:
            raise ConcordoseError(
                f"--valid-from {valid_from!r} is not a date (YYYY-MM-DD)"
            ) from None
        protocol = load_protocol(site, registry.protocol_dir)
        result = calibrate_site(
            site_id=site,
            cylinder_sheet=cylinder,
            nema_sheet=nema,
            record_id=record_id,
            valid_from=first_day,
            ledger=registry.calibration_ledger,
            further_nema_sheets=tuple(nema_second or ()),
            reconstruction=protocol.modelled_reconstruction(),
        )
        record = result.record
        uncertainty = record.calibration_factor_relative_uncertainty or 0.0
        console.print(
            f"CF {record.calibration_factor_cps_per_mbq:.3f} cps/MBq (± {uncertainty:.1%}); "
            f"RC(V) = 1/(1 + ({record.recovery_a_ml:.3g} mL/V)^{record.recovery_b:.3g}); "
            f"NEMA phantom found at {tuple(round(v, 1) for v in result.nema.offset_mm)} mm"
        )
        calibrator = result.calibrator
        console.print(
            "dose calibrator not traceable: no dose_calibrator_traceability on the sheets, the "
            "CF carries the calibrator's bias"
            if calibrator is None
            else f"dose-calibrator bias {calibrator.bias_relative:+.2%} "
            f"(± {calibrator.bias_sd_relative:.2%}) corrected: {calibrator.description}",
            soft_wrap=True,
        )
        table = Table(title="Recovery coefficients")
        table.add_column("sphere mL", justify="right")
        table.add_column("RC", justify="right")
        for volume, rc in zip(result.nema.volumes_ml, result.nema.recovery, strict=True):
            table.add_row(f"{volume:.2f}", f"{rc:.3f}")
        console.print(table)
        if record.psf_fwhm_mm is not None:
            evidence = record.partial_volume_evidence or {}
            used_mm, used_sd_mm = psf_from_record(record)
            large_object = (
                ""
                if record.psf_large_object_fwhm_mm is None
                else f", large object {record.psf_large_object_fwhm_mm:.2f} ± "
                f"{record.psf_large_object_fwhm_sd_mm or 0.0:.2f} mm"
            )
            console.print(
                f"PSF FWHM: spheres {record.psf_fwhm_mm:.2f} ± {record.psf_fwhm_sd_mm or 0.0:.2f} "
                f"mm{large_object}; the GTM uses {used_mm:.2f} ± {used_sd_mm:.2f} mm; "
                "sphere activity RMS error (leave-one-out) "
                + ", ".join(f"{name} {value:.1%}" for name, value in evidence.items())
                + f"; chosen: {record.partial_volume_model_chosen}"
            )
        scatter = result.nema.scatter
        if scatter is not None:
            console.print(
                f"scatter-to-primary ratio {scatter.correction.scatter_to_primary:.3f} ± "
                f"{scatter.scatter_to_primary_sd:.3f} (lung insert core / background: measured "
                f"{scatter.lung_ratio_measured:.3f}, the site's reconstruction of scatter-free "
                f"data {scatter.lung_ratio_without:.3f}, fitted {scatter.lung_ratio_fitted:.3f})"
            )
        advice = protocol.partial_volume_advice()
        if advice is not None:
            console.print(styled("note", "yellow", f": {advice}"), soft_wrap=True)
        version = result.entry.version if result.entry else 0
        console.print(
            f"appended {record.record_id} (version {version}) to {registry.calibration_ledger}"
        )

    run_or_exit(run)


# --- sites and protocol command groups (issue 16) ---
app.add_typer(sites_app, name="sites")
app.add_typer(protocol_app, name="protocol")
# --- end sites and protocol ---


SITE_IDS_ALIAS_NOTE = (
    "--sites is the old name of this option, deprecated in 0.1.0 (everywhere else --sites is a "
    "sites.yaml file) and kept for one release."
)
"""The note of ``generate --consortium`` and ``consortium`` on their renamed ``--site-ids``."""


ImagingOption = Annotated[
    str,
    typer.Option(
        help="Image formation of patients and phantom scans: 'blur' (Gaussian of the site's "
        "resolution, fast) or 'realistic' (projection with attenuation, collimator response, "
        "scatter, dead time and Poisson noise, then the site's OSEM; in a consortium also "
        "irregular lesions, breathing and each site's segmentation)."
    ),
]
"""The ``--imaging`` option of ``generate`` and ``consortium`` (one text for both)."""


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder to write the synthetic data into.")],
    *,
    seed: Annotated[int, typer.Option(help="Seed.")] = 20261124,
    preset: Annotated[
        str,
        typer.Option(
            help="Size preset: 'demo', 'test' or 'clinical' (128×128×96 SPECT, 512×512 CT); "
            "with --consortium also 'full' and 'pvc'."
        ),
    ] = "demo",
    consortium: Annotated[
        bool,
        typer.Option(
            "--consortium",
            help="Write the digital consortium: every site's phantom scans and the same "
            "virtual patients at every site (see phantoms/README.md).",
        ),
    ] = False,
    sites: Annotated[
        str | None,
        typer.Option(
            "--site-ids",
            "--sites",
            help="Consortium: comma-separated site ids (default: every site). "
            + SITE_IDS_ALIAS_NOTE,
        ),
    ] = None,
    patients: Annotated[int, typer.Option(help="Consortium: number of virtual patients.")] = 1,
    protocol: Annotated[
        str,
        typer.Option(
            help="Consortium: imaging protocol (spectacular, lumen, lutadose, hebert), or "
            "per-site for each site's own."
        ),
    ] = "spectacular",
    blur: Annotated[
        bool, typer.Option(help="Consortium: blur with each site's effective resolution.")
    ] = True,
    noise: Annotated[bool, typer.Option(help="Consortium: Poisson noise.")] = True,
    ct_shift_mm: Annotated[
        float,
        typer.Option(help="Consortium: largest per-axis patient shift between time points, mm."),
    ] = 5.0,
    imaging: ImagingOption = "blur",
    max_views: Annotated[
        int | None,
        typer.Option(
            help="Consortium, realistic imaging: at most this many views (fast setting for "
            "large grids; "
            "the acquisition time is kept)."
        ),
    ] = None,
) -> None:
    """Write synthetic data: one patient (default) or, with --consortium, a whole consortium.

    Example: concordose generate --out /tmp/patient --preset test
    """
    mode = run_or_exit(lambda: _imaging_mode(imaging))
    if consortium:
        run_or_exit(
            lambda: _generate_consortium(
                out,
                seed=seed,
                preset=preset,
                site_ids=sites,
                n_patients=patients,
                protocol=protocol,
                blur=blur,
                noise=noise,
                ct_shift_mm=ct_shift_mm,
                imaging=mode,
                max_views=max_views,
            )
        )
        return
    from concordose.phantoms import generate_patient

    def make() -> None:
        try:
            patient = generate_patient(out, seed=seed, preset=preset, imaging=mode)
        except ValueError as exc:
            raise ConcordoseError(str(exc)) from exc
        console.print(f"wrote {len(patient.dicom_files)} DICOM files under {out}")
        console.print(f"ground truth: {patient.ground_truth_path}; sites: {patient.sites_path}")

    run_or_exit(make)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="SQL over the published tables (DuckDB dialect).")],
    output: Annotated[
        str | None,
        typer.Option(help="Folder or s3://bucket/prefix to read (default CONCORDOSE_OUTPUT_URI)."),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="Output format: table, csv or json. In csv, a list, struct or map cell (e.g. "
            "a DVH's dose levels) is one JSON-encoded cell.",
        ),
    ] = "table",
) -> None:
    """Query the published tables: only manifested runs, the latest run per cycle.

    Views: acquisitions, voi_timepoints, kinetics, absorbed_dose, patient_summary, voxel_dose,
    voxel_dose_summary, method_comparison, site_calibrations, harmonisation_agreement,
    qc_findings (current schema, older versions upgraded),
    and runs (the manifested runs).

    Example: concordose query "SELECT voi_label, mean_dose_gy FROM absorbed_dose" --format csv
    """

    def run() -> pa.Table:
        from concordose.results.catalogue import query as run_query
        from concordose.results.object_store import open_object_store
        from concordose.settings import Settings

        if fmt not in ("table", "csv", "json"):
            raise ConcordoseError(f"unknown --format {fmt!r}; use table, csv or json")
        settings = Settings()
        return run_query(
            open_object_store(output or settings.output_uri, settings, create=False), sql
        )

    result = run_or_exit(run)
    if fmt == "csv":
        typer.echo(csv_text(result), nl=False)
    elif fmt == "json":
        echo_json(result.to_pylist())
    else:
        table = Table(show_lines=False)
        for name in result.column_names:
            table.add_column(name)
        for row in result.to_pylist():
            table.add_row(
                *(
                    "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
                    for v in row.values()
                )
            )
        console.print(table)
        console.print(f"{result.num_rows} row(s)")


def _imaging_mode(name: str) -> ImagingMode:
    """The ``--imaging`` option as a :class:`phantoms.imaging.ImagingMode`."""
    from concordose.phantoms.imaging import ImagingMode

    try:
        return ImagingMode(name)
    except ValueError:
        raise ConcordoseError(
            f"unknown --imaging {name!r}; expected one of {', '.join(m.value for m in ImagingMode)}"
        ) from None


def _generate_consortium(
    out: Path,
    *,
    seed: int,
    preset: str,
    site_ids: str | None,
    n_patients: int,
    protocol: str,
    blur: bool,
    noise: bool,
    ct_shift_mm: float,
    imaging: ImagingMode,
    max_views: int | None,
) -> None:
    """``generate --consortium``: the digital consortium with a progress bar."""
    from concordose.phantoms.consortium import (
        CONSORTIUM_PRESETS,
        PER_SITE_PROTOCOL,
        Realism,
        generate_consortium,
    )
    from concordose.phantoms.protocols import PROTOCOLS
    from concordose.phantoms.site_profiles import CONSORTIUM_SITES, consortium_site

    try:
        chosen = (
            CONSORTIUM_SITES
            if site_ids is None
            else tuple(consortium_site(s.strip()) for s in site_ids.split(",") if s.strip())
        )
    except KeyError as exc:
        raise ConcordoseError(str(exc.args[0])) from exc
    if ct_shift_mm < 0:
        raise ConcordoseError(f"--ct-shift-mm must be ≥ 0 mm, got {ct_shift_mm}")
    if preset not in CONSORTIUM_PRESETS:
        raise ConcordoseError(
            f"unknown consortium preset {preset!r}; expected one of {sorted(CONSORTIUM_PRESETS)}"
        )
    if protocol not in PROTOCOLS and protocol != PER_SITE_PROTOCOL:
        raise ConcordoseError(
            f"unknown imaging protocol {protocol!r}; expected one of "
            f"{', '.join([*PROTOCOLS, PER_SITE_PROTOCOL])}"
        )
    with progress_bar() as progress:
        task = progress.add_task("digital consortium", total=None)

        class _Reporter:
            def start(self, total: int) -> None:
                progress.update(task, total=total)

            def advance(self, description: str) -> None:
                progress.update(task, advance=1, description=description)

        try:
            result = generate_consortium(
                out,
                seed=seed,
                preset=preset,
                sites=chosen,
                n_patients=n_patients,
                protocol=protocol,
                realism=Realism.of_imaging(
                    imaging,
                    blur=blur,
                    noise=noise,
                    ct_shift_max_mm=ct_shift_mm,
                    realistic_max_views=max_views,
                ),
                progress=_Reporter(),
            )
        except ValueError as exc:
            raise ConcordoseError(str(exc)) from exc
        progress.update(task, description="digital consortium")
    table = Table(title=f"Digital consortium under {out}")
    for column in ("site", "AE title", "CF cps/MBq", "FWHM mm", "voxel mm", "DICOM files"):
        table.add_column(column, justify="left" if column in ("site", "AE title") else "right")
    for generated in result.sites:
        site = generated.site
        table.add_row(
            site.site_id,
            site.calling_ae_title,
            f"{site.calibration_factor_cps_per_mbq:.1f}",
            "OSEM"
            if imaging.value == "realistic"
            else f"{site.effective_fwhm_mm:.1f}"
            if blur
            else "no blur",
            f"{site.nm_voxel_mm:g}",
            str(
                len(generated.dicom_files)
                + sum(1 + len(s.ct_paths) for s in generated.phantom_scans)
            ),
        )
    console.print(table)
    console.print(f"subjects {', '.join(result.subjects)}; index: {result.index_path}")
    console.print(f"site registry: {result.sites_path}")


def _harmonisation_summary(table: pa.Table) -> Table:
    """Per metric, methods and variant: compartments compared, median and largest cross-site
    CoV, median |relative error| against truth (rows of ``harmonisation_agreement``)."""
    from concordose.consortium import VARIANTS

    frame = table.to_pandas()
    frame["methods"] = frame["kinetics_method"] + " / " + frame["dose_method"]
    frame["abs_error"] = frame["relative_error"].abs()
    frame["order"] = frame["variant"].map({v.value: i for i, v in enumerate(VARIANTS)})
    summary = Table(title="Cross-site agreement on reference objects (harmonisation_agreement)")
    for column in ("metric", "methods", "variant", "VOIs", "median CoV", "max CoV"):
        summary.add_column(
            column, justify="left" if column in ("metric", "methods", "variant") else "right"
        )
    summary.add_column("median |error|", justify="right")
    for (metric, methods, _, variant), rows in frame.groupby(
        ["metric", "methods", "order", "variant"], sort=True
    ):
        per_compartment = rows.drop_duplicates(["reference_object_id", "voi_label"])
        cov = per_compartment["cross_site_cov"].dropna()
        error = rows["abs_error"].dropna()
        summary.add_row(
            str(metric),
            str(methods),
            str(variant),
            str(len(per_compartment)),
            f"{cov.median():.1%}" if len(cov) else "—",
            f"{cov.max():.1%}" if len(cov) else "—",
            f"{error.median():.1%}" if len(error) else "—",
        )
    return summary


@app.command()
def consortium(
    out: Annotated[Path, typer.Option(help="Folder for the run (input, config, spool, output).")],
    *,
    preset: Annotated[
        str, typer.Option(help="Consortium preset: 'test' (coarse, seconds), 'demo' or 'full'.")
    ] = "test",
    sites: Annotated[
        str | None,
        typer.Option(
            "--site-ids",
            "--sites",
            help="Comma-separated site ids (default: every site). " + SITE_IDS_ALIAS_NOTE,
        ),
    ] = None,
    patients: Annotated[int, typer.Option(help="Virtual patients, each imaged at every site.")] = 1,
    seed: Annotated[int, typer.Option(help="Consortium seed.")] = 20261124,
    imaging: ImagingOption = "blur",
) -> None:
    """Run the digital consortium through the platform and measure how comparable the sites are.

    Generates the consortium, calibrates every site from its phantom scans, sends every study
    by C-STORE to the receiver, processes every cycle in three variants (raw: vendor CF;
    harmonised: phantom CF; harmonised_pvc: + partial-volume correction) and publishes every
    table, harmonisation_agreement included, under OUT/output.

    Example: concordose consortium --out /tmp/cons --preset test --sites milan,brussels --patients 1
    """
    from concordose.phantoms.consortium import CONSORTIUM_PRESETS
    from concordose.phantoms.site_profiles import CONSORTIUM_SITES, consortium_site

    allowed = ("test", "demo", "full")

    def chosen_sites() -> tuple[Any, ...]:
        if preset not in allowed or preset not in CONSORTIUM_PRESETS:
            raise ConcordoseError(
                f"unknown --preset {preset!r}; expected one of {', '.join(allowed)}"
            )
        if patients < 1:
            raise ConcordoseError(f"--patients must be ≥ 1, got {patients}")
        if sites is None:
            return CONSORTIUM_SITES
        try:
            picked = tuple(consortium_site(s.strip()) for s in sites.split(",") if s.strip())
        except KeyError as exc:
            raise ConcordoseError(f"--sites: {exc.args[0]}") from exc
        if len({s.site_id for s in picked}) < 2:
            raise ConcordoseError(
                f"--sites {sites!r} names {len(picked)} distinct site(s); comparing sites needs ≥ 2"
            )
        return picked

    profiles = run_or_exit(chosen_sites)
    mode = run_or_exit(lambda: _imaging_mode(imaging))
    from concordose.flows.consortium import (
        run_consortium,  # lazy: only orchestration imports Prefect
    )

    with progress_bar() as progress:
        task = progress.add_task("consortium", total=0)

        class _Reporter:
            def start(self, total: int) -> None:
                current = progress.tasks[task].total or 0
                progress.update(task, total=current + total)

            def advance(self, description: str) -> None:
                progress.update(task, advance=1, description=description)

            def advance_by(self, units: int, description: str) -> None:
                progress.update(task, advance=units, description=description)

        def on_step(message: str) -> None:
            progress.console.print(styled("•", "cyan", f" {message}"), soft_wrap=True)

        result = run_or_exit(
            lambda: run_consortium(
                out.resolve(),
                sites=profiles,
                n_patients=patients,
                preset=preset,
                seed=seed,
                progress=_Reporter(),
                on_step=on_step,
                imaging=mode,
            )
        )
        progress.update(task, description="consortium")
    sites_table = Table(title="Sites and cycles per variant")
    columns = ("site", "nominal CF cps/MBq", "phantom CF cps/MBq", "variant")
    for column in (*columns, "processed", "held", "failed"):
        sites_table.add_column(column, justify="left" if column in ("site", "variant") else "right")
    nominal = {s.site_id: s.nominal_calibration_factor_cps_per_mbq for s in profiles}
    for site_id, record in result.calibrations.items():
        for variant, counts in result.outcomes.items():
            by_site = counts.get(site_id, {})
            sites_table.add_row(
                site_id,
                f"{nominal[site_id]:.2f}" if nominal[site_id] else "—",
                f"{record.calibration_factor_cps_per_mbq:.2f}",
                variant.value,
                *(str(by_site.get(outcome, 0)) for outcome in ("processed", "held", "failed")),
            )
    console.print(sites_table)
    console.print(_harmonisation_summary(result.harmonisation.table))
    for object_id, site_id, variant_name in result.harmonisation.missing:
        console.print(
            styled(
                "missing",
                "yellow",
                f" {object_id} at {site_id} ({variant_name}): no published rows",
            )
        )
    console.print(
        f"sent {result.sent} instances; published run {result.published.run_id}:", soft_wrap=True
    )
    console.print(
        f"  tables under {result.output_dir} (variants under {result.output_dir / 'variants'})",
        soft_wrap=True,
    )


def _configure_logging() -> None:
    configure_cli_logging()  # text or JSON (issue 19), pynetdicom and httpx at warnings


# --- sites.yaml reloaded on SIGHUP (issue 16) ---
def _reload_sites(receiver: StorageReceiver, config: Path, registry: SiteRegistry) -> SiteRegistry:
    """Reload ``config`` into the running receiver and log what changed (identifiers of the
    sites file only); a file that fails validation keeps ``registry`` and logs one error line."""
    import logging

    from concordose.calibration.registry import SiteRegistry

    log = logging.getLogger("concordose.receive")
    try:
        reloaded = SiteRegistry.load(config)
    except ConcordoseError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines())
        log.error("sites file %s not reloaded, the previous one stays in force: %s", config, reason)
        return registry
    receiver.update_sites(
        {title: site.site_id for site in reloaded.sites for title in site.ae_titles}
    )
    changes = reloaded.changes_since(registry)
    log.info("sites file %s reloaded: %s", config, "; ".join(changes) or "no change")
    return reloaded


# --- end sites.yaml reloaded ---


@app.command()
def receive(  # noqa: PLR0917 (typer maps each option to a parameter)
    spool: Annotated[Path, typer.Option(help="Spool folder (created if missing).")],
    sites: Annotated[
        Path,
        typer.Option(
            "--sites",
            "--config",
            help="Site registry YAML: calling AE titles → sites (--config: the old name, kept "
            "as an alias).",
        ),
    ],
    port: Annotated[
        int | None, typer.Option(help="TCP port (default: CONCORDOSE_RECEIVER_PORT, 11112).")
    ] = None,
    ae_title: Annotated[
        str | None,
        typer.Option(help="Our (called) AE title (default: CONCORDOSE_RECEIVER_AE_TITLE)."),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default: CONCORDOSE_RECEIVER_HOST, 0.0.0.0)."),
    ] = None,
    quiet_period_s: Annotated[
        float | None,
        typer.Option(
            help="Seconds of quiet after the last association → time point complete "
            "(default: CONCORDOSE_RECEIVER_QUIET_PERIOD_S, 300)."
        ),
    ] = None,
    max_pdu: Annotated[
        int | None,
        typer.Option(help="Maximum PDU size we receive, bytes, 0 = any (default: 131072)."),
    ] = None,
    max_associations: Annotated[
        int | None,
        typer.Option(
            help="Concurrent associations (default: CONCORDOSE_RECEIVER_MAX_ASSOCIATIONS, 10)."
        ),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Our TLS certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Our TLS private key (PEM).")] = None,
    tls_ca: Annotated[
        Path | None, typer.Option(help="CA bundle site certificates must chain to (mutual TLS).")
    ] = None,
    deployment: Annotated[
        str | None,
        typer.Option(
            help="Start a run of this Prefect deployment (process-cycle/NAME) per changed cycle."
        ),
    ] = None,
    run_flows: Annotated[
        bool,
        typer.Option(help="Run process-cycle per changed cycle in a worker process (no pool)."),
    ] = False,
    output: Annotated[
        str | None, typer.Option(help="Where the flows publish (default CONCORDOSE_OUTPUT_URI).")
    ] = None,
    show_phi: Annotated[
        bool,
        typer.Option(
            "--show-phi",
            help="Name patients by PatientID in the log. Default: by subject key "
            "(CONCORDOSE_PSEUDONYM_KEY), or '(hidden)' without a key.",
        ),
    ] = False,
    metrics_port: MetricsPortOption = None,  # issue 19
    log_format: LogFormatOption = None,  # issue 19
) -> None:
    """Run the storage SCP in the foreground until Ctrl-C / SIGTERM; SIGHUP reloads the sites
    file (AE titles, sites, calibration records) and logs what changed.

    Example: concordose receive --spool /var/lib/concordose/spool --sites sites.yaml --port 11112
    (then, after editing sites.yaml: kill -HUP <pid>)
    """
    import logging
    import os
    import signal
    import time

    from concordose.calibration.registry import SiteRegistry
    from concordose.ingest.receiver import StorageReceiver
    from concordose.ingest.tls import server_context
    from concordose.settings import Settings
    from concordose.spool.journal import segment_bytes_for
    from concordose.spool.store import Spool
    from concordose.spool.timepoints import OnComplete

    apply_log_format(log_format)
    _configure_logging()
    metrics_servers: list[MetricsServer] = []  # issue 19: stopped with the receiver

    def build() -> tuple[StorageReceiver, SiteRegistry]:
        settings = Settings()
        registry = SiteRegistry.load(sites)
        quiet_s = settings.receiver_quiet_period_s if quiet_period_s is None else quiet_period_s
        tls_files = (tls_cert, tls_key, tls_ca)
        if any(tls_files) and not all(tls_files):
            raise ConcordoseError("TLS needs all of --tls-cert, --tls-key and --tls-ca")
        context = (
            server_context(tls_cert, tls_key, tls_ca) if tls_cert and tls_key and tls_ca else None
        )
        hook: OnComplete | None = None
        if deployment and run_flows:
            raise ConcordoseError("choose one of --deployment and --run-flows")
        if deployment:
            from concordose.flows.triggers import DeploymentTrigger

            hook = DeploymentTrigger(deployment, sites.resolve(), output)
        elif run_flows:
            from concordose.flows.triggers import WorkerProcessTrigger

            hook = WorkerProcessTrigger(sites.resolve(), output)
        # Issue 18: spool files 0640 and folders 0750 by default (CONCORDOSE_SPOOL_UMASK).
        os.umask(int(settings.spool_umask, 8))
        receiver = StorageReceiver(
            Spool(spool.resolve(), free_reserve_bytes=settings.spool_free_reserve_mb << 20),
            ae_title=ae_title or settings.receiver_ae_title,
            host=host or settings.receiver_host,
            port=settings.receiver_port if port is None else port,
            site_by_ae_title={
                title: site.site_id for site in registry.sites for title in site.ae_titles
            },
            max_pdu_bytes=settings.max_pdu_bytes if max_pdu is None else max_pdu,
            max_associations=max_associations or settings.receiver_max_associations,
            admission=settings.receiver_admission(),  # issue 18: deadlines and limits
            ssl_context=context,
            quiet_period_s=quiet_s,
            on_complete=hook,
            delivery_backoff_max_s=settings.receiver_delivery_backoff_max_s,
            completion_poll_interval_s=min(5.0, max(0.2, quiet_s / 10)),
            journal_prefill=True,  # a long-running service: allocate the journal once
            journal_segment_bytes=segment_bytes_for(settings.spool_journal_mb),
            show_phi=show_phi,
            pseudonym_key=settings.pseudonym_key,
        )
        metrics_servers.extend(filter(None, [start_receiver_metrics(receiver, metrics_port)]))
        receiver.start()
        return receiver, registry

    # Handlers first: a SIGTERM arriving as soon as the port is open must still stop cleanly.
    # The handler only appends to a list: taking a lock there (threading.Event.set) can deadlock
    # against the main thread interrupted inside that same lock.
    stop_signals: list[int] = []
    reload_signals: list[int] = []  # SIGHUP: reload sites.yaml (issue 16)

    def on_signal(signum: int, _frame: object) -> None:
        (reload_signals if signum == signal.SIGHUP else stop_signals).append(signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    try:
        receiver, registry = run_or_exit(build)
        try:
            while not stop_signals:
                if reload_signals:
                    reload_signals.clear()
                    registry = _reload_sites(receiver, sites, registry)
                time.sleep(0.2)  # idle; a signal interrupts the sleep and its handler runs
        finally:
            receiver.stop()
            for server in metrics_servers:
                server.stop()
            # a log line (text or JSON, issue 19), like every other line of the service
            logging.getLogger("concordose.receive").info(
                "receiver stopped; pending time points resume at the next start"
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


app.add_typer(spool_app, name="spool")
app.add_typer(metrics_app, name="metrics")  # issue 19
app.add_typer(raw_app, name="raw")
app.add_typer(prediction_app, name="prediction")  # issue 20 item 3
app.command("report")(report_command)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
