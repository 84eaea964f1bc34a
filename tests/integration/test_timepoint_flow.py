"""The Prefect side of completion: one flow run per time point, against a real Prefect server."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from prefect.client.orchestration import get_client
from prefect.deployments.runner import RunnerDeployment

from concordose.dicom.receiver import StorageReceiver
from concordose.dicom.sender import send_files
from concordose.dicom.spool import Spool
from concordose.dicom.timepoints import TimePointEvent, TimePointState
from flows.timepoint_complete import (
    OUTCOME_PROCESSED,
    OUTCOME_SKIPPED,
    DeploymentTrigger,
    InProcessFlowTrigger,
    timepoint_complete,
)
from phantoms import GeneratedPatient
from tests.fakes import FakeClock, Recorder

pytestmark = pytest.mark.integration


def _receive(
    spool_root: Path, patient: GeneratedPatient, hook: object, files: list[Path] | None = None
) -> StorageReceiver:
    receiver = StorageReceiver(
        Spool(spool_root),
        port=0,
        site_by_ae_title={patient.site.calling_ae_title: "milan"},
        on_complete=hook,  # type: ignore[arg-type]
        clock=FakeClock(),
    )
    receiver.start()
    report = send_files(
        files or list(patient.dicom_files),
        host="127.0.0.1",
        port=receiver.port,
        called_ae_title="CONCORDOSE",
        calling_ae_title=patient.site.calling_ae_title,
    )
    assert report.refused == []
    return receiver


def _study(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def test_in_process_trigger_runs_the_flow_once_and_marks_the_time_point_processed(
    prefect_server: None,
    tmp_path: Path,
    small_patient: GeneratedPatient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-secret")
    trigger = InProcessFlowTrigger(small_patient.sites_path, output_uri=str(tmp_path / "out"))
    receiver = _receive(tmp_path / "spool", small_patient, trigger)
    last = _study(small_patient.nm_files[-1])
    try:
        delivered = receiver.completion.trigger(last)
        assert [e.event_id for e in delivered] == [f"{last}#1"]
        assert trigger.futures[f"{last}#1"].result(timeout=300) == OUTCOME_PROCESSED
        assert receiver.completion.trigger(last) == []  # already processed: no second event
    finally:
        receiver.stop()
        trigger.shutdown()
    record = Spool(tmp_path / "spool").timepoint(last)
    assert record.state is TimePointState.PROCESSED
    assert list((tmp_path / "out").rglob("*.parquet"))
    # A stale delivery of the same event is a no-op inside the flow as well.
    assert (
        timepoint_complete(tmp_path / "spool", small_patient.sites_path, last, 1) == OUTCOME_SKIPPED
    )


def test_deployment_trigger_creates_one_flow_run_per_event_even_if_delivered_twice(
    prefect_server: None, tmp_path: Path, small_patient: GeneratedPatient
) -> None:
    deployment = timepoint_complete.to_deployment(name="receiver-test")
    assert isinstance(deployment, RunnerDeployment)  # called synchronously
    deployment.apply()
    trigger = DeploymentTrigger("timepoint-complete/receiver-test", small_patient.sites_path)
    recorder = Recorder()
    receiver = _receive(tmp_path / "spool", small_patient, recorder, [small_patient.nm_files[0]])
    first = _study(small_patient.nm_files[0])
    try:
        receiver.completion.trigger(first)
    finally:
        receiver.stop()
    (event,) = recorder.events
    assert isinstance(event, TimePointEvent)
    trigger(event)
    trigger(event)  # re-delivered after a crash between delivery and its record
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    matching = [run for run in runs if run.idempotency_key == event.event_id]
    assert len(matching) == 1
    assert matching[0].parameters["study_uid"] == first
    assert matching[0].parameters["revision"] == 1
