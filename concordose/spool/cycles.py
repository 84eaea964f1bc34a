"""Treatment cycles as the unit of work: which time points make a cycle, its identity, its
content revision and its state.

The one grouping rule (used for a spool's index and for a plain folder of DICOM files alike):

* a **time point** is one ``StudyInstanceUID`` (one SPECT/CT visit), placed in a cycle by the
  ``PatientID`` and injection date-time (``RadiopharmaceuticalStartDateTime``) its NM/PT
  instances carry (:class:`~concordose.spool.timepoints.InstanceSummary`);
* a **cycle** is every time point of one patient with the same injection;
* a visit whose injection is not known (only its CT or SEG arrived, no NM) belongs to no cycle by
  itself; its instances are offered to every cycle of the same patient (a SEG sent in its own
  study is still found), and its arrival changes those cycles' content revision.

* a **pre-therapy study** (issue 20) is a visit whose images are PET (``PT``) and not
  SPECT (``NM``): a diagnostic [68Ga]Ga-DOTATATE/PSMA-11 PET/CT before therapy
  (:func:`is_pretherapy_study`). Its PET carries an injection — the PET tracer's — but it
  belongs to no treatment cycle, neither as a cycle of its own nor as a shared visit, and it
  does not count in the cycle number; :func:`pretherapy_studies` lists them per patient.

Identity and revision:

* ``cycle_id`` is a keyed hash (HMAC-SHA-256, key: the spool's UUID) of patient and injection, so
  it is stable within a spool, differs between spools, and carries no patient identifier into
  Prefect's database or logs;
* ``content_revision`` is a hash of the member studies and their revisions: it changes when a
  time point is added or reopened by late instances, and only then.

Cycle number (:func:`cycle_number`): DICOM carries no treatment-cycle number, so a cycle's
number is its 1-based rank by injection date-time among the cycles of the same patient that the
source (spool or folder) holds. It is the order among the cycles *received*: it equals the
treatment cycle when the site sends every cycle from the first, and not otherwise (a site
imaging cycles 1 and 4 only, like the LUTADOSE schedule in ``phantoms/protocols.py``, gives 1
and 2; a site whose first cycle is missing numbers its second cycle 1). An earlier cycle
arriving after a later one was processed renumbers the later one when it is re-run (its rows
are replaced per cycle anyway). A cycle without a ``PatientID`` has no number.

States (:class:`CycleState`), derived from the time points and the last recorded outcome::

    receiving ─▶ ready ─▶ processed | held | failed
                   ▲            │
                   └────────────┘  new content (a time point added or reopened)

``held`` and ``failed`` are re-examined by the sweep (held: when the reason may have gone away —
new content, or a calibration record now covering the date; failed: always).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from concordose.errors import ConcordoseError

CYCLE_ID_LENGTH = 24
"""Hex characters of the keyed hash kept as the cycle id (96 bits)."""


class CycleState(StrEnum):
    """Where a treatment cycle is in its life (see the module docstring)."""

    RECEIVING = "receiving"
    READY = "ready"
    PROCESSED = "processed"
    HELD = "held"
    FAILED = "failed"


OUTCOME_STATES = (CycleState.PROCESSED, CycleState.HELD, CycleState.FAILED)
"""States a processing run records as its outcome."""


PRETHERAPY_MODALITY = "PT"
"""Modality of a pre-therapy diagnostic PET (PET Image Storage)."""
THERAPY_MODALITY = "NM"
"""Modality of the post-therapy SPECT (NM Image Storage)."""


def is_pretherapy_study(modalities: Iterable[str]) -> bool:
    """Whether a visit with these modalities is a pre-therapy PET study (PT and no NM): the
    one rule (module docstring). A study holding both is a therapy time point (its SPECT)."""
    found = set(modalities)
    return PRETHERAPY_MODALITY in found and THERAPY_MODALITY not in found


@dataclass(frozen=True)
class StudyMembership:
    """What the grouping needs to know of one time point (one study).

    Attributes:
        study_uid: the time point's StudyInstanceUID.
        patient_id: PatientID (``None`` if no instance carried it).
        injection_datetime: injection of its NM/PT instances (``None``: CT/SEG-only visit).
        revision: the time point's revision (1, then +1 each time late instances reopen it).
        receiving: True while instances may still arrive (not complete yet).
        pretherapy: a pre-therapy PET study (:func:`is_pretherapy_study`): in no cycle.
    """

    study_uid: str
    patient_id: str | None
    injection_datetime: datetime | None
    revision: int = 1
    receiving: bool = False
    pretherapy: bool = False


@dataclass(frozen=True)
class CycleMembers:
    """One cycle's time points as grouped from the index (or a folder).

    Attributes:
        cycle_id: keyed hash of patient and injection (see the module docstring).
        patient_id, injection_datetime: the cycle's key (PHI: never logged or published).
        study_uids: the cycle's own time points, in study UID order.
        shared_study_uids: the patient's visits without injection data (CT/SEG only).
        content_revision: hash of member studies and their revisions.
        receiving: True while any member time point is still receiving.
    """

    cycle_id: str
    patient_id: str | None
    injection_datetime: datetime
    study_uids: tuple[str, ...]
    shared_study_uids: tuple[str, ...]
    content_revision: str
    receiving: bool

    @property
    def all_study_uids(self) -> tuple[str, ...]:
        """Every study whose instances this cycle reads."""
        return self.study_uids + self.shared_study_uids


def cycle_id_for(namespace: str, patient_id: str | None, injection: datetime) -> str:
    """The cycle's id: HMAC-SHA-256 over patient and injection, keyed by ``namespace`` (the
    spool's UUID), truncated to :data:`CYCLE_ID_LENGTH` hex characters."""
    message = f"{patient_id or ''}|{injection.isoformat()}".encode()
    digest = hmac.new(namespace.encode(), message, hashlib.sha256).hexdigest()
    return digest[:CYCLE_ID_LENGTH]


def content_revision_of(studies: Iterable[StudyMembership]) -> str:
    """Hash of the member studies and their revisions (order-independent)."""
    parts = sorted(f"{study.study_uid}#{study.revision}" for study in studies)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def group_cycles(studies: Iterable[StudyMembership], namespace: str) -> list[CycleMembers]:
    """Group time points into cycles (the one rule; see the module docstring).

    Returns:
        Cycles ordered by injection date-time, then id (studies without patient or injection
        form no cycle of their own).
    """
    own: dict[tuple[str | None, datetime], list[StudyMembership]] = defaultdict(list)
    shared: dict[str | None, list[StudyMembership]] = defaultdict(list)
    for study in studies:
        if study.pretherapy:
            continue
        if study.injection_datetime is None:
            shared[study.patient_id].append(study)
        else:
            own[(study.patient_id, study.injection_datetime)].append(study)
    cycles = []
    for (patient_id, injection), members in own.items():
        extra = shared.get(patient_id, []) if patient_id is not None else []
        cycles.append(
            CycleMembers(
                cycle_id=cycle_id_for(namespace, patient_id, injection),
                patient_id=patient_id,
                injection_datetime=injection,
                study_uids=tuple(sorted(s.study_uid for s in members)),
                shared_study_uids=tuple(sorted(s.study_uid for s in extra)),
                content_revision=content_revision_of([*members, *extra]),
                receiving=any(s.receiving for s in [*members, *extra]),
            )
        )
    cycles.sort(key=lambda cycle: (cycle.injection_datetime, cycle.cycle_id))
    return cycles


def pretherapy_studies(studies: Iterable[StudyMembership]) -> list[StudyMembership]:
    """The pre-therapy PET studies among ``studies`` (module docstring), by patient, then PET
    injection, then study UID."""
    found = [study for study in studies if study.pretherapy]
    found.sort(
        key=lambda s: (s.patient_id or "", s.injection_datetime or datetime.min, s.study_uid)
    )
    return found


def cycle_number(injection: datetime, patient_injections: Iterable[datetime]) -> int:
    """The cycle number of the cycle injected at ``injection`` (the one rule; module docstring).

    Args:
        injection: the cycle's injection date-time (its key with the patient).
        patient_injections: the injection date-times of the patient's time points (or cycles)
            that the source holds; repeats count once (one cycle per injection), and
            ``injection`` itself need not be among them.

    Returns:
        1 + the number of distinct injections strictly before ``injection``.
    """
    return 1 + len({other for other in patient_injections if other < injection})


def cycle_number_among(members: CycleMembers, cycles: Iterable[CycleMembers]) -> int | None:
    """:func:`cycle_number` of ``members`` among ``cycles`` (a source's cycles, as
    :func:`group_cycles` makes them): ``None`` for a cycle without a PatientID."""
    if members.patient_id is None:
        return None
    return cycle_number(
        members.injection_datetime,
        (c.injection_datetime for c in cycles if c.patient_id == members.patient_id),
    )


@dataclass(frozen=True)
class CycleOutcome:
    """The last outcome recorded for a cycle (row of the spool's ``cycles`` table).

    Attributes:
        state: processed, held or failed.
        content_revision: the content the outcome is for.
        reason: why it was held or failed (no patient identifiers).
        run_id: the publication run (processed, or held with findings published).
        attempts: runs recorded for this cycle so far.
        updated_at: when recorded (UTC).
    """

    state: CycleState
    content_revision: str
    reason: str | None
    run_id: str | None
    attempts: int
    updated_at: datetime


@dataclass(frozen=True)
class CycleRecord:
    """A cycle with its current state.

    Attributes:
        members: its time points (see :class:`CycleMembers`).
        outcome: the last recorded outcome, if any (possibly for older content).
    """

    members: CycleMembers
    outcome: CycleOutcome | None

    @property
    def cycle_id(self) -> str:
        """The cycle's id."""
        return self.members.cycle_id

    @property
    def state(self) -> CycleState:
        """Receiving while any time point is; ready when there is no outcome for the current
        content; otherwise the outcome's state."""
        if self.members.receiving:
            return CycleState.RECEIVING
        if self.outcome is None or self.outcome.content_revision != self.members.content_revision:
            return CycleState.READY
        return self.outcome.state

    @property
    def reason(self) -> str | None:
        """Why it is held or failed (None otherwise)."""
        if self.state in (CycleState.HELD, CycleState.FAILED) and self.outcome is not None:
            return self.outcome.reason
        return None


def due_for_processing(record: CycleRecord) -> bool:
    """What the sweep runs without a second look: cycles ready (complete, no outcome for the
    current content) and cycles whose last run failed. Held cycles are re-checked first (their
    reason may have gone away); processed and receiving ones are left alone."""
    return record.state in (CycleState.READY, CycleState.FAILED)


class CycleNotFoundError(ConcordoseError):
    """A cycle id that a spool or folder does not hold."""


def find_cycle(records: Iterable[CycleRecord], cycle_id: str, where: Path) -> CycleRecord:
    """The record of ``cycle_id`` among ``records`` (the cycles of ``where``).

    Raises:
        CycleNotFoundError: none has that id.
    """
    for record in records:
        if record.cycle_id == cycle_id:
            return record
    raise CycleNotFoundError(
        f"{where} holds no cycle {cycle_id!r}; `concordose spool status` lists a spool's cycles"
    )
