"""True time-activity curves of the digital patient.

Every region follows a mono-exponential A(t) = A0·exp(−λ_eff·t), t in h after injection, with
λ_eff = λ_phys + λ_bio and λ_bio > 0 (no region retains activity longer than physical decay allows).
A0 is the activity extrapolated to the injection time.

Nominal values are plausible for [177Lu]Lu-DOTATATE at 7.4 GBq. The effective half-life ranges for
kidneys (40-60 h) and lesions (70-120 h) are those of the concordose issue that specified this
generator, consistent in order of magnitude with published post-therapy dosimetry (e.g. Sandström
et al., J Nucl Med 2013;54:33-41, for kidneys); they are not fitted to any one paper. Liver,
spleen and remainder values are chosen in the same spirit: liver ≈ 2-3 % IA with Teff ≈ 70 h,
spleen ≈ 0.8 % with ≈ 65 h, remainder of body at a modest total (15 % IA in the field of view,
organs included) clearing fast (≈ 30 h, urinary excretion of the unbound peptide).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from concordose.nuclides import LU177
from concordose.phantoms.anatomy import Anatomy


@dataclass(frozen=True)
class MonoExponential:
    """A(t) = a0_mbq·exp(−lambda_eff_per_h·t), t in h after injection.

    Attributes:
        a0_mbq: activity extrapolated to injection, MBq.
        lambda_eff_per_h: effective decay constant, 1/h (physical + biological).
    """

    a0_mbq: float
    lambda_eff_per_h: float

    @property
    def teff_h(self) -> float:
        """Effective half-life in h."""
        return math.log(2.0) / self.lambda_eff_per_h

    @property
    def tia_mbq_h(self) -> float:
        """Time-integrated activity from injection to infinity, MBq·h (analytic: A0/λ_eff)."""
        return self.a0_mbq / self.lambda_eff_per_h

    def activity_mbq(self, time_h: ArrayLike) -> NDArray[np.float64]:
        """Activity in MBq at ``time_h`` (h after injection)."""
        return self.a0_mbq * np.exp(-self.lambda_eff_per_h * np.asarray(time_h, dtype=np.float64))


@dataclass(frozen=True)
class UptakePrior:
    """Nominal uptake of one region.

    Attributes:
        fraction_of_ia: A0 as a fraction of injected activity (before random variation).
        teff_range_h: effective half-life drawn uniformly from this (low, high) range, h.
    """

    fraction_of_ia: float
    teff_range_h: tuple[float, float]


NOMINAL_UPTAKE: Mapping[str, UptakePrior] = {
    "kidney_left": UptakePrior(fraction_of_ia=0.010, teff_range_h=(40.0, 60.0)),
    "kidney_right": UptakePrior(fraction_of_ia=0.010, teff_range_h=(40.0, 60.0)),
    "liver": UptakePrior(fraction_of_ia=0.025, teff_range_h=(65.0, 75.0)),
    "spleen": UptakePrior(fraction_of_ia=0.008, teff_range_h=(60.0, 70.0)),
    "lesion_1": UptakePrior(fraction_of_ia=0.008, teff_range_h=(70.0, 120.0)),
    "lesion_2": UptakePrior(fraction_of_ia=0.003, teff_range_h=(70.0, 120.0)),
}
"""Nominal A0 fractions and Teff ranges per VOI (sources in the module docstring)."""

IN_FOV_FRACTION_OF_IA = 0.15
"""A0 of everything in the field of view (VOIs + remainder of body) as a fraction of IA."""
BODY_TEFF_RANGE_H = (25.0, 35.0)
"""Teff range of the remainder of body, h (fast renal clearance of unbound peptide)."""
FRACTION_VARIATION = 0.10
"""Each VOI's A0 fraction is scaled by a factor drawn uniformly in 1 ± this."""


def mono_exponential_from_teff(a0_mbq: float, teff_h: float) -> MonoExponential:
    """Build the curve from an effective half-life, checking it is shorter than Lu-177's.

    Raises:
        ValueError: when ``teff_h`` is not positive or not shorter than the physical half-life
            (that would need negative biological clearance).
    """
    if not 0.0 < teff_h < LU177.half_life_h:
        raise ValueError(
            f"effective half-life {teff_h} h must lie in (0, {LU177.half_life_h:.2f} h), "
            "the physical half-life of Lu-177"
        )
    return MonoExponential(a0_mbq=a0_mbq, lambda_eff_per_h=math.log(2.0) / teff_h)


def draw_truth_kinetics(
    anatomy: Anatomy, injected_activity_mbq: float, rng: np.random.Generator
) -> dict[str, MonoExponential]:
    """Draw each region's true curve, keyed by label (every VOI, plus the body remainder).

    Raises:
        KeyError: when a VOI of ``anatomy`` has no entry in :data:`NOMINAL_UPTAKE`.
    """
    curves: dict[str, MonoExponential] = {}
    for voi in anatomy.vois:
        prior = NOMINAL_UPTAKE[voi.label]
        fraction = prior.fraction_of_ia * rng.uniform(
            1.0 - FRACTION_VARIATION, 1.0 + FRACTION_VARIATION
        )
        teff_h = float(rng.uniform(*prior.teff_range_h))
        curves[voi.label] = mono_exponential_from_teff(fraction * injected_activity_mbq, teff_h)
    vois_a0_mbq = sum(curve.a0_mbq for curve in curves.values())
    body_a0_mbq = IN_FOV_FRACTION_OF_IA * injected_activity_mbq - vois_a0_mbq
    curves[anatomy.body.label] = mono_exponential_from_teff(
        body_a0_mbq, float(rng.uniform(*BODY_TEFF_RANGE_H))
    )
    return curves


# --- Multi-phase kinetics of the virtual consortium's patients -------------------------------


@dataclass(frozen=True)
class UptakeMultiExponential:
    """A(t) = Σᵢ cᵢ·exp(−λᵢ·t) − (Σᵢ cᵢ)·exp(−λ_up·t), t in h after injection.

    One to three clearance phases (amplitude cᵢ in MBq, effective decay constant λᵢ in 1/h, each
    faster than physical decay) and an optional uptake phase (λ_up at least the amplitude-weighted
    mean of the λᵢ, which keeps A(t) ≥ 0) that makes A(0) = 0. Without uptake, A(0) = Σᵢ cᵢ
    (instant distribution, e.g. blood).

    Attributes:
        amplitudes_mbq: cᵢ, MBq (positive).
        lambdas_eff_per_h: λᵢ, 1/h, same length as ``amplitudes_mbq``.
        uptake_lambda_per_h: λ_up, 1/h, or ``None`` for no uptake phase.
    """

    amplitudes_mbq: tuple[float, ...]
    lambdas_eff_per_h: tuple[float, ...]
    uptake_lambda_per_h: float | None

    def __post_init__(self) -> None:
        if not 1 <= len(self.amplitudes_mbq) == len(self.lambdas_eff_per_h) <= 3:
            raise ValueError(
                "a curve needs 1-3 clearance phases with one amplitude and one decay constant "
                f"each; got {self.amplitudes_mbq} and {self.lambdas_eff_per_h}"
            )
        if any(c <= 0.0 for c in self.amplitudes_mbq):
            raise ValueError(f"phase amplitudes must be positive MBq, got {self.amplitudes_mbq}")
        slowest_allowed = LU177.decay_constant_per_h
        if any(lam <= slowest_allowed for lam in self.lambdas_eff_per_h):
            raise ValueError(
                f"every clearance λ_eff must exceed Lu-177's λ_phys {slowest_allowed:.5f}/h "
                f"(no negative biological clearance); got {self.lambdas_eff_per_h}"
            )
        # A(t) ≥ 0 for all t ⇔ Σ wᵢ·exp((λ_up − λᵢ)t) ≥ 1 (wᵢ = cᵢ/Σc); that sum is convex in t
        # and equals 1 at t = 0, so a non-negative slope there, λ_up ≥ Σ wᵢλᵢ, suffices.
        weighted_lambda = sum(
            c * lam for c, lam in zip(self.amplitudes_mbq, self.lambdas_eff_per_h, strict=True)
        ) / sum(self.amplitudes_mbq)
        if self.uptake_lambda_per_h is not None and self.uptake_lambda_per_h < weighted_lambda:
            raise ValueError(
                f"uptake λ {self.uptake_lambda_per_h}/h must be at least the amplitude-weighted "
                f"clearance λ {weighted_lambda}/h, or A(t) would go negative"
            )

    @property
    def tia_mbq_h(self) -> float:
        """∫₀^∞ A dt in MBq·h, analytic: Σ cᵢ/λᵢ − (Σ cᵢ)/λ_up."""
        total = sum(
            c / lam for c, lam in zip(self.amplitudes_mbq, self.lambdas_eff_per_h, strict=True)
        )
        if self.uptake_lambda_per_h is not None:
            total -= sum(self.amplitudes_mbq) / self.uptake_lambda_per_h
        return total

    def activity_mbq(self, time_h: ArrayLike) -> NDArray[np.float64]:
        """Activity in MBq at ``time_h`` (h after injection)."""
        t = np.asarray(time_h, dtype=np.float64)
        amplitudes = np.asarray(self.amplitudes_mbq)
        lambdas = np.asarray(self.lambdas_eff_per_h)
        activity = np.tensordot(amplitudes, np.exp(-np.multiply.outer(lambdas, t)), axes=1)
        if self.uptake_lambda_per_h is not None:
            activity = activity - amplitudes.sum() * np.exp(-self.uptake_lambda_per_h * t)
        result: NDArray[np.float64] = np.asarray(activity, dtype=np.float64)
        return result

    def scaled(self, factor: float) -> UptakeMultiExponential:
        """The same shape with every amplitude multiplied by ``factor`` (> 0)."""
        return UptakeMultiExponential(
            amplitudes_mbq=tuple(c * factor for c in self.amplitudes_mbq),
            lambdas_eff_per_h=self.lambdas_eff_per_h,
            uptake_lambda_per_h=self.uptake_lambda_per_h,
        )

    def to_json(self) -> dict[str, object]:
        """Machine-readable parameters (the ``kinetics`` object of ground truth format 2)."""
        return {
            "model": "uptake_multi_exponential",
            "phases": [
                {"amplitude_mbq": c, "lambda_eff_per_h": lam, "teff_h": math.log(2.0) / lam}
                for c, lam in zip(self.amplitudes_mbq, self.lambdas_eff_per_h, strict=True)
            ],
            "uptake": None
            if self.uptake_lambda_per_h is None
            else {
                "lambda_per_h": self.uptake_lambda_per_h,
                "half_time_h": math.log(2.0) / self.uptake_lambda_per_h,
            },
        }


@dataclass(frozen=True)
class PhasePrior:
    """Prior of one clearance phase: relative weight range and effective half-life range (h)."""

    weight_range: tuple[float, float]
    teff_range_h: tuple[float, float]


@dataclass(frozen=True)
class MultiPhasePrior:
    """Prior of one region's multi-phase curve.

    Attributes:
        amount_range: A range drawn uniformly; its meaning is set by ``per_ml``: fraction of IA
            (Σ cᵢ, the extrapolated amplitude) or, when ``per_ml``, fraction of IA per mL.
        phases: one to three clearance phases (weights are normalised after drawing).
        uptake_half_time_range_h: uptake half-time range, or ``None`` (no uptake phase).
        per_ml: whether the amount scales with the region's volume (lesions).
    """

    amount_range: tuple[float, float]
    phases: tuple[PhasePrior, ...]
    uptake_half_time_range_h: tuple[float, float] | None
    per_ml: bool = False


MULTI_PHASE_PRIORS: Mapping[str, MultiPhasePrior] = {
    # Kidneys: a fast washout (tubular transit) then the retained fraction, Teff 40-60 h.
    "kidney": MultiPhasePrior(
        amount_range=(0.008, 0.014),
        phases=(PhasePrior((0.2, 0.35), (4.0, 10.0)), PhasePrior((0.65, 0.8), (40.0, 60.0))),
        uptake_half_time_range_h=(0.5, 1.5),
    ),
    "liver": MultiPhasePrior(
        amount_range=(0.015, 0.03),
        phases=(PhasePrior((1.0, 1.0), (65.0, 80.0)),),
        uptake_half_time_range_h=(1.0, 3.0),
    ),
    "spleen": MultiPhasePrior(
        amount_range=(0.006, 0.010),
        phases=(PhasePrior((0.1, 0.2), (5.0, 12.0)), PhasePrior((0.8, 0.9), (60.0, 75.0))),
        uptake_half_time_range_h=(1.0, 3.0),
    ),
    # Red-marrow proxy (lumbar vertebral bodies): blood-borne activity clearing within hours,
    # then a small retained component.
    "bone_marrow": MultiPhasePrior(
        # ≈ 0.07 % IA in the ≈ 75 mL proxy: a blood-like concentration, well below organs'.
        amount_range=(0.0005, 0.001),
        phases=(PhasePrior((0.6, 0.8), (1.5, 4.0)), PhasePrior((0.2, 0.4), (60.0, 100.0))),
        uptake_half_time_range_h=None,
    ),
    # Lesions: uptake over hours, a small early washout and the retained phase, Teff 70-120 h;
    # 0.005-0.06 %IA/mL gives first-cycle sphere-model doses of roughly 4-50 Gy.
    "lesion": MultiPhasePrior(
        amount_range=(0.00005, 0.0006),
        phases=(PhasePrior((0.05, 0.2), (3.0, 10.0)), PhasePrior((0.8, 0.95), (70.0, 120.0))),
        uptake_half_time_range_h=(1.0, 6.0),
        per_ml=True,
    ),
    # Remainder of body in the field of view: blood and extracellular clearance through the
    # kidneys (three phases), no uptake (present from injection).
    "body": MultiPhasePrior(
        amount_range=(0.08, 0.12),
        phases=(
            PhasePrior((0.5, 0.6), (1.0, 2.5)),
            PhasePrior((0.3, 0.4), (8.0, 15.0)),
            PhasePrior((0.05, 0.1), (60.0, 100.0)),
        ),
        uptake_half_time_range_h=None,
    ),
}
"""Priors per region kind (a label's prefix: ``kidney_left`` → ``kidney``; lesions by type).

Ranges are plausible for [177Lu]Lu-DOTATATE at 7.4 GBq and follow the concordose issue (kidney
Teff 40-60 h, lesions 70-120 h); they are a modelling choice, not fitted to one paper."""

TUMOUR_DECLINE_PER_CYCLE_RANGE = (0.80, 0.95)
"""Per patient, lesion uptake in cycle n is d^(n−1) × cycle 1's, d drawn in this range (tumour
dose declines over cycles: LUMEN, LUTADOSE and Hebert et al., per the seed review)."""
ORGAN_CYCLE_VARIATION = 0.05
"""Organ and body amplitudes vary by a factor drawn uniformly in 1 ± this from cycle to cycle."""


def draw_multi_phase(
    prior: MultiPhasePrior,
    *,
    injected_activity_mbq: float,
    volume_ml: float,
    rng: np.random.Generator,
) -> UptakeMultiExponential:
    """Draw one region's curve from ``prior`` (amount × IA, × volume when ``per_ml``)."""
    amount = float(rng.uniform(*prior.amount_range))
    total_mbq = amount * injected_activity_mbq * (volume_ml if prior.per_ml else 1.0)
    weights = np.array([rng.uniform(*p.weight_range) for p in prior.phases])
    weights = weights / weights.sum()
    teffs_h = [float(rng.uniform(*p.teff_range_h)) for p in prior.phases]
    uptake = (
        None
        if prior.uptake_half_time_range_h is None
        else math.log(2.0) / float(rng.uniform(*prior.uptake_half_time_range_h))
    )
    return UptakeMultiExponential(
        amplitudes_mbq=tuple(float(w * total_mbq) for w in weights),
        lambdas_eff_per_h=tuple(math.log(2.0) / t for t in teffs_h),
        uptake_lambda_per_h=uptake,
    )


# --- The tumour-sink effect (issue 20, item 2) -------------------------------------------------

SINK_EFFECT_PER_LITRE = 0.4
"""Fractional loss of organ-at-risk uptake per litre of total tumour volume: the known
coefficient k of the digital consortium's tumour-sink effect (off unless asked for:
``draw_virtual_patient(sink_effect=True)``). An OAR's amplitudes are multiplied by
:func:`sink_effect_factor`, 1 − k × V / 1000 mL. The effect itself is reported by Beauregard et
al. (Eur J Nucl Med Mol Imaging 2012;39:50-6: lower spleen, liver and kidney uptake of
68Ga-DOTATATE with higher tumour burden), Gaertner et al. (Oncotarget 2017;8:55094-103: lower
salivary-gland, kidney and spleen uptake of PSMA ligands with higher tumour load) and Violet et
al. (J Nucl Med 2019;60:517-23: Lu-177-PSMA-617); they report correlations, not a slope
transferable to Lu-177 TIA, so k is a modelling choice (a 20 % loss at 500 mL, the consortium's
larger tumour loads), linear as the simplest form those correlations support."""
SINK_EFFECT_REFERENCE_VOLUME_ML = 1000.0
"""The volume k is stated per (1 L)."""
SINK_EFFECT_MIN_FACTOR = 0.1
"""Floor of the factor (never reached by the consortium's presets: ≤ 2 L of tumour gives 0.2)."""
SINK_EFFECT_PRIORS = ("kidney", "spleen")
"""Prior keys (:data:`MULTI_PHASE_PRIORS`) of the organs the effect acts on: the generator's
organs at risk of the sink analytics (no salivary glands in its abdominal field of view)."""


def sink_effect_factor(total_lesion_volume_ml: float, coefficient_per_litre: float) -> float:
    """The factor on an OAR's uptake amplitudes: max(floor, 1 − k × V / 1 L), V in mL."""
    return max(
        SINK_EFFECT_MIN_FACTOR,
        1.0 - coefficient_per_litre * total_lesion_volume_ml / SINK_EFFECT_REFERENCE_VOLUME_ML,
    )
