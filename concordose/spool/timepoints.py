"""Time points as the receiver sees them: what an instance says about where it belongs, and the
records and events of the completion state machine.

A **time point** is one SPECT/CT session, i.e. one ``StudyInstanceUID`` (the DICOM study is one
imaging visit; the SPECT recon, its CT and any SEG/RTSTRUCT of that visit share it); its position
in its cycle is ``acquisition − injection`` in hours (see :attr:`TimePointRecord.time_h`). The CT
and SEG of a visit carry no injection data; the time point takes it from its NM/PT instances.
Which cycle it belongs to is decided by :mod:`concordose.spool.cycles` (the one grouping rule).

States, persisted in the spool index so that a restart resumes exactly where it stopped::

    receiving ──(quiet period after the last association released, or explicit trigger)──▶
    complete  ──(pipeline finished)──▶ processed

An instance arriving for a time point that is already complete reopens it as a new *revision*
(``receiving`` again); its completion then emits a new event with a new id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydicom.dataset import Dataset
from pydicom.valuerep import DT

from concordose.dicom.nm import read_injection


class TimePointState(StrEnum):
    """Where a time point is in its life."""

    RECEIVING = "receiving"
    COMPLETE = "complete"
    PROCESSED = "processed"


def _datetime_or_none(date: object, time: object) -> datetime | None:
    if not date or not time:
        return None
    try:
        return DT(f"{date}{time}").replace(tzinfo=None)
    except ValueError:
        return None


def _dt_or_none(value: object) -> datetime | None:
    if not value:
        return None
    try:
        return DT(str(value)).replace(tzinfo=None)
    except ValueError:
        return None


SUMMARY_KEYWORDS = (
    "SpecificCharacterSet",  # how PatientID's text is decoded
    "PatientID",
    "Modality",
    "AcquisitionDateTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "SeriesDate",
    "SeriesTime",
    "StudyDate",
    "StudyTime",
    "TimezoneOffsetFromUTC",  # read_injection's
    "RadiopharmaceuticalInformationSequence",
)
"""Every top-level element :meth:`InstanceSummary.from_dataset` reads (with
:func:`concordose.dicom.nm.read_injection`): a data set holding only these gives the same
summary (the receiver reads no others)."""


@dataclass(frozen=True)
class InstanceSummary:
    """The few header facts the receiver files an instance under (all optional: a CT has no
    injection, a malformed date is recorded as unknown rather than refused).

    Attributes:
        patient_id: ``PatientID``.
        modality: ``Modality`` (NM, PT, CT, SEG, RTSTRUCT…).
        acquisition_datetime: ``AcquisitionDateTime``, else acquisition, series or study
            date + time (modality local clock reading, naive).
        injection_datetime: ``RadiopharmaceuticalStartDateTime``, else the start time on the
            scan's date (:func:`concordose.dicom.nm.read_injection`; local clock reading).

    Times here are clock readings without their UTC offsets on purpose: they group instances
    into cycles and key them (``cycle_key``), and label the spool's listing; hours since
    injection for dosimetry are computed by the gate with the offsets and the site's time zone
    (:meth:`concordose.dicom.nm.NMAcquisition.hours_since_injection`).
    """

    patient_id: str | None
    modality: str | None
    acquisition_datetime: datetime | None
    injection_datetime: datetime | None

    @classmethod
    def from_dataset(cls, dataset: Dataset | Mapping[str, object]) -> InstanceSummary:
        """Read the summary from a (lazily decoded) dataset; pixel data is never touched. Or
        from its values by keyword (the receiver's, decoded without pydicom: no sequence)."""
        acquisition = _dt_or_none(dataset.get("AcquisitionDateTime"))
        for date_kw, time_kw in (
            ("AcquisitionDate", "AcquisitionTime"),
            ("SeriesDate", "SeriesTime"),
            ("StudyDate", "StudyTime"),
        ):
            if acquisition is None:
                acquisition = _datetime_or_none(dataset.get(date_kw), dataset.get(time_kw))
        injection: datetime | None = None
        # Values by keyword hold no sequence (the receiver decodes those with pydicom).
        sequence = (
            dataset.get("RadiopharmaceuticalInformationSequence")
            if isinstance(dataset, Dataset)
            else None
        )
        if sequence and isinstance(dataset, Dataset):
            item = sequence[0]
            try:
                # The NM reader's rule (start date-time, else start time on the scan's date),
                # so a cycle groups exactly the time points assembly will accept.
                injection = read_injection(item, dataset)[0]
            except ValueError:
                injection = None
        patient_id = str(dataset.get("PatientID") or "").strip() or None
        modality = str(dataset.get("Modality") or "").strip() or None
        return cls(patient_id, modality, acquisition, injection)


@dataclass(frozen=True)
class TimePointRecord:
    """One row of the spool's ``timepoints`` table.

    Attributes:
        study_uid: the time point's key (StudyInstanceUID).
        revision: 1, incremented each time late instances reopen a completed time point.
        last_activity_at: last stored instance or association release touching it (UTC).
        notified_at: when the completion event was delivered to the ``on_complete`` hook.
    """

    study_uid: str
    patient_id: str | None
    calling_ae_title: str
    injection_datetime: datetime | None
    acquisition_datetime: datetime | None
    modalities: tuple[str, ...]
    instance_count: int
    size_bytes: int
    revision: int
    state: TimePointState
    last_activity_at: datetime
    completed_at: datetime | None
    completion_reason: str | None
    notified_at: datetime | None
    processed_at: datetime | None

    @property
    def time_h(self) -> float | None:
        """Hours from injection to acquisition, when both are known."""
        if self.injection_datetime is None or self.acquisition_datetime is None:
            return None
        return (self.acquisition_datetime - self.injection_datetime).total_seconds() / 3600.0

    @property
    def event_id(self) -> str:
        """Stable id of this revision's completion event (idempotency key downstream)."""
        return f"{self.study_uid}#{self.revision}"


@dataclass(frozen=True)
class TimePointEvent:
    """ "Time point complete": emitted once per time point revision.

    Attributes:
        event_id: ``<StudyInstanceUID>#<revision>``; the same id is re-delivered if the service
            stopped between delivering and recording the delivery, so consumers use it as an
            idempotency key (the Prefect trigger does).
        spool_root: the spool holding the instances.
        timepoint: the record at completion.
    """

    event_id: str
    spool_root: str
    timepoint: TimePointRecord


class OnComplete(Protocol):
    """Handler contract of the completion hook (``on_complete``).

    * in: one :class:`TimePointEvent`;
    * out: nothing. Returning means "delivered": the spool records it and never delivers that
      event id again. Raising means "not delivered": the event stays pending and is delivered
      again on the next completion poll (and after a restart).
    * It runs on the receiver's completion thread: it must be quick (start a flow run, enqueue),
      not process the study itself.
    """

    def __call__(self, event: TimePointEvent, /) -> None:
        """Deliver ``event``."""
