"""Reader for VOIs delivered as DICOM Segmentation (SEG), via highdicom.

The header values highdicom builds the volume from are checked first (:func:`check_seg_header`),
so a malformed one is a :class:`~concordose.errors.MalformedHeaderError` naming the keyword, the
tag and the value (issue 18), never highdicom's ``KeyError``/``ValueError`` or a reshape error:
Rows, Columns, NumberOfFrames, BitsAllocated, the segments' numbers, one per-frame functional
groups item per frame with its plane position, the plane orientation and pixel measures (per
frame or shared), the segment each frame names, and the length of native PixelData.

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
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from concordose.dicom.header_values import (
    PARSE_ERRORS,
    check_native_pixel_data,
    finite_floats,
    header_value,
    image_orientation,
    image_position_mm,
    integer,
    one_of,
    optional,
    positive_int,
    strictly_positive_float,
    tag_text,
)
from concordose.errors import MalformedHeaderError, StudyIncompleteError, UnreadableDicomError

__all__ = [
    "LESION_LABEL_PREFIXES",
    "VoiMask",
    "VoiType",
    "bounding_box_crop",
    "check_seg_header",
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
_COUNT = "an integer ≥ 1 (IS/US)"
LABELMAP = "LABELMAP"
"""SegmentationType (0062,0001) whose frames hold every segment as labels (PS3.3
C.8.20.2.1), so name none in SegmentIdentificationSequence."""
_GROUPS = "in the frame's PerFrameFunctionalGroupsSequence item or the shared one"


def _group_item(path: Path, frame: Dataset, shared: Dataset | None, keyword: str) -> Dataset:
    """The one item of functional group ``keyword`` for a frame: its own, else the shared."""
    for groups in (frame, shared):
        if groups is not None and groups.get(keyword):
            item: Dataset = groups[keyword].value[0]
            return item
    raise MalformedHeaderError(path, keyword, tag_text(keyword), "missing", _GROUPS)


def _label(value: object) -> int:
    """A LABELMAP's segment number: its pixel value, ≥ 0 (0 may describe the background)."""
    number = integer(value)
    if number < 0:
        raise ValueError(f"{number} < 0")
    return number


def _check_segment_identification(
    path: Path, frame: Dataset, shared: Dataset | None, segments: set[int]
) -> None:
    """The segment a frame holds is one of SegmentSequence's."""
    identification = _group_item(path, frame, shared, "SegmentIdentificationSequence")
    number = header_value(
        identification, "ReferencedSegmentNumber", positive_int, expected=_COUNT, path=path
    )
    if number not in segments:
        raise MalformedHeaderError(
            path,
            "ReferencedSegmentNumber",
            tag_text("ReferencedSegmentNumber"),
            str(number),
            f"the SegmentNumber of a segment in SegmentSequence ({sorted(segments)})",
        )


def _check_frame(
    path: Path,
    frame: Dataset,
    shared: Dataset | None,
    segments: set[int] | None,
    checked: set[int],
) -> None:
    """One frame's plane position, orientation, pixel measures and segment (``segments``
    None: a LABELMAP's frames hold every segment, none is named); items shared by frames are
    checked once (``checked`` holds their ids)."""
    position = _group_item(path, frame, shared, "PlanePositionSequence")
    image_position_mm(position, path)
    if segments is not None:
        _check_segment_identification(path, frame, shared, segments)
    orientation = _group_item(path, frame, shared, "PlaneOrientationSequence")
    if id(orientation) not in checked:
        image_orientation(orientation, path)
        checked.add(id(orientation))
    measures = _group_item(path, frame, shared, "PixelMeasuresSequence")
    if id(measures) not in checked:
        header_value(
            measures,
            "PixelSpacing",
            finite_floats(2, positive=True),
            expected="2 positive numbers (mm)",
            path=path,
        )
        for keyword in ("SliceThickness", "SpacingBetweenSlices"):
            header_value(
                measures,
                keyword,
                optional(strictly_positive_float),
                expected="a positive number (mm)",
                path=path,
            )
        checked.add(id(measures))


def check_seg_header(dataset: Dataset, path: Path) -> list[int]:
    """Check the values a SEG's volume is built from (see the module docstring); returns the
    segment numbers in SegmentSequence order.

    Raises:
        MalformedHeaderError: naming the keyword, tag and value at fault.
    """
    rows, columns = (
        header_value(dataset, keyword, positive_int, expected="an integer ≥ 1 (US)", path=path)
        for keyword in ("Rows", "Columns")
    )
    frames = header_value(dataset, "NumberOfFrames", positive_int, expected=_COUNT, path=path)
    bits = header_value(
        dataset, "BitsAllocated", one_of(1, 8, 16), expected="1, 8 or 16 (US)", path=path
    )
    if not dataset.get("SegmentSequence"):
        raise MalformedHeaderError(
            path, "SegmentSequence", tag_text("SegmentSequence"), "missing", "≥ 1 segment"
        )
    labelmap = str(dataset.get("SegmentationType", "")).upper() == LABELMAP
    numbers = [
        header_value(
            item,
            "SegmentNumber",
            _label if labelmap else positive_int,
            expected="an integer ≥ 0 (US)" if labelmap else _COUNT,
            path=path,
        )
        for item in dataset.SegmentSequence
    ]
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != frames:
        keyword = "PerFrameFunctionalGroupsSequence"
        found = "missing" if per_frame is None else f"{len(per_frame)} items"
        raise MalformedHeaderError(
            path,
            keyword,
            tag_text(keyword),
            found,
            f"one item per frame: NumberOfFrames (0028,0008) {frames}",
        )
    shared_groups = dataset.get("SharedFunctionalGroupsSequence")
    shared = shared_groups[0] if shared_groups else None
    segments, checked = None if labelmap else set(numbers), set[int]()
    for frame in per_frame:
        _check_frame(path, frame, shared, segments, checked)
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not UID(str(syntax)).is_encapsulated:
        check_native_pixel_data(
            dataset, path, frames=frames, rows=rows, columns=columns, bits_allocated=bits
        )
    return numbers


def read_segmentation(path: Path) -> list[VoiMask]:
    """Read every segment of a DICOM SEG as a binary mask cropped to its bounding box.

    Raises:
        UnreadableDicomError: not a readable DICOM SEG; a malformed header value
            (:class:`~concordose.errors.MalformedHeaderError`: keyword, tag, value).
        StudyIncompleteError: the SEG holds no segment with any voxel set.
    """
    try:
        dataset = dcmread(path)
        numbers = check_seg_header(dataset, path)
        seg = hd.seg.Segmentation.from_dataset(dataset, copy=False)
    except MalformedHeaderError:
        raise
    except _READ_ERRORS as exc:
        raise UnreadableDicomError(
            path, f"not a readable DICOM SEG: {type(exc).__name__}: {exc}"
        ) from exc
    masks = []
    for item, number in zip(seg.SegmentSequence, numbers, strict=True):
        if number == 0:
            continue  # a LABELMAP's background (pixel value 0): no VOI
        label = str(item.get("SegmentLabel") or "").strip() or f"segment {number}"
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
