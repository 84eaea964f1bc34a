"""VOIs on the SPECT grid and their statistics, for all VOIs at once.

Masks come from a segmentation on another grid (the CT); each is resampled onto the SPECT grid by
nearest neighbour, the SPECT voxel belonging to the VOI when its centre falls in a VOI voxel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from concordose.dicom.geometry import VolumeGeometry
from concordose.dicom.seg import VoiMask, VoiType


@dataclass(frozen=True)
class VoiSet:
    """VOIs as a stack of boolean masks on one grid.

    Attributes:
        labels, voi_types: one entry per VOI.
        masks: bool array (n_voi, slices, rows, columns).
        geometry: the grid.
    """

    labels: tuple[str, ...]
    voi_types: tuple[VoiType, ...]
    masks: npt.NDArray[np.bool_]
    geometry: VolumeGeometry

    @property
    def volumes_ml(self) -> npt.NDArray[np.float64]:
        """Volume of each VOI on this grid, in mL."""
        counts: npt.NDArray[np.float64] = self.masks.reshape(len(self.labels), -1).sum(axis=1)
        return counts.astype(np.float64) * self.geometry.voxel_volume_ml


def resample_vois(
    vois: Sequence[VoiMask], geometry: VolumeGeometry, transform: sitk.Transform | None = None
) -> VoiSet:
    """Resample every VOI mask onto ``geometry`` (nearest neighbour).

    Args:
        transform: maps points of ``geometry``'s space to the masks' space (identity if None),
            e.g. a time point's registration to the CT the VOIs were drawn on.
    """
    reference = geometry.to_sitk(np.zeros(geometry.shape, dtype=np.uint8))
    masks = np.empty((len(vois), *geometry.shape), dtype=bool)
    for index, voi in enumerate(vois):
        resampled = sitk.Resample(
            voi.mask,
            reference,
            transform or sitk.Transform(),
            sitk.sitkNearestNeighbor,
            0,
            sitk.sitkUInt8,
        )
        masks[index] = sitk.GetArrayViewFromImage(resampled) > 0
    return VoiSet(
        labels=tuple(voi.label for voi in vois),
        voi_types=tuple(voi.voi_type for voi in vois),
        masks=masks,
        geometry=geometry,
    )


def voi_totals(
    values: npt.NDArray[np.float64], masks: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64]:
    """Sum of ``values`` (slices, rows, columns) inside each mask (n_voi, …), vectorised."""
    flat_masks = masks.reshape(masks.shape[0], -1).astype(np.float64)
    totals: npt.NDArray[np.float64] = flat_masks @ values.reshape(-1)
    return totals
