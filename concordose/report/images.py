"""A cycle's image products for its report: small, derived, without identifiers.

The published tables hold no images, so the cycle flow publishes beside its report one
compressed ``.npz`` per cycle (:func:`image_products_key`): coronal maximum-intensity projections
of the activity per time point (on the first SPECT grid, after registration), each VOI's
projected mask, and, when voxel dosimetry ran, an axial slice of a dose map through each lesion's
centre with the lesion's outline. Only arrays, times in hours and VOI labels: no DICOM header,
no UID, no patient attribute. MIPs are downsampled by an integer factor to at most
:data:`MAX_MIP_PIXELS` along an axis.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from concordose.dose.voxel_dosimetry import LesionDoseSlice
from concordose.results.object_store import ObjectStore

__all__ = [
    "CYCLE_REPORTS_DIR",
    "MAX_MIP_PIXELS",
    "CycleImages",
    "cycle_images",
    "image_products_key",
    "publish_cycle_images",
    "read_cycle_images",
    "write_cycle_images",
]

CYCLE_REPORTS_DIR = "_reports/cycles"
"""Where cycle reports are published, relative to the store's root."""

MAX_MIP_PIXELS = 128
"""Largest MIP edge kept (pixels): enough to see the VOIs, small enough to publish per cycle."""


def image_products_key(cycle_key: str) -> str:
    """Store-relative key of a cycle's image products."""
    return f"{CYCLE_REPORTS_DIR}/{cycle_key}/images.npz"


@dataclass(frozen=True)
class CycleImages:
    """What a cycle report draws that no table holds.

    Attributes:
        time_h: (t,) hours after injection.
        mip_mbq: (t, z, x) coronal MIPs of activity per voxel, MBq (downsampled: a maximum).
        voi_labels: (v,) VOI names.
        voi_masks: (v, z, x) each VOI's coronal projection.
        pixel_mm: (z, x) MIP pixel size, mm.
        dose_slices: one per lesion, empty when no dose map was kept.
    """

    time_h: npt.NDArray[np.float64]
    mip_mbq: npt.NDArray[np.float32]
    voi_labels: tuple[str, ...]
    voi_masks: npt.NDArray[np.bool_]
    pixel_mm: tuple[float, float]
    dose_slices: tuple[LesionDoseSlice, ...] = ()


def _max_pool(volume: npt.NDArray[np.floating], factor: int) -> npt.NDArray[np.floating]:
    """Block maximum over the last two axes (edges padded with the minimum)."""
    if factor == 1:
        return volume
    *lead, rows, cols = volume.shape
    pad_r, pad_c = (-rows) % factor, (-cols) % factor
    padded = np.pad(
        volume,
        [(0, 0)] * len(lead) + [(0, pad_r), (0, pad_c)],
        constant_values=volume.min() if volume.size else 0,
    )
    shape = (*lead, (rows + pad_r) // factor, factor, (cols + pad_c) // factor, factor)
    pooled: npt.NDArray[np.floating] = padded.reshape(shape).max(axis=(-3, -1))
    return pooled


def cycle_images(
    time_h: npt.NDArray[np.float64],
    activity_mbq: npt.NDArray[np.floating],
    spacing_zyx_mm: tuple[float, float, float],
    *,
    voi_masks: npt.NDArray[np.bool_],
    voi_labels: Sequence[str],
    dose_slices: Sequence[LesionDoseSlice] = (),
) -> CycleImages:
    """The image products of a cycle from its registered activity maps.

    Args:
        time_h: (t,) hours after injection.
        activity_mbq: (t, z, y, x) activity per voxel on one grid (the first SPECT's).
        spacing_zyx_mm: that grid's voxel size (z, y, x), mm.
        voi_masks: (v, z, y, x) the VOIs on that grid.
        voi_labels: their names.
        dose_slices: lesion slices of a dose map, if any.
    """
    # coronal: project along y (rows)
    mips = np.asarray(np.asarray(activity_mbq).max(axis=2), dtype=np.float32)
    masks = np.asarray(np.asarray(voi_masks, dtype=bool).any(axis=2), dtype=np.float32)
    factor = max(1, -(-max(mips.shape[1:]) // MAX_MIP_PIXELS))
    pooled_mips = _max_pool(mips, factor).astype(np.float32)
    pooled_masks = _max_pool(masks, factor) > 0.5
    return CycleImages(
        time_h=np.asarray(time_h, dtype=np.float64),
        mip_mbq=pooled_mips,
        voi_labels=tuple(voi_labels),
        voi_masks=pooled_masks,
        pixel_mm=(spacing_zyx_mm[0] * factor, spacing_zyx_mm[2] * factor),
        dose_slices=tuple(dose_slices),
    )


def write_cycle_images(images: CycleImages) -> bytes:
    """The products as one compressed ``.npz`` (no pickled objects)."""
    arrays: dict[str, npt.NDArray[np.generic]] = {
        "time_h": images.time_h,
        "mip_mbq": images.mip_mbq,
        "voi_labels": np.array(images.voi_labels, dtype=np.str_),
        "voi_masks": images.voi_masks,
        "pixel_mm": np.array(images.pixel_mm),
        "dose_slice_labels": np.array([s.voi_label for s in images.dose_slices], dtype=np.str_),
        "dose_slice_methods": np.array([s.dose_method for s in images.dose_slices], dtype=np.str_),
        "dose_slice_pixel_mm": np.array([s.pixel_mm for s in images.dose_slices]).reshape(-1, 2),
    }
    for index, dose_slice in enumerate(images.dose_slices):
        arrays[f"dose_slice_{index}_gy"] = dose_slice.dose_gy
        arrays[f"dose_slice_{index}_mask"] = dose_slice.mask
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def read_cycle_images(data: bytes) -> CycleImages:
    """Products written by :func:`write_cycle_images`.

    Raises:
        ValueError, KeyError: not such a file.
    """
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        slices = tuple(
            LesionDoseSlice(
                voi_label=str(label),
                dose_method=str(method),
                dose_gy=npz[f"dose_slice_{index}_gy"],
                mask=npz[f"dose_slice_{index}_mask"],
                pixel_mm=(float(pixel[0]), float(pixel[1])),
            )
            for index, (label, method, pixel) in enumerate(
                zip(
                    npz["dose_slice_labels"],
                    npz["dose_slice_methods"],
                    npz["dose_slice_pixel_mm"],
                    strict=True,
                )
            )
        )
        pixel_mm = npz["pixel_mm"]
        return CycleImages(
            time_h=npz["time_h"],
            mip_mbq=npz["mip_mbq"],
            voi_labels=tuple(str(label) for label in npz["voi_labels"]),
            voi_masks=npz["voi_masks"],
            pixel_mm=(float(pixel_mm[0]), float(pixel_mm[1])),
            dose_slices=slices,
        )


def publish_cycle_images(store: ObjectStore, cycle_key: str, images: CycleImages) -> str:
    """Write a cycle's image products at :func:`image_products_key` (atomically); their path."""
    path = store.path(image_products_key(cycle_key))
    store.write_bytes_atomically(path, write_cycle_images(images))
    return path
