"""Variable projection: the exponential fits' fast path, LM on the rates only.

Every model of :mod:`concordose.kinetics.fitting` is linear in its amplitudes:
A(t) = Σₖ aₖ·Bₖ(t; λ) with Bₖ = e^{−λₖt} − [uptake]·e^{−λᵤt}. For given rates the weighted
least-squares amplitudes are a linear solve, so the fit reduces to the rates alone (Golub &
Pereyra, SIAM J Numer Anal 1973;10:413-32): minimise ‖P⊥(λ)·y‖², P⊥ = I − Φ·Φ⁺ the projector
onto the complement of the weighted basis Φ = diag(√w)·B. The reduced problem has fewer
parameters (3 instead of 5 for the SPECTacular bi-exponential with uptake) and no valley along
the amplitudes. The Jacobian is Kaufman's approximation (BIT 1975;15:49-57),
J = P⊥·∂(Φa)/∂θ at the current amplitudes; it gives the exact gradient Jᵀr (the dropped term
is orthogonal to the residual), so the stationary points are those of the full problem.
Measured on the voxel benchmark's curves (six points, five parameters, 5 % noise): 17 LM
iterations per curve on average instead of 39, each about half the cost.

Bounds are the general engine's. Rates: the same transformed parameters (λ₁ ≥ λ_phys, ordered
increments, the uptake gap) projected onto the same floors and ceilings, with the parameters
held at an active bound left out of the step. Amplitudes (aₖ = e^{φₖ} > 0 there): the linear
solve is non-negative least squares (exact for m ≤ 3 by trying the column subsets), and an
amplitude held at 0 is reported at the general engine's floor (1e-8 of the peak, the same model
to that precision). Per curve, Φ is orthonormalised by modified Gram–Schmidt (m ≤ 3 columns,
vectorised over the curves on the last axis) rather than through normal equations, so nearly
collinear bases (close rates) lose half as many digits. Damping update, step limit and
convergence tests are the general engine's.

Scope: a result is used only where it is a solution of the general engine's problem: converged,
a non-empty independent set of basis columns, every amplitude below its ceiling (1e4 × the
peak; terms that cancel can exceed it). Every other curve is refitted by the general engine
from the same start values, and gets exactly the general engine's result; the fast path never
changes which problem is solved, only how fast. Where both reach a minimum they agree (tests:
parameters, TIA, covariance of all parameters, AICc); where the problem has several local
minima, either may find the lower one.
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

# The general engine's building blocks, shared on purpose so that both solvers take the same
# steps, bounds and convergence tests.
from concordose.kinetics.fitting.levenberg_marquardt import (
    MAX_LOG_STEP,
    STATIONARY_WINDOW,
    converged_now,
    levenberg_marquardt,
    nielsen_shrink,
    parameter_bounds,
)
from concordose.kinetics.fitting.linear_algebra import cholesky_solve, normal_equations
from concordose.kinetics.fitting.model import ExponentialModel, FitSettings
from concordose.kinetics.fitting.start_values import grid_start_values

FloatArray = npt.NDArray[np.float64]

_RANK_TOLERANCE = 1e-10
"""A basis column whose component orthogonal to the previous ones is below this fraction of its
norm makes the basis rank deficient (amplitudes not determined): the curve goes to the general
engine."""
_INITIAL_DAMPING = 0.03
"""Starting Marquardt damping (relative to diag JᵀJ). Larger than the general engine's 1e-3:
measured on the benchmark's curves (20 000, 5 % noise), 1e-3 let 2.7 % of the reduced fits
run to the 100-iteration cap against 0.2 % with 0.03, with fewer iterations on average (17 vs
20) and lower χ² as often as not; 1e-5 and 1e-7 were worse still, 0.1-10 alike or worse."""
_COMPACT_FRACTION = 0.2
"""Finished curves leave the working arrays once they are this fraction of them (cheaper than
copying every array at every iteration; ~20 % faster than compacting each time)."""
_BOUND_MARGIN = 1e-9
"""Distance to a bound (log scale) below which a parameter counts as pinned, as in the general
engine's covariance."""


def _least_squares(
    columns: FloatArray, y_w: FloatArray
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Least squares on k weighted basis columns (k, t, n), curves last.

    Modified Gram–Schmidt (k ≤ 3), then back substitution. Returns the coefficients (k, n),
    the orthonormal basis Q (t, k, n) and whether the columns are independent (n,).
    """
    k_columns, n_points, n = columns.shape
    q = np.empty((n_points, k_columns, n))
    r_diag = np.empty((k_columns, n))
    r_upper = np.zeros((k_columns, k_columns, n))
    full_rank = np.ones(n, dtype=bool)
    for k in range(k_columns):
        column = columns[k].copy()
        norm_before = np.sqrt((column * column).sum(axis=0))
        for i in range(k):
            r_upper[i, k] = (q[:, i] * column).sum(axis=0)
            column -= q[:, i] * r_upper[i, k]
        norm = np.sqrt((column * column).sum(axis=0))
        full_rank &= norm > _RANK_TOLERANCE * np.maximum(norm_before, 1e-300)
        r_diag[k] = np.where(norm > 0, norm, 1.0)
        q[:, k] = column / r_diag[k]
    coordinates = np.einsum("tkn,tn->kn", q, y_w)
    coefficients = np.empty((k_columns, n))
    for k in reversed(range(k_columns)):
        known = (r_upper[k, k + 1 :] * coefficients[k + 1 :]).sum(axis=0)
        coefficients[k] = (coordinates[k] - known) / r_diag[k]
    return coefficients, q, full_rank


def _non_negative_amplitudes(
    basis: FloatArray, y_w: FloatArray
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Amplitudes ≥ 0 minimising ‖Φa − y‖ (m, n), the basis Q of the used columns (t, m, n;
    zero columns for amplitudes held at 0) and whether a solution with an independent,
    non-empty set of columns exists (n,).

    The amplitudes are positive in the general engine (aₖ = e^{φₖ}), so the reduced problem is
    min over a ≥ 0: where the unconstrained solution has a negative amplitude, every smaller
    subset of columns is solved and the best one with positive amplitudes kept (exact
    non-negative least squares for m ≤ 3: at most 6 subsets, only for those curves).
    """
    m, n_points, _ = basis.shape
    amplitudes, q, solvable = _least_squares(basis, y_w)
    infeasible = np.flatnonzero(~np.all(amplitudes > 0, axis=0))
    if m == 1 or infeasible.size == 0:
        return amplitudes, q, solvable
    y_sub = y_w[:, infeasible]
    best_cost = np.full(infeasible.size, np.inf)
    best_amplitudes = np.zeros((m, infeasible.size))
    best_q = np.zeros((n_points, m, infeasible.size))
    for size in range(m - 1, 0, -1):  # subsets of the ≤ 3 columns, not a loop over curves
        for subset in itertools.combinations(range(m), size):
            columns = basis[list(subset)][:, :, infeasible]
            sub_amplitudes, sub_q, sub_rank = _least_squares(columns, y_sub)
            fitted = np.einsum("tkn,kn->tn", sub_q, np.einsum("tkn,tn->kn", sub_q, y_sub))
            cost = ((fitted - y_sub) ** 2).sum(axis=0)
            better = sub_rank & np.all(sub_amplitudes > 0, axis=0) & (cost < best_cost)
            best_cost = np.where(better, cost, best_cost)
            for slot, column in enumerate(subset):
                best_amplitudes[column] = np.where(
                    better, sub_amplitudes[slot], best_amplitudes[column]
                )
                best_q[:, column] = np.where(better, sub_q[:, slot], best_q[:, column])
            unused = [column for column in range(m) if column not in subset]
            best_amplitudes[unused] = np.where(better, 0.0, best_amplitudes[unused])
            best_q[:, unused] = np.where(better, 0.0, best_q[:, unused])
    found = np.isfinite(best_cost)
    amplitudes[:, infeasible] = best_amplitudes
    q[:, :, infeasible] = best_q
    solvable[infeasible] = found
    return amplitudes, q, solvable


def _projection(
    theta_rates: FloatArray,
    time_h: FloatArray,
    root_w: FloatArray,
    y_w: FloatArray,
    *,
    model: ExponentialModel,
    floor: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Amplitudes (m, n), residual Φa − y_w (t, n), Kaufman Jacobian (r, t, n), solvable (n,).

    Curves on the last axis; ``theta_rates`` (r, n) are the rate parameters of the general
    engine (λ₁ = floor₁ + e^{θ₁}, λⱼ = λⱼ₋₁ + floorⱼ + e^{θⱼ}).
    """
    m = model.n_clearance
    increments = np.exp(theta_rates)
    rates = np.cumsum(increments + floor[:, None], axis=0)  # (r, n)
    exps = np.exp(-time_h[:, None, None] * rates[None, :, :])  # (t, r, n)
    exps *= root_w[:, None, :]
    basis = np.moveaxis(exps[:, :m], 1, 0)  # (m, t, n) weighted Bₖ
    if model.uptake:
        basis = basis - exps[None, :, m]
    amplitudes, q, solvable = _non_negative_amplitudes(basis, y_w)
    residual = np.einsum("ktn,kn->tn", basis, amplitudes) - y_w
    # ∂(Φa)/∂θⱼ at fixed amplitudes, as the general engine's rate columns, then projected onto
    # the complement of the used columns (Kaufman).
    coefficients = np.empty_like(rates)
    coefficients[:m] = amplitudes
    if model.uptake:
        coefficients[m] = -amplitudes.sum(axis=0)
    jac = np.empty((model.n_rates, *residual.shape))
    running = np.zeros_like(residual)
    minus_t = -time_h[:, None]
    for j in reversed(range(model.n_rates)):
        running += minus_t * coefficients[j] * exps[:, j]
        np.multiply(running, increments[j], out=jac[j])
    along = np.einsum("tkn,jtn->jkn", q, jac)  # Qᵀ·D, (r, m, n)
    jac -= np.einsum("tkn,jkn->jtn", q, along)
    return amplitudes, residual, jac, solvable


def reduced_levenberg_marquardt(
    time_h: FloatArray,
    y: FloatArray,
    root_w: FloatArray,
    theta_start: FloatArray,
    *,
    model: ExponentialModel,
    floor: FloatArray,
    options: FitSettings,
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """LM on the rate parameters; returns full theta (n, p), χ², usable, iterations.

    Arguments as the general engine's
    :func:`~concordose.kinetics.fitting.levenberg_marquardt.levenberg_marquardt` (times in h,
    activities in MBq, square-root weights, rate floors in 1/h), with ``theta_start`` (n, p) the
    transformed start parameters; the amplitudes are solved at every step, not iterated.

    ``usable`` marks curves whose solution is a solution of the general engine's bounded
    problem (see the module docstring); the others' theta are their start values.
    """
    n = y.shape[0]
    m = model.n_clearance
    lower_all, upper_all = parameter_bounds(y, model)
    theta_out = np.clip(theta_start, lower_all, upper_all)
    cost_out = np.full(n, np.nan)
    usable = np.zeros(n, dtype=bool)
    iterations = np.zeros(n, dtype=np.int64)

    index = np.arange(n)
    theta = np.ascontiguousarray(theta_out[:, m:].T)  # (r, n)
    lower = np.ascontiguousarray(lower_all[:, m:].T)
    upper = np.ascontiguousarray(upper_all[:, m:].T)
    w = np.ascontiguousarray(root_w.T)
    y_w = np.ascontiguousarray((y * root_w).T)
    amplitudes, residual, jac, solved = _projection(theta, time_h, w, y_w, model=model, floor=floor)
    cost = (residual * residual).sum(axis=0)
    scale_y = (y_w * y_w).sum(axis=0)
    damping = np.full(n, _INITIAL_DAMPING)
    growth = np.full(n, 2.0)
    diagonal_index = np.arange(model.n_rates)
    history = np.empty((STATIONARY_WINDOW, n))
    history[0] = cost
    iterating = np.ones(n, dtype=bool)
    max_iterations = options.max_iterations
    for iteration in range(1, max_iterations + 1):
        normal, gradient = normal_equations(jac, residual)
        damped = normal.copy()
        damped[diagonal_index, diagonal_index] += damping * np.maximum(
            normal[diagonal_index, diagonal_index], 1e-12
        )
        # Active bounds: a parameter at a bound that descent would push further out is held
        # (its row and column replaced by the identity, zero step), so the step minimises the
        # model over the free parameters instead of being clipped afterwards.
        active = ((theta <= lower + _BOUND_MARGIN) & (gradient > 0)) | (
            (theta >= upper - _BOUND_MARGIN) & (gradient < 0)
        )
        if active.any():
            held = active[:, None, :] | active[None, :, :]
            damped = np.where(held, 0.0, damped)
            damped[diagonal_index, diagonal_index] += active
            normal = np.where(held, 0.0, normal)
            gradient = np.where(active, 0.0, gradient)
        step, solvable = cholesky_solve(damped, -gradient)
        largest = np.max(np.abs(step), axis=0)
        step *= np.minimum(1.0, MAX_LOG_STEP / np.maximum(largest, 1e-300))
        trial = np.clip(theta + step, lower, upper)
        step = trial - theta
        trial_amplitudes, trial_residual, trial_jac, trial_solvable = _projection(
            trial, time_h, w, y_w, model=model, floor=floor
        )
        trial_cost = (trial_residual * trial_residual).sum(axis=0)
        accept = (
            iterating & solvable & trial_solvable & np.isfinite(trial_cost) & (trial_cost <= cost)
        )
        decrease = np.where(accept, cost - trial_cost, 0.0)
        # Nielsen's damping update, as the general engine (Madsen, Nielsen & Tingleff 2004).
        shrink = nielsen_shrink(normal, step, gradient, decrease)
        # Finished curves waiting for the next compaction keep their state.
        rejected = iterating & ~accept
        damping = np.where(
            accept,
            np.maximum(damping * shrink, 1e-12),
            np.where(rejected, damping * growth, damping),
        )
        growth = np.where(accept, 2.0, np.where(rejected, growth * 2.0, growth))
        theta = np.where(accept, trial, theta)
        cost = np.where(accept, trial_cost, cost)
        np.copyto(amplitudes, trial_amplitudes, where=accept)
        solved |= accept
        np.copyto(residual, trial_residual, where=accept)
        np.copyto(jac, trial_jac, where=accept)

        # The general engine's convergence tests, on the reduced problem.
        finished = iterating & converged_now(
            accept=accept,
            decrease=decrease,
            cost=cost,
            scale_y=scale_y,
            step=step,
            damping=damping,
            history=history,
            iteration=iteration,
            relative_tolerance=options.relative_tolerance,
        )
        last = iteration == max_iterations
        if finished.any() or last:
            leaving = finished | (last & iterating)
            rows = index[leaving]
            # An amplitude the non-negative solve holds at 0 is the general engine's amplitude
            # pinned at its floor (a term below 1e-8 of the peak): the same model to 1e-8.
            with np.errstate(divide="ignore"):
                log_amplitudes = np.maximum(
                    np.log(np.maximum(amplitudes[:, leaving].T, 0.0)), lower_all[rows, :m]
                )
            rate_theta = theta[:, leaving].T
            interior = (
                finished[leaving]
                & solved[leaving]
                & np.all(amplitudes[:, leaving] >= 0, axis=0)
                & np.all(log_amplitudes < upper_all[rows, :m] - _BOUND_MARGIN, axis=1)
                & np.all(np.isfinite(rate_theta), axis=1)
                & np.isfinite(cost[leaving])
            )
            theta_out[rows[interior], :m] = log_amplitudes[interior]
            theta_out[rows[interior], m:] = rate_theta[interior]
            cost_out[rows] = cost[leaving]
            usable[rows] = interior
            iterations[rows] = iteration
            iterating &= ~leaving
            if not iterating.any():
                break
            # Compact the working set once a fifth of it has finished (not at every
            # iteration: copying the arrays costs more than carrying a few idle curves).
            if iterating.mean() > 1.0 - _COMPACT_FRACTION:
                continue
            keep = iterating
            iterating = iterating[keep]
            amplitudes = amplitudes[:, keep]
            index, theta = index[keep], theta[:, keep]
            lower, upper = lower[:, keep], upper[:, keep]
            y_w, w, jac, residual = y_w[:, keep], w[:, keep], jac[:, :, keep], residual[:, keep]
            cost, scale_y, history = cost[keep], scale_y[keep], history[:, keep]
            damping, growth, solved = damping[keep], growth[keep], solved[keep]
    return theta_out, cost_out, usable, iterations


def variable_projection(
    time_h: FloatArray,
    y: FloatArray,
    root_w: FloatArray,
    *,
    model: ExponentialModel,
    floor: FloatArray,
    options: FitSettings,
    start_rank: int = 0,
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """Fit (n, t) curves: variable projection, the general engine for the rest.

    Same arguments and returns (theta (n, p), χ², converged, iterations) as the general
    engine's ``levenberg_marquardt``, which refits, from the same start values, every curve
    the reduced fit does not solve; their iterations count both attempts.
    """
    theta_start = grid_start_values(time_h, y, root_w**2, model, floor=floor, rank=start_rank)
    theta, cost, usable, iterations = reduced_levenberg_marquardt(
        time_h, y, root_w, theta_start, model=model, floor=floor, options=options
    )
    converged = usable.copy()
    rest = np.flatnonzero(~usable)
    if rest.size:
        theta_r, cost_r, conv_r, iter_r = levenberg_marquardt(
            time_h,
            y[rest],
            root_w[rest],
            model=model,
            floor=floor,
            options=options,
            theta_start=theta_start[rest],
        )
        theta[rest], cost[rest], converged[rest] = theta_r, cost_r, conv_r
        iterations[rest] += iter_r
    return theta, cost, converged, iterations
