"""Prometheus metrics scraped from a real receiver during and after a transfer, from
``concordose receive --metrics-port`` (with JSON logs), and a worker process's cycle outcome
counted through multiprocess mode and served by ``concordose metrics serve`` (issue 19)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import NuclearMedicineImageStorage  # type: ignore[attr-defined]

from concordose.cli.observability import start_receiver_metrics
from concordose.errors import ConcordoseError
from concordose.flows.triggers import WorkerProcessTrigger
from concordose.ingest.admission import AdmissionLimits
from concordose.ingest.receiver import STATUS_CANNOT_UNDERSTAND, StorageReceiver
from concordose.ingest.sender import send_files
from concordose.ingest.upper_layer import Association, IncomingDataSet, StoreRequest
from concordose.observability import MetricsServer
from concordose.phantoms import GeneratedPatient
from concordose.spool.cycles import CycleState
from concordose.spool.store import Spool
from concordose.spool.timepoints import TimePointEvent
from tests.fakes import FakeClock, Recorder
from tests.integration.peers import free_port, port_open, stop_process, storescu, wait_until

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

RECEIVED = "concordose_receiver_instances_received_total"
BYTES = "concordose_receiver_bytes_received_total"
ASSOCIATIONS = "concordose_receiver_associations_total"
REJECTIONS = "concordose_receiver_rejections_total"
OPEN = "concordose_receiver_associations_open"
JOURNAL = "concordose_receiver_journal_depth"
UNFILED = "concordose_receiver_unfiled_instances"
CYCLES = "concordose_cycles_total"
PROCESSING_COUNT = "concordose_cycle_processing_seconds_count"


def scrape(url: str) -> Samples:
    """Every sample of ``/metrics``, by name and labels (parsed by prometheus_client)."""
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def data_set_bytes(path: Path) -> int:
    """Bytes of a Part 10 file's data set: the file less preamble, prefix and file meta group
    (its group length element, 12 bytes, then the group length's bytes)."""
    meta = read_file_meta_info(path)
    return path.stat().st_size - (128 + 4 + 12 + int(meta.FileMetaInformationGroupLength))


@pytest.fixture
def receiver_with_metrics(
    tmp_path: Path, small_patient: GeneratedPatient, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[StorageReceiver, MetricsServer]]:
    monkeypatch.setenv("CONCORDOSE_METRICS_HOST", "127.0.0.1")
    receiver = StorageReceiver(
        Spool(tmp_path / "spool"),
        port=0,
        site_by_ae_title={small_patient.site.calling_ae_title: "milan"},
        clock=FakeClock(),
        on_complete=Recorder(),
    )
    server = start_receiver_metrics(receiver, 0)  # what `receive --metrics-port 0` starts
    assert server is not None
    receiver.start()
    try:
        yield receiver, server
    finally:
        receiver.stop()
        server.stop()


def test_counts_bytes_and_backlog_scraped_during_and_after_a_transfer(
    receiver_with_metrics: tuple[StorageReceiver, MetricsServer], small_patient: GeneratedPatient
) -> None:
    receiver, server = receiver_with_metrics
    files = list(small_patient.nm_files)
    assert len(files) >= 4
    before = scrape(server.url)  # the counters are this process's: compare differences
    # The filing thread waits (on an event, not a clock) until the scrape inside the transfer
    # is done, so what is journaled then is exactly the instances stored so far.
    scraped = threading.Event()
    real_file_journaled = receiver.spool.file_journaled

    def file_after_the_scrape() -> int:
        scraped.wait(timeout=60)
        return real_file_journaled()

    receiver.spool.file_journaled = file_after_the_scrape  # type: ignore[method-assign]
    during: list[Samples] = []
    real_begin_store = receiver.begin_store

    def begin_store(association: Association, request: StoreRequest) -> IncomingDataSet:
        """Called as each C-STORE request arrives: at the 4th, three instances were stored
        and answered, the association is open and the sender waits for this one's answer."""
        if receiver.stored_count == 3 and not during:
            during.append(scrape(server.url))
            scraped.set()
        return real_begin_store(association, request)

    receiver.begin_store = begin_store  # type: ignore[method-assign]
    report = send_files(
        files,
        host="127.0.0.1",
        port=receiver.port,
        called_ae_title="CONCORDOSE",
        calling_ae_title=small_patient.site.calling_ae_title,
    )
    assert report.sent == len(files)
    (inside,) = during
    assert value(inside, RECEIVED) - value(before, RECEIVED) == 3
    assert value(inside, ASSOCIATIONS) - value(before, ASSOCIATIONS) == 1
    assert value(inside, OPEN) == 1
    assert value(inside, JOURNAL) == 3  # journaled, the filing thread held back
    assert value(inside, UNFILED) == 3
    assert value(inside, BYTES) - value(before, BYTES) > 0

    # the receiver's side of the release (its thread) may end just after the sender's
    wait_until(lambda: receiver.active_associations == 0, timeout_s=30, what="the release")
    rows = receiver.spool.instances()  # files what is journaled (waits for the filing thread)
    after = scrape(server.url)
    assert value(after, RECEIVED) - value(before, RECEIVED) == len(files) == len(rows)
    assert value(after, BYTES) - value(before, BYTES) == sum(
        data_set_bytes(row.path) for row in rows
    )
    assert sum(data_set_bytes(row.path) for row in rows) == sum(map(data_set_bytes, files))
    assert value(after, OPEN) == 0
    assert value(after, JOURNAL) == 0
    assert value(after, UNFILED) == 0
    assert value(after, REJECTIONS, reason="calling_ae_title") == value(
        before, REJECTIONS, reason="calling_ae_title"
    )

    # completion lag: each time point (one per NM study) completes 5 s (fake clock) after
    # the quiet period that followed its last activity
    lag_s = receiver.completion.quiet_period_s + 5
    receiver.completion.clock.advance(lag_s)  # type: ignore[attr-defined]
    completed_now = len(receiver.completion.poll())
    assert completed_now == len({row.identity.study_uid for row in rows}) > 1
    completed = scrape(server.url)
    lag_count = "concordose_receiver_completion_lag_seconds_count"
    lag_sum = "concordose_receiver_completion_lag_seconds_sum"
    assert value(completed, lag_count) - value(after, lag_count) == completed_now
    assert value(completed, lag_sum) - value(after, lag_sum) == pytest.approx(completed_now * lag_s)


def test_rejections_are_counted_by_reason(
    receiver_with_metrics: tuple[StorageReceiver, MetricsServer], small_patient: GeneratedPatient
) -> None:
    receiver, server = receiver_with_metrics
    before = scrape(server.url)
    with pytest.raises(ConcordoseError, match="was not established"):
        send_files(
            small_patient.nm_files[:1],
            host="127.0.0.1",
            port=receiver.port,
            called_ae_title="CONCORDOSE",
            calling_ae_title="ROGUE",
        )
    # an instance without StudyInstanceUID: 0xC000, quarantined
    dataset = Dataset()
    dataset.SOPClassUID = NuclearMedicineImageStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ae = AE(ae_title=small_patient.site.calling_ae_title)
    ae.add_requested_context(NuclearMedicineImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="CONCORDOSE")
    assert assoc.is_established
    assert assoc.send_c_store(dataset).Status == STATUS_CANNOT_UNDERSTAND
    # one association open per site at most: a second one while it is open is rejected
    receiver.admission = AdmissionLimits(max_associations_per_site=1)
    assert not ae.associate("127.0.0.1", receiver.port, ae_title="CONCORDOSE").is_established
    assoc.release()

    after = scrape(server.url)

    def delta(reason: str) -> float:
        return value(after, REJECTIONS, reason=reason) - value(before, REJECTIONS, reason=reason)

    assert delta("calling_ae_title") == 1
    assert delta("cannot_understand") == 1
    assert delta("site_association_limit") == 1
    assert delta("called_ae_title") == 0
    assert value(after, RECEIVED) == value(before, RECEIVED)
    assert value(after, ASSOCIATIONS) - value(before, ASSOCIATIONS) == 1


def _concordose(*arguments: str) -> list[str]:
    """This checkout's CLI (``python -m concordose``; the cwd is the checkout)."""
    return [sys.executable, "-m", "concordose", *arguments]


def _logged_port(log_path: Path) -> int | None:
    match = re.search(r"/metrics \(port (\d+)\)", log_path.read_text())
    return int(match.group(1)) if match else None


def test_receive_serves_metrics_on_a_free_port_and_logs_json_lines_without_phi(
    tmp_path: Path, small_patient: GeneratedPatient
) -> None:
    port = free_port()
    log_path = tmp_path / "receive.log"
    env = {**os.environ, "CONCORDOSE_METRICS_HOST": "127.0.0.1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            _concordose(
                "--log-format",
                "json",
                "receive",
                *("--port", str(port), "--host", "127.0.0.1"),
                *("--spool", str(tmp_path / "spool"), "--sites", str(small_patient.sites_path)),
                *("--quiet-period-s", "0.5", "--metrics-port", "0"),
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            wait_until(lambda: port_open(port), timeout_s=60, what="concordose receive")
            metrics_port = _logged_port(log_path)
            assert metrics_port is not None, log_path.read_text()
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            site_ae = small_patient.site.calling_ae_title
            files = small_patient.nm_files[:2]
            assert storescu(port, site_ae, files).returncode == 0
            assert storescu(port, "ROGUE", files[:1]).returncode != 0
            studies = {
                str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
                for path in files
            }
            wait_until(
                lambda: log_path.read_text().count("time point complete") == len(studies),
                timeout_s=30,
                what="the completion log lines",
            )
            samples = scrape(url)
        finally:
            assert stop_process(process) == 0
    assert value(samples, RECEIVED) == 2
    assert value(samples, BYTES) == sum(map(data_set_bytes, files))
    assert value(samples, ASSOCIATIONS) == 1
    assert value(samples, REJECTIONS, reason="calling_ae_title") == 1
    assert value(samples, "concordose_receiver_completion_lag_seconds_count") == len(studies)
    assert (JOURNAL, ()) in samples
    assert (UNFILED, ()) in samples
    assert value(samples, "concordose_receiver_filed_before_answer_total") == 0  # journal room
    assert value(samples, CYCLES, outcome="processed") == 0

    text = log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert len(lines) >= 4
    for line in lines:
        assert {"timestamp", "level", "logger", "message", "process", "thread"} <= set(line)
    messages = [line["message"] for line in lines]
    assert any("time point complete" in message for message in messages)
    assert any("association from ROGUE" in message for message in messages)
    patient_id = str(pydicom.dcmread(files[0], stop_before_pixels=True).PatientID)
    assert patient_id not in text


def test_a_worker_process_cycle_outcome_is_served_by_metrics_serve(
    prefect_server: None,
    tmp_path: Path,
    small_patient: GeneratedPatient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    # Set for the worker this test starts (the receiver's children inherit it the same way).
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-secret")
    spool_root = tmp_path / "spool"
    files = [path for path in small_patient.dicom_files if path != small_patient.seg_path]
    receiver = StorageReceiver(
        Spool(spool_root),
        port=0,
        site_by_ae_title={small_patient.site.calling_ae_title: "milan"},
        clock=FakeClock(),
    )
    with receiver:
        report = send_files(
            files,
            host="127.0.0.1",
            port=receiver.port,
            called_ae_title="CONCORDOSE",
            calling_ae_title=small_patient.site.calling_ae_title,
        )
        assert report.refused == []
        receiver.spool.file_journaled()  # acknowledged ⇒ journaled: filed before completing
        studies = {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in files}
        for study in sorted(studies):
            receiver.completion.trigger(study)
    # `concordose process-cycle` in a child process: no SEG, so the cycle is held.
    worker = WorkerProcessTrigger(small_patient.sites_path, output_uri=str(tmp_path / "out"))
    record = Spool(spool_root).timepoint(sorted(studies)[-1])
    worker(TimePointEvent(record.event_id, str(spool_root), record))
    (future,) = worker.futures.values()
    assert future.result(timeout=300) == 1  # held
    worker.shutdown()
    (cycle,) = Spool(spool_root).cycles()
    assert cycle.state is CycleState.HELD

    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            _concordose("metrics", "serve", "--metrics-port", "0", "--host", "127.0.0.1"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: _logged_port(log_path) is not None,
                timeout_s=60,
                what="the metrics serve log line",
            )
            samples = scrape(f"http://127.0.0.1:{_logged_port(log_path)}/metrics")
        finally:
            assert stop_process(process) == 0
    assert value(samples, CYCLES, outcome="held") == 1
    assert value(samples, CYCLES, outcome="processed") == 0
    assert value(samples, CYCLES, outcome="failed") == 0
    assert value(samples, PROCESSING_COUNT) == 1
    assert str(metrics_dir) in log_path.read_text()
