"""Reader for VOIs delivered as DICOM Segmentation (SEG), via highdicom.

Each segment becomes a :class:`VoiMask` on the segmentation's own grid (normally the CT of the
first time point), cropped to the segment's bounding box: segments are decoded one at a time and
only the crop is kept, so a study's VOIs hold a few MB however large the CT (one 512 × 512 × 300
volume per segment would be 79 MB). Putting them on SPECT or dose grids is
:mod:`concordose.quant.voi`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from concordose.dicom.header_values import PARSE_ERRORS
from concordose.errors import StudyIncompleteError, UnreadableDicomError

__all__ = [
    "LESION_LABEL_PREFIXES",
    "VoiMask",
    "VoiType",
    "bounding_box_crop",
    "read_segmentation",
    "voi_type_from_label",
]

# SNOMED CT category codes (DICOM CID 7150 "Segmentation Property Categories").
_LESION_CATEGORY_CODES = {"49755003"}  # Morphologically abnormal structure
_ORGAN_CATEGORY_CODES = {"91723000", "123037004"}  # Anatomical structure; Body structure


class VoiType(StrEnum):
    """What a VOI is, which decides the methods that apply (e.g. PVC for lesions)."""

    ORGAN = "organ"
    LESION = "lesion"


@dataclass(frozen=True)
class VoiMask:
    """One segment: its identity and its binary mask on the segmentation grid.

    Attributes:
        label: SegmentLabel, e.g. ``"kidney_left"``; unique within a study.
        segment_number: SegmentNumber in the SEG.
        voi_type: organ or lesion, from the segmented property category.
        mask: uint8 SimpleITK image (1 inside) on the SEG's grid (spacing, direction), covering
            the segment's bounding box only: its origin places the crop in patient space.
    """

    label: str
    segment_number: int
    voi_type: VoiType
    mask: sitk.Image


LESION_LABEL_PREFIXES = ("lesion", "tumo")
"""How a VOI's name marks a lesion (any case) when its object codes no type: ``lesion_1``,
``Tumour``, ``tumor_liver``; any other name is an organ. The one rule for SEG and RTSTRUCT."""


def voi_type_from_label(label: str) -> VoiType:
    """A VOI's type from its name alone (:data:`LESION_LABEL_PREFIXES`), for VOIs whose object
    codes no type (a SEG segment without a known category, an RTSTRUCT ROI without a known
    interpreted type)."""
    return VoiType.LESION if label.lower().startswith(LESION_LABEL_PREFIXES) else VoiType.ORGAN


def _voi_type(segment: object, label: str) -> VoiType:
    categories = getattr(segment, "SegmentedPropertyCategoryCodeSequence", None) or []
    codes = {str(item.CodeValue) for item in categories}
    if codes & _LESION_CATEGORY_CODES:
        return VoiType.LESION
    if codes & _ORGAN_CATEGORY_CODES:
        return VoiType.ORGAN
    return voi_type_from_label(label)


def bounding_box_crop(image: sitk.Image) -> sitk.Image | None:
    """``image`` cut to the box holding its non-zero voxels (None when it has none)."""
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(sitk.Cast(image > 0, sitk.sitkUInt8))
    if not statistics.HasLabel(1):
        return None
    box = statistics.GetBoundingBox(1)  # index (x, y, z) then size
    cropped: sitk.Image = sitk.RegionOfInterest(image, box[3:], box[:3])
    return cropped


_READ_ERRORS: tuple[type[Exception], ...] = (
    InvalidDicomError,
    OSError,
    EOFError,
    NotImplementedError,
    *PARSE_ERRORS,
)
_VOLUME_ERRORS: tuple[type[Exception], ...] = (RuntimeError, *PARSE_ERRORS)


def read_segmentation(path: Path) -> list[VoiMask]:
    """Read every segment of a DICOM SEG as a binary mask cropped to its bounding box.

    Raises:
        UnreadableDicomError: not a readable DICOM SEG.
        StudyIncompleteError: the SEG holds no segment with any voxel set.
    """
    try:
        seg = hd.seg.segread(path)
    except _READ_ERRORS as exc:
        raise UnreadableDicomError(
            path, f"not a readable DICOM SEG: {type(exc).__name__}: {exc}"
        ) from exc
    masks = []
    for item in seg.SegmentSequence:
        label, number = str(item.SegmentLabel), int(item.SegmentNumber)
        try:
            volume = seg.get_volume(segment_numbers=[number], dtype=np.uint8)
            image = volume.with_array(np.ascontiguousarray(volume.array[..., 0])).to_simpleitk()
        except _VOLUME_ERRORS as exc:
            # highdicom raises anything for a malformed plane position or orientation
            # (KeyError for a missing functional group, TypeError for text in a number…).
            raise UnreadableDicomError(
                path, f"SEG is not a regularly spaced 3-D volume: {type(exc).__name__}: {exc}"
            ) from exc
        del volume
        cropped = bounding_box_crop(image)
        if cropped is None:
            continue
        masks.append(
            VoiMask(
                label=label,
                segment_number=number,
                voi_type=_voi_type(item, label),
                mask=cropped,
            )
        )
    if not masks:
        raise StudyIncompleteError(f"SEG {path} holds no segment with any voxel set")
    return masks
