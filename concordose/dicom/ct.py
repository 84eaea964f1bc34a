"""Reader for CT series (one file per slice) as a SimpleITK volume in patient space (HU)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from concordose.dicom.header_values import direction_cosines, finite_floats, header_value
from concordose.errors import StudyIncompleteError, UnreadableDicomError


def read_ct_series(files: Sequence[Path]) -> sitk.Image:
    """Stack CT slices into one int16 volume (HU), ordered along the slice normal.

    Raises:
        StudyIncompleteError: fewer than 2 slices, or slices of different orientations.
        UnreadableDicomError: a slice is not readable DICOM, or its position or orientation
            is malformed (:class:`~concordose.errors.MalformedHeaderError`: keyword, tag, value).
    """
    if len(files) < 2:
        raise StudyIncompleteError(f"a CT series needs ≥ 2 slices, got {len(files)}")
    positions = []
    orientations = set()
    for path in files:
        try:
            header = dcmread(
                path,
                stop_before_pixels=True,
                specific_tags=["ImagePositionPatient", "ImageOrientationPatient"],
            )
        except (InvalidDicomError, OSError) as exc:
            raise UnreadableDicomError(path, str(exc)) from exc
        if "ImagePositionPatient" not in header or "ImageOrientationPatient" not in header:
            raise StudyIncompleteError(f"CT slice {path}: no ImagePositionPatient/Orientation")
        cosines = header_value(
            header,
            "ImageOrientationPatient",
            direction_cosines,
            expected="6 direction cosines: two unit vectors at right angles",
            path=path,
        )
        orientations.add(tuple(round(v, 6) for v in cosines))
        position = header_value(
            header, "ImagePositionPatient", finite_floats(3), expected="3 numbers (mm)", path=path
        )
        positions.append(list(position))
    if len(orientations) != 1:
        raise StudyIncompleteError(f"CT series of {len(files)} slices mixes orientations")
    (orientation,) = orientations
    normal = np.cross(orientation[:3], orientation[3:])
    order = np.argsort(np.asarray(positions) @ normal)
    reader = sitk.ImageSeriesReader()
    # HU are integers within ±32 767 on every scanner: int16 halves the volume against the
    # reader's default (int32 or float32 after rescaling).
    reader.SetOutputPixelType(sitk.sitkInt16)
    reader.SetFileNames([str(files[i]) for i in order])
    try:
        volume: sitk.Image = reader.Execute()
    except RuntimeError as exc:  # ITK/GDCM: pixel data not matching Rows × Columns, …
        raise UnreadableDicomError(
            files[0], f"SimpleITK cannot read the CT series of {len(files)} slices: {exc}"
        ) from exc
    return volume
