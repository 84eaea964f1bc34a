"""Mono-exponential clearance fitted to all curves at once.

Model: A(t) = A0 · exp(−λ_eff · t), t in h after injection, uptake taken as instantaneous.
TIA = ∫₀^∞ A dt = A0 / λ_eff (MBq·h).

Fit: weighted linear least squares on ln A, solved in closed form for every curve together
(no per-curve loop). Weights w_i = A_i make the residual variance match Poisson counting
(var ln A ≈ 1/counts ∝ 1/A), so late, noisier points count less. Non-positive activities get
zero weight. A curve needs two usable points and a clearance at least as fast as Lu-177's
physical decay (λ_eff ≥ λ_phys: biological clearance ≥ 0, the bound the fitting engine's models
hold, ``kinetics.fitting.model``), otherwise its TIA is reported as NaN with the reason (a slower
fitted clearance is noise or a model that does not fit, e.g. a late uptake; no activity is
retained longer than decay allows).

Uncertainty (EANM, Gear et al. 2018: fit covariance into TIA). The weights fix only the relative
variances (var ln A_i = σ²/A_i), so σ² is estimated from the weighted residuals,
s² = Σ w_i r_i² / (n − 2), and the covariance of (c, λ) = (ln A0, −slope) is
s² · [[S_tt, S_t], [S_t, S_w]] / det (weighted linear regression). With ln TIA = c − ln λ,

    var(ln TIA) = var(c) + var(λ)/λ² − 2 cov(c, λ)/λ,   sd(TIA) = TIA · sqrt(var(ln TIA))

(first order). With only two usable points there is no residual degree of freedom and the SD
is NaN (not estimable), never zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from concordose.kinetics.models import STATUS_OK, KineticsBatch, check_curves, settings_hash
from concordose.nuclides import LU177


class MonoExponential:
    """Registry entry ``mono_exponential``."""

    name = "mono_exponential"
    version = "2"  # 2: clearance slower than physical decay refused (was: only λ_eff ≤ 0)

    def settings(self) -> dict[str, object]:
        """No tunable settings: weights and domain are fixed by the method."""
        return {"weights": "activity", "uptake": "instantaneous", "integral": "0..inf"}

    def fit(
        self,
        time_h: npt.NDArray[np.float64],
        activity_mbq: npt.NDArray[np.float64],
        *,
        voi_types: Sequence[str] | None = None,
        activity_sd_mbq: npt.NDArray[np.float64] | None = None,
    ) -> KineticsBatch:
        """Fit A0 and λ_eff for every curve; see the module docstring.

        ``voi_types`` and ``activity_sd_mbq`` are accepted and ignored: the weights are fixed
        (w = A) so that this method's numbers do not change with the inputs' uncertainty model.
        """
        times, values = check_curves(time_h, activity_mbq)
        usable = np.isfinite(values) & (values > 0)
        weights = np.where(usable, values, 0.0)
        log_values = np.log(np.where(usable, values, 1.0))
        # Weighted normal equations of ln A = c − λ t, per curve (rows), all at once.
        s_w = weights.sum(axis=1)
        s_t = weights @ times
        s_tt = weights @ (times * times)
        s_y = (weights * log_values).sum(axis=1)
        s_ty = (weights * log_values) @ times
        determinant = s_w * s_tt - s_t * s_t
        n_usable = usable.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (s_w * s_ty - s_t * s_y) / determinant
            intercept = (s_y - slope * s_t) / s_w
        lambda_per_h = -slope
        a0_mbq = np.exp(intercept)
        physical_per_h = LU177.decay_constant_per_h
        ok = (
            (n_usable >= 2)
            & (determinant > 0)
            & np.isfinite(lambda_per_h)
            & (lambda_per_h >= physical_per_h)
        )
        status = np.full(ok.shape, STATUS_OK, dtype=object)
        for index in np.flatnonzero(~ok):  # messages only for the (few) failures
            if n_usable[index] < 2 or not determinant[index] > 0:
                status[index] = f"needs ≥ 2 time points with activity > 0, has {n_usable[index]}"
            elif not lambda_per_h[index] > 0:
                status[index] = (
                    f"no clearance (λ_eff = {lambda_per_h[index]:.3g} /h ≤ 0): TIA unbounded"
                )
            else:
                status[index] = (
                    f"clearance slower than physical decay (T_eff = "
                    f"{math.log(2.0) / lambda_per_h[index]:.4g} h > {LU177.half_life_h:.4g} h): "
                    "not physical; the curve is not mono-exponential from injection"
                )
        tia = np.where(ok, a0_mbq / np.where(ok, lambda_per_h, 1.0), np.nan)
        residual = np.where(usable, log_values - (intercept[:, None] + slope[:, None] * times), 0)
        covariance, tia_sd = _covariance_and_tia_sd(
            weights, residual, (s_w, s_t, s_tt, determinant), intercept, slope, ok=ok
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_log = s_y / s_w
            total = (weights * (log_values - mean_log[:, None]) ** 2).sum(axis=1)
            r_squared = 1.0 - (weights * residual**2).sum(axis=1) / total
        return KineticsBatch(
            method=self.name,
            method_version=self.version,
            parameters_hash=settings_hash(self.settings()),
            tia_mbq_h=tia,
            fit_parameters={
                "a0_mbq": np.where(ok, a0_mbq, np.nan),
                "lambda_eff_per_h": np.where(ok, lambda_per_h, np.nan),
                "teff_h": np.where(ok, math.log(2.0) / np.where(ok, lambda_per_h, 1.0), np.nan),
            },
            status=tuple(status.tolist()),
            tia_sd_mbq_h=tia_sd,
            goodness={"r_squared": np.where(ok, r_squared, np.nan)},
            covariance=covariance,
            parameter_names=("a0_mbq", "lambda_eff_per_h"),
        )


FloatArray = npt.NDArray[np.float64]


def _covariance_and_tia_sd(
    weights: FloatArray,
    residual: FloatArray,
    sums: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
    intercept: FloatArray,
    slope: FloatArray,
    *,
    ok: npt.NDArray[np.bool_],
) -> tuple[FloatArray, FloatArray]:
    """(n, 2, 2) covariance of (A0 MBq, λ_eff /h) and the TIA SD (MBq·h), from the weighted
    regression's sums (S_w, S_t, S_tt, det) and residuals of ln A; see the module docstring."""
    s_w, s_t, s_tt, determinant = sums
    n_usable = (weights > 0).sum(axis=1)
    dof = n_usable - 2
    estimable = ok & (dof > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(
            estimable, (weights * residual**2).sum(axis=1) / np.maximum(dof, 1), np.nan
        )
        var_c = scale * s_tt / determinant
        var_lambda = scale * s_w / determinant
        cov_c_lambda = scale * s_t / determinant  # λ = −slope flips the sign of −S_t
        a0 = np.exp(intercept)
        lam = -slope
        var_log_tia = var_c + var_lambda / lam**2 - 2.0 * cov_c_lambda / lam
        tia_sd = np.where(estimable, a0 / lam * np.sqrt(np.maximum(var_log_tia, 0.0)), np.nan)
    covariance = np.full((weights.shape[0], 2, 2), np.nan)
    covariance[:, 0, 0] = a0**2 * var_c
    covariance[:, 0, 1] = covariance[:, 1, 0] = a0 * cov_c_lambda
    covariance[:, 1, 1] = var_lambda
    covariance[~estimable] = np.nan
    return covariance, tia_sd
