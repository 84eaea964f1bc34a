"""Voxelisation of the calibration phantoms (their physical specification lives in
:mod:`concordose.calibration.phantom_geometry`, which the platform's calibration also uses)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from concordose.calibration.phantom_geometry import PhantomSphere, ZCylinder
from concordose.phantoms.grid import VoxelGrid


def voxel_centre_mask(shape: ZCylinder | PhantomSphere, grid: VoxelGrid) -> NDArray[np.bool_]:
    """Voxels of ``grid`` (shape ``grid.shape_zyx``) whose centre lies inside ``shape``."""
    x_mm, y_mm, z_mm = grid.axis_coordinates_mm()
    mask: NDArray[np.bool_] = shape.contains(
        x_mm[None, None, :], y_mm[None, :, None], z_mm[:, None, None]
    )
    return mask


def sphere_occupancy(
    sphere: PhantomSphere, grid: VoxelGrid, *, supersampling: int = 6
) -> NDArray[np.float64]:
    """Fraction of each voxel's volume inside ``sphere`` (``supersampling``³ points per voxel).

    Only voxels in the sphere's bounding box are evaluated, so this is cheap for small spheres.
    """
    fraction = np.zeros(grid.shape_zyx, dtype=np.float64)
    axes = grid.axis_coordinates_mm()
    spacing = grid.spacing_mm_xyz
    radius_mm = sphere.diameter_mm / 2.0
    index_ranges = []
    for axis_mm, step_mm, centre_mm in zip(axes, spacing, sphere.centre_mm, strict=True):
        low = int(np.searchsorted(axis_mm, centre_mm - radius_mm - step_mm))
        high = int(np.searchsorted(axis_mm, centre_mm + radius_mm + step_mm))
        index_ranges.append((low, high))
    (i0, i1), (j0, j1), (k0, k1) = index_ranges
    if i0 >= i1 or j0 >= j1 or k0 >= k1:
        return fraction
    offsets = (np.arange(supersampling) + 0.5) / supersampling - 0.5
    sub = [
        (axis_mm[lo:hi, None] + offsets[None, :] * step_mm).reshape(-1)
        for axis_mm, step_mm, (lo, hi) in zip(axes, spacing, index_ranges, strict=True)
    ]
    inside = sphere.contains(sub[0][None, None, :], sub[1][None, :, None], sub[2][:, None, None])
    n = supersampling
    blocks = inside.reshape(k1 - k0, n, j1 - j0, n, i1 - i0, n)
    fraction[k0:k1, j0:j1, i0:i1] = blocks.mean(axis=(1, 3, 5))
    return fraction
