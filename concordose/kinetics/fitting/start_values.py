"""Start values of the fits: a grid over the rates, the amplitudes solved linearly.

Start values come from a grid over the rates with the amplitudes solved linearly on a shared
basis, for every curve of a batch at once (two matrix products per block of curves).
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from concordose.kinetics.fitting.model import ExponentialModel

FloatArray = npt.NDArray[np.float64]


def _rate_grid(model: ExponentialModel, floor: FloatArray, time_h: FloatArray) -> FloatArray:
    """Ordered rate combinations (g, n_rates) spanning what the sampling can resolve."""
    span = float(time_h[-1])
    first = max(float(time_h[0]), 0.5)
    min_rate = float(floor[0])
    gap = float(floor[-1]) if model.uptake else 0.0
    # Clearance from ~ no biological clearance up to ~ gone before the first point; uptake rates
    # the first point can still see (beyond ~5/t₁ the uptake is instantaneous for the data).
    candidates = min_rate + np.geomspace(0.05 / span, 4.0 / first, 12)
    uptake_candidates = min_rate + np.geomspace(0.1 / first, 5.0 / first, 8)
    combos: list[tuple[float, ...]] = []
    for clearance in _increasing(candidates, model.n_clearance):
        if not model.uptake:
            combos.append(clearance)
            continue
        combos.extend(
            (*clearance, up) for up in uptake_candidates if up > clearance[-1] * 1.5 + gap
        )
    return np.array(combos, dtype=np.float64)


def _increasing(values: FloatArray, k: int) -> list[tuple[float, ...]]:
    if k == 0:
        return [()]
    out: list[tuple[float, ...]] = []
    for index, value in enumerate(values):
        out.extend((float(value), *rest) for rest in _increasing(values[index + 1 :], k - 1))
    return out


@functools.lru_cache(maxsize=32)
def _grid_matrices(
    model: ExponentialModel, floor: tuple[float, ...], time_h: tuple[float, ...]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The start grid's rates (g, r) and the amplitude-major pseudo-inverses and orthonormal
    bases (t, m·g; column k·g + j for amplitude k of grid point j) of the unweighted bases.

    Cached: a voxel fit calls the start-value search once per chunk with the same schedule.
    The arrays are shared between calls and must not be modified.
    """
    times = np.array(time_h)
    m = model.n_clearance
    grid = _rate_grid(model, np.array(floor), times)
    n_grid = grid.shape[0]
    pinvs = np.empty((times.size, n_grid, m))
    projectors = np.empty((times.size, n_grid, m))
    for g, rates in enumerate(grid):  # loop over the grid (≈ 300 tiny matrices), not curves
        exps = np.exp(-np.outer(times, rates))
        basis = exps[:, :m] - (exps[:, m:] if model.uptake else 0.0)
        pinvs[:, g, :] = np.linalg.pinv(basis).T
        projectors[:, g, :] = np.linalg.qr(basis)[0]
    pinv_flat = np.ascontiguousarray(pinvs.transpose(0, 2, 1).reshape(times.size, m * n_grid))
    projector_flat = np.ascontiguousarray(
        projectors.transpose(0, 2, 1).reshape(times.size, m * n_grid)
    )
    for array in (grid, pinv_flat, projector_flat):
        array.flags.writeable = False
    return grid, pinv_flat, projector_flat


def grid_start_values(
    time_h: FloatArray,
    activity: FloatArray,
    weights: FloatArray,
    model: ExponentialModel,
    *,
    floor: FloatArray,
    rank: int = 0,
) -> FloatArray:
    """Transformed start parameters (n, p) by a grid over rates, amplitudes solved linearly.

    ``time_h`` (t,) in h after injection, ``activity`` (n, t) in MBq, ``weights`` (n, t) mark
    the usable points (> 0; their values are not used, see below), ``floor`` (n_rates,) the
    fixed rate increments in 1/h. The result is in the transformed coordinates of
    :func:`concordose.kinetics.fitting.model.natural_parameters`.

    ``rank`` = 0 takes each curve's best grid point, 1 the second best, … (multi-start); a curve
    without a usable grid point of that rank falls back to its best.

    For each rate combination the amplitudes are the least-squares solution on the shared basis
    (unweighted, so that one pseudo-inverse serves every curve); combinations with a
    non-positive amplitude are skipped. All grid points
    are evaluated with two matrix products per block of curves (BLAS), no loop over curves.
    """
    n = activity.shape[0]
    m = model.n_clearance
    y = np.where(weights > 0, activity, 0.0)
    # One weight vector for every curve (so one pseudo-inverse serves all), fixed rather than
    # averaged over the batch so that a curve's start — and result — never depends on which
    # other curves share its batch: each curve is scaled to its peak, points count alike.
    root_w = np.ones(time_h.size)
    grid, pinv_flat, projector_flat = _grid_matrices(
        model, tuple(float(f) for f in floor), tuple(float(t) for t in time_h)
    )
    n_grid = grid.shape[0]
    best = np.zeros(n, dtype=np.int64)
    found = np.zeros(n, dtype=bool)
    block = (
        1_000  # (block, grid) working arrays of a few MB stay in cache: ~1.5x faster than 20 000
    )
    for first in range(0, n, block):
        y_w = y[first : first + block] * root_w
        y_w = y_w / np.maximum(np.max(np.abs(y_w), axis=1, keepdims=True), 1e-300)
        # Columns are amplitude-major (k·n_grid + g): each amplitude's block is contiguous, so
        # the sums over the m amplitudes are a few long vector operations.
        amplitudes = y_w @ pinv_flat
        projected = y_w @ projector_flat
        projected *= projected
        cost = (y_w * y_w).sum(axis=1)[:, None] - projected[:, :n_grid]
        negative = amplitudes[:, :n_grid] <= 0
        for k in range(1, m):
            cost -= projected[:, k * n_grid : (k + 1) * n_grid]
            negative |= amplitudes[:, k * n_grid : (k + 1) * n_grid] <= 0
        np.putmask(cost, negative, np.inf)
        rows = np.arange(cost.shape[0])
        best_choice = np.argmin(cost, axis=1)
        if rank == 0:
            choice = best_choice
        else:
            choice = np.argpartition(cost, rank, axis=1)[:, rank]
            choice = np.where(np.isfinite(cost[rows, choice]), choice, best_choice)
        best[first : first + block] = choice
        found[first : first + block] = np.isfinite(cost[rows, choice])
    best_rates = grid[best]
    y_all_w = y * root_w
    best_amplitudes = np.empty((n, m))
    for k in range(m):  # gather each curve's pseudo-inverse row (t,) for its grid point
        best_amplitudes[:, k] = (y_all_w * pinv_flat.T[k * n_grid + best]).sum(axis=1)
    fallback_amplitude = np.maximum(np.nanmax(np.abs(y), axis=1), 1e-12)
    best_amplitudes[~found] = fallback_amplitude[~found, None] / m
    theta = np.empty((n, model.n_parameters))
    theta[:, :m] = np.log(np.maximum(best_amplitudes, 1e-12 * fallback_amplitude[:, None]))
    steps = np.diff(np.concatenate([np.zeros((n, 1)), best_rates], axis=1), axis=1) - floor
    theta[:, m:] = np.log(np.maximum(steps, 1e-9))
    return theta
