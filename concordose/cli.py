"""The one entry point: ``concordose …``.

Errors caused by input (:class:`~concordose.errors.ConcordoseError`) are printed as one clear
message and exit with status 2; anything else is a bug and keeps its traceback. Commands that
orchestrate import ``flows`` lazily, so the library itself never imports Prefect.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pyarrow as pa
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from concordose import __version__
from concordose.errors import ConcordoseError
from concordose.settings import default_workdir

app = typer.Typer(
    name="concordose",
    help="Multicentre harmonisation platform for Lu-177 radioligand-therapy dosimetry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
error_console = Console(stderr=True)

EXIT_INPUT_ERROR = 2
ResultT = TypeVar("ResultT")


def _run(action: Callable[[], ResultT]) -> ResultT:
    """Run ``action``; a ConcordoseError becomes a one-line message and exit status 2."""
    try:
        return action()
    except ConcordoseError as exc:
        error_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INPUT_ERROR) from None


def _version(value: bool) -> None:
    if value:
        console.print(f"concordose {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Multicentre harmonisation platform for Lu-177 radioligand-therapy dosimetry."""


def _dose_table(tables: dict[str, pa.Table], truth: dict[str, dict[str, Any]] | None) -> Table:
    table = Table(title="Absorbed dose per VOI (sphere model, mono-exponential TIA)")
    for column in ("VOI", "type", "mass g", "TIA MBq·h", "dose Gy"):
        table.add_column(column, justify="left" if column in ("VOI", "type") else "right")
    if truth is not None:
        table.add_column("true TIA MBq·h", justify="right")
    rows = tables["absorbed_dose"].to_pylist()
    for row in sorted(rows, key=lambda r: (r["voi_type"], r["voi_label"])):
        tia = row["tia_mbq_h"]
        dose = row["mean_dose_gy"]
        cells = [
            row["voi_label"],
            row["voi_type"],
            f"{row['mass_g']:.1f}",
            f"{tia:,.0f}" if tia is not None else "—",
            f"{dose:.2f}" if dose is not None else f"— ({row['status']})",
        ]
        if truth is not None:
            voi_truth = truth.get(row["voi_label"])
            cells.append(f"{voi_truth['tia_mbq_h']:,.0f}" if voi_truth else "—")
        table.add_row(*cells)
    return table


@app.command()
def demo(
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
) -> None:
    """Run the whole path on a synthetic patient: DICOM → C-STORE → Prefect flow → Parquet."""
    from flows.demo import run_demo  # lazy: only orchestration imports Prefect

    folder = (workdir or default_workdir()).resolve()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        sending = progress.add_task("C-STORE", total=None, visible=False)

        def on_step(message: str) -> None:
            progress.console.print(f"[cyan]•[/] {message}")

        def on_sent(_path: Path) -> None:
            progress.update(sending, advance=1, visible=True)

        result = _run(
            lambda: run_demo(
                folder,
                seed=seed,
                preset=preset,
                output_uri=output,
                on_step=on_step,
                on_sent=on_sent,
            )
        )
    truth = json.loads(result.patient.ground_truth_path.read_text())
    truth_by_label = {voi["label"]: voi for voi in truth["vois"]}
    console.print(_dose_table(result.run.tables, truth_by_label))
    console.print(f"received  {result.send_report.sent} instances into {result.spool_dir}")
    console.print(f"published run {result.run.published.run_id} to {result.output_uri}")
    for obj in result.run.published.objects:
        console.print(f"  {obj.table:<15} {obj.rows:>4} rows  {obj.path}")
    console.print(f"  manifest                  {result.run.published.manifest_path}")
    console.print(f"ground truth: {result.patient.ground_truth_path}")


@app.command()
def process(
    spool: Annotated[Path, typer.Option(help="Spool folder (or any folder of DICOM files).")],
    sites: Annotated[Path, typer.Option(help="Site registry YAML (sites.yaml).")],
    output: Annotated[
        str | None,
        typer.Option(help="Folder or s3://bucket/prefix (default CONCORDOSE_OUTPUT_URI)."),
    ] = None,
    site: Annotated[
        str | None, typer.Option(help="Site of the files when the folder is not a spool.")
    ] = None,
) -> None:
    """Process every cycle in a spool and publish its tables."""

    def checked() -> None:
        from concordose.calibration.registry import SiteRegistry
        from flows.demo import preflight

        cycles = preflight(spool, SiteRegistry.load(sites), site)
        console.print(f"[cyan]•[/] {len(cycles)} cycle(s) ready in {spool}")

    _run(checked)
    from flows.process_spool import process_spool

    result = _run(lambda: process_spool(spool, sites, output_uri=output, site_id=site))
    console.print(_dose_table(result.tables, None))
    console.print(f"published run {result.published.run_id}: {result.published.manifest_path}")


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder to write the synthetic patient into.")],
    seed: Annotated[int, typer.Option(help="Seed.")] = 20261124,
    preset: Annotated[str, typer.Option(help="Size preset: 'demo' or 'test'.")] = "demo",
) -> None:
    """Write one synthetic patient (DICOM NM, CT, SEG + ground truth + sites.yaml)."""
    from phantoms import generate_patient

    def make() -> None:
        try:
            patient = generate_patient(out, seed=seed, preset=preset)
        except ValueError as exc:
            raise ConcordoseError(str(exc)) from exc
        console.print(f"wrote {len(patient.dicom_files)} DICOM files under {out}")
        console.print(f"ground truth: {patient.ground_truth_path}; sites: {patient.sites_path}")

    _run(make)


def _configure_logging() -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # one line per PDU otherwise


@app.command()
def receive(  # noqa: PLR0917 (typer maps each option to a parameter)
    spool: Annotated[Path, typer.Option(help="Spool folder (created if missing).")],
    config: Annotated[Path, typer.Option(help="Site registry YAML: calling AE titles → sites.")],
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 11112,
    ae_title: Annotated[str, typer.Option(help="Our (called) AE title.")] = "CONCORDOSE",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    quiet_period_s: Annotated[
        float,
        typer.Option(help="Seconds of quiet after the last association → time point complete."),
    ] = 300.0,
    max_pdu: Annotated[
        int, typer.Option(help="Maximum PDU size we receive (bytes, 0 = any).")
    ] = 131072,
    max_associations: Annotated[int, typer.Option(help="Concurrent associations.")] = 10,
    tls_cert: Annotated[Path | None, typer.Option(help="Our TLS certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Our TLS private key (PEM).")] = None,
    tls_ca: Annotated[
        Path | None, typer.Option(help="CA bundle site certificates must chain to (mutual TLS).")
    ] = None,
    deployment: Annotated[
        str | None,
        typer.Option(
            help="Start a run of this Prefect deployment (timepoint-complete/NAME) per time point."
        ),
    ] = None,
    run_flows: Annotated[
        bool, typer.Option(help="Run the timepoint-complete flow in this process per time point.")
    ] = False,
    output: Annotated[
        str | None, typer.Option(help="Where the flows publish (default CONCORDOSE_OUTPUT_URI).")
    ] = None,
) -> None:
    """Run the storage SCP in the foreground until Ctrl-C / SIGTERM."""
    import signal
    import time

    from concordose.calibration.registry import SiteRegistry
    from concordose.dicom.receiver import StorageReceiver
    from concordose.dicom.spool import Spool
    from concordose.dicom.timepoints import OnComplete
    from concordose.dicom.tls import server_context

    _configure_logging()

    def build() -> StorageReceiver:
        registry = SiteRegistry.load(config)
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
            from flows.timepoint_complete import DeploymentTrigger

            hook = DeploymentTrigger(deployment, config.resolve(), output)
        elif run_flows:
            from flows.timepoint_complete import InProcessFlowTrigger

            hook = InProcessFlowTrigger(config.resolve(), output)
        receiver = StorageReceiver(
            Spool(spool.resolve()),
            ae_title=ae_title,
            host=host,
            port=port,
            site_by_ae_title={
                title: site.site_id for site in registry.sites for title in site.ae_titles
            },
            max_pdu_bytes=max_pdu,
            max_associations=max_associations,
            ssl_context=context,
            quiet_period_s=quiet_period_s,
            on_complete=hook,
            completion_poll_interval_s=min(5.0, max(0.2, quiet_period_s / 10)),
        )
        receiver.start()
        return receiver

    # Handlers first: a SIGTERM arriving as soon as the port is open must still stop cleanly.
    # The handler only appends to a list: taking a lock there (threading.Event.set) can deadlock
    # against the main thread interrupted inside that same lock.
    stop_signals: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_signals.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        receiver = _run(build)
        try:
            while not stop_signals:
                time.sleep(0.2)  # idle; a signal interrupts the sleep and its handler runs
        finally:
            receiver.stop()
            error_console.print("receiver stopped; pending time points resume at the next start")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


spool_app = typer.Typer(help="Inspect and steer a spool.", no_args_is_help=True)
app.add_typer(spool_app, name="spool")


@spool_app.command("status")
def spool_status(
    spool: Annotated[Path, typer.Option(help="Spool folder.")],
) -> None:
    """Show what is received, complete, processed and quarantined."""
    from concordose.dicom.spool import Spool
    from concordose.dicom.timepoints import group_by_cycle

    def show() -> None:
        opened = Spool.open_existing(spool)
        status = opened.status()
        table = Table(title=f"Patient → cycle → time points in {spool}")
        columns = ("patient", "injection", "h p.i.", "study", "sender", "modalities", "instances")
        for column in (*columns, "MB", "state", "event"):
            # The study UID folds (operators copy it for `spool complete`); the rest stays whole.
            table.add_column(column, overflow="fold", no_wrap=column != "study")
        for cycle, records in group_by_cycle(opened.timepoints()).items():
            injection = cycle.injection_datetime
            for record in records:
                if record.notified_at:
                    event = "delivered"
                else:
                    event = "pending" if record.completed_at else "—"
                table.add_row(
                    cycle.patient_id or "?",
                    f"{injection:%Y-%m-%d %H:%M}" if injection else "?",
                    f"{record.time_h:.1f}" if record.time_h is not None else "—",
                    record.study_uid,
                    record.calling_ae_title,
                    ",".join(record.modalities),
                    str(record.instance_count),
                    f"{record.size_bytes / 1e6:.1f}",
                    f"{record.state.value} r{record.revision}",
                    event,
                )
        console.print(table)
        console.print(
            f"instances {status.instances} ({status.size_bytes / 1e6:.1f} MB) · time points: "
            f"receiving {status.receiving}, complete {status.complete}, processed "
            f"{status.processed} · events pending {status.pending_events} · quarantined "
            f"{status.quarantined}"
        )
        for path in opened.quarantined():
            reason = path.with_suffix(".reason.txt")
            text = reason.read_text(errors="replace") if reason.is_file() else "(no reason file)"
            console.print(f"  quarantine {path.name}: {text}", highlight=False)

    _run(show)


@spool_app.command("complete")
def spool_complete(
    spool: Annotated[Path, typer.Option(help="Spool folder.")],
    study: Annotated[str, typer.Option(help="StudyInstanceUID of the time point.")],
) -> None:
    """Explicit trigger: mark a time point complete now (the running receiver emits its event)."""
    from datetime import UTC, datetime

    from concordose.dicom.spool import Spool

    def complete() -> None:
        changed = Spool.open_existing(spool).mark_complete(
            study, "explicit trigger (concordose spool complete)", datetime.now(UTC)
        )
        state = "marked complete" if changed else "was already complete or processed"
        console.print(f"time point {study} {state}")

    _run(complete)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
