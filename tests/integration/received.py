"""A real receiver on loopback that has received a generated patient: the start of every test of
what happens after ingest (the cycle flow, raw payloads)."""

from __future__ import annotations

from pathlib import Path

from concordose.ingest.receiver import StorageReceiver
from concordose.ingest.sender import send_files
from concordose.phantoms import GeneratedPatient
from concordose.spool.store import Spool
from tests.fakes import FakeClock


def receive_patient(
    spool_root: Path,
    patient: GeneratedPatient,
    hook: object,
    files: list[Path] | None = None,
    *,
    complete: bool = False,
) -> StorageReceiver:
    """Start a receiver on ``spool_root`` (the patient's site known as ``milan``, a fake clock,
    ``hook`` as its ``on_complete``) and send it ``files`` (default: every file of ``patient``)
    in one association; every instance must be accepted. With ``complete``, every time point of
    the spool is then completed at once (the hook sees each). The receiver is left running."""
    receiver = StorageReceiver(
        Spool(spool_root),
        port=0,
        site_by_ae_title={patient.site.calling_ae_title: "milan"},
        on_complete=hook,  # type: ignore[arg-type]
        clock=FakeClock(),
    )
    receiver.start()
    send_more(receiver, patient, files if files is not None else list(patient.dicom_files))
    if complete:
        for record in Spool.open_existing(spool_root).timepoints():
            receiver.completion.trigger(record.study_uid)
    return receiver


def send_more(receiver: StorageReceiver, patient: GeneratedPatient, files: list[Path]) -> None:
    """Another association to a running receiver; every instance must be accepted."""
    report = send_files(
        files,
        host="127.0.0.1",
        port=receiver.port,
        called_ae_title="CONCORDOSE",
        calling_ae_title=patient.site.calling_ae_title,
    )
    assert report.refused == []
    # Acknowledged means journaled; the receiver's filer indexes after a pause in arrivals, and a
    # time point with unfiled instances never completes: file them now, so that the spool lists
    # every time point and a completion trigger sees them all (file_journaled waits for a batch
    # the filer has in hand).
    receiver.spool.file_journaled()
