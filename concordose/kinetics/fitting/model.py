"""The exponential models, the fit's settings and results, and the model's values and integral.

Models (``ExponentialModel``), t in h after injection, m = 1, 2 or 3 clearance terms:

* without uptake: A(t) = Σₖ aₖ·exp(−λₖ·t)
* with uptake:    A(t) = Σₖ aₖ·exp(−λₖ·t) − (Σₖ aₖ)·exp(−λᵤ·t), so A(0) = 0 and activity rises
  with rate λᵤ (> every λₖ). "Tri-exponential" in the sense of the Lu-177 PSMA/DOTATATE
  literature (e.g. SPECTacular's reference) is m = 2 with uptake: three exponential terms.

Bounds by parameter transform: aₖ = exp(φₖ) > 0; λ₁ = λ_min + exp(θ₁), λₖ = λₖ₋₁ + exp(θₖ),
λᵤ = λₘ + gap + exp(θᵤ). λ_min defaults to the physical decay constant of Lu-177 (biological
clearance ≥ 0: nothing is retained longer than decay allows), the ordering removes label
switching between terms, and the uptake gap (default ln2/24 h) keeps uptake and clearance terms
from cancelling into a degenerate valley. The projection of the log-parameters onto floors and
ceilings is the solver's (:mod:`concordose.kinetics.fitting.levenberg_marquardt`).

Integral: TIA = ∫₀^∞ A dt analytically (``tail="model"``), or ∫₀^{t_last} A dt plus the physical
decay tail A(t_last)/λ_phys after the last point (``tail="physical"``, a conservative choice when
the late clearance is uncertain).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from concordose.kinetics.models import STATUS_OK
from concordose.nuclides import LU177

FloatArray = npt.NDArray[np.float64]

_NAMES = {1: "mono", 2: "bi", 3: "tri"}


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

    * ``levenberg_marquardt``: LM on all parameters (the general engine,
      :mod:`concordose.kinetics.fitting.levenberg_marquardt`);
    * ``variable_projection``: LM on the rates with the amplitudes solved linearly, the general
      engine refitting every curve whose solution is not inside the amplitude bounds or did not
      converge (:mod:`concordose.kinetics.fitting.variable_projection`); the voxel fits' fast path.
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


def model_of_parameters(names: Collection[str]) -> ExponentialModel | None:
    """The model whose :meth:`~ExponentialModel.parameter_names` are exactly ``names`` (a
    published ``fit_parameters_json``'s keys), None when no model has them."""
    wanted = set(names)
    return next((m for m in ALL_MODELS if set(m.parameter_names()) == wanted), None)


def activity_mbq(
    model: ExponentialModel, parameters: Mapping[str, float], time_h: FloatArray
) -> FloatArray:
    """A(t) in MBq of ``model`` at ``time_h`` (h after injection), from its natural parameters
    by name (:meth:`~ExponentialModel.parameter_names`, amplitudes in MBq, rates in 1/h):
    Σₖ aₖ·e^{−λₖt}, minus (Σₖ aₖ)·e^{−λᵤt} with uptake (the curve the fit evaluates).

    Raises:
        KeyError: a parameter of the model is missing from ``parameters``.
    """
    natural = np.array([[float(parameters[name]) for name in model.parameter_names()]])
    m = model.n_clearance
    coefficients = _coefficients(natural[:, :m], model)[0]
    decays = np.exp(-np.outer(np.asarray(time_h, dtype=np.float64), natural[0, m:]))
    return np.asarray(decays @ coefficients, dtype=np.float64)


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


def natural_parameters(
    theta: FloatArray, model: ExponentialModel, floor: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Amplitudes (n, m) and rates (n, m + uptake) from transformed parameters.

    ``theta`` (n, p) are the transformed parameters of the module docstring (log-amplitudes,
    then log rate increments); ``floor`` (n_rates,) the fixed increments of ``rate_floors``
    (1/h). Amplitudes come out in the data's unit (MBq), rates in 1/h.
    """
    m = model.n_clearance
    amplitudes = np.exp(theta[:, :m])
    rates = np.cumsum(np.exp(theta[:, m:]) + floor, axis=1)
    return amplitudes, rates


def _coefficients(amplitudes: FloatArray, model: ExponentialModel) -> FloatArray:
    """Coefficient of every exponential term (n, n_rates): aₖ, then −Σa for the uptake term."""
    if not model.uptake:
        return amplitudes
    return np.concatenate([amplitudes, -amplitudes.sum(axis=1, keepdims=True)], axis=1)


def evaluate_model(
    theta: FloatArray, time_h: FloatArray, model: ExponentialModel, floor: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Model values (n, t) and Jacobian wrt theta (n, t, p).

    ``time_h`` (t,) in h after injection; ``theta`` and ``floor`` as for
    :func:`natural_parameters`. Values are in the amplitudes' unit (MBq), unweighted; curves on
    the first axis (the LM loop's curves-last twin is in the solver's module).
    """
    m = model.n_clearance
    amplitudes, rates = natural_parameters(theta, model, floor)
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


def tia_and_gradient(
    theta: FloatArray,
    model: ExponentialModel,
    floor: FloatArray,
    last_time_h: float | None,
    physical_rate: float,
) -> tuple[FloatArray, FloatArray]:
    """TIA (n,) and its gradient wrt theta (n, p).

    TIA in MBq·h under the tail rule: to infinity when ``last_time_h`` is None, otherwise to
    ``last_time_h`` (h) plus the decay tail at ``physical_rate`` (1/h). ``theta`` and ``floor``
    as for :func:`natural_parameters`.
    """
    m = model.n_clearance
    amplitudes, rates = natural_parameters(theta, model, floor)
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


def natural_jacobian(theta: FloatArray, model: ExponentialModel) -> FloatArray:
    """d(natural parameters)/d(theta), (n, p, p), for transforming covariances.

    Natural parameters in the order of ``ExponentialModel.parameter_names()`` (MBq, then 1/h);
    it does not depend on the rate floors (they only shift the rates).
    """
    m = model.n_clearance
    n, p = theta.shape
    transform = np.zeros((n, p, p))
    index = np.arange(m)
    transform[:, index, index] = np.exp(theta[:, :m])
    scale = np.exp(theta[:, m:])
    for j in range(model.n_rates):  # rate j depends on θ_0..θ_j (tiny loop over p, not curves)
        transform[:, m + j, m : m + j + 1] = scale[:, : j + 1]
    return transform


def half_life_h(rate_per_h: FloatArray) -> FloatArray:
    """ln 2 / λ, elementwise."""
    return math.log(2.0) / rate_per_h
