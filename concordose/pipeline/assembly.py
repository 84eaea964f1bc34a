"""Cycle assembly: from one cycle's catalogued instances to a :class:`CycleStudy` with ordered
time points, its CTs and its segmentation.

Which instances make a cycle is decided once, by :mod:`concordose.spool.cycles` (patient +
injection, from the index or a folder's headers); here every reconstructed SPECT of the cycle
becomes one *time point*, placed by its acquisition time after injection. The VOIs of a cycle
come from the DICOM SEG or RTSTRUCT of the same patient whose frame of reference matches one of
the cycle's time points (normally the first), or, failing that, the patient's only one; an
RTSTRUCT also needs the CT slices of its frame of reference (its contours are filled on them).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import CTImageStorage, NuclearMedicineImageStorage, RTStructureSetStorage

from concordose.dicom.nm import NMAcquisition, read_nm_header
from concordose.dicom.rtstruct import rtstruct_frame_of_reference
from concordose.dicom.vois import VOI_SOP_CLASSES
from concordose.errors import StudyIncompleteError
from concordose.pipeline.catalogue import CataloguedInstance, folder_memberships
from concordose.spool.cycles import group_cycles


@dataclass(frozen=True)
class TimePoint:
    """One SPECT acquisition of a cycle."""

    acquisition: NMAcquisition
    time_h: float
    calling_ae_title: str | None
    ct_files: tuple[Path, ...] = ()
    """The CT slices sharing the SPECT's frame of reference (for registration), if received."""


@dataclass(frozen=True)
class CycleStudy:
    """Everything the pipeline needs for one patient's treatment cycle.

    Attributes:
        patient_id: PatientID as received (pseudonymised before anything is published).
        injection_datetime: RadiopharmaceuticalStartDateTime shared by the time points.
        injected_activity_mbq: RadionuclideTotalDose of the first time point, in MBq.
        time_points: ordered by time after injection.
        segmentation: the SEG or RTSTRUCT holding the VOIs.
        segmentation_frame_of_reference: its frame of reference (None when it names none).
        segmentation_ct_files: the CT slices in that frame of reference (an RTSTRUCT's contours
            are filled on them; :func:`~concordose.dicom.vois.read_voi_masks`).
    """

    patient_id: str
    injection_datetime: datetime
    injected_activity_mbq: float | None
    time_points: tuple[TimePoint, ...]
    segmentation: Path
    segmentation_frame_of_reference: str | None = None
    segmentation_ct_files: tuple[Path, ...] = ()

    @property
    def calling_ae_title(self) -> str | None:
        """The sender of the first time point (identifies the site)."""
        return self.time_points[0].calling_ae_title


def _segmentations_by_patient(
    instances: list[CataloguedInstance],
) -> dict[str, list[tuple[Path, str | None]]]:
    """Per PatientID, its SEGs and RTSTRUCTs with the frame of reference of each."""
    found: dict[str, list[tuple[Path, str | None]]] = defaultdict(list)
    for instance in instances:
        if instance.sop_class_uid not in VOI_SOP_CLASSES:
            continue
        header = dcmread(
            instance.path,
            stop_before_pixels=True,
            specific_tags=[
                "PatientID",
                "FrameOfReferenceUID",
                "ReferencedFrameOfReferenceSequence",
            ],
        )
        frame = (
            rtstruct_frame_of_reference(header)
            if instance.sop_class_uid == RTStructureSetStorage
            else str(header.get("FrameOfReferenceUID") or "") or None
        )
        found[str(header.get("PatientID", ""))].append((instance.path, frame))
    return found


def _ct_files_by_frame(instances: list[CataloguedInstance]) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = defaultdict(list)
    for instance in instances:
        if instance.sop_class_uid != CTImageStorage:
            continue
        header = dcmread(
            instance.path, stop_before_pixels=True, specific_tags=["FrameOfReferenceUID"]
        )
        frame = str(header.get("FrameOfReferenceUID") or "")
        if frame:
            found[frame].append(instance.path)
    return found


def assemble_cycle(instances: list[CataloguedInstance]) -> CycleStudy:
    """Assemble one treatment cycle from its instances (as :class:`~concordose.pipeline.
    catalogue.CycleSource` lists them: the cycle's studies and the patient's visits without
    injection data).

    Raises:
        StudyIncompleteError: no reconstructed SPECT; a SPECT without patient ID or injection
            data; SPECTs that disagree on patient or injection; no segmentation (no VOIs).
    """
    groups: dict[tuple[str, datetime], list[TimePoint]] = defaultdict(list)
    for instance in instances:
        if instance.sop_class_uid != NuclearMedicineImageStorage:
            continue
        acquisition = read_nm_header(instance.path)
        if not acquisition.is_recon_tomo:
            continue  # planar or raw projections: not quantified here
        if acquisition.patient_id is None:
            raise StudyIncompleteError(f"NM file {instance.path}: PatientID missing")
        time_h = acquisition.hours_since_injection()
        assert acquisition.radiopharmaceutical is not None  # checked by hours_since_injection
        injection = acquisition.radiopharmaceutical.injection_datetime
        assert injection is not None
        groups[(acquisition.patient_id, injection)].append(
            TimePoint(acquisition, time_h, instance.calling_ae_title)
        )
    if not groups:
        raise StudyIncompleteError(
            "no reconstructed SPECT (NM Image Storage, RECON TOMO) found among "
            f"{len(instances)} instance(s)"
        )
    if len(groups) > 1:
        raise StudyIncompleteError(
            f"the cycle's SPECTs name {len(groups)} different patient/injection pairs in their "
            "headers (PatientID, RadiopharmaceuticalStartDateTime); expected one"
        )
    ((patient_id, injection), unordered), *_ = groups.items()
    segmentations = _segmentations_by_patient(instances)
    ct_by_frame = _ct_files_by_frame(instances)
    unordered.sort(key=lambda point: point.time_h)
    points = [
        replace(
            point,
            ct_files=tuple(ct_by_frame.get(point.acquisition.frame_of_reference_uid or "", [])),
        )
        for point in unordered
    ]
    candidates = segmentations.get(patient_id, [])
    frames = {point.acquisition.frame_of_reference_uid for point in points}
    matching = [(path, frame) for path, frame in candidates if frame in frames]
    if not matching and len(candidates) == 1:
        matching = [candidates[0]]
    if not matching:
        raise StudyIncompleteError(
            f"cycle injected {injection:%Y-%m-%d %H:%M} has {len(points)} SPECT time point(s) "
            "but no segmentation (DICOM SEG) with VOIs in its frame of reference; send the SEG "
            "or RTSTRUCT of the VOIs"
        )
    first = points[0].acquisition.radiopharmaceutical
    return CycleStudy(
        patient_id=patient_id,
        injection_datetime=injection,
        injected_activity_mbq=first.injected_activity_mbq if first else None,
        time_points=tuple(points),
        segmentation=matching[0][0],
        segmentation_frame_of_reference=matching[0][1],
        segmentation_ct_files=tuple(ct_by_frame.get(matching[0][1] or "", [])),
    )


def with_interpreted_acquisitions(
    study: CycleStudy, acquisitions: tuple[NMAcquisition, ...]
) -> CycleStudy:
    """``study`` with each time point's acquisition replaced by the gate's reading of it
    (:attr:`~concordose.calibration.gate.CycleVerdict.acquisitions`, same order): hours since
    injection recomputed (the site's time zone may change them), injected activity in MBq.
    The time points keep their order (the gate's findings are indexed by it).

    Raises:
        ValueError: not one acquisition per time point.
    """
    if len(acquisitions) != len(study.time_points):
        raise ValueError(
            f"{len(acquisitions)} interpreted acquisitions for {len(study.time_points)} time "
            "points; expected one per time point"
        )
    points = tuple(
        replace(point, acquisition=acquisition, time_h=acquisition.hours_since_injection())
        for point, acquisition in zip(study.time_points, acquisitions, strict=True)
    )
    first = points[0].acquisition.radiopharmaceutical
    return replace(
        study,
        time_points=points,
        injected_activity_mbq=first.injected_activity_mbq if first else None,
    )


def assemble_cycles(instances: list[CataloguedInstance]) -> list[CycleStudy]:
    """Every cycle of a scanned folder's instances, grouped by the one rule
    (:func:`concordose.spool.cycles.group_cycles`), each assembled by :func:`assemble_cycle`.

    A convenience for whole folders (tests, benchmarks); the pipeline assembles one cycle at a
    time so that one incomplete cycle never blocks another.

    Raises:
        StudyIncompleteError: no cycle at all, or the first cycle that cannot be assembled.
    """
    members = group_cycles(folder_memberships(instances), namespace="folder")
    if not members:
        raise StudyIncompleteError(
            "no reconstructed SPECT (NM Image Storage, RECON TOMO) with patient and injection "
            f"data found among {len(instances)} instance(s)"
        )
    cycles = []
    for member in members:
        uids = set(member.all_study_uids)
        cycles.append(assemble_cycle([i for i in instances if i.study_uid in uids]))
    return cycles
