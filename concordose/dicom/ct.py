"""Reader for CT series (one file per slice) as a SimpleITK volume in patient space (HU).

Every header value the volume is built from is checked before SimpleITK (GDCM) reads the
series, so a malformed one is a :class:`~concordose.errors.MalformedHeaderError` naming the
keyword, the tag and the value (issue 18), never a GDCM ``RuntimeError``: per slice Rows,
Columns, BitsAllocated, PixelSpacing, SliceThickness (when given), ImagePositionPatient,
ImageOrientationPatient, RescaleSlope/Intercept and the length of native PixelData; across
slices one grid (size, pixel spacing, orientation) and distinct positions along the normal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from concordose.dicom.header_values import (
    PARSE_ERRORS,
    check_native_pixel_data,
    finite_floats,
    header_value,
    image_orientation,
    image_position_mm,
    one_of,
    optional,
    optional_float,
    positive_int,
    strictly_positive_float,
)
from concordose.errors import MalformedHeaderError, StudyIncompleteError, UnreadableDicomError

_FILE_ERRORS: tuple[type[Exception], ...] = (InvalidDicomError, OSError, EOFError, *PARSE_ERRORS)
"""What pydicom raises for a file it cannot parse at all."""
_DEFER_BYTES = 1024
"""Values over this are left unread (pixel data: only its length is checked)."""
_SAME_POSITION_MM = 1e-3
"""Two slices closer than this along the normal are at one position (scanners write
positions to 0.01 mm or finer)."""
_PIXEL_SPACING_TOLERANCE_MM = 1e-4


@dataclass(frozen=True)
class _Slice:
    path: Path
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, ...]
    position_mm: tuple[float, ...]
    orientation: tuple[float, ...]


def read_ct_header(path: Path) -> Dataset:
    """One CT slice's header (pixels left unread), every value a volume is built from checked
    (see the module docstring) and the geometry written back as numbers (Rows, Columns,
    PixelSpacing, ImagePositionPatient, ImageOrientationPatient), so that a library reading
    the header after us (rt-utils) never meets text where it expects a number.

    Raises:
        UnreadableDicomError: not DICOM; MalformedHeaderError: a value malformed.
        StudyIncompleteError: no ImagePositionPatient/ImageOrientationPatient.
    """
    try:
        header: Dataset = dcmread(path, defer_size=_DEFER_BYTES)
    except _FILE_ERRORS as exc:
        raise UnreadableDicomError(path, f"{type(exc).__name__}: {exc}") from exc
    if "ImagePositionPatient" not in header or "ImageOrientationPatient" not in header:
        raise StudyIncompleteError(f"CT slice {path}: no ImagePositionPatient/Orientation")
    rows, columns = (
        header_value(header, keyword, positive_int, expected="an integer ≥ 1 (US)", path=path)
        for keyword in ("Rows", "Columns")
    )
    bits = header_value(
        header, "BitsAllocated", one_of(8, 16, 32), expected="8, 16 or 32 (US)", path=path
    )
    spacing = header_value(
        header,
        "PixelSpacing",
        finite_floats(2, positive=True),
        expected="2 positive numbers (mm)",
        path=path,
    )
    header_value(
        header,
        "SliceThickness",
        optional(strictly_positive_float),
        expected="a positive number (mm) or empty",
        path=path,
    )
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        header_value(header, keyword, optional_float, expected="a number (DS)", path=path)
    cosines = image_orientation(header, path)
    position = image_position_mm(header, path)
    check_native_pixel_data(header, path, frames=1, rows=rows, columns=columns, bits_allocated=bits)
    header.Rows, header.Columns = rows, columns
    header.PixelSpacing = list(spacing)
    header.ImagePositionPatient = list(position)
    header.ImageOrientationPatient = list(cosines)
    return header


def _checked_slice(path: Path) -> _Slice:
    """One slice's checked geometry (:func:`read_ct_header`)."""
    header = read_ct_header(path)
    return _Slice(
        path,
        int(header.Rows),
        int(header.Columns),
        tuple(float(v) for v in header.PixelSpacing),
        tuple(float(v) for v in header.ImagePositionPatient),
        tuple(float(v) for v in header.ImageOrientationPatient),
    )


def _check_one_grid(slices: list[_Slice]) -> None:
    """Every slice has the first's size and pixel spacing (SimpleITK takes the first's)."""
    first = slices[0]
    for other in slices[1:]:
        if (other.rows, other.columns) != (first.rows, first.columns):
            raise UnreadableDicomError(
                other.path,
                f"Rows (0028,0010) × Columns (0028,0011) are {other.rows} × {other.columns}, "
                f"expected {first.rows} × {first.columns} as in {first.path.name} of the series",
            )
        if not all(
            math.isclose(a, b, abs_tol=_PIXEL_SPACING_TOLERANCE_MM)
            for a, b in zip(other.pixel_spacing_mm, first.pixel_spacing_mm, strict=True)
        ):
            raise UnreadableDicomError(
                other.path,
                f"PixelSpacing (0028,0030) is {list(other.pixel_spacing_mm)}, expected "
                f"{list(first.pixel_spacing_mm)} as in {first.path.name} of the series",
            )


def _checked_order(files: Sequence[Path]) -> list[int]:
    """The checks of :func:`check_ct_series`; the slices' order along their normal."""
    if len(files) < 2:
        raise StudyIncompleteError(f"a CT series needs ≥ 2 slices, got {len(files)}")
    slices = [_checked_slice(path) for path in files]
    orientations = {tuple(round(v, 6) for v in s.orientation) for s in slices}
    if len(orientations) != 1:
        raise StudyIncompleteError(f"CT series of {len(files)} slices mixes orientations")
    _check_one_grid(slices)
    (orientation,) = orientations
    normal = np.cross(orientation[:3], orientation[3:])
    along_mm = np.asarray([s.position_mm for s in slices]) @ normal
    order = [int(i) for i in np.argsort(along_mm)]
    gaps_mm = np.diff(along_mm[order])
    if gaps_mm.size and gaps_mm.min() < _SAME_POSITION_MM:
        at = int(np.argmin(gaps_mm))
        one, other = slices[order[at]], slices[order[at + 1]]
        raise UnreadableDicomError(
            other.path,
            f"ImagePositionPatient (0020,0032) {list(other.position_mm)} puts it at the position "
            f"of {one.path.name} ({list(one.position_mm)}) along the slice normal; expected "
            "one slice per position",
        )
    return order


def check_ct_headers(files: Sequence[Path]) -> None:
    """Check every slice's header values as :func:`read_ct_series` would (see the module
    docstring), without its pixels: cheap enough to hold a cycle before processing. Only
    malformed values are raised; a slice that is not DICOM or lacks its position, or slices
    that do not make one series, are :func:`read_ct_series`' to report when the series is read
    (a CT the cycle does not register to is never read).

    Raises:
        MalformedHeaderError: naming keyword, tag and value.
    """
    for path in files:
        try:
            _checked_slice(path)
        except MalformedHeaderError:
            raise
        except (StudyIncompleteError, UnreadableDicomError):
            continue


def read_ct_series(files: Sequence[Path]) -> sitk.Image:
    """Stack CT slices into one int16 volume (HU), ordered along the slice normal.

    Raises:
        StudyIncompleteError: fewer than 2 slices, or slices of different orientations.
        UnreadableDicomError: a slice is not readable DICOM, slices are not one grid or two
            lie at one position, or a header value is malformed
            (:class:`~concordose.errors.MalformedHeaderError`: keyword, tag, value).
    """
    order = _checked_order(files)
    reader = sitk.ImageSeriesReader()
    # HU are integers within ±32 767 on every scanner: int16 halves the volume against the
    # reader's default (int32 or float32 after rescaling).
    reader.SetOutputPixelType(sitk.sitkInt16)
    reader.SetFileNames([str(files[i]) for i in order])
    try:
        volume: sitk.Image = reader.Execute()
    except RuntimeError as exc:  # ITK/GDCM: what the checks above do not cover
        raise UnreadableDicomError(
            files[0], f"SimpleITK cannot read the CT series of {len(files)} slices: {exc}"
        ) from exc
    return volume
