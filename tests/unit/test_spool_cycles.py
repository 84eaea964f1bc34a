"""Treatment cycles in the spool: the one grouping rule, identity, content revision, state, and
the receiver's delivery backoff."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from concordose.spool.completion import CompletionMonitor
from concordose.spool.cycles import (
    CycleState,
    StudyMembership,
    content_revision_of,
    cycle_number,
    cycle_number_among,
    due_for_processing,
    group_cycles,
    is_pretherapy_study,
    pretherapy_studies,
)
from concordose.spool.store import InstanceIdentity, Spool
from concordose.spool.timepoints import InstanceSummary, TimePointEvent, TimePointState
from tests.fakes import FakeClock, Recorder

NM = "1.2.840.10008.5.1.4.1.1.20"
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
INJECTION = datetime(2026, 11, 20, 9, 0)
SECOND = INJECTION + timedelta(weeks=6)


def _store(
    spool: Spool,
    study: str,
    sop: str,
    clock: FakeClock,
    *,
    patient: str = "P1",
    injection: datetime | None = INJECTION,
    hours: float = 4.0,
) -> None:
    modality = "NM" if injection is not None else "CT"
    identity = InstanceIdentity.checked(
        sop_class_uid=NM if injection is not None else CT,
        sop_instance_uid=sop,
        study_uid=study,
        series_uid=f"{study}.9",
        transfer_syntax=EXPLICIT_LE,
    )
    acquired = (injection or INJECTION) + timedelta(hours=hours)
    summary = InstanceSummary(patient, modality, acquired, injection)
    spool.store(identity, f"bytes of {sop}".encode(), "MILAN_SPECT", summary, now=clock())


def _complete(spool: Spool, clock: FakeClock, *studies: str) -> None:
    for study in studies:
        spool.mark_complete(study, "test", clock())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def test_time_points_group_into_cycles_by_patient_and_injection(
    spool: Spool, clock: FakeClock
) -> None:
    for study, injection, hours in (("2.2", SECOND, 24), ("1.2", INJECTION, 96)):
        _store(spool, study, f"{study}.1", clock, injection=injection, hours=hours)
    for study, injection in (("1.1", INJECTION), ("2.1", SECOND)):
        _store(spool, study, f"{study}.1", clock, injection=injection)
    _store(spool, "3.1", "3.1.1", clock, injection=None)  # a CT-only visit of P1
    _store(spool, "9.1", "9.1.1", clock, patient="P9")  # another patient
    cycles = spool.cycles()
    # Ordered by injection (cycles injected at the same time in id order).
    assert [c.members.injection_datetime for c in cycles] == [INJECTION, INJECTION, SECOND]
    by_key = {(c.members.patient_id, c.members.injection_datetime): c for c in cycles}
    assert set(by_key) == {("P1", INJECTION), ("P9", INJECTION), ("P1", SECOND)}
    first, other, second = by_key["P1", INJECTION], by_key["P9", INJECTION], by_key["P1", SECOND]
    assert first.members.study_uids == ("1.1", "1.2")
    assert second.members.study_uids == ("2.1", "2.2")
    # The visit without injection data is offered to every cycle of its patient, and only its.
    assert first.members.shared_study_uids == second.members.shared_study_uids == ("3.1",)
    assert other.members.shared_study_uids == ()
    assert [c.cycle_id for c in spool.cycles_of_study("3.1")] == [first.cycle_id, second.cycle_id]
    assert [c.cycle_id for c in spool.cycles_of_study("2.2")] == [second.cycle_id]
    assert {i.identity.study_uid for i in spool.cycle_instances(first.members)} == {
        "1.1",
        "1.2",
        "3.1",
    }
    assert len({c.cycle_id for c in cycles}) == 3


THIRD = SECOND + timedelta(weeks=6)

# Two patients; P1's three cycles arrive out of order (third, first, second) with a CT-only
# visit of P1 (no injection: shared by its cycles), and P9's one cycle lies between P1's.
NUMBERING_STUDIES = (
    ("3.1", "P1", THIRD),
    ("1.1", "P1", INJECTION),
    ("1.2", "P1", INJECTION),
    ("2.1", "P1", SECOND),
    ("0.1", "P1", None),
    ("9.1", "P9", SECOND - timedelta(days=1)),
)


def test_the_cycle_number_is_the_rank_by_injection_among_the_patients_cycles() -> None:
    studies = [
        StudyMembership(uid, patient, injection) for uid, patient, injection in NUMBERING_STUDIES
    ]
    cycles = group_cycles(studies, "folder:/x")
    numbers = {(c.patient_id, c.injection_datetime): cycle_number_among(c, cycles) for c in cycles}
    # Neither the arrival order, the shared CT-only visit nor the other patient counts.
    assert numbers == {
        ("P1", INJECTION): 1,
        ("P1", SECOND): 2,
        ("P1", THIRD): 3,
        ("P9", SECOND - timedelta(days=1)): 1,
    }
    # Repeated injections (several time points of one cycle) count once.
    assert cycle_number(THIRD, [INJECTION, INJECTION, SECOND, THIRD, THIRD]) == 3
    assert cycle_number(INJECTION, []) == 1
    anonymous = group_cycles([StudyMembership("5.1", None, INJECTION)], "folder:/x")
    assert cycle_number_among(anonymous[0], anonymous) is None


def test_the_spools_one_patient_query_numbers_cycles_as_the_folder_rule(
    spool: Spool, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for uid, patient, injection in NUMBERING_STUDIES:
        _store(spool, uid, f"{uid}.1", clock, patient=patient, injection=injection)
    cycles = [record.members for record in spool.cycles()]
    assert len(cycles) == 4
    # One query over the patient's time points: neither the spool's cycles nor its instances.
    monkeypatch.setattr(Spool, "cycles", _listing_forbidden)
    monkeypatch.setattr(Spool, "timepoints", _listing_forbidden)
    monkeypatch.setattr(Spool, "instances", _listing_forbidden)
    assert {m.cycle_id: spool.cycle_number(m) for m in cycles} == {
        m.cycle_id: cycle_number_among(m, cycles) for m in cycles
    }
    p1 = [m for m in cycles if m.patient_id == "P1"]
    assert sorted(m.injection_datetime for m in p1) == [INJECTION, SECOND, THIRD]
    assert [spool.cycle_number(m) for m in sorted(p1, key=lambda m: m.injection_datetime)] == [
        1,
        2,
        3,
    ]


def _listing_forbidden(_spool: Spool) -> list[object]:
    raise AssertionError("the cycle number listed the whole spool")


def test_cycle_ids_are_stable_in_a_spool_differ_between_spools_and_hold_no_identifier(
    tmp_path: Path, clock: FakeClock
) -> None:
    ids = []
    for name in ("a", "b"):
        spool = Spool(tmp_path / name)
        _store(spool, "1.1", "1.1.1", clock)
        ids.append(spool.cycles()[0].cycle_id)
        reopened = Spool(tmp_path / name)
        assert reopened.spool_id == spool.spool_id
        assert reopened.cycles()[0].cycle_id == ids[-1]
    assert ids[0] != ids[1]
    assert all("P1" not in cycle_id for cycle_id in ids)


def test_content_revision_changes_with_members_and_revisions_only() -> None:
    one = StudyMembership("1.1", "P1", INJECTION, revision=1)
    two = StudyMembership("1.2", "P1", INJECTION, revision=1)
    assert content_revision_of([one, two]) == content_revision_of([two, one])
    assert content_revision_of([one]) != content_revision_of([one, two])
    reopened = StudyMembership("1.1", "P1", INJECTION, revision=2)
    assert content_revision_of([reopened, two]) != content_revision_of([one, two])
    (cycle,) = group_cycles([one, two], "ns")
    assert cycle.content_revision == content_revision_of([one, two])


def test_cycle_states_follow_time_points_and_recorded_outcomes(
    spool: Spool, clock: FakeClock
) -> None:
    _store(spool, "1.1", "1.1.1", clock)
    _store(spool, "1.2", "1.2.1", clock, hours=24)
    (cycle,) = spool.cycles()
    assert cycle.state is CycleState.RECEIVING
    _complete(spool, clock, "1.1")
    assert spool.cycles()[0].state is CycleState.RECEIVING  # 1.2 still receiving
    _complete(spool, clock, "1.2")
    (cycle,) = spool.cycles()
    assert cycle.state is CycleState.READY
    assert due_for_processing(cycle)

    spool.record_cycle_outcome(cycle.members, CycleState.HELD, clock(), reason="no SEG")
    (held,) = spool.cycles()
    assert (held.state, held.reason) == (CycleState.HELD, "no SEG")
    assert not due_for_processing(held)
    assert spool.status().cycles == {"held": 1}

    spool.record_cycle_outcome(cycle.members, CycleState.FAILED, clock(), reason="boom")
    (failed,) = spool.cycles()
    assert failed.state is CycleState.FAILED
    assert due_for_processing(failed)

    spool.record_cycle_outcome(cycle.members, CycleState.PROCESSED, clock(), run_id="run-1")
    (done,) = spool.cycles()
    assert done.state is CycleState.PROCESSED
    assert done.reason is None
    assert done.outcome is not None
    assert (done.outcome.run_id, done.outcome.attempts) == ("run-1", 3)
    assert spool.timepoint("1.1").state is TimePointState.PROCESSED
    assert spool.timepoint("1.2").state is TimePointState.PROCESSED

    # Late instances reopen a time point: new content, the cycle is receiving then ready again.
    _store(spool, "1.2", "1.2.2", clock, hours=24)
    assert spool.cycles()[0].state is CycleState.RECEIVING
    _complete(spool, clock, "1.2")
    (changed,) = spool.cycles()
    assert changed.state is CycleState.READY
    assert changed.members.content_revision != cycle.members.content_revision

    with pytest.raises(ValueError, match="outcome state"):
        spool.record_cycle_outcome(cycle.members, CycleState.READY, clock())


class FailingThenDelivering(Recorder):
    """Fails its first ``failures`` deliveries, then records."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def __call__(self, event: TimePointEvent) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("Prefect API unreachable\n  (a long traceback would follow)")
        super().__call__(event)


def test_delivery_backs_off_exponentially_with_one_line_per_attempt(
    spool: Spool, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    hook = FailingThenDelivering(failures=4)
    monitor = CompletionMonitor(
        spool,
        quiet_period_s=0,
        on_complete=hook,
        clock=clock,
        delivery_backoff_s=2.0,
        delivery_backoff_max_s=10.0,
    )
    waits: list[float] = []
    monitor._backoff_sleep = waits.append  # type: ignore[method-assign,assignment]
    _store(spool, "1.1", "1.1.1", clock)
    with caplog.at_level(logging.WARNING, logger="concordose.spool.completion"):
        monitor.deliver_with_backoff()
    assert waits == [2.0, 4.0, 8.0, 10.0]  # doubled, capped
    assert hook.event_ids == ["1.1#1"]
    assert spool.status().pending_events == 0
    failures = [r for r in caplog.records if "delivery attempt" in r.getMessage()]
    assert [r.getMessage().split(" failed")[0] for r in failures] == [
        f"time point 1.1#1: delivery attempt {n}" for n in (1, 2, 3, 4)
    ]
    assert all(r.exc_info is None for r in caplog.records)  # no traceback
    assert all("\n" not in r.getMessage() for r in caplog.records)  # one line each


def test_delivery_backoff_stops_when_the_receiver_stops(spool: Spool, clock: FakeClock) -> None:
    monitor = CompletionMonitor(
        spool, quiet_period_s=0, on_complete=Recorder(fail=True), clock=clock
    )
    waits: list[float] = []

    def stop_after_two(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            monitor.stop()

    monitor._backoff_sleep = stop_after_two  # type: ignore[method-assign]
    _store(spool, "1.1", "1.1.1", clock)
    monitor.deliver_with_backoff()
    assert len(waits) == 2
    assert spool.status().pending_events == 1  # still pending: delivered after a restart


# --- issue 20 item 3: a pre-therapy PET study is filed under its patient, in no cycle -----------


def test_a_pretherapy_pet_study_is_in_no_cycle_and_does_not_count_in_the_number() -> None:
    pet_injection = INJECTION - timedelta(days=14)
    studies = [
        StudyMembership("1.1", "P1", INJECTION),
        StudyMembership("0.5", "P1", None),  # a CT-only visit, shared by P1's cycles
        StudyMembership("8.1", "P1", pet_injection, pretherapy=True),
        StudyMembership("8.2", "P2", pet_injection, pretherapy=True),  # PET, no therapy yet
    ]
    cycles = group_cycles(studies, "ns")
    assert [(c.patient_id, c.injection_datetime) for c in cycles] == [("P1", INJECTION)]
    assert cycles[0].study_uids == ("1.1",)
    assert cycles[0].shared_study_uids == ("0.5",)
    assert cycle_number_among(cycles[0], cycles) == 1
    assert [s.study_uid for s in pretherapy_studies(studies)] == ["8.1", "8.2"]
    assert is_pretherapy_study(["PT", "CT"])
    assert not is_pretherapy_study(["NM", "PT", "CT"])  # a SPECT visit stays a time point
    assert not is_pretherapy_study(["CT"])


def test_the_spool_files_a_pet_study_as_pretherapy(spool: Spool, clock: FakeClock) -> None:
    _store(spool, "1.1", "1.1.1", clock)  # cycle 1's SPECT
    pet_injection = INJECTION - timedelta(days=14)
    for sop, (sop_class, modality) in enumerate(
        (("1.2.840.10008.5.1.4.1.1.128", "PT"), (CT, "CT"))
    ):
        identity = InstanceIdentity.checked(
            sop_class_uid=sop_class,
            sop_instance_uid=f"8.1.{sop}",
            study_uid="8.1",
            series_uid=f"8.1.9{sop}",
            transfer_syntax=EXPLICIT_LE,
        )
        injection = pet_injection if modality == "PT" else None
        summary = InstanceSummary("P1", modality, pet_injection + timedelta(hours=1), injection)
        spool.store(identity, f"bytes {sop}".encode(), "MILAN_SPECT", summary, now=clock())
    (cycle,) = spool.cycles()
    assert cycle.members.study_uids == ("1.1",)
    assert "8.1" not in cycle.members.all_study_uids
    assert spool.cycle_number(cycle.members) == 1
    (pet,) = spool.pretherapy_studies()
    assert pet.study_uid == "8.1"
    assert pet.injection_datetime == pet_injection
    assert set(pet.modalities) == {"PT", "CT"}
