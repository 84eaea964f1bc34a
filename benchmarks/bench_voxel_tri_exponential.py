"""Voxel-level tri-exponential fit (batched) vs a per-voxel ``scipy.optimize.curve_fit`` loop.

Run: ``.venv/bin/python -m benchmarks.bench_voxel_tri_exponential [--voxels N] [--sample K]
[--general-sample G]``.

Synthetic voxels: six time points (4, 24, 48, 96, 168, 240 h), the bi-exponential clearance
with uptake (five parameters; ``spectacular_6tp``'s richest six-point model before it selected
its model per curve, issue 14) with random
parameters and 5 % Gaussian noise per point. The batched engine (``kinetics.voxel.fit_voxels``
with its defaults: the variable-projection fast path, the general LM engine refitting what it
does not solve) fits all of them; the peer fits a random sample one voxel at a time with
``curve_fit`` (its default Levenberg–Marquardt, same model, same Poisson weights, started from
the same start values as the engine, whose cost is not timed) and its time is extrapolated to
all voxels. The peer is unbounded; the engine is not: rates ≥ the Lu-177 decay constant,
ordered clearance rates, uptake faster than the last clearance by ≥ ln2/24 h, amplitudes within
[1e-8, 1e4] × the curve's peak (see ``kinetics.fitting``). Those box constraints live on the
engine's transformed parameters (rate increments), so a bounded ``curve_fit`` (TRF) could not
apply the same ones; it is not run. Both run with BLAS held to one thread, as ``fit_voxels``
does. For reference, the general engine alone (``Solver.LEVENBERG_MARQUARDT``) fits the first
``--general-sample`` voxels in the same run (time extrapolated), and its TIA is compared with the
fast path's on the same voxels.

Times are wall clock (the speed-up) and this process's CPU time (less sensitive to other jobs
on a shared machine).

Agreement is the relative TIA difference on well-conditioned voxels: both fits succeeded and
the engine's TIA relative standard deviation (fit covariance) is below 10 % and its
parameters' correlation matrix has a condition number below 1e4 (no two parameters nearly
interchangeable). Peak memory: the process's maximum resident set size (includes the input
maps).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import time
import warnings

import numpy as np
import numpy.typing as npt
from scipy.optimize import OptimizeWarning, curve_fit
from threadpoolctl import threadpool_limits

from concordose.kinetics.fitting import (
    BI_UPTAKE,
    Solver,
    fit_exponential,
    point_weights,
    start_parameters,
)
from concordose.kinetics.voxel import VOXEL_FIT_SETTINGS, fit_voxels
from concordose.nuclides import LU177

TIME_H = np.array([4.0, 24.0, 48.0, 96.0, 168.0, 240.0])
NOISE = 0.05
WELL_CONDITIONED_RELATIVE_SD = 0.10
WELL_CONDITIONED_CORRELATION = 1e4
"""Largest condition number of the parameters' correlation matrix for a well-conditioned voxel
(no near-linear dependence between parameters, e.g. two coinciding rates)."""


def _correlation_condition(covariance: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Condition number of each (p, p) covariance's correlation matrix (inf if degenerate)."""
    scale = np.sqrt(np.einsum("npp->np", covariance))
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = covariance / (scale[:, :, None] * scale[:, None, :])
    finite = np.all(np.isfinite(correlation), axis=(1, 2))
    condition = np.full(covariance.shape[0], np.inf)
    if finite.any():
        condition[finite] = np.linalg.cond(correlation[finite])
    return condition


Param = float | npt.NDArray[np.float64]


def _model(  # noqa: PLR0917 - curve_fit passes the parameters positionally
    t: npt.NDArray[np.float64], a1: Param, a2: Param, l1: Param, l2: Param, lu: Param
) -> npt.NDArray[np.float64]:
    return a1 * np.exp(-l1 * t) + a2 * np.exp(-l2 * t) - (a1 + a2) * np.exp(-lu * t)


def _tia(a1: float, a2: float, l1: float, l2: float, lu: float) -> float:
    return a1 / l1 + a2 / l2 - (a1 + a2) / lu


def synthetic_voxels(n: int, seed: int = 0) -> npt.NDArray[np.float64]:
    """(6, n) activity maps (one row per time point), MBq per voxel."""
    rng = np.random.default_rng(seed)
    physical = LU177.decay_constant_per_h
    a1 = rng.uniform(0.5, 2.0, n)
    a2 = rng.uniform(0.2, 1.0, n)
    l1 = physical + rng.uniform(0.002, 0.012, n)
    l2 = l1 + rng.uniform(0.03, 0.1, n)
    lu = l2 + rng.uniform(0.2, 0.6, n)
    clean = _model(TIME_H[:, None], a1, a2, l1, l2, lu)
    noisy: npt.NDArray[np.float64] = clean * (1.0 + rng.normal(0.0, NOISE, clean.shape))
    return noisy


def main() -> None:
    """Time both, print speed-up, agreement and peak memory."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--voxels", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=500)
    parser.add_argument("--general-sample", type=int, default=100_000)
    args = parser.parse_args()
    maps = synthetic_voxels(args.voxels)
    mask = np.ones(args.voxels, dtype=bool)
    settings = VOXEL_FIT_SETTINGS

    start, start_cpu = time.perf_counter(), time.process_time()
    result = fit_voxels(TIME_H, maps, mask, BI_UPTAKE, settings=settings)
    batched_s = time.perf_counter() - start
    batched_cpu_s = time.process_time() - start_cpu

    rng = np.random.default_rng(1)
    sample = rng.choice(args.voxels, size=min(args.sample, args.voxels), replace=False)
    curves = maps[:, sample].T.copy()
    weights = point_weights(curves, None, settings.weights)
    starts = start_parameters(TIME_H, curves, BI_UPTAKE, settings)
    sigma = 1.0 / np.sqrt(weights)
    loop_tia = np.full(sample.size, np.nan)
    start, start_cpu = time.perf_counter(), time.process_time()
    # Unbounded trial steps can overflow exp(): silenced, as curve_fit handles them itself.
    with (
        warnings.catch_warnings(),
        threadpool_limits(limits=1, user_api="blas"),
        np.errstate(over="ignore", invalid="ignore"),
    ):
        warnings.simplefilter("ignore", OptimizeWarning)
        for row in range(sample.size):
            try:
                params, _ = curve_fit(
                    _model, TIME_H, curves[row], p0=starts[row], sigma=sigma[row], maxfev=2000
                )
            except RuntimeError:  # curve_fit's "optimal parameters not found"
                continue
            loop_tia[row] = _tia(*params)
    loop_s = (time.perf_counter() - start) * args.voxels / sample.size
    loop_cpu_s = (time.process_time() - start_cpu) * args.voxels / sample.size

    engine_tia = result.tia_mbq_h[sample]
    # Same curves refitted alone: identical results (a curve's fit never depends on its batch),
    # and the covariance for the conditioning test.
    with threadpool_limits(limits=1, user_api="blas"):
        sample_fit = fit_exponential(TIME_H, curves, BI_UPTAKE, settings=settings)
    assert np.array_equal(sample_fit.tia_mbq_h, engine_tia, equal_nan=True)
    relative_sd = sample_fit.tia_sd_mbq_h / engine_tia
    well = (
        np.isfinite(engine_tia)
        & np.isfinite(loop_tia)
        & (loop_tia > 0)
        & (relative_sd < WELL_CONDITIONED_RELATIVE_SD)
        & (_correlation_condition(sample_fit.covariance) < WELL_CONDITIONED_CORRELATION)
    )
    difference = np.abs(engine_tia[well] / loop_tia[well] - 1.0)
    # The general engine alone on the first voxels, same settings otherwise.
    n_general = min(args.general_sample, args.voxels)
    general_settings = dataclasses.replace(settings, solver=Solver.LEVENBERG_MARQUARDT)
    start, start_cpu = time.perf_counter(), time.process_time()
    general = fit_voxels(
        TIME_H, maps[:, :n_general], mask[:n_general], BI_UPTAKE, settings=general_settings
    )
    general_s = (time.perf_counter() - start) * args.voxels / n_general
    general_cpu_s = (time.process_time() - start_cpu) * args.voxels / n_general
    fast_tia = result.tia_mbq_h[:n_general]
    both = np.isfinite(fast_tia) & np.isfinite(general.tia_mbq_h)
    with np.errstate(divide="ignore", invalid="ignore"):
        general_difference = np.abs(fast_tia[both] / general.tia_mbq_h[both] - 1.0)
    general_ok = general.status_counts.get("ok", 0) / n_general

    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    ok_fraction = result.status_counts.get("ok", 0) / args.voxels
    print(
        f"voxels: {args.voxels:,} (6 time points, 5-parameter tri-exponential, {NOISE:.0%} noise)"
    )
    print(f"batched fit:               {batched_s:9.2f} s  (ok: {ok_fraction:.1%})")
    print(f"curve_fit loop (extrap.):  {loop_s:9.1f} s  (sample {sample.size})")
    print(f"speed-up:                  {loop_s / batched_s:9.0f}x")
    # CPU time of this process: less sensitive to other jobs sharing the cores than wall time.
    print(
        f"CPU time: batched {batched_cpu_s:.2f} s, curve_fit loop (extrap.) {loop_cpu_s:.1f} s: "
        f"{loop_cpu_s / batched_cpu_s:.0f}x"
    )
    print(
        f"well-conditioned in sample: {well.sum()}/{sample.size}; TIA agreement: "
        f"median {np.median(difference):.3%}, 99th pct {np.percentile(difference, 99):.3%}, "
        f"max {difference.max():.3%}, within 1 %: {(difference < 0.01).mean():.1%}"
    )
    print(
        f"general LM engine alone:   {general_s:9.2f} s  (extrapolated from {n_general:,}; "
        f"ok: {general_ok:.1%}; fast path {general_s / batched_s:.1f}x faster; CPU "
        f"{general_cpu_s:.2f} s, {general_cpu_s / batched_cpu_s:.1f}x)"
    )
    print(
        f"fast path vs general engine, voxels both fitted ({both.sum():,}): TIA within 1 %: "
        f"{(general_difference < 0.01).mean():.2%}, within 0.1 %: "
        f"{(general_difference < 0.001).mean():.2%}"
    )
    print(f"peak resident memory:      {peak_rss_gb:9.2f} GB")
    print(f"statuses: {result.status_counts}")


if __name__ == "__main__":
    main()
