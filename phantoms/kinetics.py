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
from phantoms.anatomy import Anatomy


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
