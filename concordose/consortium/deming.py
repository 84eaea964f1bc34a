"""Deming regression with jackknife confidence intervals, for method comparison.

Both methods measure with error, so ordinary least squares of one on the other biases the slope
towards 0; Deming regression minimises the squared distances in the direction set by the ratio
of the error variances, δ = var(error of y) / var(error of x) (δ = 1: orthogonal regression).
Closed form: with sxx, syy, sxy the centred sums of squares and products,
b = (syy − δ·sxx + √((syy − δ·sxx)² + 4·δ·sxy²)) / (2·sxy), a = ȳ − b·x̄.
Confidence intervals by the jackknife (leave one pair out), as Linnet recommends for Deming
regression (Linnet K, Evaluation of regression procedures for methods comparison studies,
Clin Chem 1993;39:424-32): SE² = (n − 1)/n · Σ(θ₋ᵢ − θ̄₋)², interval θ ± t(n − 1, 0.975)·SE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]

MIN_PAIRS = 3
"""Fewest pairs for a fit with a jackknife interval (two leave-one-out fits need a spread)."""


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval (NaN bounds when there is none)."""

    estimate: float
    lower: float
    upper: float


@dataclass(frozen=True)
class DemingFit:
    """y = intercept + slope·x, with jackknife intervals.

    Attributes:
        n_pairs: pairs used (finite x and y).
        slope, intercept: estimates with intervals (intercept in y's unit).
        confidence: two-sided level of the intervals.
        leave_one_out_slope, leave_one_out_intercept: the jackknife fits (one per pair left out).
    """

    n_pairs: int
    slope: Interval
    intercept: Interval
    confidence: float
    leave_one_out_slope: FloatArray
    leave_one_out_intercept: FloatArray

    def predict(self, x: float) -> Interval:
        """y at ``x`` (e.g. a published cut-off on the reference's scale), jackknife interval."""
        estimate = self.intercept.estimate + self.slope.estimate * x
        return _jackknife_interval(
            estimate,
            self.leave_one_out_intercept + self.leave_one_out_slope * x,
            self.confidence,
        )


def _deming_coefficients(
    x: FloatArray, y: FloatArray, error_variance_ratio: float
) -> tuple[FloatArray, FloatArray]:
    """Slope and intercept along the last axis (x, y: (..., n))."""
    dx = x - x.mean(axis=-1, keepdims=True)
    dy = y - y.mean(axis=-1, keepdims=True)
    sxx = (dx * dx).sum(axis=-1)
    syy = (dy * dy).sum(axis=-1)
    sxy = (dx * dy).sum(axis=-1)
    spread = syy - error_variance_ratio * sxx
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (spread + np.sqrt(spread**2 + 4.0 * error_variance_ratio * sxy**2)) / (2.0 * sxy)
    intercept = y.mean(axis=-1) - slope * x.mean(axis=-1)
    return slope, intercept


def _jackknife_interval(estimate: float, leave_one_out: FloatArray, confidence: float) -> Interval:
    n = leave_one_out.size
    if n < MIN_PAIRS or not np.all(np.isfinite(leave_one_out)):
        return Interval(estimate, float("nan"), float("nan"))
    se = float(np.sqrt((n - 1) / n * np.sum((leave_one_out - leave_one_out.mean()) ** 2)))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * se
    return Interval(estimate, estimate - half, estimate + half)


def deming_regression(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    error_variance_ratio: float = 1.0,
    confidence: float = 0.95,
) -> DemingFit:
    """Deming regression of ``y`` on ``x`` (see the module docstring); pairs with a NaN left out.

    Raises:
        ValueError: arrays of different length, a non-positive variance ratio, fewer than
            :data:`MIN_PAIRS` pairs, or x and y without covariance (no line to fit).
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape:
        raise ValueError(
            f"Deming regression: expected paired values, found {xs.size} x and {ys.size} y"
        )
    if error_variance_ratio <= 0:
        raise ValueError(
            f"Deming regression: the error variance ratio must be > 0, found {error_variance_ratio}"
        )
    valid = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[valid], ys[valid]
    n = int(xs.size)
    if n < MIN_PAIRS:
        raise ValueError(f"Deming regression needs at least {MIN_PAIRS} pairs, found {n}")
    slope, intercept = _deming_coefficients(xs, ys, error_variance_ratio)
    if not np.isfinite(slope):
        raise ValueError("Deming regression: x and y have no covariance; no line to fit")
    # leave-one-out: row i of the (n, n − 1) matrices omits pair i
    keep = ~np.eye(n, dtype=bool)
    loo_x = np.broadcast_to(xs, (n, n))[keep].reshape(n, n - 1)
    loo_y = np.broadcast_to(ys, (n, n))[keep].reshape(n, n - 1)
    loo_slope, loo_intercept = _deming_coefficients(loo_x, loo_y, error_variance_ratio)
    return DemingFit(
        n_pairs=n,
        slope=_jackknife_interval(float(slope), loo_slope, confidence),
        intercept=_jackknife_interval(float(intercept), loo_intercept, confidence),
        confidence=confidence,
        leave_one_out_slope=loo_slope,
        leave_one_out_intercept=loo_intercept,
    )
