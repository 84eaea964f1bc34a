"""Time-point completion: quiet period, busy associations, explicit trigger, exactly-once delivery
across restarts, late instances, durability when the disk is full. Time is a fake clock."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from concordose.spool.completion import CompletionMonitor
from concordose.spool.store import InstanceIdentity, Spool, TimePointNotFoundError
from concordose.spool.timepoints import InstanceSummary, TimePointState
from tests.fakes import T0, FakeClock, Recorder

NM = "1.2.840.10008.5.1.4.1.1.20"
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
INJECTION = datetime(2026, 11, 20, 9, 0)
QUIET_S = 60.0


def _store(spool: Spool, study: str, sop: str, clock: FakeClock, *, modality: str = "NM") -> None:
    identity = InstanceIdentity.checked(
        sop_class_uid=NM if modality == "NM" else CT,
        sop_instance_uid=sop,
        study_uid=study,
        series_uid=f"{study}.1",
        transfer_syntax=EXPLICIT_LE,
    )
    summary = InstanceSummary(
        patient_id="P1",
        modality=modality,
        acquisition_datetime=datetime(2026, 11, 21, 9, 0) if modality == "NM" else None,
        injection_datetime=INJECTION if modality == "NM" else None,
    )
    spool.store(identity, f"bytes of {sop}".encode(), "MILAN_SPECT", summary, now=clock())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_quiet_period_counts_from_the_release_of_the_last_association(
    tmp_path: Path, clock: FakeClock
) -> None:
    spool = Spool(tmp_path / "spool")
    hook = Recorder()
    monitor = CompletionMonitor(spool, quiet_period_s=QUIET_S, on_complete=hook, clock=clock)
    _store(spool, "1.1", "1.1.1", clock)
    _store(spool, "1.2", "1.2.1", clock)
    monitor.association_stored(1, "1.1")  # association 1 still open for study 1.1
    clock.advance(QUIET_S + 1)
    assert [e.timepoint.study_uid for e in monitor.poll()] == ["1.2"]
    assert spool.timepoint("1.1").state is TimePointState.RECEIVING  # busy: never completed

    monitor.association_closed(1)  # quiet period starts now, not at the last instance
    clock.advance(QUIET_S - 1)
    assert monitor.poll() == []
    clock.advance(2)
    delivered = monitor.poll()
    assert [e.event_id for e in delivered] == ["1.1#1"]
    assert monitor.poll() == []
    assert [e.event_id for e in hook.events] == ["1.2#1", "1.1#1"]


def test_explicit_trigger_completes_at_once(tmp_path: Path, clock: FakeClock) -> None:
    spool = Spool(tmp_path / "spool")
    hook = Recorder()
    monitor = CompletionMonitor(spool, quiet_period_s=QUIET_S, on_complete=hook, clock=clock)
    _store(spool, "1.1", "1.1.1", clock)
    delivered = monitor.trigger("1.1")
    assert [e.event_id for e in delivered] == ["1.1#1"]
    assert spool.timepoint("1.1").completion_reason == "explicit trigger"
    with pytest.raises(TimePointNotFoundError, match=r"no instance of study '9\.9'"):
        monitor.trigger("9.9")


def test_event_is_delivered_exactly_once_across_restarts(tmp_path: Path, clock: FakeClock) -> None:
    root = tmp_path / "spool"
    spool = Spool(root)
    _store(spool, "1.1", "1.1.1", clock)
    failing = Recorder(fail=True)
    first = CompletionMonitor(spool, quiet_period_s=QUIET_S, on_complete=failing, clock=clock)
    clock.advance(QUIET_S + 1)
    assert first.poll() == []  # completed, but the hook failed: the event stays pending
    assert spool.status().pending_events == 1

    # "Restart": a new Spool and monitor on the same folder deliver the pending event once.
    hook = Recorder()
    second = CompletionMonitor(Spool(root), quiet_period_s=QUIET_S, on_complete=hook, clock=clock)
    assert [e.event_id for e in second.poll()] == ["1.1#1"]
    third = CompletionMonitor(Spool(root), quiet_period_s=QUIET_S, on_complete=hook, clock=clock)
    assert third.poll() == []
    assert len(hook.events) == 1
    assert Spool(root).timepoint("1.1").notified_at == clock()


def test_completion_state_survives_a_crash_before_delivery(
    tmp_path: Path, clock: FakeClock
) -> None:
    root = tmp_path / "spool"
    spool = Spool(root)
    _store(spool, "1.1", "1.1.1", clock)
    # The process dies right after committing "complete" (no hook call happened).
    assert spool.mark_complete("1.1", "explicit trigger", clock())
    hook = Recorder()
    restarted = CompletionMonitor(
        Spool(root), quiet_period_s=QUIET_S, on_complete=hook, clock=clock
    )
    assert [e.event_id for e in restarted.poll()] == ["1.1#1"]


def test_late_instance_reopens_a_completed_time_point_as_a_new_revision(
    tmp_path: Path, clock: FakeClock
) -> None:
    spool = Spool(tmp_path / "spool")
    hook = Recorder()
    monitor = CompletionMonitor(spool, quiet_period_s=QUIET_S, on_complete=hook, clock=clock)
    _store(spool, "1.1", "1.1.1", clock)
    monitor.trigger("1.1")
    assert spool.mark_processed("1.1", 1, clock())
    _store(spool, "1.1", "1.1.1", clock)  # duplicate: idempotent, does not reopen
    assert spool.timepoint("1.1").state is TimePointState.PROCESSED
    _store(spool, "1.1", "1.1.2", clock, modality="CT")  # a genuinely new instance
    record = spool.timepoint("1.1")
    assert (record.state, record.revision, record.instance_count) == ("receiving", 2, 2)
    assert record.processed_at is None
    clock.advance(QUIET_S + 1)
    assert [e.event_id for e in monitor.poll()] == ["1.1#2"]
    assert not spool.mark_processed("1.1", 1, clock())  # a stale run cannot close revision 2


def test_time_point_is_placed_after_injection_from_its_emission_series(
    tmp_path: Path, clock: FakeClock
) -> None:
    spool = Spool(tmp_path / "spool")
    _store(spool, "1.1", "1.1.1", clock, modality="CT")
    _store(spool, "1.1", "1.1.2", clock, modality="NM")
    record = spool.timepoint("1.1")
    assert record.modalities == ("CT", "NM")
    assert record.patient_id == "P1"
    assert record.time_h == pytest.approx(24.0)


def test_status_counts_every_state_and_the_quarantine(tmp_path: Path, clock: FakeClock) -> None:
    spool = Spool(tmp_path / "spool")
    monitor = CompletionMonitor(spool, quiet_period_s=QUIET_S, on_complete=Recorder(), clock=clock)
    for study in ("1.1", "1.2", "1.3"):
        _store(spool, study, f"{study}.1", clock)
    monitor.trigger("1.1")
    monitor.trigger("1.2")
    spool.mark_processed("1.2", 1, clock())
    spool.quarantine(b"junk", "undecodable")
    status = spool.status()
    assert (status.instances, status.receiving, status.complete, status.processed) == (3, 1, 1, 1)
    assert (status.pending_events, status.quarantined) == (0, 1)


def test_disk_full_leaves_nothing_half_written_and_nothing_indexed(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path / "spool")

    def no_space(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)  # what the spool calls after writing
    with pytest.raises(OSError, match="No space left"):
        _store(spool, "1.1", "1.1.1", clock)
    monkeypatch.undo()
    assert spool.instances() == []
    assert spool.timepoints() == []
    assert list(spool.tmp_dir.iterdir()) == []
    assert [p for p in spool.instances_dir.rglob("*") if p.is_file()] == []
    _store(spool, "1.1", "1.1.1", clock)  # space again: the retry succeeds
    assert spool.status().instances == 1


def test_a_second_receiver_lock_is_refused_and_in_flight_writes_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    serving = Spool(root)
    serving.lock_for_receiver()
    in_flight = serving.tmp_dir / "in-flight.part"
    in_flight.write_bytes(b"being written")
    reader = Spool(root)  # e.g. a flow reading the spool while the receiver runs
    assert in_flight.exists()
    with pytest.raises(BlockingIOError):
        reader.lock_for_receiver()
    serving.unlock_receiver()
    Spool(root)  # no receiver any more: leftovers of a crash are dropped
    assert not in_flight.exists()


def test_quiet_period_holds_whatever_the_clock_time_zone(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    clock = FakeClock(T0.astimezone(timezone(timedelta(hours=2))))  # same instant, UTC+2
    monitor = CompletionMonitor(spool, quiet_period_s=QUIET_S, on_complete=Recorder(), clock=clock)
    _store(spool, "1.1", "1.1.1", clock)
    clock.advance(QUIET_S - 1)
    assert monitor.poll() == []
    clock.now = clock.now.astimezone(UTC) + timedelta(seconds=2)  # later, expressed in UTC
    assert [e.event_id for e in monitor.poll()] == ["1.1#1"]
