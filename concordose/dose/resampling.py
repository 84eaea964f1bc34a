"""Activity-conserving resampling between voxel grids that share a corner (separable, exact).

Both grids start at the same corner; voxel ``i`` of a grid with spacing ``s`` covers
``[i·s, (i+1)·s)`` along each axis. Along one axis the overlap matrix

    W[j, i] = |new voxel j ∩ old voxel i| / s_old

moves an *extensive* quantity (activity, TIA: summed) from the old grid to the new one, and
conserves its total exactly when the new grid covers the old one (each column sums to 1). Its
transpose averages an *intensive* quantity (dose: mean over the voxel) from the new grid back to
the old one (each row of Wᵀ sums to 1). In 3-D the matrices are applied axis by axis, so memory
stays at a few copies of the map.

Grids placed in patient space (:class:`~concordose.dicom.geometry.VolumeGeometry`: origin,
spacing, direction) need not share a corner: :func:`average_onto_grid` generalises the overlap
weights to edges offset by any distance, for grids with the same direction (axis-aligned to each
other, as a SPECT and its CT from one SPECT/CT are), and moves dose (intensive) from one to the
other as the mean over each target voxel. It is exact for the piecewise-constant field the
source voxels define: Σ dose · mass over the target equals that over the source where the target
covers it, a uniform field stays uniform, and a known offset is a known mix of neighbours.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from concordose.dicom.geometry import VolumeGeometry
from concordose.errors import ConcordoseError

SAME_SPACING_RTOL = 1e-6
SAME_DIRECTION_ATOL = 1e-6


def overlap_count(n_old: int, spacing_old: float, spacing_new: float) -> int:
    """Voxels of ``spacing_new`` that cover ``n_old`` voxels of ``spacing_old`` from one corner."""
    return math.ceil(n_old * spacing_old / spacing_new - 1e-9)


def overlap_matrix(n_old: int, spacing_old: float, spacing_new: float) -> npt.NDArray[np.float64]:
    """W (n_new, n_old) for one axis; n_new = ceil(n_old · s_old / s_new) covers the old extent."""
    n_new = overlap_count(n_old, spacing_old, spacing_new)
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
    last = array.ndim - 1
    for axis, matrix in enumerate(matrices):
        if matrix is None:
            continue
        if axis == last:  # a matrix product along the last axis returns a C-contiguous array
            result = np.matmul(result, matrix.T)
        else:
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


def overlap_lengths(
    old_edges_mm: npt.NDArray[np.float64], new_edges_mm: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """(n_new, n_old) length (mm) of new voxel j ∩ old voxel i along one axis, for any edges."""
    low = np.maximum(new_edges_mm[:-1, None], old_edges_mm[None, :-1])
    high = np.minimum(new_edges_mm[1:, None], old_edges_mm[None, 1:])
    lengths: npt.NDArray[np.float64] = np.clip(high - low, 0.0, None)
    return lengths


def _direction(geometry: VolumeGeometry) -> npt.NDArray[np.float64]:
    return np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)


def corner_coordinates_mm(geometry: VolumeGeometry) -> npt.NDArray[np.float64]:
    """Coordinate (mm) of the grid's outer corner along its own (x, y, z) index axes: the
    origin (centre of voxel 0) projected on each direction, minus half a voxel."""
    direction = _direction(geometry)
    origin = np.asarray(geometry.origin_mm, dtype=np.float64)
    corner: npt.NDArray[np.float64] = direction.T @ origin - np.asarray(geometry.spacing_mm) / 2
    return corner


def _check_same_direction(source: VolumeGeometry, target: VolumeGeometry) -> None:
    if not np.allclose(_direction(source), _direction(target), atol=SAME_DIRECTION_ATOL):
        raise ConcordoseError(
            "dose grids must have the same direction (axis-aligned to each other) for the "
            f"overlap resampling; found source direction {source.direction} and target "
            f"direction {target.direction}; resample the CT onto an axis-aligned grid first"
        )


def average_onto_grid(
    values: npt.NDArray[np.float64], source: VolumeGeometry, target: VolumeGeometry
) -> npt.NDArray[np.float64]:
    """An intensive quantity (dose, Gy) on ``source`` as the mean over each voxel of ``target``.

    ``values`` has the source's shape (slices, rows, columns). The value outside the source grid
    counts as 0 (a target voxel half outside gets half its covered mean): callers pass a source
    grid that holds the whole support of the field (e.g. the kernel grid widened by the
    kernel's half-width). Exact for grids in any offset and spacing; same direction required.

    Raises:
        ConcordoseError: the grids' directions differ, or ``values`` does not match ``source``.
    """
    if values.shape != source.shape:
        raise ConcordoseError(
            f"values of shape {values.shape} do not match their grid's shape {source.shape}"
        )
    _check_same_direction(source, target)
    source_corner = corner_coordinates_mm(source)
    target_corner = corner_coordinates_mm(target)
    matrices: list[npt.NDArray[np.float64] | None] = [None, None, None]
    # geometry axes are (x, y, z); array axes (z, y, x)
    for geometry_axis in range(3):
        array_axis = 2 - geometry_axis
        s_old = source.spacing_mm[geometry_axis]
        s_new = target.spacing_mm[geometry_axis]
        old_edges = source_corner[geometry_axis] + s_old * np.arange(source.shape[array_axis] + 1)
        new_edges = target_corner[geometry_axis] + s_new * np.arange(target.shape[array_axis] + 1)
        matrices[array_axis] = overlap_lengths(old_edges, new_edges) / s_new
    return _apply(values, matrices)


def aligned_grid(
    geometry: VolumeGeometry, spacing_mm: float, *, margin_voxels: int = 0
) -> VolumeGeometry:
    """The isotropic grid of ``spacing_mm`` that :func:`rebin_extensive` makes from
    ``geometry`` (same corner and direction, covering it), widened by ``margin_voxels`` voxels
    on every side."""
    direction = _direction(geometry)
    corner = corner_coordinates_mm(geometry) - margin_voxels * spacing_mm
    # index axes (x, y, z) of the source (rows of the array shape reversed)
    counts = [
        (
            n
            if math.isclose(s, spacing_mm, rel_tol=SAME_SPACING_RTOL)
            else overlap_count(n, s, spacing_mm)
        )
        + 2 * margin_voxels
        for n, s in zip(geometry.shape[::-1], geometry.spacing_mm, strict=True)
    ]
    origin = direction @ (corner + spacing_mm / 2)
    return VolumeGeometry(
        origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        spacing_mm=(spacing_mm,) * 3,
        direction=geometry.direction,
        shape=(counts[2], counts[1], counts[0]),
    )
