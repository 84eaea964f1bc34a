"""Batched weighted least-squares fits of sums of exponentials, for thousands of curves at once.

Models (``ExponentialModel``), t in h after injection, m = 1, 2 or 3 clearance terms:

* without uptake: A(t) = Σₖ aₖ·exp(−λₖ·t)
* with uptake:    A(t) = Σₖ aₖ·exp(−λₖ·t) − (Σₖ aₖ)·exp(−λᵤ·t), so A(0) = 0 and activity rises
  with rate λᵤ (> every λₖ). "Tri-exponential" in the sense of the Lu-177 PSMA/DOTATATE
  literature (e.g. SPECTacular's reference) is m = 2 with uptake: three exponential terms.

Bounds by parameter transform: aₖ = exp(φₖ) > 0; λ₁ = λ_min + exp(θ₁), λₖ = λₖ₋₁ + exp(θₖ),
λᵤ = λₘ + gap + exp(θᵤ). λ_min defaults to the physical decay constant of Lu-177 (biological
clearance ≥ 0: nothing is retained longer than decay allows), the ordering removes label
switching between terms, and the uptake gap (default ln2/24 h) keeps uptake and clearance terms
from cancelling into a degenerate valley. On top, the log-parameters are projected onto
floors/ceilings (a term that vanishes, two rates that coincide, an instantaneous uptake), so LM
stops at those boundaries instead of crawling towards them.

Fit: Levenberg–Marquardt with Marquardt's diagonal scaling and Nielsen's damping update,
vectorised over curves: every iteration builds the (n_curves, n_points, n_params) Jacobian
analytically and solves all damped normal equations together (batched Cholesky); damping is per
curve and finished curves leave the working set. Start values come from a grid over the rates
with the amplitudes solved linearly on a shared basis; VOI fits restart from the best few grid
points (``n_starts``) and keep the lowest χ². Convergence: MINPACK-like relative χ² decrease or
step below 1.49e-8, exact data, or χ² stationary to 1e-4 over the last 10 iterations; otherwise the
curve's status says it did not converge. A curve's result never depends on the other curves of
its batch.

Integral: TIA = ∫₀^∞ A dt analytically (``tail="model"``), or ∫₀^{t_last} A dt plus the physical
decay tail A(t_last)/λ_phys after the last point (``tail="physical"``, a conservative choice when
the late clearance is uncertain).

Uncertainty (EANM, Gear et al. EJNMMI 2018;45:2456-74, eq. for functions of fitted parameters):
var(TIA) = gᵀ·V·g with g = ∂TIA/∂p and V the parameter covariance. V = s²·(JᵀWJ)⁺ (pseudo-
inverse; parameters pinned at a bound held fixed) where s² = χ²/(n − p) when the weights are
relative (no ``activity_sd_mbq``; NaN without degrees of freedom) or s² = 1 when the activity
standard deviations are given in MBq.

Model selection: AICc = N·ln(χ²/N) + 2K + 2K(K+1)/(N − K − 1) with K = p + 1 (the fitted
parameters and the variance), as in Glatting et al., Med Phys 2007;34:4285-92; defined only when
N > K + 1. The rule used by :func:`select_by_aicc` is written there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from concordose.kinetics.models import STATUS_OK
from concordose.nuclides import LU177

FloatArray = npt.NDArray[np.float64]

_NAMES = {1: "mono", 2: "bi", 3: "tri"}
_MAX_LOG_STEP = 3.0
"""Largest change of a log-parameter in one iteration (a factor e³ ≈ 20): keeps LM stable."""


_PINV_RCOND = 1e-10
"""Relative singular-value cut-off of the covariance's pseudo-inverse."""
_WINDOW = 10
_WINDOW_TOLERANCE = 1e-4
"""Stationarity test: relative χ² decrease over the last ``_WINDOW`` iterations, tested at every
iteration (see the LM loop). A
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


class WeightScheme(StrEnum):
    """How residuals are weighted when no standard deviations are given.

    * ``poisson``: var ∝ A (counting statistics), w = 1/max(A, floor);
    * ``relative``: sd ∝ A (constant coefficient of variation), w = 1/max(A, floor)²;
    * ``uniform``: every point alike.

    The floor is 1 % of the curve's largest value so that near-zero points do not dominate.
    """

    POISSON = "poisson"
    RELATIVE = "relative"
    UNIFORM = "uniform"


class Solver(StrEnum):
    """How the least-squares problem is solved (same model, weights, bounds and results).

    * ``levenberg_marquardt``: LM on all parameters (the general engine, below);
    * ``variable_projection``: LM on the rates with the amplitudes solved linearly, the general
      engine refitting every curve whose solution is not inside the amplitude bounds or did not
      converge (:mod:`concordose.kinetics.variable_projection`); the voxel fits' fast path.
    """

    LEVENBERG_MARQUARDT = "levenberg_marquardt"
    VARIABLE_PROJECTION = "variable_projection"


class TailRule(StrEnum):
    """What is integrated after the last time point (see the module docstring)."""

    MODEL = "model"
    PHYSICAL = "physical"


@dataclass(frozen=True)
class ExponentialModel:
    """A sum of ``n_clearance`` decaying exponentials, optionally with an uptake term."""

    n_clearance: int
    uptake: bool = False

    def __post_init__(self) -> None:
        if self.n_clearance not in _NAMES:
            raise ValueError(f"n_clearance must be 1, 2 or 3, got {self.n_clearance}")

    @property
    def name(self) -> str:
        """E.g. ``bi_exponential_uptake``."""
        return f"{_NAMES[self.n_clearance]}_exponential" + ("_uptake" if self.uptake else "")

    @property
    def n_rates(self) -> int:
        """Number of rate constants (clearance rates plus the uptake rate)."""
        return self.n_clearance + int(self.uptake)

    @property
    def n_parameters(self) -> int:
        """Amplitudes plus rates."""
        return self.n_clearance + self.n_rates

    def parameter_names(self) -> tuple[str, ...]:
        """Names of the natural parameters, units included, in vector order."""
        amplitudes = tuple(f"a{k + 1}_mbq" for k in range(self.n_clearance))
        rates = tuple(f"lambda{k + 1}_per_h" for k in range(self.n_clearance))
        return amplitudes + rates + (("lambda_uptake_per_h",) if self.uptake else ())


MONO = ExponentialModel(1)
MONO_UPTAKE = ExponentialModel(1, uptake=True)
BI = ExponentialModel(2)
BI_UPTAKE = ExponentialModel(2, uptake=True)
TRI = ExponentialModel(3)
TRI_UPTAKE = ExponentialModel(3, uptake=True)
ALL_MODELS = (MONO, MONO_UPTAKE, BI, BI_UPTAKE, TRI, TRI_UPTAKE)


@dataclass(frozen=True)
class FitSettings:
    """Settings of a fit (all have defaults)."""

    weights: WeightScheme = WeightScheme.POISSON
    tail: TailRule = TailRule.MODEL
    min_rate_per_h: float = LU177.decay_constant_per_h
    # Uptake faster than clearance by at least ln2/24 h (uptake half-time ≤ 1 day, as for
    # Lu-177 peptides and PSMA ligands): removes the degenerate valley λᵤ → λₘ, where uptake and
    # clearance terms cancel into a t·e^{−λt} shape that LM crawls along.
    min_uptake_gap_per_h: float = math.log(2.0) / 24.0
    max_iterations: int = 1000  # VOI fits are few curves; voxel fits use fewer (voxel.py)
    # Multi-start: LM from the n best grid points, keeping the lowest χ² (sums of exponentials
    # have local minima, notably with an uptake phase). Voxel fits may lower this for speed.
    n_starts: int = 3
    # MINPACK's defaults as used by scipy's curve_fit: ftol = xtol = 1.49012e-8.
    relative_tolerance: float = 1.49012e-8
    solver: Solver = Solver.LEVENBERG_MARQUARDT

    def as_dict(self) -> dict[str, object]:
        """JSON-serialisable form, for provenance."""
        return {
            "weights": str(self.weights),
            "tail": str(self.tail),
            "min_rate_per_h": self.min_rate_per_h,
            "min_uptake_gap_per_h": self.min_uptake_gap_per_h,
            "max_iterations": self.max_iterations,
            "n_starts": self.n_starts,
            "relative_tolerance": self.relative_tolerance,
            "solver": str(self.solver),
        }


@dataclass(frozen=True)
class ExponentialFit:
    """Results of one model over a batch of curves (arrays have n_curves rows).

    Attributes:
        model: the fitted model.
        parameters: (n, p) natural parameters in the order of ``model.parameter_names()``.
        covariance: (n, p, p) covariance of ``parameters`` (NaN when not estimable).
        tia_mbq_h: TIA per curve (NaN when the fit failed).
        tia_sd_mbq_h: standard deviation of the TIA from the fit covariance, gᵀVg.
        chi_square: weighted residual sum of squares.
        n_used: usable points per curve.
        aicc: corrected Akaike criterion (NaN where undefined).
        r_squared: weighted coefficient of determination.
        iterations: LM iterations spent per curve.
        status: ``"ok"`` or the reason of failure.
    """

    model: ExponentialModel
    parameters: FloatArray
    covariance: FloatArray
    tia_mbq_h: FloatArray
    tia_sd_mbq_h: FloatArray
    chi_square: FloatArray
    n_used: npt.NDArray[np.int64]
    aicc: FloatArray
    r_squared: FloatArray
    iterations: npt.NDArray[np.int64]
    status: tuple[str, ...]

    @property
    def ok(self) -> npt.NDArray[np.bool_]:
        """Curves that fitted."""
        return np.array([s == STATUS_OK for s in self.status], dtype=bool)

    @property
    def reduced_chi_square(self) -> FloatArray:
        """χ² / (n − p); NaN without degrees of freedom."""
        dof = self.n_used - self.model.n_parameters
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(dof > 0, self.chi_square / np.maximum(dof, 1), np.nan)

    def named_parameters(self) -> dict[str, FloatArray]:
        """Parameter arrays by name (NaN for failed curves)."""
        ok = self.ok
        return {
            name: np.where(ok, self.parameters[:, index], np.nan)
            for index, name in enumerate(self.model.parameter_names())
        }


# ---------------------------------------------------------------------------------------------
# model evaluation in transformed coordinates


def rate_floors(model: ExponentialModel, settings: FitSettings) -> FloatArray:
    """Fixed increments added to each exp(θ) of the rates: λ_min first, the uptake gap last."""
    floor = np.zeros(model.n_rates)
    floor[0] = settings.min_rate_per_h
    if model.uptake:
        floor[-1] = settings.min_uptake_gap_per_h
    return floor


def _natural(
    theta: FloatArray, model: ExponentialModel, floor: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Amplitudes (n, m) and rates (n, m + uptake) from transformed parameters."""
    m = model.n_clearance
    amplitudes = np.exp(theta[:, :m])
    rates = np.cumsum(np.exp(theta[:, m:]) + floor, axis=1)
    return amplitudes, rates


def _coefficients(amplitudes: FloatArray, model: ExponentialModel) -> FloatArray:
    """Coefficient of every exponential term (n, n_rates): aₖ, then −Σa for the uptake term."""
    if not model.uptake:
        return amplitudes
    return np.concatenate([amplitudes, -amplitudes.sum(axis=1, keepdims=True)], axis=1)


def _evaluate(
    theta: FloatArray, time_h: FloatArray, model: ExponentialModel, floor: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Model values (n, t) and Jacobian wrt theta (n, t, p)."""
    m = model.n_clearance
    amplitudes, rates = _natural(theta, model, floor)
    exps = np.exp(-rates[:, None, :] * time_h[None, :, None])  # (n, t, r)
    coefficients = _coefficients(amplitudes, model)
    values = np.einsum("ntr,nr->nt", exps, coefficients)
    jac = np.empty((*values.shape, model.n_parameters))
    # ∂f/∂φₖ = aₖ·(e^{−λₖt} − u·e^{−λᵤt})
    basis = exps[:, :, :m] - (exps[:, :, m:] if model.uptake else 0.0)
    jac[:, :, :m] = basis * amplitudes[:, None, :]
    # ∂f/∂λⱼ = −t·cⱼ·e^{−λⱼt}; θₖ moves every λⱼ with j ≥ k (cumulative), by e^{θₖ}
    d_rates = -time_h[None, :, None] * coefficients[:, None, :] * exps
    cumulative = np.flip(np.cumsum(np.flip(d_rates, axis=2), axis=2), axis=2)
    jac[:, :, m:] = cumulative * np.exp(theta[:, None, m:])
    return values, jac


def _integral_terms(
    rates: FloatArray, last_time_h: float | None, physical_rate: float
) -> tuple[FloatArray, FloatArray]:
    """G(λ) = ∫ of e^{−λt} under the tail rule, and dG/dλ (both (n, r))."""
    if last_time_h is None:  # analytic to infinity
        return 1.0 / rates, -1.0 / rates**2
    t_end = last_time_h
    decay = np.exp(-rates * t_end)
    head = (1.0 - decay) / rates
    d_head = (t_end * decay * rates - (1.0 - decay)) / rates**2
    return head + decay / physical_rate, d_head - t_end * decay / physical_rate


def _tia_and_gradient(
    theta: FloatArray,
    model: ExponentialModel,
    floor: FloatArray,
    last_time_h: float | None,
    physical_rate: float,
) -> tuple[FloatArray, FloatArray]:
    """TIA (n,) and its gradient wrt theta (n, p)."""
    m = model.n_clearance
    amplitudes, rates = _natural(theta, model, floor)
    g, dg = _integral_terms(rates, last_time_h, physical_rate)
    coefficients = _coefficients(amplitudes, model)
    tia = (coefficients * g).sum(axis=1)
    gradient = np.empty_like(theta)
    uptake_g = g[:, m:] if model.uptake else 0.0
    gradient[:, :m] = amplitudes * (g[:, :m] - uptake_g)
    d_rates = coefficients * dg
    cumulative = np.flip(np.cumsum(np.flip(d_rates, axis=1), axis=1), axis=1)
    gradient[:, m:] = cumulative * np.exp(theta[:, m:])
    return tia, gradient


def _natural_jacobian(theta: FloatArray, model: ExponentialModel) -> FloatArray:
    """d(natural parameters)/d(theta), (n, p, p), for transforming covariances."""
    m = model.n_clearance
    n, p = theta.shape
    transform = np.zeros((n, p, p))
    index = np.arange(m)
    transform[:, index, index] = np.exp(theta[:, :m])
    scale = np.exp(theta[:, m:])
    for j in range(model.n_rates):  # rate j depends on θ_0..θ_j (tiny loop over p, not curves)
        transform[:, m + j, m : m + j + 1] = scale[:, : j + 1]
    return transform


# ---------------------------------------------------------------------------------------------
# batched linear algebra


def _evaluate_curves_last(
    theta: FloatArray,
    time_h: FloatArray,
    model: ExponentialModel,
    floor: FloatArray,
    root_w: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Weighted model values (t, n) and weighted Jacobian wrt theta (p, t, n), curves last.

    The same quantities as :func:`_evaluate` (times the weights), laid out with the curves on
    the last, contiguous axis: every operation is then a long elementwise vector operation
    instead of many tiny per-curve matrices (the LM loop's hot path). One exponential per rate
    and time point, shared by the values and both Jacobian blocks.
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


def _normal_equations(jac: FloatArray, residual: FloatArray) -> tuple[FloatArray, FloatArray]:
    """JᵀJ (p, p, n) and Jᵀr (p, n) from a curves-last Jacobian (p, t, n)."""
    p, n_points, n = jac.shape
    normal = np.empty((p, p, n))
    product = np.empty(n)
    for i in range(p):
        for j in range(i + 1):
            total = normal[i, j]  # Σₜ in time order, accumulated in place
            np.multiply(jac[i, 0], jac[j, 0], out=total)
            for t in range(1, n_points):
                np.multiply(jac[i, t], jac[j, t], out=product)
                total += product
            normal[j, i] = total
    gradient = (jac * residual[None]).sum(axis=1)
    return normal, gradient


def _cholesky_solve(
    matrix: FloatArray, rhs: FloatArray
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Solve SPD systems (p, p, n)·x = (p, n) by a Cholesky factorisation vectorised over n.

    Curves on the last axis; loops run over the (≤ 7) parameters only. Returns the solution
    and a mask of systems that were positive definite (others get x = 0).
    """
    p, n = rhs.shape
    lower = np.zeros_like(matrix)
    good = np.ones(n, dtype=bool)
    for j in range(p):
        diagonal = matrix[j, j] - (lower[j, :j] * lower[j, :j]).sum(axis=0)
        good &= diagonal > 0
        root = np.sqrt(np.where(diagonal > 0, diagonal, 1.0))
        lower[j, j] = root
        inverse_root = 1.0 / root
        for i in range(j + 1, p):
            below = matrix[i, j] - (lower[i, :j] * lower[j, :j]).sum(axis=0)
            lower[i, j] = below * inverse_root
    forward = np.zeros_like(rhs)
    for i in range(p):
        forward[i] = (rhs[i] - (lower[i, :i] * forward[:i]).sum(axis=0)) / lower[i, i]
    solution = np.zeros_like(rhs)
    for i in reversed(range(p)):
        solution[i] = (forward[i] - (lower[i + 1 :, i] * solution[i + 1 :]).sum(axis=0)) / lower[
            i, i
        ]
    solution[:, ~good] = 0.0
    return solution, good


def _inverse(matrix: FloatArray) -> FloatArray:
    """Batched Moore–Penrose inverse of symmetric (n, p, p) matrices; NaN where not finite.

    Directions the data do not determine (e.g. two nearly equal rates, whose amplitudes can be
    split any way) get zero variance instead of an infinite one; a function that does not move
    along them, like the TIA, keeps its correct variance gᵀVg (the same choice as
    ``scipy.optimize.curve_fit``'s SVD-based covariance).
    """
    result = np.full_like(matrix, np.nan)
    finite = np.all(np.isfinite(matrix), axis=(1, 2))
    if finite.any():
        result[finite] = np.linalg.pinv(matrix[finite], rcond=_PINV_RCOND, hermitian=True)
    return result


# ---------------------------------------------------------------------------------------------
# weights and start values


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


def _start_values(
    time_h: FloatArray,
    activity: FloatArray,
    weights: FloatArray,
    model: ExponentialModel,
    *,
    floor: FloatArray,
    rank: int = 0,
) -> FloatArray:
    """Transformed start parameters (n, p) by a grid over rates, amplitudes solved linearly.

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
    theta = _start_values(np.asarray(time_h, dtype=np.float64), values, weights, model, floor=floor)
    amplitudes, rates = _natural(theta, model, floor)
    return np.concatenate([amplitudes, rates], axis=1)


# ---------------------------------------------------------------------------------------------
# the fit


def fit_exponential(
    time_h: FloatArray,
    activity_mbq: FloatArray,
    model: ExponentialModel,
    *,
    activity_sd_mbq: FloatArray | None = None,
    settings: FitSettings | None = None,
) -> ExponentialFit:
    """Fit ``model`` to every curve of a batch (see the module docstring).

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
    ] = _levenberg_marquardt
    if options.solver is Solver.VARIABLE_PROJECTION:
        # Imported here: variable_projection builds on this module's LM and linear algebra.
        from concordose.kinetics.variable_projection import variable_projection  # noqa: PLC0415

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
    tia, gradient = _tia_and_gradient(theta, model, floor, last_time, LU177.decay_constant_per_h)
    _, jac = _evaluate(theta, times, model, floor)
    weighted_jac = jac * root_w[:, :, None]
    normal = np.einsum("ntp,ntq->npq", weighted_jac, weighted_jac)
    # A parameter pinned at a projection bound is fixed, not estimated: its row and column are
    # left out of the inversion (identity there, zeroed after), so the covariance describes
    # the free parameters, as for an active constraint.
    lower, upper = _bounds(y, model)
    pinned = (theta <= lower + 1e-9) | (theta >= upper - 1e-9)
    free_normal = np.where(pinned[:, :, None] | pinned[:, None, :], 0.0, normal)
    free_normal[:, np.arange(p), np.arange(p)] += pinned
    covariance_theta = _inverse(free_normal)
    covariance_theta = np.where(pinned[:, :, None] | pinned[:, None, :], 0.0, covariance_theta)
    dof = n_used - p
    if activity_sd_mbq is None:
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(dof > 0, chi_square / np.maximum(dof, 1), np.nan)
        covariance_theta = covariance_theta * scale[:, None, None]
    tia_variance = np.einsum("np,npq,nq->n", gradient, covariance_theta, gradient)
    transform = _natural_jacobian(theta, model)
    covariance = np.einsum("nip,npq,njq->nij", transform, covariance_theta, transform)
    amplitudes, rates = _natural(theta, model, floor)
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


def _bounds(y: FloatArray, model: ExponentialModel) -> tuple[FloatArray, FloatArray]:
    """Lower and upper bounds (n, p) of the transformed parameters (projection bounds)."""
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


def _levenberg_marquardt(
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

    Starts from the grid point of rank ``start_rank`` or, when given, from ``theta_start``
    (n, p) transformed parameters.

    Internally the curves lie on the last axis (``_evaluate_curves_last``), and the working
    arrays hold only the curves still iterating (compacted as curves finish), so late
    iterations cost in proportion to the few slow curves.
    """
    n = y.shape[0]
    if theta_start is None:
        theta_start = _start_values(time_h, y, root_w**2, model, floor=floor, rank=start_rank)
    theta_out = theta_start
    lower_all, upper_all = _bounds(y, model)
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
    # χ² of the last _WINDOW iterations (ring buffer; row i % _WINDOW after iteration i)
    history = np.empty((_WINDOW, n))
    history[0] = cost
    for iteration in range(1, options.max_iterations + 1):
        normal, gradient = _normal_equations(jac, residual)
        damped = normal.copy()
        damped[diagonal_index, diagonal_index] += damping * np.maximum(
            normal[diagonal_index, diagonal_index], 1e-12
        )
        step, solvable = _cholesky_solve(damped, -gradient)
        largest = np.max(np.abs(step), axis=0)
        step *= np.minimum(1.0, _MAX_LOG_STEP / np.maximum(largest, 1e-300))
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


# ---------------------------------------------------------------------------------------------
# model selection


AICC_MARGIN = 2.0
"""A richer model replaces a simpler one only when its AICc is lower by more than this
(ΔAICc > 2: "substantial" support, Burnham & Anderson 2002, ch. 2.6)."""


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
    ``step``, (p, n)); updates the χ² ``history`` window (_WINDOW, n) in place.

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
    # _WINDOW iterations — LM crawling along a valley whose floor is flat to that level
    # (e.g. an uptake that is instantaneous for the data); the TIA's covariance then says
    # how well the valley determines it. Tested at every iteration (sliding window).
    slot = iteration % _WINDOW
    if iteration >= _WINDOW:
        stationary = (history[slot] - cost) <= _WINDOW_TOLERANCE * np.maximum(cost, 1e-300)
    else:
        stationary = np.zeros_like(accept)
    history[slot] = cost
    finished: npt.NDArray[np.bool_] = small_decrease | perfect | small_step | stalled | stationary
    return finished


def select_by_aicc(fits: list[ExponentialFit]) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Per curve, the index in ``fits`` of the selected model, and its Akaike weight.

    Rule (documented for reproducibility): candidates are the fits with status ``ok`` and a
    defined AICc (N > K + 1). Walking from the fewest parameters upwards, a model replaces the
    current choice when its AICc is lower by more than :data:`AICC_MARGIN`. When no candidate has
    a defined AICc the first fit that is ``ok`` is chosen; when none is ok the index is −1.
    The Akaike weight exp(−Δ/2)/Σexp(−Δ/2) of the chosen model among the defined candidates is
    returned for reporting (NaN when AICc is undefined).
    """
    order = sorted(range(len(fits)), key=lambda i: fits[i].model.n_parameters)
    n = fits[0].tia_mbq_h.shape[0]
    chosen = np.full(n, -1, dtype=np.int64)
    chosen_aicc = np.full(n, np.inf)
    for index in order:
        fit = fits[index]
        defined = fit.ok & np.isfinite(fit.aicc)
        replace = defined & ((chosen < 0) | (fit.aicc < chosen_aicc - AICC_MARGIN))
        replace &= (chosen < 0) | np.isfinite(chosen_aicc)
        chosen = np.where(replace, index, chosen)
        chosen_aicc = np.where(replace, fit.aicc, chosen_aicc)
    for index in order:  # no defined AICc: first ok fit with the fewest parameters
        unset = (chosen < 0) & fits[index].ok
        chosen = np.where(unset, index, chosen)
    aiccs = np.stack([np.where(f.ok, f.aicc, np.nan) for f in fits], axis=1)
    with np.errstate(invalid="ignore"):
        best = np.nanmin(np.where(np.isfinite(aiccs), aiccs, np.inf), axis=1)
        relative = np.exp(-0.5 * (aiccs - best[:, None]))
        relative = np.where(np.isfinite(relative), relative, 0.0)
        total = relative.sum(axis=1)
        safe_chosen = np.maximum(chosen, 0)
        weight = np.where(
            (chosen >= 0) & (total > 0),
            relative[np.arange(n), safe_chosen] / np.where(total > 0, total, 1.0),
            np.nan,
        )
    return chosen, weight


def half_life_h(rate_per_h: FloatArray) -> FloatArray:
    """ln 2 / λ, elementwise."""
    return math.log(2.0) / rate_per_h
