"""The next cycle's activity that keeps the cumulative kidney dose (and BED) within a limit,
and the probability of exceeding the limit at that activity.

Limits (defaults; :class:`PlanningLimits` makes them configurable):

* cumulative kidney absorbed dose 23 Gy: the external-beam TD5/5 of both kidneys (Emami et al.,
  Int J Radiat Oncol Biol Phys 1991;21:109-22), the limit dosimetry-guided [177Lu]Lu-DOTATATE
  uses (Sundlöv et al., Eur J Nucl Med Mol Imaging 2017;44:1480-9; Sandström et al., J Nucl
  Med 2013;54:33-41). DOBATOC (NCT04917484, seed review) targets an accumulated kidney dose of
  24 Gy (:data:`DOBATOC_KIDNEY_DOSE_LIMIT_GY`);
* cumulative kidney BED 28 Gy: Bodei et al., Eur J Nucl Med Mol Imaging 2008;35:1847-56, for
  patients with risk factors for renal toxicity (40 Gy without them);
* at most the standard cycle activity, 7.4 GBq (NETTER-1), unless configured otherwise.

Uncertainty model (normal, first order): the next cycle's kidney dose is A·k, with k the
forecast kidney dose per GBq (:func:`concordose.planning.cumulative.forecast_dose_per_gbq`)
and SD(k) its standard uncertainty; the cumulative dose after it is D + A·k with variance
SD(D)² + A²·SD(k)², D and k taken as independent (the calibration factor's part, common to a
site's cycles, is counted in each but not correlated: a simplification). The probability of
exceeding the limit L is P(N(mean, var) > L). For BED the same with dBED/dD (delta method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from scipy.optimize import brentq
from scipy.stats import norm

from concordose.planning.bed import (
    KIDNEY_ALPHA_BETA_GY,
    KIDNEY_REPAIR_HALF_TIME_H,
    bed_gy,
    bed_slope,
    relative_repair_factor,
)

KIDNEY_DOSE_LIMIT_GY = 23.0
"""Default cumulative kidney absorbed-dose limit, Gy (Emami 1991 TD5/5; module docstring)."""
DOBATOC_KIDNEY_DOSE_LIMIT_GY = 24.0
"""DOBATOC's accumulated kidney dose target, Gy (NCT04917484; seed review)."""
KIDNEY_BED_LIMIT_GY = 28.0
"""Default cumulative kidney BED limit, Gy (Bodei 2008, patients with risk factors)."""
STANDARD_CYCLE_ACTIVITY_GBQ = 7.4
"""Standard [177Lu]Lu-DOTATATE cycle activity, GBq (NETTER-1)."""
EXCEEDANCE_RISK = 0.05
"""Default accepted probability of exceeding the dose limit for the risk-limited activity."""


@dataclass(frozen=True)
class PlanningLimits:
    """What the next activity must respect (module docstring for the defaults' sources).

    Attributes:
        kidney_dose_limit_gy: cumulative kidney absorbed-dose limit, Gy.
        kidney_bed_limit_gy: cumulative kidney BED limit, Gy.
        max_activity_gbq: the most a cycle may give, GBq (None: no cap).
        exceedance_risk: accepted probability of exceeding the dose limit (risk-limited
            activity).
        alpha_beta_gy, repair_half_time_h: the kidney's LQ parameters
            (:mod:`concordose.planning.bed`).
    """

    kidney_dose_limit_gy: float = KIDNEY_DOSE_LIMIT_GY
    kidney_bed_limit_gy: float = KIDNEY_BED_LIMIT_GY
    max_activity_gbq: float | None = STANDARD_CYCLE_ACTIVITY_GBQ
    exceedance_risk: float = EXCEEDANCE_RISK
    alpha_beta_gy: float = KIDNEY_ALPHA_BETA_GY
    repair_half_time_h: float = KIDNEY_REPAIR_HALF_TIME_H


class BindingConstraint(StrEnum):
    """What set the recommended activity."""

    DOSE_LIMIT = "dose_limit"
    BED_LIMIT = "bed_limit"
    MAX_ACTIVITY = "max_activity"
    UNKNOWN = "unknown"  # no kidney forecast: no recommendation


@dataclass(frozen=True)
class KidneyHistory:
    """The kidneys so far and their forecast per GBq.

    Attributes:
        cumulative_dose_gy, cumulative_dose_sd_gy: absorbed dose over the cycles given, Gy.
        cumulative_bed_gy, cumulative_bed_sd_gy: BED over the cycles given, Gy.
        dose_per_gbq_gy, dose_per_gbq_sd_gy: the next cycle's forecast dose per GBq, Gy/GBq.
        teff_h: the effective half-life the next cycle's BED assumes, h.
    """

    cumulative_dose_gy: float
    cumulative_dose_sd_gy: float
    cumulative_bed_gy: float
    cumulative_bed_sd_gy: float
    dose_per_gbq_gy: float
    dose_per_gbq_sd_gy: float
    teff_h: float


@dataclass(frozen=True)
class NextActivity:
    """The recommendation (NaN where unknown).

    Attributes:
        activity_gbq: min(dose-limited, BED-limited, max activity), ≥ 0.
        binding: which of them set it.
        dose_limited_activity_gbq: expected cumulative dose equal to the dose limit.
        bed_limited_activity_gbq: expected cumulative BED equal to the BED limit.
        risk_limited_activity_gbq: largest activity whose probability of exceeding the dose
            limit is at most ``exceedance_risk``.
        expected_cumulative_dose_gy, expected_cumulative_dose_sd_gy: after the next cycle at
            ``activity_gbq``.
        expected_cumulative_bed_gy, expected_cumulative_bed_sd_gy: same for BED.
        probability_exceeding_dose_limit, probability_exceeding_bed_limit: at ``activity_gbq``.
    """

    activity_gbq: float
    binding: BindingConstraint
    dose_limited_activity_gbq: float
    bed_limited_activity_gbq: float
    risk_limited_activity_gbq: float
    expected_cumulative_dose_gy: float
    expected_cumulative_dose_sd_gy: float
    expected_cumulative_bed_gy: float
    expected_cumulative_bed_sd_gy: float
    probability_exceeding_dose_limit: float
    probability_exceeding_bed_limit: float


def probability_exceeding(mean: float, sd: float, limit: float) -> float:
    """P(X > limit) for X ~ N(mean, sd²); a step when sd is 0; NaN when unknown."""
    if not (math.isfinite(mean) and math.isfinite(limit)):
        return math.nan
    if not math.isfinite(sd):
        return math.nan
    if sd <= 0:
        return 1.0 if mean > limit else 0.0
    return float(norm.sf(limit, loc=mean, scale=sd))


def cumulative_after(history: KidneyHistory, activity_gbq: float) -> tuple[float, float]:
    """Expected cumulative kidney dose (Gy) after a next cycle of ``activity_gbq`` and its SD."""
    mean = history.cumulative_dose_gy + activity_gbq * history.dose_per_gbq_gy
    sd = math.hypot(history.cumulative_dose_sd_gy, activity_gbq * history.dose_per_gbq_sd_gy)
    return mean, sd


def cumulative_bed_after(
    history: KidneyHistory, activity_gbq: float, limits: PlanningLimits
) -> tuple[float, float]:
    """Expected cumulative kidney BED (Gy) after a next cycle of ``activity_gbq`` and its SD."""
    dose = activity_gbq * history.dose_per_gbq_gy
    options = {
        "alpha_beta_gy": limits.alpha_beta_gy,
        "repair_half_time_h": limits.repair_half_time_h,
    }
    next_bed = float(bed_gy(dose, history.teff_h, **options))
    slope = float(bed_slope(dose, history.teff_h, **options))
    mean = history.cumulative_bed_gy + next_bed
    sd = math.hypot(history.cumulative_bed_sd_gy, slope * activity_gbq * history.dose_per_gbq_sd_gy)
    return mean, sd


def dose_limited_activity_gbq(history: KidneyHistory, limit_gy: float) -> float:
    """Activity (GBq) at which the expected cumulative dose reaches ``limit_gy``; 0 when it is
    already reached, NaN when the forecast per GBq is unknown or not positive."""
    k = history.dose_per_gbq_gy
    if not (math.isfinite(k) and k > 0 and math.isfinite(history.cumulative_dose_gy)):
        return math.nan
    return max(0.0, (limit_gy - history.cumulative_dose_gy) / k)


def bed_limited_activity_gbq(history: KidneyHistory, limits: PlanningLimits) -> float:
    """Activity (GBq) at which the expected cumulative BED reaches the BED limit: the positive
    root of (g/(α/β))·x² + x − (L − BED so far) = 0 for the next dose x = A·k,
    g = T_rep/(T_rep + T_eff)."""
    k = history.dose_per_gbq_gy
    remaining = limits.kidney_bed_limit_gy - history.cumulative_bed_gy
    g = float(relative_repair_factor(history.teff_h, limits.repair_half_time_h))
    if not (math.isfinite(k) and k > 0 and math.isfinite(remaining) and math.isfinite(g)):
        return math.nan
    if remaining <= 0:
        return 0.0
    a = g / limits.alpha_beta_gy
    dose = remaining if a == 0 else (-1.0 + math.sqrt(1.0 + 4.0 * a * remaining)) / (2.0 * a)
    return dose / k


def risk_limited_activity_gbq(history: KidneyHistory, limits: PlanningLimits) -> float:
    """Largest activity (GBq) with P(cumulative dose > limit) ≤ ``limits.exceedance_risk``:
    the root of mean(A) + z·SD(A) = L, z = Φ⁻¹(1 − risk) (0 when even A = 0 exceeds it)."""
    upper = dose_limited_activity_gbq(history, limits.kidney_dose_limit_gy)
    if not math.isfinite(upper) or not math.isfinite(history.dose_per_gbq_sd_gy):
        return math.nan
    z = float(norm.isf(limits.exceedance_risk))

    def margin(activity_gbq: float) -> float:
        mean, sd = cumulative_after(history, activity_gbq)
        return mean + z * sd - limits.kidney_dose_limit_gy

    if upper <= 0 or margin(0.0) >= 0:
        return 0.0
    if margin(upper) <= 0:  # no uncertainty at all
        return upper
    return float(brentq(margin, 0.0, upper, xtol=1e-9))


def plan_next_activity(history: KidneyHistory, limits: PlanningLimits) -> NextActivity:
    """The next cycle's recommended activity and what it implies (module docstring)."""
    by_dose = dose_limited_activity_gbq(history, limits.kidney_dose_limit_gy)
    by_bed = bed_limited_activity_gbq(history, limits)
    candidates = [
        (value, binding)
        for value, binding in (
            (by_dose, BindingConstraint.DOSE_LIMIT),
            (by_bed, BindingConstraint.BED_LIMIT),
        )
        if math.isfinite(value)
    ]
    if not candidates:
        activity, binding = math.nan, BindingConstraint.UNKNOWN
    else:
        activity, binding = min(candidates, key=lambda candidate: candidate[0])
        if limits.max_activity_gbq is not None and limits.max_activity_gbq < activity:
            activity, binding = limits.max_activity_gbq, BindingConstraint.MAX_ACTIVITY
    dose_mean, dose_sd = cumulative_after(history, activity)
    bed_mean, bed_sd = cumulative_bed_after(history, activity, limits)
    return NextActivity(
        activity_gbq=activity,
        binding=binding,
        dose_limited_activity_gbq=by_dose,
        bed_limited_activity_gbq=by_bed,
        risk_limited_activity_gbq=risk_limited_activity_gbq(history, limits),
        expected_cumulative_dose_gy=dose_mean,
        expected_cumulative_dose_sd_gy=dose_sd,
        expected_cumulative_bed_gy=bed_mean,
        expected_cumulative_bed_sd_gy=bed_sd,
        probability_exceeding_dose_limit=probability_exceeding(
            dose_mean, dose_sd, limits.kidney_dose_limit_gy
        ),
        probability_exceeding_bed_limit=probability_exceeding(
            bed_mean, bed_sd, limits.kidney_bed_limit_gy
        ),
    )
