"""The cycle as the unit of work: one ``process-cycle`` run per changed cycle, isolation of held and
failing cycles, recovery by the sweep, idempotency scoped to the spool (real Prefect server,
real associations)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pydicom
import pytest
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.deployments.runner import RunnerDeployment
from pydantic import SecretStr

import concordose.flows.process_cycle as process_cycle_module
import concordose.tasks.report as report_tasks
import concordose.tasks.study as study_tasks
from concordose.dicom.pseudonym import cycle_key
from concordose.flows.process_cycle import OUTCOME_PROCESSED, OUTCOME_SKIPPED, process_cycle
from concordose.flows.sweep import process_spool, sweep
from concordose.flows.triggers import (
    DeploymentTrigger,
    InProcessFlowTrigger,
    WorkerProcessTrigger,
    idempotency_key,
)
from concordose.ingest.receiver import StorageReceiver
from concordose.kinetics.models import KineticsBatch
from concordose.phantoms import GeneratedPatient, generate_patient
from concordose.phantoms.virtual_patient import INJECTED_ACTIVITY_MBQ
from concordose.pipeline.quantify import CycleTimeActivity
from concordose.report import build_cycle_report
from concordose.results.catalogue import read_current
from concordose.results.object_store import ObjectStore, open_object_store
from concordose.settings import Settings
from concordose.spool.cycles import CycleState
from concordose.spool.store import Spool
from concordose.spool.timepoints import InstanceSummary, TimePointEvent, TimePointState
from tests.fakes import Recorder
from tests.integration.received import receive_patient, send_more

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def other_patient(tmp_path_factory: pytest.TempPathFactory) -> GeneratedPatient:
    """A second patient at the same site (another PatientID)."""
    return generate_patient(tmp_path_factory.mktemp("other-patient"), seed=12, preset="test")


@pytest.fixture(autouse=True)
def _pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-secret")


def _studies(paths: list[Path] | tuple[Path, ...]) -> list[str]:
    seen: dict[str, None] = {}
    for path in paths:
        seen[str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)] = None
    return list(seen)


def _complete_all(receiver: StorageReceiver, studies: list[str]) -> list[TimePointEvent]:
    delivered: list[TimePointEvent] = []
    for uid in studies:
        delivered.extend(receiver.completion.trigger(uid))
    return delivered


def _without_seg(patient: GeneratedPatient) -> list[Path]:
    return [path for path in patient.dicom_files if path != patient.seg_path]


def test_in_process_trigger_runs_one_cycle_once_when_its_last_time_point_completes(
    prefect_server: None, tmp_path: Path, small_patient: GeneratedPatient
) -> None:
    trigger = InProcessFlowTrigger(small_patient.sites_path, output_uri=str(tmp_path / "out"))
    receiver = receive_patient(tmp_path / "spool", small_patient, trigger)
    studies = _studies(small_patient.dicom_files)
    try:
        delivered = _complete_all(receiver, studies)
        assert len(delivered) == len(studies)
        # Only the last completion makes the cycle complete: exactly one run.
        (future,) = trigger.futures.values()
        result = future.result(timeout=300)
        assert result.outcome == OUTCOME_PROCESSED
        for uid in studies:  # already processed: no second event
            assert receiver.completion.trigger(uid) == []
    finally:
        receiver.stop()
        trigger.shutdown()
    spool = Spool(tmp_path / "spool")
    (cycle,) = spool.cycles()
    assert cycle.state is CycleState.PROCESSED
    assert cycle.outcome is not None
    assert result.published is not None
    assert cycle.outcome.run_id == result.published.run_id
    assert all(spool.timepoint(uid).state is TimePointState.PROCESSED for uid in studies)
    # A stale run for content the cycle no longer has does nothing.
    stale = process_cycle(
        tmp_path / "spool", small_patient.sites_path, cycle.cycle_id, content_revision="old"
    )
    assert stale.outcome == OUTCOME_SKIPPED


def _whole_spool_listing(_spool: Spool) -> list[Any]:
    raise AssertionError("a cycle run listed every instance of the spool instead of its own")


def test_a_held_cycle_publishes_its_findings_and_never_blocks_another(
    prefect_server: None,
    tmp_path: Path,
    small_patient: GeneratedPatient,
    other_patient: GeneratedPatient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert small_patient.patient_id != other_patient.patient_id
    spool_root, out = tmp_path / "spool", tmp_path / "out"
    for patient, files in (
        (small_patient, list(small_patient.dicom_files)),
        (other_patient, _without_seg(other_patient)),  # VOIs never arrive
    ):
        receiver = receive_patient(spool_root, patient, Recorder(), files)
        _complete_all(receiver, _studies(files))
        receiver.stop()
    # Each cycle reads only its own instances from the index, so its cost does not grow with
    # the spool (benchmarks/bench_cycle_scaling.py): listing the whole spool fails its run.
    monkeypatch.setattr(Spool, "instances", _whole_spool_listing)
    built: list[str] = []

    def counted_build(store: ObjectStore, cycle_key: str) -> str:
        built.append(cycle_key)
        return build_cycle_report(store, cycle_key)

    monkeypatch.setattr(report_tasks, "build_cycle_report", counted_build)

    result = process_spool(spool_root, small_patient.sites_path, output_uri=str(out))
    assert result.failed == {}
    assert [run.outcome for run in result.runs].count(OUTCOME_PROCESSED) == 1
    # each published cycle's report (processed or held) is built once, after the sweep's
    # cohort tables, with the image products its run published
    assert sorted(built) == sorted(str(run.cycle_key) for run in result.runs)
    assert all(run.report_path is not None for run in result.runs)
    (processed,) = [run for run in result.runs if run.outcome == OUTCOME_PROCESSED]
    assert processed.report_error is None
    assert "Images are not available" not in Path(str(processed.report_path)).read_text()
    (held,) = result.held
    assert held.reason is not None
    assert "no segmentation (DICOM SEG) with VOIs" in held.reason

    states = {record.cycle_id: record for record in Spool(spool_root).cycles()}
    assert states[held.cycle_id].state is CycleState.HELD
    assert states[held.cycle_id].reason == held.reason
    store = open_object_store(str(out), Settings())
    findings = read_current(store, "qc_findings").to_pylist()
    held_rows = [row for row in findings if row["check_name"] == "cycle_assembly"]
    assert len(held_rows) == 1
    assert held_rows[0]["severity"] == "error"
    assert held_rows[0]["site_id"] == "milan"  # from the calling AE title
    assert read_current(store, "absorbed_dose").num_rows > 0  # the valid patient published

    # The missing SEG arrives: the sweep sees new content and processes the held cycle.
    receiver = receive_patient(spool_root, other_patient, Recorder(), [other_patient.seg_path])
    _complete_all(receiver, _studies([other_patient.seg_path]))
    receiver.stop()
    built.clear()
    again = sweep(spool_root, small_patient.sites_path, output_uri=str(out))
    assert [run.cycle_id for run in again.processed] == [held.cycle_id]
    assert built == [run.cycle_key for run in again.processed]
    assert {r.state for r in Spool(spool_root).cycles()} == {CycleState.PROCESSED}
    assert sweep(spool_root, small_patient.sites_path, output_uri=str(out)).runs == ()


def _injection(patient: GeneratedPatient) -> datetime:
    """The injection date-time its NM headers carry."""
    summary = InstanceSummary.from_dataset(pydicom.dcmread(patient.nm_files[0]))
    assert summary.injection_datetime is not None
    return summary.injection_datetime


def test_a_patients_two_cycles_publish_their_numbers_by_injection(
    prefect_server: None,
    tmp_path: Path,
    small_patient: GeneratedPatient,
    other_patient: GeneratedPatient,
) -> None:
    # other_patient's files under small_patient's PatientID: a second cycle of one patient
    # (another injection date), in a plain folder (CycleSource's folder rule).
    folder = tmp_path / "dicom"
    for index, path in enumerate(small_patient.dicom_files):
        (folder / "a").mkdir(parents=True, exist_ok=True)
        (folder / "a" / f"{index:04d}.dcm").write_bytes(path.read_bytes())
    for index, path in enumerate(other_patient.dicom_files):
        dataset = pydicom.dcmread(path)
        dataset.PatientID = small_patient.patient_id
        (folder / "b").mkdir(parents=True, exist_ok=True)
        dataset.save_as(folder / "b" / f"{index:04d}.dcm")
    first, second = sorted([_injection(small_patient), _injection(other_patient)])
    assert first < second
    out = tmp_path / "out"
    result = process_spool(
        folder,
        small_patient.sites_path,
        output_uri=str(out),
        site_id="milan",
        kinetics_methods=("mono_exponential",),
        dose_methods=("sphere",),
        voxel_dosimetry=False,
    )
    assert [run.outcome for run in result.runs] == [OUTCOME_PROCESSED] * 2
    rows = read_current(open_object_store(str(out), Settings()), "patient_summary").to_pylist()
    key = SecretStr("test-secret")
    expected = {
        cycle_key(small_patient.patient_id, first.isoformat(), key): 1,
        cycle_key(small_patient.patient_id, second.isoformat(), key): 2,
    }
    assert {row["cycle_key"]: row["cycle_number"] for row in rows} == expected
    assert len({row["subject_key"] for row in rows}) == 1


def _failing_once(calls: list[float | None]) -> Callable[..., Any]:
    """The kinetics task, failing its first call; each call's injected activity recorded."""
    real = study_tasks.kinetics_task

    @task(name="kinetics", cache_policy=NO_CACHE)
    def kinetics(
        tac: CycleTimeActivity, methods: list[str], injected_activity_mbq: float | None = None
    ) -> list[KineticsBatch]:
        calls.append(injected_activity_mbq)
        if len(calls) == 1:
            raise RuntimeError("injected fault in kinetics")
        return real.fn(tac, methods, injected_activity_mbq)

    return kinetics


def test_the_sweep_completes_a_cycle_whose_first_run_failed(
    prefect_server: None,
    tmp_path: Path,
    small_patient: GeneratedPatient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spool_root, out = tmp_path / "spool", tmp_path / "out"
    receiver = receive_patient(spool_root, small_patient, Recorder())
    _complete_all(receiver, _studies(small_patient.dicom_files))
    receiver.stop()
    calls: list[float | None] = []
    monkeypatch.setattr(process_cycle_module, "kinetics_task", _failing_once(calls))

    first = sweep(spool_root, small_patient.sites_path, output_uri=str(out))
    ((cycle_id, reason),) = first.failed.items()
    assert "injected fault in kinetics" in reason
    record = Spool(spool_root).cycle(cycle_id)
    assert record.state is CycleState.FAILED
    assert record.reason is not None
    assert "injected fault" in record.reason
    assert not list(out.rglob("_manifests/*.json"))  # nothing half-published

    second = sweep(spool_root, small_patient.sites_path, output_uri=str(out))
    assert [run.cycle_id for run in second.processed] == [cycle_id]
    assert Spool(spool_root).cycle(cycle_id).state is CycleState.PROCESSED
    assert len(calls) == 2
    # Fits are checked against the cycle's injected activity as the gate read it (MBq).
    assert calls == [INJECTED_ACTIVITY_MBQ, INJECTED_ACTIVITY_MBQ]
    tables: dict[str, pa.Table] = second.tables
    assert tables["absorbed_dose"].num_rows > 0


def test_deployment_runs_are_keyed_by_spool_cycle_and_content(
    prefect_server: None, tmp_path: Path, small_patient: GeneratedPatient
) -> None:
    deployment = process_cycle.to_deployment(name="receiver-test")
    assert isinstance(deployment, RunnerDeployment)  # called synchronously
    deployment.apply()
    trigger = DeploymentTrigger("process-cycle/receiver-test", small_patient.sites_path)
    nm_first = small_patient.nm_files[0]
    events: dict[str, TimePointEvent] = {}
    for name in ("spool-a", "spool-b"):  # the same study received into two spools
        recorder = Recorder()
        receiver = receive_patient(tmp_path / name, small_patient, recorder, [nm_first])
        _complete_all(receiver, _studies([nm_first]))
        receiver.stop()
        (events[name],) = recorder.events
    trigger(events["spool-a"])
    trigger(events["spool-a"])  # re-delivered after a crash between delivery and its record
    trigger(events["spool-b"])

    # New instances reopen the study: new content revision, new event, new run.
    ct_first = next(p for p in small_patient.dicom_files if p.parent.name == "ct")
    recorder = Recorder()
    receiver = receive_patient(tmp_path / "spool-a", small_patient, recorder, [ct_first])
    _complete_all(receiver, _studies([nm_first]))
    receiver.stop()
    (reopened,) = recorder.events
    assert reopened.timepoint.revision == 2
    trigger(reopened)

    keys = []
    for name in ("spool-a", "spool-b"):
        spool = Spool(tmp_path / name)
        (record,) = spool.cycles()
        keys.append(idempotency_key(spool.spool_id, record))
    with get_client(sync_client=True) as client:
        # this deployment's runs only (one page of read_flow_runs may not hold the session's all)
        deployment_runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["receiver-test"]))
        )
    runs = [r for r in deployment_runs if r.idempotency_key]
    by_key: dict[str, int] = {}
    for run in runs:
        by_key[run.idempotency_key or ""] = by_key.get(run.idempotency_key or "", 0) + 1
    assert by_key[keys[0]] == 1  # spool-a at revision 2
    assert by_key[keys[1]] == 1  # spool-b: same study, its own run
    spool_a = Spool(tmp_path / "spool-a").spool_id
    assert sum(key.startswith(spool_a) for key in by_key) == 2  # revision 1 and revision 2
    assert all(count == 1 for count in by_key.values())
    assert keys[0] != keys[1]
    run_a = next(r for r in runs if r.idempotency_key == keys[0])
    assert set(run_a.parameters) >= {"source", "cycle_id", "content_revision"}
    assert small_patient.patient_id not in str(run_a.parameters)


def test_run_flows_processes_in_a_worker_process_and_survives_its_death(
    prefect_server: None, tmp_path: Path, small_patient: GeneratedPatient
) -> None:
    out = tmp_path / "out"
    # A worker killed by the kernel (as for memory) fails its cycle, not the receiver.
    killer = WorkerProcessTrigger(
        small_patient.sites_path,
        output_uri=str(out),
        command=(sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
    )
    receiver = receive_patient(tmp_path / "spool", small_patient, killer)
    studies = _studies(small_patient.dicom_files)
    try:
        _complete_all(receiver, studies)
        (future,) = killer.futures.values()
        assert future.result(timeout=120) == -signal.SIGKILL
        (cycle,) = receiver.spool.cycles()
        assert cycle.state is CycleState.FAILED
        assert cycle.reason is not None
        assert "killed by signal 9 (SIGKILL: out of memory?)" in cycle.reason
        # The receiver still accepts: another association stores an instance.
        send_more(receiver, small_patient, [small_patient.nm_files[0]])
    finally:
        receiver.stop()
        killer.shutdown()

    # The real worker: `concordose process-cycle` in a child process publishes the cycle.
    worker = WorkerProcessTrigger(small_patient.sites_path, output_uri=str(out))
    record = Spool(tmp_path / "spool").timepoint(studies[-1])  # its event, delivered again
    worker(TimePointEvent(record.event_id, str(tmp_path / "spool"), record))
    (future,) = worker.futures.values()
    assert future.result(timeout=300) == 0
    worker.shutdown()
    (cycle,) = Spool(tmp_path / "spool").cycles()
    assert cycle.state is CycleState.PROCESSED
    assert cycle.outcome is not None
    assert list((out / "_manifests").glob(f"{cycle.outcome.run_id}.json"))


def test_a_cycle_over_the_memory_budget_is_held_with_its_sizes_while_the_receiver_accepts(
    prefect_server: None,
    tmp_path: Path,
    small_patient: GeneratedPatient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONCORDOSE_MEMORY_BUDGET_GB", "0.05")
    out = tmp_path / "out"
    trigger = InProcessFlowTrigger(small_patient.sites_path, output_uri=str(out))
    receiver = receive_patient(tmp_path / "spool", small_patient, trigger)
    try:
        _complete_all(receiver, _studies(small_patient.dicom_files))
        (future,) = trigger.futures.values()
        result = future.result(timeout=300)
        assert result.outcome == "held"
        assert result.reason is not None
        assert "exceeds the worker's memory budget 0.1 GB" in result.reason
        assert "estimated working set" in result.reason
        assert "CT " in result.reason
        send_more(receiver, small_patient, [small_patient.seg_path])  # the receiver still accepts
    finally:
        receiver.stop()
        trigger.shutdown()
    (cycle,) = Spool(tmp_path / "spool").cycles()
    assert cycle.state is CycleState.HELD
    store = open_object_store(str(out), Settings())
    (finding,) = read_current(store, "qc_findings").to_pylist()
    assert finding["check_name"] == "memory_budget"
