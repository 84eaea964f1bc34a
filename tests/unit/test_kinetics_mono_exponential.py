"""Mono-exponential kinetics: analytic cases, batches, and reported failures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from concordose.errors import ConfigurationError
from concordose.kinetics.methods.mono_exponential import MonoExponential
from concordose.kinetics.models import STATUS_OK
from concordose.kinetics.registry import KINETICS_METHODS

TIME_H = np.array([4.0, 24.0, 72.0, 168.0])


def test_exact_mono_exponential_gives_tia_a0_over_lambda() -> None:
    a0_mbq, lambda_per_h = 120.0, math.log(2) / 50.0
    activity = a0_mbq * np.exp(-lambda_per_h * TIME_H)
    batch = MonoExponential().fit(TIME_H, activity[np.newaxis, :])
    assert batch.status == (STATUS_OK,)
    assert batch.tia_mbq_h[0] == pytest.approx(a0_mbq / lambda_per_h, rel=1e-6)
    assert batch.fit_parameters["a0_mbq"][0] == pytest.approx(a0_mbq, rel=1e-9)
    assert batch.fit_parameters["teff_h"][0] == pytest.approx(50.0, rel=1e-9)


def test_batch_of_many_curves_is_exact_for_each() -> None:
    rng = np.random.default_rng(1)
    a0_mbq = rng.uniform(1, 500, size=5000)
    lambda_per_h = rng.uniform(0.005, 0.05, size=5000)
    activity = a0_mbq[:, None] * np.exp(-lambda_per_h[:, None] * TIME_H[None, :])
    batch = MonoExponential().fit(TIME_H, activity)
    np.testing.assert_allclose(batch.tia_mbq_h, a0_mbq / lambda_per_h, rtol=1e-6)
    assert batch.ok.all()


def test_noisy_curve_recovers_parameters_within_noise() -> None:
    rng = np.random.default_rng(2)
    a0_mbq, lambda_per_h = 80.0, math.log(2) / 70.0
    truth = a0_mbq * np.exp(-lambda_per_h * TIME_H)
    noisy = truth * (1 + rng.normal(0, 0.01, size=(2000, TIME_H.size)))
    batch = MonoExponential().fit(TIME_H, noisy)
    relative_error = batch.tia_mbq_h / (a0_mbq / lambda_per_h) - 1
    assert abs(np.mean(relative_error)) < 0.002  # unbiased to well below the 1 % noise
    assert np.std(relative_error) < 0.02


def test_failures_are_reported_per_curve_not_raised() -> None:
    activity = np.array(
        [
            [10.0, 8.0, 5.0, 2.0],  # fine
            [1.0, 2.0, 3.0, 4.0],  # accumulating: no clearance
            [5.0, 0.0, 0.0, -1.0],  # only one usable point
            (10.0 * np.exp(-math.log(2) / 300.0 * TIME_H)).tolist(),  # slower than decay
        ]
    )
    batch = MonoExponential().fit(TIME_H, activity)
    assert batch.status[0] == STATUS_OK
    assert "no clearance" in batch.status[1]
    assert "≥ 2 time points" in batch.status[2]
    assert "slower than physical decay (T_eff = 300 h > 159.5 h)" in batch.status[3]
    assert np.isfinite(batch.tia_mbq_h[0])
    assert np.isnan(batch.tia_mbq_h[1:]).all()


def test_shape_and_time_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        MonoExponential().fit(np.array([4.0, 4.0, 24.0]), np.ones((1, 3)))
    with pytest.raises(ValueError, match="expected"):
        MonoExponential().fit(TIME_H, np.ones((2, 3)))


def test_registry_knows_the_method_and_names_alternatives() -> None:
    assert KINETICS_METHODS.get("mono_exponential").name == "mono_exponential"
    with pytest.raises(ConfigurationError, match=r"known: .*mono_exponential"):
        KINETICS_METHODS.get("tri_exponential_typo")


def test_tia_uncertainty_matches_the_spread_of_noisy_fits() -> None:
    """Gear 2018 propagation for the closed-form fit: noise with the weights' variance model
    (var ln A = σ²/A); the SD is estimated from 2 residual degrees of freedom, so 95 % of
    fits fall within the Student-t quantile (4.30 SD), and the RMS SD equals the TIA spread."""
    rng = np.random.default_rng(1)
    a0_mbq, lambda_per_h = 100.0, math.log(2) / 60.0
    true_mbq = a0_mbq * np.exp(-lambda_per_h * TIME_H)
    noisy = true_mbq * np.exp(rng.normal(size=(20_000, 4)) * 0.3 / np.sqrt(true_mbq))
    batch = MonoExponential().fit(TIME_H, noisy)
    assert batch.tia_sd_mbq_h is not None
    t_quantile = 4.302653  # Student t, 2 degrees of freedom, 97.5 %
    inside = np.abs(batch.tia_mbq_h - a0_mbq / lambda_per_h) <= t_quantile * batch.tia_sd_mbq_h
    assert inside.mean() == pytest.approx(0.95, abs=0.01)
    rms_sd = math.sqrt(float(np.mean(batch.tia_sd_mbq_h**2)))
    assert float(np.std(batch.tia_mbq_h)) == pytest.approx(rms_sd, rel=0.05)
    assert batch.covariance is not None
    assert batch.parameter_names == ("a0_mbq", "lambda_eff_per_h")
    assert np.all(batch.covariance[:, 0, 0] > 0)


def test_two_points_give_a_tia_but_no_estimable_uncertainty() -> None:
    activity = 50.0 * np.exp(-0.01 * TIME_H[:2])
    batch = MonoExponential().fit(TIME_H[:2], activity[np.newaxis, :])
    assert batch.status == (STATUS_OK,)
    assert batch.tia_sd_mbq_h is not None
    assert np.isnan(batch.tia_sd_mbq_h[0])  # no residual degree of freedom: unknown, not 0
