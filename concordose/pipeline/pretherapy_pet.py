"""A pre-therapy PET study's files → SUV features per VOI (issue 20, item 3c).

Reads the PET (:func:`concordose.dicom.pt.read_pt_series`), the VOIs (SEG or RTSTRUCT,
:func:`concordose.dicom.vois.read_voi_masks`) and, when the VOIs lie in another frame of
reference than the PET (the post-therapy segmentation), registers the PET session's CT onto the
VOIs' CT (:func:`concordose.prediction.pet_features.register_pet_ct`) before the SUV statistics
(:func:`concordose.prediction.pet_features.pet_voi_features`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from concordose.dicom.ct import read_ct_series
from concordose.dicom.pt import PetSeries, read_pt_series
from concordose.dicom.vois import read_voi_masks
from concordose.errors import StudyIncompleteError
from concordose.prediction.pet_features import PetVoiFeatures, pet_voi_features, register_pet_ct
from concordose.quant.registration import RigidRegistration


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
