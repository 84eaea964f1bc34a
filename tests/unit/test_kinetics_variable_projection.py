"""The variable-projection fast path agrees with the general LM engine on the same curves."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from concordose.kinetics.fitting import (
    ALL_MODELS,
    BI,
    BI_UPTAKE,
    MONO,
    ExponentialFit,
    ExponentialModel,
    FitSettings,
    Solver,
    TailRule,
    fit_exponential,
    point_weights,
    rate_floors,
)
from concordose.kinetics.fitting.levenberg_marquardt import levenberg_marquardt, parameter_bounds
from concordose.kinetics.fitting.start_values import grid_start_values
from concordose.kinetics.fitting.variable_projection import (
    reduced_levenberg_marquardt,
    variable_projection,
)
from concordose.kinetics.voxel import VOXEL_FIT_SETTINGS
from concordose.nuclides import LU177

EIGHT_H = np.array([1.0, 4.0, 12.0, 24.0, 48.0, 96.0, 168.0, 240.0])
SIX_H = np.array([4.0, 24.0, 48.0, 96.0, 168.0, 240.0])
LAMBDA_PHYS = LU177.decay_constant_per_h
GENERAL = dataclasses.replace(VOXEL_FIT_SETTINGS, solver=Solver.LEVENBERG_MARQUARDT)
FAST = dataclasses.replace(VOXEL_FIT_SETTINGS, solver=Solver.VARIABLE_PROJECTION)


def _curves(model: ExponentialModel, n: int, noise: float, seed: int) -> np.ndarray:
    """(n, 8) curves of ``model`` with well separated random rates and relative noise."""
    rng = np.random.default_rng(seed)
    m = model.n_clearance
    amplitudes = rng.uniform(20.0, 100.0, (n, m))
    rates = np.empty((n, m))
    rates[:, 0] = LAMBDA_PHYS + rng.uniform(0.003, 0.01, n)
    for k in range(1, m):
        rates[:, k] = rates[:, k - 1] * rng.uniform(5.0, 10.0, n)
    clean = (amplitudes[:, None, :] * np.exp(-rates[:, None, :] * EIGHT_H[None, :, None])).sum(2)
    if model.uptake:
        uptake = rates[:, -1] + rng.uniform(0.5, 1.0, n)
        clean -= amplitudes.sum(1)[:, None] * np.exp(-uptake[:, None] * EIGHT_H[None, :])
    noisy: np.ndarray = clean * (1.0 + rng.normal(0.0, noise, clean.shape))
    return noisy


def _well_conditioned(fit: ExponentialFit) -> np.ndarray:
    """Fitted, TIA relative SD < 10 %, parameter correlation matrix condition < 1e4."""
    scale = np.sqrt(np.einsum("npp->np", fit.covariance))
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = fit.covariance / (scale[:, :, None] * scale[:, None, :])
    finite = np.all(np.isfinite(correlation), axis=(1, 2))
    condition = np.full(finite.size, np.inf)
    condition[finite] = np.linalg.cond(correlation[finite])
    with np.errstate(invalid="ignore"):
        relative_sd = fit.tia_sd_mbq_h / fit.tia_mbq_h
    return fit.ok & (relative_sd < 0.1) & (condition < 1e4)


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda model: model.name)
def test_fast_path_agrees_with_general_engine_for_every_model(model: ExponentialModel) -> None:
    curves = _curves(model, 300, noise=0.01, seed=11)
    general = fit_exponential(EIGHT_H, curves, model, settings=GENERAL)
    fast = fit_exponential(EIGHT_H, curves, model, settings=FAST)
    assert fast.ok.mean() >= general.ok.mean() - 0.01
    well = _well_conditioned(general) & fast.ok
    # Tri-exponential with uptake, seven parameters on eight points: 24 of 300 here.
    assert well.sum() >= 20
    np.testing.assert_allclose(fast.tia_mbq_h[well], general.tia_mbq_h[well], rtol=1e-3)
    np.testing.assert_allclose(fast.parameters[well], general.parameters[well], rtol=1e-2)
    np.testing.assert_allclose(fast.tia_sd_mbq_h[well], general.tia_sd_mbq_h[well], rtol=2e-2)
    # Covariance of all parameters (Gear 2018), compared on its scale per curve.
    scale = np.abs(general.covariance[well]).max(axis=(1, 2))[:, None, None]
    covariance_error = np.abs(fast.covariance[well] - general.covariance[well]) / scale
    assert np.percentile(covariance_error, 99) < 1e-2
    # Same AICc where the same minimum is found (same χ², same parameter count).
    np.testing.assert_allclose(fast.aicc[well], general.aicc[well], rtol=1e-6, atol=1e-6)


def test_fast_path_with_absolute_sigmas_and_physical_tail() -> None:
    curves = _curves(BI_UPTAKE, 300, noise=0.03, seed=12)
    sd = 0.03 * np.abs(curves)
    settings = {
        name: dataclasses.replace(base, tail=TailRule.PHYSICAL)
        for name, base in (("general", GENERAL), ("fast", FAST))
    }
    general = fit_exponential(
        EIGHT_H, curves, BI_UPTAKE, activity_sd_mbq=sd, settings=settings["general"]
    )
    fast = fit_exponential(
        EIGHT_H, curves, BI_UPTAKE, activity_sd_mbq=sd, settings=settings["fast"]
    )
    well = _well_conditioned(general) & fast.ok
    assert well.sum() > 150
    np.testing.assert_allclose(fast.tia_mbq_h[well], general.tia_mbq_h[well], rtol=1e-3)
    np.testing.assert_allclose(fast.tia_sd_mbq_h[well], general.tia_sd_mbq_h[well], rtol=2e-2)


def test_fast_path_is_exact_on_noise_free_curves() -> None:
    rng = np.random.default_rng(13)
    n = 100
    a1, a2 = rng.uniform(20, 100, n), rng.uniform(20, 100, n)
    l1 = LAMBDA_PHYS + rng.uniform(0.003, 0.01, n)
    l2 = l1 + rng.uniform(0.05, 0.2, n)
    curves = a1[:, None] * np.exp(-l1[:, None] * EIGHT_H) + a2[:, None] * np.exp(
        -l2[:, None] * EIGHT_H
    )
    fit = fit_exponential(EIGHT_H, curves, BI, settings=FAST)
    truth = a1 / l1 + a2 / l2
    assert fit.ok.all()
    assert np.median(np.abs(fit.tia_mbq_h / truth - 1)) < 1e-6
    mono = 50.0 * np.exp(-0.03 * SIX_H)[None, :]
    exact = fit_exponential(SIX_H, mono, MONO, settings=FAST)
    assert exact.tia_mbq_h[0] == pytest.approx(50.0 / 0.03, rel=1e-6)


def test_curves_the_fast_path_does_not_solve_get_the_general_engines_result() -> None:
    curves = _curves(BI_UPTAKE, 600, noise=0.05, seed=14)[:, 1:7]  # six points: 1 dof left
    times = EIGHT_H[1:7]
    options = FitSettings(n_starts=1, max_iterations=100)
    weights = point_weights(curves, None, options.weights)
    root_w = np.sqrt(weights)
    floor = rate_floors(BI_UPTAKE, options)
    start = grid_start_values(times, curves, weights, BI_UPTAKE, floor=floor)
    _, _, usable, _ = reduced_levenberg_marquardt(
        times, curves, root_w, start, model=BI_UPTAKE, floor=floor, options=options
    )
    assert 0.7 < usable.mean() < 1.0  # most curves take the fast path, some fall back
    fast = variable_projection(times, curves, root_w, model=BI_UPTAKE, floor=floor, options=options)
    general = levenberg_marquardt(
        times, curves, root_w, model=BI_UPTAKE, floor=floor, options=options
    )
    rest = ~usable
    np.testing.assert_array_equal(fast[0][rest], general[0][rest])
    np.testing.assert_array_equal(fast[1][rest], general[1][rest])
    np.testing.assert_array_equal(fast[2][rest], general[2][rest])
    # Fast-path solutions respect the general engine's bounds (amplitudes ≥ their floor, rate
    # increments within theirs): they are solutions of the same bounded problem.
    lower, upper = parameter_bounds(curves, BI_UPTAKE)
    theta = fast[0][usable]
    assert np.all(theta >= lower[usable])
    assert np.all(theta <= upper[usable])


def test_amplitude_that_would_be_negative_is_held_at_its_floor() -> None:
    # Mono-exponential data fitted with two terms: the unconstrained second amplitude is often
    # negative; the fast path solves the non-negative problem instead and stays positive.
    rng = np.random.default_rng(15)
    n = 200
    curves = 100.0 * np.exp(-0.02 * EIGHT_H) * (1.0 + rng.normal(0.0, 0.02, (n, EIGHT_H.size)))
    fast = fit_exponential(EIGHT_H, curves, BI, settings=FAST)
    general = fit_exponential(EIGHT_H, curves, BI, settings=GENERAL)
    assert fast.ok.mean() > 0.9
    amplitudes = fast.parameters[fast.ok, :2]
    assert np.all(amplitudes > 0)
    # Whatever the split between the two terms, the TIA is the data's: within 1 % of the
    # general engine's where both fitted.
    both = fast.ok & general.ok
    assert np.median(np.abs(fast.tia_mbq_h[both] / general.tia_mbq_h[both] - 1)) < 1e-3
    assert np.mean(np.abs(fast.tia_mbq_h[both] / general.tia_mbq_h[both] - 1) < 0.01) > 0.95
