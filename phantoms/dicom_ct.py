"""The low-dose CT of one time point: HU images and their writer (CT Image Storage, one file per
slice).

HU values are uniform per region plus small Gaussian noise; the ``clinical`` preset adds the
CT-only anatomy (:func:`anatomical_hu_slices`). HU images are made slab by slab
(:data:`CT_SLAB_SLICES` slices), so a 512×512 CT never needs a floating-point volume. Stored as
int16 with RescaleIntercept −1024 and RescaleSlope 1 (stored value = HU + 1024), as scanners do.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage

from concordose.phantoms.anatomy import (
    CORTICAL_BONE_HU,
    DISC_HU,
    FAT_HU,
    LUNG_HU,
    RIB_HU,
    TRABECULAR_BONE_HU,
    EllipticCylinder,
    ct_tissues,
)
from concordose.phantoms.dicom_study import (
    PatientInfo,
    TimePointStudy,
    add_patient_study_equipment,
    new_file_dataset,
)
from concordose.phantoms.grid import VoxelGrid
from concordose.phantoms.site_profiles import SiteProfile

RESCALE_INTERCEPT_HU = -1024
"""HU of stored value 0."""
HU_RANGE = (-1024, 3071)
"""HU a 12-bit CT stores; values beyond are clipped."""
CT_SLAB_SLICES = 8
"""Slices made at a time (bounds the floating-point temporaries of a large CT)."""


def write_ct_series(
    folder: Path,
    *,
    hu: Iterable[NDArray[np.int16]],
    grid: VoxelGrid,
    site: SiteProfile,
    patient: PatientInfo,
    study: TimePointStudy,
    series_instance_uid: UID,
    sop_instance_uids: list[UID],
    study_description: str | None = None,
    series_description: str | None = None,
) -> list[tuple[Path, Dataset]]:
    """Write ``hu`` (Hounsfield units, one (rows, columns) image per slice of ``grid`` in slice
    order: a volume of shape ``grid.shape_zyx`` or any iterable of slices, e.g.
    :func:`anatomical_hu_slices`) as ``folder/0001.dcm``, ….

    Slice k (file k+1, InstanceNumber k+1) lies at z = origin_z + k·slice spacing.

    Returns:
        (path, dataset) per slice, in slice order.

    Raises:
        ValueError: when ``hu`` does not match the grid or the number of UIDs.
    """
    if len(sop_instance_uids) != grid.n_slices:
        raise ValueError(
            f"CT needs one UID per slice: {grid.n_slices} slices, {len(sop_instance_uids)} UIDs"
        )
    folder.mkdir(parents=True, exist_ok=True)
    x0_mm, y0_mm, z0_mm = grid.origin_mm_xyz
    sx_mm, sy_mm, sz_mm = grid.spacing_mm_xyz
    written: list[tuple[Path, Dataset]] = []
    for k, hu_slice in enumerate(hu):
        if k >= grid.n_slices or hu_slice.shape != grid.shape_zyx[1:]:
            raise ValueError(
                f"CT HU must be {grid.n_slices} slices of {grid.shape_zyx[1:]}; slice {k} has "
                f"shape {hu_slice.shape}"
            )
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
        stored = (hu_slice.astype(np.int32) - RESCALE_INTERCEPT_HU).astype(np.int16)
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        path = folder / f"{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append((path, ds))
    if len(written) != grid.n_slices:
        raise ValueError(f"CT HU has {len(written)} slices; the grid has {grid.n_slices}")
    return written


def hu_map(
    labels: NDArray[np.uint8],
    hu_by_value: Mapping[int, float],
    *,
    noise_sd_hu: float,
    rng: np.random.Generator,
) -> NDArray[np.int16]:
    """HU image from a label map: each label value's HU plus Gaussian noise of ``noise_sd_hu``.

    Made slab by slab; the noise is drawn in slice order, so the image is the same as one drawn
    for the whole volume at once.

    Raises:
        KeyError: when the label map holds a value missing from ``hu_by_value``.
    """
    lookup = _hu_lookup(hu_by_value)
    hu = np.empty(labels.shape, dtype=np.int16)
    for first in range(0, labels.shape[0], CT_SLAB_SLICES):
        slab = slice(first, first + CT_SLAB_SLICES)
        hu[slab] = _with_noise(_mean_hu(labels[slab], lookup, hu_by_value), noise_sd_hu, rng)
    return hu


def anatomical_hu_slices(
    labels: NDArray[np.uint8],
    grid: VoxelGrid,
    hu_by_value: Mapping[int, float],
    *,
    body: EllipticCylinder,
    paint_over: Collection[int],
    noise_sd_hu: float,
    rng: np.random.Generator,
) -> Iterator[NDArray[np.int16]]:
    """HU slices of the ``clinical`` CT, made :data:`CT_SLAB_SLICES` at a time.

    Each label value's HU, then the CT-only anatomy (:func:`phantoms.anatomy.ct_tissues`:
    subcutaneous fat, lungs, ribs, intervertebral discs, trabecular and cortical vertebral bone)
    painted over the voxels whose label is in ``paint_over`` (body remainder, and a marrow VOI
    lying in the vertebral bodies), then Gaussian noise of ``noise_sd_hu`` on every voxel.

    Args:
        labels: label map on ``grid`` (values = keys of ``hu_by_value``).
        grid: the grid ``labels`` was sampled on, in the patient frame (a shifted patient's
            translated grid), where the CT-only anatomy is placed.
        hu_by_value: mean HU per label value.
        body: the body outline (ribs and fat follow it).
        paint_over: label values the CT-only tissues may replace.
        noise_sd_hu: standard deviation of the noise, HU.
        rng: noise source, drawn in slice order as the slices are consumed.

    Raises:
        KeyError: when the label map holds a value missing from ``hu_by_value``.
    """
    lookup = _hu_lookup(hu_by_value)
    x_mm, y_mm, z_mm = grid.axis_coordinates_mm()
    paintable = np.zeros(256, dtype=bool)
    paintable[list(paint_over)] = True
    for first in range(0, grid.n_slices, CT_SLAB_SLICES):
        slab = slice(first, first + CT_SLAB_SLICES)
        mean_hu = _mean_hu(labels[slab], lookup, hu_by_value)
        tissues = ct_tissues(body, x_mm, y_mm, z_mm[slab])
        open_to_paint = paintable[labels[slab]]
        for mask, tissue_hu in (
            (tissues.fat, FAT_HU),
            (tissues.lung, LUNG_HU),
            (tissues.rib, RIB_HU),
            (tissues.disc, DISC_HU),
            (tissues.trabecular, TRABECULAR_BONE_HU),
            (tissues.cortical, CORTICAL_BONE_HU),
        ):
            mean_hu[mask & open_to_paint] = tissue_hu
        yield from _with_noise(mean_hu, noise_sd_hu, rng)


def _hu_lookup(hu_by_value: Mapping[int, float]) -> NDArray[np.float64]:
    """HU indexed by label value (NaN for values without one)."""
    lookup = np.full(256, np.nan)
    for value, hu in hu_by_value.items():
        lookup[value] = hu
    return lookup


def _mean_hu(
    labels: NDArray[np.uint8], lookup: NDArray[np.float64], hu_by_value: Mapping[int, float]
) -> NDArray[np.float64]:
    """Each voxel's HU from its label.

    Raises:
        KeyError: when ``labels`` holds a value missing from ``hu_by_value``.
    """
    mean_hu: NDArray[np.float64] = lookup[labels]
    if np.isnan(mean_hu).any():
        missing = sorted(set(np.unique(labels).tolist()) - set(hu_by_value))
        raise KeyError(f"label values {missing} have no HU assigned")
    return mean_hu


def _with_noise(
    mean_hu: NDArray[np.float64], noise_sd_hu: float, rng: np.random.Generator
) -> NDArray[np.int16]:
    noisy_hu = mean_hu + rng.normal(0.0, noise_sd_hu, size=mean_hu.shape)
    return np.clip(np.rint(noisy_hu), *HU_RANGE).astype(np.int16)
