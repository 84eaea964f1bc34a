"""Observability (issue 19): JSON log lines valid and without PHI, the settings, the metrics'
names, the cycle-run outcomes, the completion lag, and multiprocess mode's summing."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest
from pydantic import SecretStr, ValidationError

from concordose.ingest.admission import UnassociatedConnections
from concordose.observability import (
    JsonLogFormatter,
    ReceiverStateCollector,
    RejectionReason,
    exposition_registry,
    record_cycle_run,
)
from concordose.settings import Settings
from concordose.spool.completion import CompletionMonitor
from concordose.spool.cycles import CycleState
from concordose.spool.store import InstanceIdentity, Spool
from concordose.spool.timepoints import InstanceSummary
from tests.fakes import FakeClock, Recorder

PATIENT_ID = "PHI-4711"
PATIENT_NAME = "DOE^JANE"
REQUIRED_FIELDS = {"timestamp", "level", "logger", "message", "process", "thread"}


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What the ``concordose`` loggers write, through the JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("concordose")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _store(spool: Spool, clock: FakeClock) -> None:
    identity = InstanceIdentity.checked(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.20",
        sop_instance_uid="1.1.1",
        study_uid="1.1",
        series_uid="1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1",
    )
    summary = InstanceSummary(PATIENT_ID, "NM", datetime(2026, 11, 21, 9), datetime(2026, 11, 20))
    spool.store(identity, b"bytes", "MILAN_SPECT", summary, now=clock())


def test_json_lines_carry_their_fields_and_never_a_patient(
    json_log: io.StringIO, tmp_path: Path
) -> None:
    clock = FakeClock()
    spool = Spool(tmp_path / "spool")
    _store(spool, clock)
    monitor = CompletionMonitor(
        spool,
        quiet_period_s=60,
        on_complete=Recorder(),
        clock=clock,
        pseudonym_key=SecretStr("consortium-key"),
    )
    clock.advance(61)
    assert len(monitor.poll()) == 1  # logs "time point complete: … patient <subject key> …"
    log = logging.getLogger("concordose.test")
    # Fields a library might attach: only the safe identifiers are emitted.
    log.warning(
        "cycle held",
        extra={"patient_name": PATIENT_NAME, "PatientID": PATIENT_ID, "cycle_id": "c1"},
    )
    log.info({"message": "a dict message", "patient_name": PATIENT_NAME})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")

    text = json_log.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 4
    for line in lines:
        assert set(line) >= REQUIRED_FIELDS
        datetime.fromisoformat(line["timestamp"])
    completion, held, dict_message, failed = lines
    assert completion["logger"] == "concordose.spool.completion"
    assert completion["level"] == "INFO"
    assert completion["message"].startswith("time point complete: 1.1#1 patient ")
    assert held["cycle_id"] == "c1"
    assert "patient_name" not in held
    assert "PatientID" not in held
    assert dict_message["message"] == "a dict message"
    assert "patient_name" not in dict_message
    assert "RuntimeError: boom" in failed["exc_info"]
    assert PATIENT_ID not in text
    assert PATIENT_NAME not in text


def test_settings_read_the_metrics_port_and_the_log_format(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().metrics_port is None  # no endpoint unless asked
    monkeypatch.setenv("CONCORDOSE_METRICS_PORT", "9464")
    monkeypatch.setenv("CONCORDOSE_LOG_FORMAT", "json")
    settings = Settings()
    assert settings.metrics_port == 9464
    assert settings.log_format == "json"
    monkeypatch.setenv("CONCORDOSE_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()


def test_every_metric_is_exported_under_its_name() -> None:
    text = generate_latest(exposition_registry()).decode()
    for name in (
        "concordose_receiver_instances_received_total",
        "concordose_receiver_bytes_received_total",
        "concordose_receiver_associations_total",
        "concordose_receiver_completion_lag_seconds_bucket",
        "concordose_cycle_processing_seconds_bucket",
    ):
        assert f"\n{name}" in text
    for reason in RejectionReason:
        assert f'concordose_receiver_rejections_total{{reason="{reason.value}"}}' in text
    for outcome in ("processed", "held", "failed"):
        assert f'concordose_cycles_total{{outcome="{outcome}"}}' in text


def test_a_cycle_run_counts_its_outcome_and_its_seconds() -> None:
    def held() -> float:
        return REGISTRY.get_sample_value("concordose_cycles_total", {"outcome": "held"}) or 0.0

    def seconds() -> float:
        return REGISTRY.get_sample_value("concordose_cycle_processing_seconds_sum") or 0.0

    held_before, seconds_before = held(), seconds()
    record_cycle_run(CycleState.HELD, 2.5)
    assert held() == held_before + 1
    assert seconds() == pytest.approx(seconds_before + 2.5)
    with pytest.raises(ValueError, match="must be one of processed, held, failed"):
        record_cycle_run(CycleState.RECEIVING, 1.0)


def test_multiprocess_mode_sums_the_counts_of_processes_that_have_exited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    record = (
        "from concordose.observability import record_cycle_run;"
        "from concordose.spool.cycles import CycleState;"
        "record_cycle_run(CycleState.{}, 3.0)"
    )
    for outcome in ("PROCESSED", "FAILED", "PROCESSED"):
        subprocess.run([sys.executable, "-c", record.format(outcome)], check=True)
    text = generate_latest(exposition_registry(metrics_dir=tmp_path)).decode()
    assert 'concordose_cycles_total{outcome="processed"} 2.0' in text
    assert 'concordose_cycles_total{outcome="failed"} 1.0' in text
    assert "concordose_cycle_processing_seconds_sum 9.0" in text


def test_a_connection_closed_to_admit_a_newer_one_counts_as_a_rejection() -> None:
    def evicted() -> float:
        value = REGISTRY.get_sample_value(
            "concordose_receiver_rejections_total", {"reason": "unassociated_limit"}
        )
        return value or 0.0

    before = evicted()
    waiting = UnassociatedConnections(limit=1)
    first, first_peer = socket.socketpair()
    second, second_peer = socket.socketpair()
    with first, first_peer, second, second_peer:
        waiting.enter("first", first, "peer-1")
        assert evicted() == before
        waiting.enter("second", second, "peer-2")  # over the limit: the first is shut down
        assert first_peer.recv(1) == b""  # its peer sees the close
        assert evicted() == before + 1
        assert len(waiting) == 1


class _Backlog:
    def journal_depth(self) -> int:
        return 7

    def unfiled_instance_count(self) -> int:
        return 9

    filed_before_acknowledgement = 4


class _Receiver:
    spool = _Backlog()
    active_associations = 2


def test_the_receivers_gauges_are_served_beside_the_summed_files(tmp_path: Path) -> None:
    """``receive --metrics-port`` in multiprocess mode: the files of every process plus the
    gauges read from the receiver when scraped."""
    text = generate_latest(
        exposition_registry([ReceiverStateCollector(_Receiver())], metrics_dir=tmp_path)
    ).decode()
    assert "concordose_receiver_journal_depth 7.0" in text
    assert "concordose_receiver_unfiled_instances 9.0" in text
    assert "concordose_receiver_filed_before_answer_total 4.0" in text
    assert "concordose_receiver_associations_open 2.0" in text
