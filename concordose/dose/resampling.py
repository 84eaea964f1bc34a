"""Activity-conserving resampling between voxel grids that share a corner (separable, exact).

Both grids start at the same corner; voxel ``i`` of a grid with spacing ``s`` covers
``[i·s, (i+1)·s)`` along each axis. Along one axis the overlap matrix

    W[j, i] = |new voxel j ∩ old voxel i| / s_old

moves an *extensive* quantity (activity, TIA: summed) from the old grid to the new one, and
conserves its total exactly when the new grid covers the old one (each column sums to 1). Its
transpose averages an *intensive* quantity (dose: mean over the voxel) from the new grid back to
the old one (each row of Wᵀ sums to 1). In 3-D the matrices are applied axis by axis, so memory
stays at a few copies of the map.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

SAME_SPACING_RTOL = 1e-6


def overlap_matrix(n_old: int, spacing_old: float, spacing_new: float) -> npt.NDArray[np.float64]:
    """W (n_new, n_old) for one axis; n_new = ceil(n_old · s_old / s_new) covers the old extent."""
    n_new = math.ceil(n_old * spacing_old / spacing_new - 1e-9)
    old_edges = np.arange(n_old + 1) * spacing_old
    new_edges = np.arange(n_new + 1) * spacing_new
    low = np.maximum(new_edges[:-1, None], old_edges[None, :-1])
    high = np.minimum(new_edges[1:, None], old_edges[None, 1:])
    weights: npt.NDArray[np.float64] = np.clip(high - low, 0.0, None) / spacing_old
    return weights


def _apply(
    array: npt.NDArray[np.float64], matrices: list[npt.NDArray[np.float64] | None]
) -> npt.NDArray[np.float64]:
    result = array
    for axis, matrix in enumerate(matrices):
        if matrix is not None:
            result = np.moveaxis(np.tensordot(matrix, result, axes=([1], [axis])), 0, axis)
    return result


def _matrices(
    shape: tuple[int, ...], spacing_old: tuple[float, ...], spacing_new: tuple[float, ...]
) -> list[npt.NDArray[np.float64] | None]:
    return [
        None
        if math.isclose(s_old, s_new, rel_tol=SAME_SPACING_RTOL)
        else overlap_matrix(n, s_old, s_new)
        for n, s_old, s_new in zip(shape, spacing_old, spacing_new, strict=True)
    ]


def rebin_extensive(
    values: npt.NDArray[np.float64],
    spacing_mm: tuple[float, ...],
    target_spacing_mm: tuple[float, ...],
) -> npt.NDArray[np.float64]:
    """Activity (or TIA) per voxel on the grid of ``target_spacing_mm``; the total is conserved."""
    return _apply(values, _matrices(values.shape, spacing_mm, target_spacing_mm))


def average_intensive_back(
    fine_values: npt.NDArray[np.float64],
    shape: tuple[int, ...],
    spacing_mm: tuple[float, ...],
    fine_spacing_mm: tuple[float, ...],
) -> npt.NDArray[np.float64]:
    """Dose on the original grid (``shape``, ``spacing_mm``): the mean over each original voxel of
    the values on the grid that :func:`rebin_extensive` made."""
    matrices = _matrices(shape, spacing_mm, fine_spacing_mm)
    return _apply(fine_values, [None if m is None else m.T for m in matrices])
