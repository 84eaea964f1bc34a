"""The batched fit: every curve of a batch fitted with one model, TIA and covariance included.

VOI fits restart from the best few grid points (``n_starts``) and keep the lowest χ². A curve's
result never depends on the other curves of its batch.

Uncertainty (EANM, Gear et al. EJNMMI 2018;45:2456-74, eq. for functions of fitted parameters):
var(TIA) = gᵀ·V·g with g = ∂TIA/∂p and V the parameter covariance. V = s²·(JᵀWJ)⁺ (pseudo-
inverse; parameters pinned at a bound held fixed) where s² = χ²/(n − p) when the weights are
relative (no ``activity_sd_mbq``; NaN without degrees of freedom) or s² = 1 when the activity
standard deviations are given in MBq.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import numpy.typing as npt

from concordose.kinetics.fitting.levenberg_marquardt import levenberg_marquardt, parameter_bounds
from concordose.kinetics.fitting.linear_algebra import pseudo_inverse
from concordose.kinetics.fitting.model import (
    ExponentialFit,
    ExponentialModel,
    FitSettings,
    Solver,
    TailRule,
    WeightScheme,
    evaluate_model,
    natural_jacobian,
    natural_parameters,
    tia_and_gradient,
)
from concordose.kinetics.fitting.start_values import grid_start_values
from concordose.kinetics.fitting.variable_projection import variable_projection
from concordose.kinetics.models import STATUS_OK
from concordose.nuclides import LU177

FloatArray = npt.NDArray[np.float64]

_FitKey = tuple[object, ...]
_SHARED_FITS: ContextVar[dict[_FitKey, ExponentialFit] | None] = ContextVar(
    "shared_fits", default=None
)


@contextmanager
def shared_fits() -> Iterator[None]:
    """Within the block, :func:`fit_exponential` asked again for the same model, settings, time
    points, activities and SDs returns (a copy of) the first fit instead of fitting again.

    Why: the methods of one cycle fit the same model to the same points more than once (the
    reference ``spectacular_6tp`` fits ``bi_exponential`` on every point as a candidate, and so
    does the ``bi_exponential`` method), and those Levenberg–Marquardt fits are most of a
    cycle's kinetics time (``benchmarks/bench_method_set.py``). The fit of a batch is a pure
    function of these inputs, so the result is identical; the cache lives only for the block
    (a context variable: threads and nested blocks do not share it).
    """
    token = _SHARED_FITS.set({})
    try:
        yield
    finally:
        _SHARED_FITS.reset(token)


def _fit_key(
    times: FloatArray,
    values: FloatArray,
    model: ExponentialModel,
    sd_mbq: FloatArray | None,
    options: FitSettings,
) -> _FitKey:
    sd = None if sd_mbq is None else np.asarray(sd_mbq, dtype=np.float64)
    return (
        model,
        options,
        times.tobytes(),
        values.shape,
        values.tobytes(),
        None if sd is None else (sd.shape, sd.tobytes()),
    )


def rate_floors(model: ExponentialModel, settings: FitSettings) -> FloatArray:
    """Fixed increments added to each exp(θ) of the rates: λ_min first, the uptake gap last."""
    floor = np.zeros(model.n_rates)
    floor[0] = settings.min_rate_per_h
    if model.uptake:
        floor[-1] = settings.min_uptake_gap_per_h
    return floor


def point_weights(
    activity_mbq: FloatArray, sd_mbq: FloatArray | None, scheme: WeightScheme
) -> FloatArray:
    """Weight 1/σ² per point (n, t); 0 for missing (non-finite) points."""
    finite = np.isfinite(activity_mbq)
    if sd_mbq is not None:
        sd = np.asarray(sd_mbq, dtype=np.float64)
        usable = finite & np.isfinite(sd) & (sd > 0)
        return np.where(usable, 1.0 / np.where(usable, sd, 1.0) ** 2, 0.0)
    peak = np.nanmax(np.where(finite, np.abs(activity_mbq), np.nan), axis=1, keepdims=True)
    peak = np.where(np.isfinite(peak) & (peak > 0), peak, 1.0)
    floor = 0.01 * peak
    level = np.maximum(np.where(finite, activity_mbq, 0.0), floor)
    if scheme is WeightScheme.POISSON:
        weights = peak / level
    elif scheme is WeightScheme.RELATIVE:
        weights = (peak / level) ** 2
    else:
        weights = np.ones_like(level)
    return np.where(finite, weights, 0.0)


def start_parameters(
    time_h: FloatArray,
    activity_mbq: FloatArray,
    model: ExponentialModel,
    settings: FitSettings | None = None,
) -> FloatArray:
    """The engine's start values as natural parameters (n, p), e.g. to start another optimiser
    from the same place (the benchmark's ``curve_fit`` peer)."""
    options = settings or FitSettings()
    values = np.atleast_2d(np.asarray(activity_mbq, dtype=np.float64))
    weights = point_weights(values, None, options.weights)
    floor = rate_floors(model, options)
    theta = grid_start_values(
        np.asarray(time_h, dtype=np.float64), values, weights, model, floor=floor
    )
    amplitudes, rates = natural_parameters(theta, model, floor)
    return np.concatenate([amplitudes, rates], axis=1)


def fit_exponential(
    time_h: FloatArray,
    activity_mbq: FloatArray,
    model: ExponentialModel,
    *,
    activity_sd_mbq: FloatArray | None = None,
    settings: FitSettings | None = None,
) -> ExponentialFit:
    """Fit ``model`` to every curve of a batch (see :mod:`concordose.kinetics.fitting`).

    Args:
        time_h: (t,) hours after injection, strictly increasing.
        activity_mbq: (n, t) activity, not decay corrected; NaN marks a missing point.
        model: which sum of exponentials.
        activity_sd_mbq: (n, t) standard deviations in MBq; when given they set the weights and
            the covariance is absolute (Gear et al. 2018); otherwise ``settings.weights``.
        settings: weights, tail rule, bounds, iteration limits.

    A curve with fewer usable points than parameters, or whose fit does not converge, gets a
    status saying so and NaN results; nothing is raised for a single curve.
    """
    options = settings or FitSettings()
    times = np.asarray(time_h, dtype=np.float64)
    values = np.atleast_2d(np.asarray(activity_mbq, dtype=np.float64))
    shared = _SHARED_FITS.get()
    if shared is None:
        return _fit(times, values, model, activity_sd_mbq, options)
    key = _fit_key(times, values, model, activity_sd_mbq, options)
    if key not in shared:
        shared[key] = _fit(times, values, model, activity_sd_mbq, options)
    return copy.deepcopy(shared[key])  # no array shared between two methods' results


def _fit(
    times: FloatArray,
    values: FloatArray,
    model: ExponentialModel,
    activity_sd_mbq: FloatArray | None,
    options: FitSettings,
) -> ExponentialFit:
    n, n_points = values.shape
    p = model.n_parameters
    floor = rate_floors(model, options)
    weights = point_weights(values, activity_sd_mbq, options.weights)
    n_used = (weights > 0).sum(axis=1).astype(np.int64)
    enough = n_used >= p
    y = np.where(weights > 0, values, 0.0)
    root_w = np.sqrt(weights)

    theta = np.zeros((n, p))
    iterations = np.zeros(n, dtype=np.int64)
    converged = np.zeros(n, dtype=bool)
    chi_square = np.full(n, np.nan)
    fit_index = np.flatnonzero(enough)
    solve: Callable[
        ..., tuple[FloatArray, FloatArray, npt.NDArray[np.bool_], npt.NDArray[np.int64]]
    ] = levenberg_marquardt
    if options.solver is Solver.VARIABLE_PROJECTION:
        solve = variable_projection
    if fit_index.size:
        theta_fit, chi_fit, conv_fit, iter_fit = solve(
            times, y[fit_index], root_w[fit_index], model=model, floor=floor, options=options
        )
        for rank in range(1, options.n_starts):  # multi-start: keep the lowest χ² per curve
            theta_r, chi_r, conv_r, iter_r = solve(
                times,
                y[fit_index],
                root_w[fit_index],
                model=model,
                floor=floor,
                options=options,
                start_rank=rank,
            )
            better = conv_r & (~conv_fit | (chi_r < chi_fit))
            theta_fit[better] = theta_r[better]
            chi_fit = np.where(better, chi_r, chi_fit)
            conv_fit = conv_fit | conv_r
            iter_fit = iter_fit + iter_r
        theta[fit_index] = theta_fit
        chi_square[fit_index] = chi_fit
        converged[fit_index] = conv_fit
        iterations[fit_index] = iter_fit

    ok = enough & converged & np.all(np.isfinite(theta), axis=1)
    last_time = None if options.tail is TailRule.MODEL else float(times[-1])
    tia, gradient = tia_and_gradient(theta, model, floor, last_time, LU177.decay_constant_per_h)
    _, jac = evaluate_model(theta, times, model, floor)
    weighted_jac = jac * root_w[:, :, None]
    normal = np.einsum("ntp,ntq->npq", weighted_jac, weighted_jac)
    # A parameter pinned at a projection bound is fixed, not estimated: its row and column are
    # left out of the inversion (identity there, zeroed after), so the covariance describes
    # the free parameters, as for an active constraint.
    lower, upper = parameter_bounds(y, model)
    pinned = (theta <= lower + 1e-9) | (theta >= upper - 1e-9)
    free_normal = np.where(pinned[:, :, None] | pinned[:, None, :], 0.0, normal)
    free_normal[:, np.arange(p), np.arange(p)] += pinned
    covariance_theta = pseudo_inverse(free_normal)
    covariance_theta = np.where(pinned[:, :, None] | pinned[:, None, :], 0.0, covariance_theta)
    dof = n_used - p
    if activity_sd_mbq is None:
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(dof > 0, chi_square / np.maximum(dof, 1), np.nan)
        covariance_theta = covariance_theta * scale[:, None, None]
    tia_variance = np.einsum("np,npq,nq->n", gradient, covariance_theta, gradient)
    transform = natural_jacobian(theta, model)
    covariance = np.einsum("nip,npq,njq->nij", transform, covariance_theta, transform)
    amplitudes, rates = natural_parameters(theta, model, floor)
    parameters = np.concatenate([amplitudes, rates], axis=1)

    k = p + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        aicc = np.where(
            n_used > k + 1,
            n_used * np.log(chi_square / n_used) + 2 * k + 2 * k * (k + 1) / (n_used - k - 1),
            np.nan,
        )
        weighted_mean = (weights * y).sum(axis=1) / weights.sum(axis=1)
        total = (weights * (y - weighted_mean[:, None]) ** 2).sum(axis=1)
        r_squared = 1.0 - chi_square / total

    status: list[str] = []
    for index in range(n):
        if ok[index]:
            status.append(STATUS_OK)
        elif not enough[index]:
            status.append(
                f"{model.name} needs ≥ {p} usable time points, has {n_used[index]} (of {n_points})"
            )
        else:
            status.append(f"{model.name} did not converge in {options.max_iterations} iterations")
    nan_rows = ~ok
    return ExponentialFit(
        model=model,
        parameters=np.where(nan_rows[:, None], np.nan, parameters),
        covariance=np.where(nan_rows[:, None, None], np.nan, covariance),
        tia_mbq_h=np.where(ok, tia, np.nan),
        tia_sd_mbq_h=np.where(ok, np.sqrt(np.maximum(tia_variance, 0.0)), np.nan),
        chi_square=np.where(ok, chi_square, np.nan),
        n_used=n_used,
        aicc=np.where(ok, aicc, np.nan),
        r_squared=np.where(ok, r_squared, np.nan),
        iterations=iterations,
        status=tuple(status),
    )
