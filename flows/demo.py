"""The demo: one synthetic patient sent by C-STORE to our receiver, processed, published.

Every part is real: the phantom is written as DICOM files, the receiver is the platform's storage
SCP on a loopback port, the files travel over a DICOM association, and the spool is processed by
the ``process-spool`` Prefect flow (ephemeral Prefect server unless ``PREFECT_API_URL`` is set).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from concordose.calibration.findings import Finding, Severity
from concordose.calibration.gate import CycleVerdict, gate_cycle
from concordose.calibration.registry import SiteRegistry
from concordose.dicom.catalogue import catalogue
from concordose.dicom.receiver import StorageReceiver
from concordose.dicom.seg import read_segmentation
from concordose.dicom.sender import SendReport, send_files
from concordose.dicom.spool import Spool
from concordose.dicom.study import CycleStudy, assemble_cycles
from concordose.errors import ConcordoseError
from flows.process_spool import SpoolRunResult, process_spool
from phantoms import GeneratedPatient, generate_patient

DEMO_MARKER = ".concordose-demo"


@dataclass(frozen=True)
class DemoResult:
    """Where everything went."""

    workdir: Path
    patient: GeneratedPatient
    send_report: SendReport
    spool_dir: Path
    output_uri: str
    run: SpoolRunResult


def prepare_workdir(workdir: Path) -> None:
    """Empty ``workdir`` for a fresh demo, refusing to touch a folder the demo did not make.

    Raises:
        ConcordoseError: ``workdir`` exists, is not empty and was not made by the demo.
    """
    if workdir.exists():
        if not workdir.is_dir():
            raise ConcordoseError(f"demo folder {workdir} exists and is not a folder")
        if any(workdir.iterdir()) and not (workdir / DEMO_MARKER).is_file():
            raise ConcordoseError(
                f"demo folder {workdir} is not empty and was not created by the demo; "
                "choose another with --workdir"
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / DEMO_MARKER).write_text("created by `concordose demo`; safe to delete\n")


def demo_pseudonym_key(workdir: Path) -> SecretStr:
    """A random per-demo consortium secret kept in the demo folder (mode 600)."""
    path = workdir / "pseudonym.key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return SecretStr(path.read_text().strip())


@dataclass(frozen=True)
class Preflight:
    """What a spool holds and the gate's verdict on each cycle, before any orchestration."""

    cycles: list[CycleStudy]
    verdicts: list[CycleVerdict]

    @property
    def findings(self) -> list[Finding]:
        """Every finding of every cycle."""
        return [finding for verdict in self.verdicts for finding in verdict.findings]

    @property
    def ready(self) -> int:
        """How many cycles pass the gate."""
        return sum(not verdict.held for verdict in self.verdicts)


def preflight(source: Path, registry: SiteRegistry, site_id: str | None) -> Preflight:
    """Check a spool or folder before any orchestration starts, with clear errors.

    Reads headers and segmentations, runs the metadata checks and the calibration gate.

    Raises:
        ConcordoseError: missing folder, unreadable DICOM, no SPECT, no VOIs, unknown site, or
            every cycle held (the message lists the errors).
    """
    cycles = assemble_cycles(catalogue(source))
    verdicts = []
    for cycle in cycles:
        read_segmentation(cycle.segmentation)
        if cycle.calling_ae_title is None and site_id is None:
            raise ConcordoseError(
                f"{source} is not a spool, so the site of its files is unknown; pass --site"
            )
        verdicts.append(
            gate_cycle(
                [(point.acquisition, point.calling_ae_title) for point in cycle.time_points],
                registry,
                site_id=site_id,
            )
        )
    result = Preflight(cycles, verdicts)
    if result.ready == 0:
        errors = [str(f) for f in result.findings if f.severity is Severity.ERROR]
        raise ConcordoseError("every cycle is held by the checks:\n  " + "\n  ".join(errors))
    return result


def run_demo(
    workdir: Path,
    *,
    seed: int = 20261124,
    preset: str = "demo",
    output_uri: str | None = None,
    on_step: Callable[[str], None] = lambda _message: None,
    on_sent: Callable[[Path], None] | None = None,
) -> DemoResult:
    """Generate, receive by C-STORE, process with Prefect, publish; see the module docstring."""
    prepare_workdir(workdir)
    if not os.environ.get("CONCORDOSE_PSEUDONYM_KEY"):
        # The flow reads the consortium secret from the environment only (never a parameter, so
        # it never reaches Prefect's logs or database); the demo provides its own throwaway one.
        os.environ["CONCORDOSE_PSEUDONYM_KEY"] = demo_pseudonym_key(workdir).get_secret_value()
    on_step(f"generating a synthetic patient (preset {preset!r}, seed {seed})")
    patient = generate_patient(workdir / "input", seed=seed, preset=preset)
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
    if report.refused:
        path, status = report.refused[0]
        raise ConcordoseError(
            f"the receiver refused {len(report.refused)} file(s), "
            f"e.g. {path} with status 0x{status:04X}"
        )
    preflight(spool_dir, registry, None)
    output = output_uri or (workdir / "output").as_posix()
    on_step(f"processing the spool with the Prefect flow 'process-spool' → {output}")
    run = process_spool(spool_dir, patient.sites_path, output_uri=output)
    return DemoResult(workdir, patient, report, spool_dir, output, run)
