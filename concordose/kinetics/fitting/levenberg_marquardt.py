"""Levenberg–Marquardt on the transformed parameters, vectorised over curves: the general engine.

Bounds: on top of the parameter transform (:mod:`concordose.kinetics.fitting.model`), the
log-parameters are projected onto floors/ceilings (a term that vanishes, two rates that
coincide, an instantaneous uptake), so LM stops at those boundaries instead of crawling towards
them.

Fit: Levenberg–Marquardt with Marquardt's diagonal scaling and Nielsen's damping update,
vectorised over curves: every iteration builds the (n_curves, n_points, n_params) Jacobian
analytically and solves all damped normal equations together (batched Cholesky); damping is per
curve and finished curves leave the working set. Convergence: MINPACK-like relative χ² decrease or
step below 1.49e-8, exact data, or χ² stationary to 1e-4 over the last 10 iterations; otherwise the
curve's status says it did not converge.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from concordose.kinetics.fitting.linear_algebra import cholesky_solve, normal_equations
from concordose.kinetics.fitting.model import ExponentialModel, FitSettings
from concordose.kinetics.fitting.start_values import grid_start_values

FloatArray = npt.NDArray[np.float64]

MAX_LOG_STEP = 3.0
"""Largest change of a log-parameter in one iteration (a factor e³ ≈ 20): keeps LM stable."""

STATIONARY_WINDOW = 10
"""Iterations over which the stationarity test compares χ² (the rows of ``converged_now``'s
history)."""
_WINDOW_TOLERANCE = 1e-4
"""Stationarity test: relative χ² decrease over the last ``STATIONARY_WINDOW`` iterations,
tested at every iteration (see the LM loop). A
change of 1e-4·χ² is far below statistical significance (Δχ² ≈ 1 for one standard deviation
with χ² ≈ n − p), so points further along such a valley fit the data equally well."""
_AMPLITUDE_FLOOR = 1e-8
"""Smallest amplitude as a fraction of the curve's peak: below it a term is absent."""
_RATE_INCREMENT_FLOOR_PER_H = 1e-6
"""Smallest increment between ordered rates (1/h): below it two terms coincide."""
_RATE_INCREMENT_CEILING_PER_H = 10.0
"""Largest increment (1/h; half-time 4 min): beyond it a term is instantaneous for any SPECT
schedule, and letting it grow further only makes LM crawl towards an open boundary."""
_AMPLITUDE_CEILING = 1e4
"""Largest amplitude as a multiple of the curve's peak (terms that cancel can exceed the peak)."""


def _evaluate_curves_last(
    theta: FloatArray,
    time_h: FloatArray,
    model: ExponentialModel,
    floor: FloatArray,
    root_w: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Weighted model values (t, n) and weighted Jacobian wrt theta (p, t, n), curves last.

    The same quantities as :func:`~concordose.kinetics.fitting.model.evaluate_model` (times the
    weights), laid out with the curves on the last, contiguous axis: every operation is then a
    long elementwise vector operation instead of many tiny per-curve matrices (the LM loop's hot
    path). One exponential per rate and time point, shared by the values and both Jacobian
    blocks.
    """
    m = model.n_clearance
    amplitudes = np.exp(theta[:m])  # (m, n)
    increments = np.exp(theta[m:])  # (r, n)
    rates = np.cumsum(increments + floor[:, None], axis=0)  # (r, n)
    exps = np.exp(-time_h[:, None, None] * rates[None, :, :])  # (t, r, n)
    exps *= root_w[:, None, :]
    n_rates = model.n_rates
    coefficients = np.empty_like(rates)
    coefficients[:m] = amplitudes
    if model.uptake:
        coefficients[m] = -amplitudes.sum(axis=0)
    values = (exps * coefficients[None]).sum(axis=1)
    jac = np.empty((model.n_parameters, *values.shape))
    # ∂f/∂φₖ = aₖ·(e^{−λₖt} − u·e^{−λᵤt})
    for k in range(m):
        basis = exps[:, k] - exps[:, m] if model.uptake else exps[:, k]
        np.multiply(basis, amplitudes[k], out=jac[k])
    # ∂f/∂λⱼ = −t·cⱼ·e^{−λⱼt}; θₖ moves every λⱼ with j ≥ k (cumulative), by e^{θₖ}
    running = np.zeros_like(values)
    minus_t = -time_h[:, None]
    for j in reversed(range(n_rates)):
        running += minus_t * coefficients[j] * exps[:, j]
        np.multiply(running, increments[j], out=jac[m + j])
    return values, jac


def parameter_bounds(y: FloatArray, model: ExponentialModel) -> tuple[FloatArray, FloatArray]:
    """Lower and upper bounds (n, p) of the transformed parameters (projection bounds).

    ``y`` (n, t) are the curves (MBq; missing points as 0): the amplitude bounds are fractions
    and multiples of each curve's peak, the rate-increment bounds fixed in 1/h.
    """
    m = model.n_clearance
    n = y.shape[0]
    peak = np.maximum(np.max(np.abs(y), axis=1), 1e-300)
    lower = np.empty((n, model.n_parameters))
    lower[:, :m] = np.log(peak * _AMPLITUDE_FLOOR)[:, None]
    lower[:, m:] = math.log(_RATE_INCREMENT_FLOOR_PER_H)
    upper = np.empty_like(lower)
    upper[:, :m] = np.log(peak * _AMPLITUDE_CEILING)[:, None]
    upper[:, m:] = math.log(_RATE_INCREMENT_CEILING_PER_H)
    return lower, upper


def levenberg_marquardt(
    time_h: FloatArray,
    y: FloatArray,
    root_w: FloatArray,
    *,
    model: ExponentialModel,
    floor: FloatArray,
    options: FitSettings,
    start_rank: int = 0,
    theta_start: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """Vectorised LM on (n, t) curves; returns theta, χ², converged, iterations.

    ``time_h`` (t,) in h, ``y`` (n, t) activities in MBq with missing points as 0 and weight 0,
    ``root_w`` (n, t) the square roots of the weights 1/σ², ``floor`` (n_rates,) the fixed rate
    increments in 1/h. theta (n, p) are transformed parameters
    (:func:`~concordose.kinetics.fitting.model.natural_parameters`), χ² the weighted residual sum
    of squares.

    Starts from the grid point of rank ``start_rank`` or, when given, from ``theta_start``
    (n, p) transformed parameters.

    Internally the curves lie on the last axis (``_evaluate_curves_last``), and the working
    arrays hold only the curves still iterating (compacted as curves finish), so late
    iterations cost in proportion to the few slow curves.
    """
    n = y.shape[0]
    if theta_start is None:
        theta_start = grid_start_values(time_h, y, root_w**2, model, floor=floor, rank=start_rank)
    theta_out = theta_start
    lower_all, upper_all = parameter_bounds(y, model)
    theta_out = np.clip(theta_out, lower_all, upper_all)
    cost_out = np.zeros(n)
    converged = np.zeros(n, dtype=bool)
    iterations = np.zeros(n, dtype=np.int64)

    # compacted working set, curves last
    index = np.arange(n)
    theta = np.ascontiguousarray(theta_out.T)
    lower, upper = np.ascontiguousarray(lower_all.T), np.ascontiguousarray(upper_all.T)
    w = np.ascontiguousarray(root_w.T)
    y_w = np.ascontiguousarray((y * root_w).T)
    values, jac = _evaluate_curves_last(theta, time_h, model, floor, w)
    residual = values - y_w
    cost = (residual * residual).sum(axis=0)
    scale_y = (y_w * y_w).sum(axis=0)
    damping = np.full(n, 1e-3)
    growth = np.full(n, 2.0)
    diagonal_index = np.arange(model.n_parameters)
    # χ² of the last STATIONARY_WINDOW iterations (ring buffer; row i % STATIONARY_WINDOW after
    # iteration i)
    history = np.empty((STATIONARY_WINDOW, n))
    history[0] = cost
    for iteration in range(1, options.max_iterations + 1):
        normal, gradient = normal_equations(jac, residual)
        damped = normal.copy()
        damped[diagonal_index, diagonal_index] += damping * np.maximum(
            normal[diagonal_index, diagonal_index], 1e-12
        )
        step, solvable = cholesky_solve(damped, -gradient)
        largest = np.max(np.abs(step), axis=0)
        step *= np.minimum(1.0, MAX_LOG_STEP / np.maximum(largest, 1e-300))
        # Bounds by projection on top of the transform: a log-parameter pinned at its floor or
        # ceiling (amplitude ≈ 0, rate increment ≈ 0 or ≈ instantaneous) stops moving, so LM
        # converges on the others instead of crawling along a flat valley.
        trial = np.clip(theta + step, lower, upper)
        step = trial - theta
        trial_values, trial_jac = _evaluate_curves_last(trial, time_h, model, floor, w)
        trial_residual = trial_values - y_w
        trial_cost = (trial_residual * trial_residual).sum(axis=0)
        accept = solvable & np.isfinite(trial_cost) & (trial_cost <= cost)
        decrease = np.where(accept, cost - trial_cost, 0.0)
        # Nielsen's damping update (Madsen, Nielsen & Tingleff, "Methods for non-linear least
        # squares problems", DTU 2004, §3.2): from the gain ratio of actual to predicted
        # decrease when a step is taken, doubling growth on rejections.
        shrink = nielsen_shrink(normal, step, gradient, decrease)
        damping = np.where(accept, np.maximum(damping * shrink, 1e-12), damping * growth)
        growth = np.where(accept, 2.0, growth * 2.0)
        theta = np.where(accept, trial, theta)
        cost = np.where(accept, trial_cost, cost)
        np.copyto(residual, trial_residual, where=accept)
        np.copyto(jac, trial_jac, where=accept)

        finished = converged_now(
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
        last = iteration == options.max_iterations
        if finished.any() or last:
            leaving = finished | last
            theta_out[index[leaving]] = theta[:, leaving].T
            cost_out[index[leaving]] = cost[leaving]
            converged[index[finished]] = True
            iterations[index[leaving]] = iteration
            keep = ~leaving
            if not keep.any():
                break
            index, theta = index[keep], theta[:, keep]
            lower, upper = lower[:, keep], upper[:, keep]
            y_w, w, jac, residual = y_w[:, keep], w[:, keep], jac[:, :, keep], residual[:, keep]
            cost, scale_y, history = cost[keep], scale_y[keep], history[:, keep]
            damping, growth = damping[keep], growth[keep]
    return theta_out, cost_out, converged, iterations


def nielsen_shrink(
    normal: FloatArray, step: FloatArray, gradient: FloatArray, decrease: FloatArray
) -> FloatArray:
    """Factor (≥ 1/3) by which an accepted step shrinks the LM damping, per curve.

    From the gain ratio of the actual to the predicted decrease of χ² (Nielsen; Madsen, Nielsen
    & Tingleff, "Methods for non-linear least squares problems", DTU 2004, §3.2). Curves on the
    last axis: ``normal`` (p, p, n), ``step`` and ``gradient`` (p, n), ``decrease`` (n,).
    """
    normal_step = (normal * step[None]).sum(axis=1)
    predicted = -(step * (2.0 * gradient + normal_step)).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(predicted > 0, decrease / predicted, 0.0)
    shrink: FloatArray = np.maximum(1.0 / 3.0, 1.0 - (2.0 * np.clip(gain, 0.0, 1.0) - 1.0) ** 3)
    return shrink


def converged_now(
    *,
    accept: npt.NDArray[np.bool_],
    decrease: FloatArray,
    cost: FloatArray,
    scale_y: FloatArray,
    step: FloatArray,
    damping: FloatArray,
    history: FloatArray,
    iteration: int,
    relative_tolerance: float,
) -> npt.NDArray[np.bool_]:
    """The LM convergence tests of one iteration, per curve (curves on the last axis of
    ``step``, (p, n)); updates the χ² ``history`` window (STATIONARY_WINDOW, n) in place.

    Shared by the general engine and the variable-projection fast path, so both stop by the
    same rules.
    """
    small_decrease = accept & (decrease <= relative_tolerance * np.maximum(cost, 1e-300))
    # Exact data: the curve matches every point to ~7 significant digits (RMS 1e-7).
    perfect = cost <= 1e-14 * np.maximum(scale_y, 1e-300)
    # θ are log-scale parameters: an absolute step is a relative change of the parameter.
    small_step = accept & (np.max(np.abs(step), axis=0) < relative_tolerance)
    # Damping this large: LM cannot improve in any direction (stationary to precision).
    stalled = damping > 1e12
    # Stationary over a window: χ² fell by less than 1e-4 (relative) in the last
    # STATIONARY_WINDOW iterations — LM crawling along a valley whose floor is flat to that level
    # (e.g. an uptake that is instantaneous for the data); the TIA's covariance then says
    # how well the valley determines it. Tested at every iteration (sliding window).
    slot = iteration % STATIONARY_WINDOW
    if iteration >= STATIONARY_WINDOW:
        stationary = (history[slot] - cost) <= _WINDOW_TOLERANCE * np.maximum(cost, 1e-300)
    else:
        stationary = np.zeros_like(accept)
    history[slot] = cost
    finished: npt.NDArray[np.bool_] = small_decrease | perfect | small_step | stalled | stationary
    return finished
