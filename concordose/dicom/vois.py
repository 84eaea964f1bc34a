"""A cycle's VOIs from whichever object a site sends them in: a DICOM SEG
(:mod:`concordose.dicom.seg`) or an RT Structure Set (:mod:`concordose.dicom.rtstruct`). Either
way the result is the same :class:`~concordose.dicom.seg.VoiMask` list on the CT grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import RTStructureSetStorage, SegmentationStorage

from concordose.dicom.rtstruct import read_rtstruct
from concordose.dicom.seg import VoiMask, read_segmentation
from concordose.errors import UnreadableDicomError

__all__ = ["VOI_SOP_CLASSES", "read_voi_masks"]

VOI_SOP_CLASSES = frozenset({SegmentationStorage, RTStructureSetStorage})
"""The SOP classes that carry a cycle's VOIs."""


def read_voi_masks(path: Path, ct_files: Sequence[Path] = ()) -> list[VoiMask]:
    """Every VOI of a SEG or an RTSTRUCT as a mask cropped to its bounding box.

    Args:
        path: the SEG or RTSTRUCT.
        ct_files: CT slices in its frame of reference (an RTSTRUCT is filled on the CT it was
            drawn on; a SEG carries its own grid and ignores them).

    Raises:
        UnreadableDicomError: neither a SEG nor an RTSTRUCT, or not readable as one.
        StudyIncompleteError: no VOI with any voxel, or an RTSTRUCT's CT was not received.
    """
    try:
        header = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (InvalidDicomError, OSError) as exc:
        raise UnreadableDicomError(path, str(exc)) from exc
    sop_class = str(header.get("SOPClassUID", ""))
    if sop_class == RTStructureSetStorage:
        return read_rtstruct(path, ct_files)
    if sop_class == SegmentationStorage:
        return read_segmentation(path)
    raise UnreadableDicomError(
        path, f"expected a DICOM SEG or RTSTRUCT holding the VOIs, found SOP class {sop_class}"
    )
