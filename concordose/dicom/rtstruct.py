"""Reader for VOIs delivered as an RT Structure Set (RTSTRUCT), via rt-utils.

An RTSTRUCT holds each ROI as planar contours (patient mm) on the slices of the CT it was drawn
on, not as voxels. rt-utils (``image_helper.create_series_mask_from_contour_sequence``, what
``RTStruct.get_roi_mask_by_name`` runs, here by ROI number so that two ROIs may share a name)
fills those contours on that CT's grid, one slice at a time (OpenCV ``fillPoly``: a voxel is
inside when its centre is inside or on the polygon, the contour of a hole cut out); this module
only finds the referenced CT slices, places the filled mask in patient
space and keeps, like the SEG reader (:mod:`concordose.dicom.seg`), a :class:`~concordose.dicom.
seg.VoiMask` per ROI cropped to its bounding box. VOI types follow the ROI's
``RTROIInterpretedType`` (GTV/CTV/PTV → lesion, ORGAN/AVOIDANCE → organ), else its name, by the
SEG's rule (:func:`~concordose.dicom.seg.voi_type_from_label`).

Only the CT headers are read (rt-utils needs their geometry and SOP instance UIDs, never their
pixels); one ROI's full-grid mask exists at a time (512 × 512 × 300 bytes ≈ 79 MB at most).

Assumptions rt-utils makes, checked here: the CT slices are square (Rows = Columns) with square
pixels (its pixel↔patient transform swaps the in-plane axes' spacings otherwise), and every
contour names the CT image it lies on (``ContourImageSequence``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import RTStructureSetStorage
from rt_utils import image_helper

from concordose.dicom.ct import read_ct_header
from concordose.dicom.header_values import (
    PARSE_ERRORS,
    coordinate_triplets,
    header_value,
    integer,
    required_text,
)
from concordose.dicom.seg import VoiMask, VoiType, bounding_box_crop, voi_type_from_label
from concordose.errors import StudyIncompleteError, UnreadableDicomError

__all__ = [
    "INTERPRETED_TYPE_VOI_TYPES",
    "read_rtstruct",
    "rtstruct_frame_of_reference",
    "rtstruct_series_uid",
]

INTERPRETED_TYPE_VOI_TYPES = {
    # DICOM PS3.3 C.8.8.8.1 "RT ROI Interpreted Type", defined terms
    "GTV": VoiType.LESION,
    "CTV": VoiType.LESION,
    "PTV": VoiType.LESION,
    "ORGAN": VoiType.ORGAN,
    "AVOIDANCE": VoiType.ORGAN,
}
"""RT ROI Interpreted Type → VOI type; any other (EXTERNAL, CONTROL, empty…) falls back to the
ROI's name."""

_PIXEL_SPACING_TOLERANCE_MM = 1e-4


def rtstruct_frame_of_reference(dataset: Dataset) -> str | None:
    """The frame of reference the RTSTRUCT's contours lie in (its first
    ``ReferencedFrameOfReferenceSequence`` item), None when it names none."""
    items = dataset.get("ReferencedFrameOfReferenceSequence") or []
    for item in items:
        uid = str(item.get("FrameOfReferenceUID") or "")
        if uid:
            return uid
    return None


def rtstruct_series_uid(dataset: Dataset) -> str | None:
    """The SeriesInstanceUID of the image series the RTSTRUCT references, None when it names
    none (``RTReferencedStudySequence`` is optional)."""
    for frame in dataset.get("ReferencedFrameOfReferenceSequence") or []:
        for study in frame.get("RTReferencedStudySequence") or []:
            for series in study.get("RTReferencedSeriesSequence") or []:
                uid = str(series.get("SeriesInstanceUID") or "")
                if uid:
                    return uid
    return None


_FILE_ERRORS: tuple[type[Exception], ...] = (InvalidDicomError, OSError, EOFError, *PARSE_ERRORS)
"""What pydicom raises for a file it cannot parse at all."""
_VALUE_ERRORS: tuple[type[Exception], ...] = (*PARSE_ERRORS, NotImplementedError)
"""What reading a value not behind a named parse point can raise (a sequence pydicom cannot
decode, a VR it does not know)."""


def _ct_header(ct_path: Path) -> Dataset:
    """One CT slice's header checked as the CT reader checks it
    (:func:`~concordose.dicom.ct.read_ct_header`: geometry written back as numbers for
    rt-utils), and the SOP Instance UID each contour names its slice by."""
    header = read_ct_header(ct_path)
    header_value(header, "SOPInstanceUID", required_text, expected="a UID", path=ct_path)
    return header


def _grid_of(header: Dataset) -> tuple[object, ...]:
    """What every slice of one CT grid shares: size, pixel spacing, orientation."""
    return (
        header.Rows,
        header.Columns,
        tuple(header.PixelSpacing),
        tuple(round(float(v), 6) for v in header.ImageOrientationPatient),
    )


def _referenced_ct_headers(path: Path, dataset: Dataset, ct_files: Sequence[Path]) -> list[Dataset]:
    """The headers of the CT slices the RTSTRUCT was drawn on, in rt-utils' slice order."""
    series_uid = rtstruct_series_uid(dataset)
    headers: list[Dataset] = []
    for ct_path in ct_files:
        header = _ct_header(ct_path)
        if series_uid is None or str(header.get("SeriesInstanceUID", "")) == series_uid:
            headers.append(header)
    if len(headers) < 2:
        raise StudyIncompleteError(
            f"RTSTRUCT {path} is drawn on CT series {series_uid or '(not named)'}, but "
            f"{len(headers)} of its slices were received (expected the whole series, ≥ 2); send "
            "the CT the contours were drawn on"
        )
    first = headers[0]
    rows, columns = int(first.Rows), int(first.Columns)
    spacing = [float(v) for v in first.PixelSpacing]
    if rows != columns or not math.isclose(
        spacing[0], spacing[1], abs_tol=_PIXEL_SPACING_TOLERANCE_MM
    ):
        raise UnreadableDicomError(
            path,
            f"its CT has {rows} × {columns} pixels of {spacing[0]} × {spacing[1]} mm; reading "
            "an RTSTRUCT needs square slices with square pixels (rt-utils)",
        )
    for header in headers[1:]:
        if _grid_of(header) != _grid_of(first):
            raise UnreadableDicomError(
                path,
                f"its CT slices are not one grid: Rows, Columns, PixelSpacing, "
                f"ImageOrientationPatient {_grid_of(header)} in {header.filename}, "
                f"{_grid_of(first)} in {first.filename}",
            )
    try:
        headers.sort(key=image_helper.get_slice_position)
    except Exception as exc:  # rt-utils raises a bare Exception on a bad orientation
        raise UnreadableDicomError(path, f"its CT slices: {exc}") from exc
    first_at = image_helper.get_slice_position(headers[0])
    last_at = image_helper.get_slice_position(headers[-1])
    if not last_at - first_at > 0:
        raise UnreadableDicomError(
            path,
            f"its {len(headers)} CT slices all lie at one position along their normal "
            f"(ImagePositionPatient (0020,0032) {list(headers[0].ImagePositionPatient)}); "
            "expected slices at distinct positions",
        )
    return headers


def _grid_image(headers: list[Dataset], array_zyx: npt.NDArray[np.uint8]) -> sitk.Image:
    """``array_zyx`` (slice, row, column) as an image on the CT grid: rt-utils' own
    pixel → patient transform gives origin, spacing and direction, so voxels sit exactly where
    it filled them."""
    matrix = np.asarray(
        image_helper.get_pixel_to_patient_transformation_matrix(headers), dtype=np.float64
    )
    axes = matrix[:3, :3]  # columns: column index, row index, slice index → patient mm
    spacing = np.linalg.norm(axes, axis=0)
    image = sitk.GetImageFromArray(array_zyx)
    image.SetOrigin(tuple(float(v) for v in matrix[:3, 3]))
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetDirection(tuple(float(v) for v in (axes / spacing).ravel()))
    return image


_ROI_NUMBER = "an integer (IS)"


def _contours(path: Path, dataset: Dataset, number: int, label: str) -> list[Dataset]:
    """The contours of ROI ``number`` (none: an empty ROI), each naming its CT image, their
    ContourData checked and written back as numbers."""
    contours: list[Dataset] = []
    for roi_contour in dataset.get("ROIContourSequence") or []:
        referenced = header_value(
            roi_contour, "ReferencedROINumber", integer, expected=_ROI_NUMBER, path=path
        )
        if referenced == number:
            contours = list(roi_contour.get("ContourSequence") or [])
            break
    kept = []
    for contour in contours:
        images = contour.get("ContourImageSequence")
        if not images:
            raise UnreadableDicomError(
                path,
                f"ROI {number} {label!r}: a contour names no CT image (ContourImageSequence); "
                "expected every contour to reference the slice it lies on",
            )
        for image in images:
            header_value(
                image, "ReferencedSOPInstanceUID", required_text, expected="a UID", path=path
            )
        points = header_value(
            contour,
            "ContourData",
            coordinate_triplets,
            expected="x\\y\\z triplets of numbers (mm)",
            path=path,
        )
        contour.ContourData = [v for point in points for v in point]
        kept.append(contour)
    return kept


def read_rtstruct(path: Path, ct_files: Sequence[Path]) -> list[VoiMask]:
    """Read every ROI of an RTSTRUCT as a binary mask on its CT's grid, cropped to the ROI's
    bounding box.

    Args:
        path: the RT Structure Set Storage file.
        ct_files: CT slices in the RTSTRUCT's frame of reference (the cycle's); those of the
            series it references are used.

    Raises:
        UnreadableDicomError: not a readable RTSTRUCT, or contours rt-utils cannot place.
        StudyIncompleteError: the referenced CT was not received, or no ROI has any voxel.
    """
    try:
        dataset = dcmread(path)
    except _FILE_ERRORS as exc:
        raise UnreadableDicomError(
            path, f"not a readable DICOM RTSTRUCT: {type(exc).__name__}: {exc}"
        ) from exc
    if str(dataset.get("SOPClassUID", "")) != RTStructureSetStorage:
        raise UnreadableDicomError(
            path, f"expected RT Structure Set Storage, found SOP class {dataset.get('SOPClassUID')}"
        )
    try:
        return _masks(path, dataset, ct_files)
    except _VALUE_ERRORS as exc:
        # A value the parse points do not name (e.g. a sequence pydicom cannot decode).
        raise UnreadableDicomError(
            path, f"RTSTRUCT could not be read: {type(exc).__name__}: {exc}"
        ) from exc


def _masks(path: Path, dataset: Dataset, ct_files: Sequence[Path]) -> list[VoiMask]:
    headers = _referenced_ct_headers(path, dataset, ct_files)
    interpreted = {
        header_value(item, "ReferencedROINumber", integer, expected=_ROI_NUMBER, path=path): str(
            item.get("RTROIInterpretedType") or ""
        ).upper()
        for item in dataset.get("RTROIObservationsSequence") or []
    }
    masks = []
    for roi in dataset.get("StructureSetROISequence") or []:
        number = header_value(roi, "ROINumber", integer, expected=_ROI_NUMBER, path=path)
        label = str(roi.get("ROIName") or "").strip() or f"ROI {number}"
        contours = _contours(path, dataset, number, label)
        if not contours:
            continue
        try:
            # (row, column, slice), bool; filled by the slice each contour names
            filled = image_helper.create_series_mask_from_contour_sequence(headers, contours)
            image = _grid_image(headers, np.ascontiguousarray(filled.transpose(2, 0, 1), np.uint8))
        except Exception as exc:  # rt-utils: a bare Exception on a bad orientation, cv2.error…
            raise UnreadableDicomError(
                path, f"ROI {number} {label!r}: rt-utils cannot fill its contours: {exc}"
            ) from exc
        del filled
        cropped = bounding_box_crop(image)
        if cropped is None:
            continue
        voi_type = INTERPRETED_TYPE_VOI_TYPES.get(interpreted.get(number, ""))
        masks.append(
            VoiMask(
                label=label,
                segment_number=number,
                voi_type=voi_type or voi_type_from_label(label),
                mask=cropped,
            )
        )
    if not masks:
        raise StudyIncompleteError(f"RTSTRUCT {path} holds no ROI with any voxel inside")
    return masks
