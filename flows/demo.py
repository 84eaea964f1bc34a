"""The demo: one synthetic patient sent by C-STORE to our receiver, processed, published.

Every part is real: the phantom is written as DICOM files, the receiver is the platform's storage
SCP on a loopback port, the files travel over a DICOM association, and the spool is processed by
the ``process-spool`` Prefect flow, one ``process-cycle`` run per cycle (ephemeral Prefect server
unless ``PREFECT_API_URL`` is set).

The patient is imaged on the SPECTacular six-point schedule (4, 24, 48, 96, 168, 240 h;
``phantoms.protocols.PROTOCOLS["spectacular"]``), the fewest points the reference kinetics
method needs, so every method of the site protocol's default set runs and is compared with it.
The generator's own default schedule (four points) is left alone: other tests pin it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from concordose.calibration.registry import SiteRegistry
from concordose.errors import ConcordoseError
from concordose.flows.process_cycle import CycleRunResult
from concordose.flows.sweep import process_spool
from concordose.ingest.receiver import StorageReceiver
from concordose.ingest.sender import SendReport, send_files
from concordose.phantoms import GeneratedPatient, generate_patient
from concordose.phantoms.protocols import PROTOCOLS
from concordose.run_folder import fresh_run_folder
from concordose.spool.store import Spool

DEMO_TIME_POINTS_H: tuple[float, ...] = PROTOCOLS["spectacular"].time_points_h_by_cycle[1]
"""The demo patient's schedule, hours after injection: SPECTacular's six points (NCT05823402)."""

DEMO_MARKER = ".concordose-demo"


@dataclass(frozen=True)
class DemoResult:
    """Where everything went."""

    workdir: Path
    patient: GeneratedPatient
    send_report: SendReport
    spool_dir: Path
    output_uri: str
    run: CycleRunResult


def prepare_workdir(workdir: Path) -> None:
    """Empty ``workdir`` for a fresh demo, refusing to touch a folder the demo did not make.

    Raises:
        ConcordoseError: ``workdir`` exists, is not empty and was not made by the demo.
    """
    fresh_run_folder(
        workdir,
        marker=DEMO_MARKER,
        command="concordose demo",
        name="demo folder",
        not_ours="created by the demo; choose another with --workdir",
    )


def demo_pseudonym_key(workdir: Path) -> SecretStr:
    """A random per-demo consortium secret kept in the demo folder (mode 600)."""
    path = workdir / "pseudonym.key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return SecretStr(path.read_text().strip())


def run_demo(
    workdir: Path,
    *,
    seed: int = 20261124,
    preset: str = "demo",
    output_uri: str | None = None,
    on_step: Callable[[str], None] = lambda _message: None,
    on_sent: Callable[[Path], None] | None = None,
    kinetics_methods: Sequence[str] | None = None,
    dose_methods: Sequence[str] | None = None,
) -> DemoResult:
    """Generate, receive by C-STORE, process with Prefect, publish; see the module docstring.

    ``kinetics_methods`` / ``dose_methods``: registry names overriding the site protocol's
    (None: the protocol's, i.e. the full default set)."""
    prepare_workdir(workdir)
    if not os.environ.get("CONCORDOSE_PSEUDONYM_KEY"):
        # The flow reads the consortium secret from the environment only (never a parameter, so
        # it never reaches Prefect's logs or database); the demo provides its own throwaway one.
        os.environ["CONCORDOSE_PSEUDONYM_KEY"] = demo_pseudonym_key(workdir).get_secret_value()
    on_step(f"generating a synthetic patient (preset {preset!r}, seed {seed})")
    patient = generate_patient(
        workdir / "input", seed=seed, preset=preset, time_points_h=DEMO_TIME_POINTS_H
    )
    registry = SiteRegistry.load(patient.sites_path)

    spool_dir = workdir / "spool"
    receiver = StorageReceiver(
        Spool(spool_dir),
        ae_title="CONCORDOSE",
        port=0,
        allowed_calling_ae_titles=registry.ae_titles,
    )
    with receiver:
        on_step(
            f"sending {len(patient.dicom_files)} DICOM files by C-STORE to "
            f"CONCORDOSE@127.0.0.1:{receiver.port} as {patient.site.calling_ae_title}"
        )
        report = send_files(
            patient.dicom_files,
            host="127.0.0.1",
            port=receiver.port,
            called_ae_title="CONCORDOSE",
            calling_ae_title=patient.site.calling_ae_title,
            on_sent=on_sent,
        )
        # Every file is sent: complete the time points now rather than after the quiet period.
        for record in receiver.spool.timepoints():
            receiver.completion.trigger(record.study_uid, "demo: every file sent")
    if report.refused:
        path, status = report.refused[0]
        raise ConcordoseError(
            f"the receiver refused {len(report.refused)} file(s), "
            f"e.g. {path} with status 0x{status:04X}"
        )
    output = output_uri or (workdir / "output").as_posix()
    on_step(f"processing the spool's cycle with the Prefect flow 'process-cycle' → {output}")
    sweep = process_spool(
        spool_dir,
        patient.sites_path,
        output_uri=output,
        kinetics_methods=kinetics_methods,
        dose_methods=dose_methods,
    )
    if sweep.failed:
        cycle_id, reason = next(iter(sweep.failed.items()))
        raise ConcordoseError(f"processing cycle {cycle_id} failed: {reason}")
    if not sweep.processed:
        reasons = "; ".join(f"{run.cycle_id}: {run.reason}" for run in sweep.runs)
        raise ConcordoseError(f"the demo patient's cycle was not processed: {reasons}")
    return DemoResult(workdir, patient, report, spool_dir, output, sweep.processed[0])
