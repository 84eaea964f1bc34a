"""A pre-therapy PET study's files → SUV features per VOI (issue 20, item 3c).

Reads the PET (:func:`concordose.dicom.pt.read_pt_series`), the VOIs (SEG or RTSTRUCT,
:func:`concordose.dicom.vois.read_voi_masks`) and, when the VOIs lie in another frame of
reference than the PET (the post-therapy segmentation), registers the PET session's CT onto the
VOIs' CT (:func:`concordose.prediction.pet_features.register_pet_ct`) before the SUV statistics
(:func:`concordose.prediction.pet_features.pet_voi_features`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import SecretStr
from pydicom import dcmread
from pydicom.uid import (
    CTImageStorage,
    PositronEmissionTomographyImageStorage,
    RTStructureSetStorage,
    SegmentationStorage,
)

from concordose.calibration.registry import SiteRegistry
from concordose.consortium.cohort_tables import rebuild_dose_prediction
from concordose.dicom.ct import read_ct_series
from concordose.dicom.pseudonym import subject_key
from concordose.dicom.pt import PetSeries, read_pt_series
from concordose.dicom.vois import read_voi_masks
from concordose.errors import ConcordoseError, StudyIncompleteError
from concordose.prediction.pet_features import PetVoiFeatures, pet_voi_features, register_pet_ct
from concordose.prediction.table import pet_feature_rows
from concordose.quant.registration import RigidRegistration
from concordose.results.object_store import ObjectStore
from concordose.results.provenance import Provenance
from concordose.results.publish import PublishedRun
from concordose.spool.store import Spool, SpooledInstance


@dataclass(frozen=True)
class PretherapyPetFeatures:
    """What one pre-therapy PET gave.

    Attributes:
        series: the PET as read (SUV factor, weight, injected activity, tracer).
        registration: PET CT onto the VOIs' CT; ``None`` when they share a frame of reference.
        features: per VOI with PET voxels.
    """

    series: PetSeries
    registration: RigidRegistration | None
    features: tuple[PetVoiFeatures, ...]


def _frame_of_reference(path: Path) -> str:
    header = dcmread(path, stop_before_pixels=True, specific_tags=["FrameOfReferenceUID"])
    return str(header.get("FrameOfReferenceUID") or "")


def pretherapy_pet_features(
    pt_files: Sequence[Path],
    *,
    vois_path: Path,
    vois_ct_files: Sequence[Path],
    pet_ct_files: Sequence[Path] = (),
) -> PretherapyPetFeatures:
    """SUV features of the PET in ``pt_files`` per VOI of ``vois_path``.

    Args:
        pt_files: the PT slices.
        vois_path: SEG or RTSTRUCT: the post-therapy VOIs, or (a patient without therapy yet)
            VOIs drawn on the PET's own CT.
        vois_ct_files: the CT the VOIs were drawn on.
        pet_ct_files: the PET session's CT, needed when the VOIs lie in another frame.

    Raises:
        StudyIncompleteError: the VOIs lie in another frame of reference and the PET's CT was
            not given; or the readers' errors (named tag and value).
    """
    series = read_pt_series(pt_files)
    vois = read_voi_masks(vois_path, vois_ct_files)
    registration = None
    if not vois_ct_files or _frame_of_reference(vois_ct_files[0]) != series.frame_of_reference_uid:
        if not pet_ct_files or not vois_ct_files:
            raise StudyIncompleteError(
                f"PET {pt_files[0].parent}: the VOIs ({vois_path}) lie in another frame of "
                "reference; the PET session's CT and the VOIs' CT are needed to register them"
            )
        registration = register_pet_ct(read_ct_series(vois_ct_files), read_ct_series(pet_ct_files))
    return PretherapyPetFeatures(
        series=series,
        registration=registration,
        features=tuple(pet_voi_features(series.suv_image(), vois, registration)),
    )


# --- a spool's pre-therapy PET studies → the ``pet_features`` input of ``dose_prediction`` ---


@dataclass(frozen=True)
class PetStudySources:
    """Which files one pre-therapy PET's features are computed from.

    Attributes:
        pt_files, pet_ct_files: the PET study's PT and CT slices.
        vois_path: the PET study's own SEG/RTSTRUCT (a patient without therapy), else the one of
            the patient's first therapy cycle.
        vois_ct_files: the CT those VOIs were drawn on (same frame of reference).
    """

    pt_files: tuple[Path, ...]
    pet_ct_files: tuple[Path, ...]
    vois_path: Path
    vois_ct_files: tuple[Path, ...]


_VOI_SOP_CLASSES = (SegmentationStorage, RTStructureSetStorage)


def _of_class(instances: Sequence[SpooledInstance], sop_class: str) -> tuple[Path, ...]:
    return tuple(sorted(i.path for i in instances if i.identity.sop_class_uid == sop_class))


def pet_study_sources(
    pet_instances: Sequence[SpooledInstance], first_cycle_instances: Sequence[SpooledInstance]
) -> PetStudySources:
    """The files of one PET study's features (:class:`PetStudySources`).

    Raises:
        StudyIncompleteError: no PT slice, or no VOIs (neither in the PET study nor in the
            patient's first cycle), or no CT in the VOIs' frame of reference.
    """
    pt_files = _of_class(pet_instances, PositronEmissionTomographyImageStorage)
    pet_ct = _of_class(pet_instances, CTImageStorage)
    if not pt_files:
        raise StudyIncompleteError("pre-therapy study without PET slices (PET Image Storage)")
    own = sorted(i.path for i in pet_instances if i.identity.sop_class_uid in _VOI_SOP_CLASSES)
    if own:
        return PetStudySources(pt_files, pet_ct, own[0], pet_ct)
    therapy = sorted(
        i.path for i in first_cycle_instances if i.identity.sop_class_uid in _VOI_SOP_CLASSES
    )
    if not therapy:
        raise StudyIncompleteError(
            "pre-therapy PET without VOIs: neither a SEG/RTSTRUCT in its study nor a first "
            "therapy cycle with one"
        )
    frame = _frame_of_reference(therapy[0])
    cts = tuple(
        path
        for path in _of_class(first_cycle_instances, CTImageStorage)
        if _frame_of_reference(path) == frame
    )
    if not cts:
        raise StudyIncompleteError(
            f"the first cycle's VOIs ({therapy[0].name}) lie in frame of reference {frame}; no CT "
            "of that frame was received"
        )
    return PetStudySources(pt_files, pet_ct, therapy[0], cts)


def spool_pet_features(
    spool: Spool, *, site_by_ae_title: Mapping[str, str], pseudonym_key: SecretStr | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The ``pet_features`` rows (:func:`concordose.prediction.pet_feature_rows`) of every
    pre-therapy PET study in ``spool`` (:meth:`Spool.pretherapy_studies`), and one message per
    study that could not be used (no patient identifier in it).

    A patient's VOIs come from its PET study's own SEG/RTSTRUCT, else from its first therapy
    cycle (lowest injection) in the spool.

    Raises:
        ConfigurationError: no pseudonymisation key.
    """
    cycles = spool.cycles()
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for record in spool.pretherapy_studies():
        if record.patient_id is None:
            problems.append(f"PET study of unknown patient ({record.calling_ae_title}): skipped")
            continue
        subject = subject_key(record.patient_id, pseudonym_key)
        site = site_by_ae_title.get(record.calling_ae_title)
        if site is None:
            problems.append(f"{subject}: PET from unknown AE title {record.calling_ae_title}")
            continue
        own_cycles = sorted(
            (c for c in cycles if c.members.patient_id == record.patient_id),
            key=lambda c: c.members.injection_datetime,
        )
        first_cycle = spool.cycle_instances(own_cycles[0].members) if own_cycles else []
        try:
            sources = pet_study_sources(spool.study_instances([record.study_uid]), first_cycle)
            result = pretherapy_pet_features(
                sources.pt_files,
                vois_path=sources.vois_path,
                vois_ct_files=sources.vois_ct_files,
                pet_ct_files=sources.pet_ct_files,
            )
        except ConcordoseError as exc:
            problems.append(f"{subject}: {exc}")
            continue
        rows.extend(pet_feature_rows(site, subject, result.features))
    return rows, problems


@dataclass(frozen=True)
class DosePredictionRun:
    """What :func:`publish_spool_dose_prediction` did.

    Attributes:
        published: the publication, or None when no PET study gave features (nothing published:
            earlier ``dose_prediction`` rows, if any, stay current).
        n_vois: VOIs with PET features.
        problems: one message per PET study that could not be used (no patient identifier, an
            unknown AE title, an unreadable study); never a patient identifier.
    """

    published: PublishedRun | None
    n_vois: int
    problems: tuple[str, ...]


def publish_spool_dose_prediction(
    spool: Spool,
    registry: SiteRegistry,
    store: ObjectStore,
    provenance: Provenance,
    *,
    pseudonym_key: SecretStr | None,
) -> DosePredictionRun:
    """Every pre-therapy PET study of ``spool`` → SUV features per VOI
    (:func:`spool_pet_features`) → ``dose_prediction`` trained on ``store``'s current
    first-cycle doses, published as a run of its own
    (:func:`concordose.consortium.cohort_tables.rebuild_dose_prediction`).

    Raises:
        ConfigurationError: no pseudonymisation key.
        ValidationFailedError: the table failed its suite (quarantined, not published).
        ConcordoseError: the store could not be read or written.
    """
    rows, problems = spool_pet_features(
        spool,
        site_by_ae_title={t: s.site_id for s in registry.sites for t in s.ae_titles},
        pseudonym_key=pseudonym_key,
    )
    published = rebuild_dose_prediction(store, pa.Table.from_pylist(rows), provenance)
    return DosePredictionRun(published, len(rows), tuple(problems))
