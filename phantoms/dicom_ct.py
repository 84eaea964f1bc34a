"""Writer of the low-dose CT of one time point: CT Image Storage, one file per slice.

HU values are uniform per region plus small Gaussian noise; stored as int16 with
RescaleIntercept −1024 and RescaleSlope 1 (stored value = HU + 1024).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage

from phantoms.dicom_study import (
    PatientInfo,
    TimePointStudy,
    add_patient_study_equipment,
    new_file_dataset,
)
from phantoms.grid import VoxelGrid
from phantoms.site_profiles import SiteProfile

RESCALE_INTERCEPT_HU = -1024
"""HU of stored value 0."""


def write_ct_series(
    folder: Path,
    *,
    hu: NDArray[np.int16],
    grid: VoxelGrid,
    site: SiteProfile,
    patient: PatientInfo,
    study: TimePointStudy,
    series_instance_uid: UID,
    sop_instance_uids: list[UID],
    study_description: str | None = None,
    series_description: str | None = None,
) -> list[tuple[Path, Dataset]]:
    """Write ``hu`` (shape ``grid.shape_zyx``, Hounsfield units) as ``folder/0001.dcm``, ….

    Slice k (file k+1, InstanceNumber k+1) lies at z = origin_z + k·slice spacing.

    Returns:
        (path, dataset) per slice, in slice order.

    Raises:
        ValueError: when ``hu`` does not match the grid or the number of UIDs.
    """
    if hu.shape != grid.shape_zyx or len(sop_instance_uids) != grid.n_slices:
        raise ValueError(
            f"CT HU must have shape {grid.shape_zyx} and one UID per slice; got {hu.shape} and "
            f"{len(sop_instance_uids)} UIDs"
        )
    folder.mkdir(parents=True, exist_ok=True)
    stored = (hu.astype(np.int32) - RESCALE_INTERCEPT_HU).astype(np.int16)
    x0_mm, y0_mm, z0_mm = grid.origin_mm_xyz
    sx_mm, sy_mm, sz_mm = grid.spacing_mm_xyz
    written: list[tuple[Path, Dataset]] = []
    for k in range(grid.n_slices):
        ds = new_file_dataset(CTImageStorage, sop_instance_uids[k])
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        add_patient_study_equipment(
            ds,
            patient=patient,
            study=study,
            site=site,
            series_instance_uid=series_instance_uid,
            series_number=study.index,
            series_description=series_description
            or f"CT AC low dose TP{study.index} {study.time_h:g}h p.i.",
            modality="CT",
            study_description=study_description,
        )
        ds.InstanceNumber = k + 1
        z_mm = z0_mm + k * sz_mm
        ds.ImagePositionPatient = [f"{x0_mm:.6f}", f"{y0_mm:.6f}", f"{z_mm:.6f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = f"{z_mm:.6f}"
        ds.PixelSpacing = [f"{sy_mm:.6g}", f"{sx_mm:.6g}"]
        ds.SliceThickness = f"{sz_mm:.6g}"
        ds.KVP = 120
        ds.XRayTubeCurrent = 30
        ds.ConvolutionKernel = "B08s"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = grid.n_rows
        ds.Columns = grid.n_columns
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = RESCALE_INTERCEPT_HU
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        path = folder / f"{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append((path, ds))
    return written


def hu_map(
    labels: NDArray[np.uint8],
    hu_by_value: Mapping[int, float],
    *,
    noise_sd_hu: float,
    rng: np.random.Generator,
) -> NDArray[np.int16]:
    """HU image from a label map: each label value's HU plus Gaussian noise of ``noise_sd_hu``.

    Raises:
        KeyError: when the label map holds a value missing from ``hu_by_value``.
    """
    lookup = np.full(256, np.nan)
    for value, hu in hu_by_value.items():
        lookup[value] = hu
    mean_hu = lookup[labels]
    if np.isnan(mean_hu).any():
        missing = sorted(set(np.unique(labels).tolist()) - set(hu_by_value))
        raise KeyError(f"label values {missing} have no HU assigned")
    noisy_hu = mean_hu + rng.normal(0.0, noise_sd_hu, size=labels.shape)
    return np.clip(np.rint(noisy_hu), -1024, 3071).astype(np.int16)
