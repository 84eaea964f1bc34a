"""Batched exponential fits: exact cases, recovery from noise, uncertainty, failures, selection."""

from __future__ import annotations

import math

import numpy as np
import pytest

from concordose.kinetics.fitting import (
    ALL_MODELS,
    BI,
    BI_UPTAKE,
    MONO,
    ExponentialModel,
    FitSettings,
    TailRule,
    activity_mbq,
    fit_exponential,
    model_of_parameters,
    select_by_aicc,
)
from concordose.kinetics.fitting.model import evaluate_model, natural_parameters
from concordose.kinetics.models import STATUS_OK
from concordose.kinetics.voxel import VOXEL_FIT_SETTINGS, fit_voxels
from concordose.nuclides import LU177

SIX_H = np.array([4.0, 24.0, 48.0, 96.0, 168.0, 240.0])
EIGHT_H = np.array([1.0, 4.0, 12.0, 24.0, 48.0, 96.0, 168.0, 240.0])
LAMBDA_PHYS = LU177.decay_constant_per_h


def _bi(
    a1: float | np.ndarray,
    l1: float | np.ndarray,
    a2: float | np.ndarray,
    l2: float | np.ndarray,
    t: np.ndarray,
) -> np.ndarray:
    return a1 * np.exp(-l1 * t) + a2 * np.exp(-l2 * t)


def test_mono_exponential_is_exact_with_model_and_physical_tail() -> None:
    a0, lam = 120.0, math.log(2) / 50.0
    curve = a0 * np.exp(-lam * SIX_H)[None, :]
    fit = fit_exponential(SIX_H, curve, MONO)
    assert fit.status == (STATUS_OK,)
    assert fit.tia_mbq_h[0] == pytest.approx(a0 / lam, rel=1e-6)
    assert fit.parameters[0] == pytest.approx([a0, lam], rel=1e-6)
    assert fit.chi_square[0] < 1e-12
    # Physical tail after 240 h: ∫₀^T A + A(T)/λ_phys, analytic.
    tail = fit_exponential(SIX_H, curve, MONO, settings=FitSettings(tail=TailRule.PHYSICAL))
    t_end = SIX_H[-1]
    expected = a0 * (1 - math.exp(-lam * t_end)) / lam + a0 * math.exp(-lam * t_end) / LAMBDA_PHYS
    assert tail.tia_mbq_h[0] == pytest.approx(expected, rel=1e-6)


def test_bi_exponential_batch_recovers_exact_parameters() -> None:
    rng = np.random.default_rng(3)
    n = 300
    a1, a2 = rng.uniform(20, 100, n), rng.uniform(20, 100, n)
    l1 = LAMBDA_PHYS + rng.uniform(0.003, 0.01, n)
    l2 = l1 + rng.uniform(0.05, 0.2, n)
    curves = _bi(a1[:, None], l1[:, None], a2[:, None], l2[:, None], EIGHT_H[None, :])
    fit = fit_exponential(EIGHT_H, curves, BI)
    error = np.abs(fit.tia_mbq_h / (a1 / l1 + a2 / l2) - 1)
    assert fit.ok.mean() > 0.97
    assert np.nanmedian(error) < 1e-6
    assert np.mean(error < 1e-3) > 0.95
    recovered = fit.ok & (error < 1e-3)
    np.testing.assert_allclose(fit.parameters[recovered, 2], l1[recovered], rtol=1e-3)


def test_noisy_tri_exponential_is_unbiased_and_its_uncertainty_is_calibrated() -> None:
    rng = np.random.default_rng(4)
    n = 1000
    a1, a2 = 60.0, 40.0
    l1, l2, lu = LAMBDA_PHYS + 0.006, 0.08, 0.5
    clean = a1 * np.exp(-l1 * EIGHT_H) + a2 * np.exp(-l2 * EIGHT_H)
    clean -= (a1 + a2) * np.exp(-lu * EIGHT_H)
    truth = a1 / l1 + a2 / l2 - (a1 + a2) / lu
    sd = 0.03 * clean
    noisy = clean * (1 + rng.normal(0, 0.03, (n, EIGHT_H.size)))
    fit = fit_exponential(EIGHT_H, noisy, BI_UPTAKE, activity_sd_mbq=np.tile(sd, (n, 1)))
    ok = fit.ok
    assert ok.mean() > 0.95
    error = fit.tia_mbq_h[ok] / truth - 1
    assert abs(np.mean(error)) < 0.01
    # gᵀVg with absolute sigmas: ~95 % of fits within 1.96 reported standard deviations.
    z = np.abs(fit.tia_mbq_h[ok] - truth) / fit.tia_sd_mbq_h[ok]
    assert 0.88 < np.mean(z < 1.96) < 0.99
    assert fit.covariance.shape == (n, 5, 5)


def test_failures_are_per_curve_statuses() -> None:
    curves = np.array(
        [
            [10.0, 8.0, 6.0, 4.0, 2.0, 1.0],
            [np.nan, np.nan, np.nan, 4.0, np.nan, 1.0],  # two usable points for 5 parameters
        ]
    )
    fit = fit_exponential(SIX_H, curves, BI_UPTAKE)
    assert fit.status[0] == STATUS_OK
    assert "needs ≥ 5 usable time points, has 2" in fit.status[1]
    assert np.isnan(fit.tia_mbq_h[1])
    assert np.isnan(fit.parameters[1]).all()


def test_aicc_prefers_mono_for_mono_data_and_bi_for_bi_data() -> None:
    rng = np.random.default_rng(5)
    n = 200
    mono = 100 * np.exp(-0.02 * EIGHT_H) * (1 + rng.normal(0, 0.02, (n, EIGHT_H.size)))
    bi = _bi(60.0, 0.01, 60.0, 0.2, EIGHT_H) * (1 + rng.normal(0, 0.02, (n, EIGHT_H.size)))
    curves = np.vstack([mono, bi])
    fits = [fit_exponential(EIGHT_H, curves, model) for model in (MONO, BI)]
    chosen, weight = select_by_aicc(fits)
    assert np.mean(chosen[:n] == 0) > 0.8
    assert np.mean(chosen[n:] == 1) > 0.95
    assert np.all((weight[chosen >= 0] > 0) & (weight[chosen >= 0] <= 1))


def test_voxel_fit_equals_curve_fit_and_leaves_outside_mask_empty() -> None:
    rng = np.random.default_rng(6)
    shape = (3, 4, 5)
    lam = rng.uniform(0.01, 0.05, shape)
    maps = rng.uniform(1, 10, shape)[None] * np.exp(-lam[None] * SIX_H[:, None, None, None])
    mask = np.zeros(shape, dtype=bool)
    mask[1:, :, 2:] = True
    result = fit_voxels(SIX_H, maps, mask, MONO, chunk_voxels=7)
    curves = maps.reshape(6, -1).T[mask.ravel()]
    direct = fit_exponential(SIX_H, curves, MONO, settings=VOXEL_FIT_SETTINGS)
    np.testing.assert_allclose(result.tia_mbq_h[mask], direct.tia_mbq_h, rtol=1e-12)
    assert np.isnan(result.tia_mbq_h[~mask]).all()
    assert result.status_counts == {STATUS_OK: int(mask.sum())}
    with pytest.raises(ValueError, match="expected"):
        fit_voxels(SIX_H[:4], maps, mask, MONO)


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.name)
def test_activity_from_named_parameters_is_the_fits_own_curve(model: ExponentialModel) -> None:
    rng = np.random.default_rng(3)
    theta = (
        rng.normal(size=(1, model.n_parameters)) * 0.5
        + np.r_[np.full(model.n_clearance, 4.0), np.full(model.n_rates, -3.0)]
    )
    floor = np.zeros(model.n_rates)
    time_h = np.array([0.0, 4.0, 24.0, 96.0, 240.0])
    amplitudes, rates = natural_parameters(theta, model, floor)
    named = dict(zip(model.parameter_names(), np.r_[amplitudes[0], rates[0]], strict=True))

    expected, _ = evaluate_model(theta, time_h, model, floor)
    assert model_of_parameters(named) == model
    np.testing.assert_allclose(
        activity_mbq(model, named, time_h), expected[0], rtol=1e-12, atol=1e-9
    )
