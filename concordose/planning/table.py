"""Table ``planning`` (issue 20, item 1): per patient, cumulative organ and lesion dose over its
published cycles, kidney BED, and the next cycle's activity under the kidney limits.

Built from the harmonised per-cycle tables (``absorbed_dose``, ``kinetics``,
``patient_summary``, ``voi_timepoints``) as a whole, like the other cohort tables
(:mod:`concordose.consortium.cohort_tables`, scope ``cohort``). Pure: Arrow in, Arrow out.

Each cycle's VOI doses come from one kinetics method with the chosen dose method
(:class:`PlanningSettings`): the first of ``kinetics_methods`` that gave the cycle a dose (the
reference on a full SPECTacular schedule, a mono-exponential fit of every point on shorter
ones such as Hebert's 4/24/72/192 h). A cycle none of them could fit, because it was imaged at
a single time point (Hebert cycles 3-4), is dosed from that point with the patient's own
kinetics: per VOI, TIA = A(t) × mean over the earlier full-schedule cycles of TIA / A(t), with
t the acquired point serving ``single_point_nominal_h`` (24 h) in each cycle, times the cycle's
dose per TIA (the VOI's S-value and mass, from any method's row of that cycle with the dose
method; else the earlier cycles'). This is the patient-specific clearance of Willowson et al.
(EJNMMI Phys 2018;5:33, method 4) carried as the whole time-integration factor rather than a
half-life: a mono-exponential through A(24 h) with the earlier half-life
(:mod:`concordose.kinetics.prior_half_life`, what ``threshold_concordance`` emulates for
Hebert) ignores the uptake phase, which on the digital consortium's lesions (uptake peaking
near 24 h) overestimates the TIA by ~25 %; the factor keeps the curve's shape, assuming only
that it scales from cycle to cycle (a falling tumour uptake changes the amplitude, which is
measured). Its relative SD: the activity's relative SD ⊕ the VOI's mean relative dose SD of
the earlier cycles (an approximation). Kidney BED on such a cycle uses the mean effective
half-life of the earlier cycles.

Doses per GBq use ``patient_summary.injected_activity_traceable_mbq`` when published, else
``injected_activity_mbq`` (the dose calibrator's bias then cancels in dose per activity).
Cumulative sums, forecasts: :mod:`concordose.planning.cumulative`; BED:
:mod:`concordose.planning.bed` (kidneys only); the next activity:
:mod:`concordose.planning.next_activity`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from concordose.dose.metrics import oar_name
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.kinetics.prior_half_life import (
    HEBERT_STP_24H,
    mean_decay_constant_per_h,
)
from concordose.kinetics.timepoints import choose_time_points
from concordose.planning.bed import bed_gy, bed_slope
from concordose.planning.cumulative import (
    RegionCycleDose,
    cumulative_dose_gy,
    forecast_dose_per_gbq,
)
from concordose.planning.next_activity import (
    KidneyHistory,
    NextActivity,
    PlanningLimits,
    plan_next_activity,
)
from concordose.results.provenance import Provenance, stamped_table
from concordose.schemas.tables import CONSORTIUM_COHORT, PLANNING
from concordose.settings import Settings

"""``cohort`` of the rows (the scope the rebuild replaces; as the other cohort tables)."""
KIDNEYS = "kidneys"
"""The region the limits apply to (:func:`concordose.dose.metrics.oar_name`)."""
SINGLE_POINT_METHOD = "prior_cycles_stp"
"""``kinetics_methods`` entry of a cycle dosed from one time point (module docstring)."""

PLANNING_INPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "absorbed_dose": (
        "site_id",
        "subject_key",
        "cycle_key",
        "voi_label",
        "voi_type",
        "kinetics_method",
        "dose_method",
        "mean_dose_gy",
        "dose_sd_gy",
        "tia_mbq_h",
        "mass_g",
        "method_parameters_hash",
    ),
    "kinetics": ("cycle_key", "voi_label", "kinetics_method", "teff_h"),
    "patient_summary": (
        "cycle_key",
        "cycle_number",
        "injected_activity_mbq",
        "injected_activity_traceable_mbq",
    ),
    "voi_timepoints": (
        "cycle_key",
        "voi_label",
        "time_point_index",
        "time_h",
        "activity_mbq",
        "activity_sd_mbq",
        "volume_ml",
    ),
}
"""The columns :func:`build_planning` reads from each per-cycle table."""


@dataclass(frozen=True)
class PlanningSettings:
    """How the planning table is computed.

    Attributes:
        kinetics_methods: per cycle, the first of these that gave it a dose is used.
        dose_method: dose method of every dose (default ``sphere``: self-dose on the VOI's own
            mass, the digital consortium's truth definition).
        single_point_nominal_h: the single time point of later cycles (Hebert: 24 h).
        limits: the kidney limits and activity cap (:class:`PlanningLimits`).
    """

    kinetics_methods: tuple[str, ...] = (REFERENCE_METHOD_NAME, "mono_exponential")
    dose_method: str = "sphere"
    single_point_nominal_h: float = HEBERT_STP_24H.nominal_h
    limits: PlanningLimits = field(default_factory=PlanningLimits)


def planning_settings(settings: Settings) -> PlanningSettings:
    """The planning settings of the platform settings (the limits and cap are
    ``CONCORDOSE_KIDNEY_DOSE_LIMIT_GY``, ``CONCORDOSE_KIDNEY_BED_LIMIT_GY`` and
    ``CONCORDOSE_PLANNING_MAX_ACTIVITY_GBQ``; the rest the defaults)."""
    return PlanningSettings(
        limits=PlanningLimits(
            kidney_dose_limit_gy=settings.kidney_dose_limit_gy,
            kidney_bed_limit_gy=settings.kidney_bed_limit_gy,
            max_activity_gbq=settings.planning_max_activity_gbq,
        )
    )


@dataclass(frozen=True)
class _Cycle:
    site_id: str
    subject_key: str
    cycle_key: str
    number: int
    activity_gbq: float


@dataclass(frozen=True)
class _VoiDose:
    label: str
    voi_type: str
    dose_gy: float
    dose_sd_gy: float
    teff_h: float
    mass_g: float
    dose_per_tia_gy_per_mbq_h: float = math.nan
    tia_mbq_h: float = math.nan


def _cycles(absorbed_dose: pd.DataFrame, patient_summary: pd.DataFrame) -> list[_Cycle]:
    """Cycles with a published number, with their activity (GBq)."""
    summary = patient_summary.dropna(subset=["cycle_number"]).groupby("cycle_key").first()
    owners = absorbed_dose.groupby("cycle_key")[["site_id", "subject_key"]].first()
    cycles = []
    for cycle_key, row in owners.iterrows():
        if cycle_key not in summary.index:
            continue
        info = summary.loc[str(cycle_key)]
        traceable = _float(info["injected_activity_traceable_mbq"])
        activity_mbq = (
            traceable if math.isfinite(traceable) else _float(info["injected_activity_mbq"])
        )
        cycles.append(
            _Cycle(
                site_id=str(row["site_id"]),
                subject_key=str(row["subject_key"]),
                cycle_key=str(cycle_key),
                number=int(_float(info["cycle_number"])),
                activity_gbq=activity_mbq / 1000.0,
            )
        )
    return sorted(cycles, key=lambda c: (c.site_id, c.subject_key, c.number, c.cycle_key))


class _ByCycle:
    """A table's rows split by ``cycle_key`` once (a per-cycle filter of the whole table would
    make the rebuild quadratic in the number of cycles)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._empty = frame.iloc[0:0]
        self._groups = {str(key): rows for key, rows in frame.groupby("cycle_key", sort=False)}

    def __getitem__(self, cycle_key: str) -> pd.DataFrame:
        return self._groups.get(cycle_key, self._empty)


def _teff(kinetics: _ByCycle, cycle_key: str, method: str) -> dict[str, float]:
    rows = kinetics[cycle_key]
    rows = rows[rows["kinetics_method"] == method]
    return {
        str(label): float(value) if pd.notna(value) else math.nan
        for label, value in zip(rows["voi_label"], rows["teff_h"], strict=True)
    }


def _full_schedule(
    doses: _ByCycle, kinetics: _ByCycle, cycle: _Cycle, settings: PlanningSettings
) -> tuple[str, list[_VoiDose]] | None:
    """The first preferred kinetics method with a finite dose in the cycle, and its VOI doses."""
    rows = doses[cycle.cycle_key]
    for method in settings.kinetics_methods:
        chosen = rows[rows["kinetics_method"] == method]
        if not chosen["mean_dose_gy"].notna().any():
            continue
        teff = _teff(kinetics, cycle.cycle_key, method)
        return method, [
            _VoiDose(
                label=str(r.voi_label),
                voi_type=str(r.voi_type),
                dose_gy=_float(r.mean_dose_gy),
                dose_sd_gy=_float(r.dose_sd_gy),
                teff_h=teff.get(str(r.voi_label), math.nan),
                mass_g=_float(r.mass_g),
                tia_mbq_h=_float(r.tia_mbq_h),
                dose_per_tia_gy_per_mbq_h=(
                    _float(r.mean_dose_gy) / _float(r.tia_mbq_h)
                    if _float(r.tia_mbq_h) > 0
                    else math.nan
                ),
            )
            for r in chosen.itertuples()
        ]
    return None


def _float(value: Any) -> float:
    return float(value) if value is not None and pd.notna(value) else math.nan


def _activity_at(
    points: _ByCycle, cycle_key: str, nominal_h: float
) -> tuple[float, pd.DataFrame] | None:
    """The acquired time (h) serving ``nominal_h`` in the cycle and its rows by VOI label;
    None when no acquired point serves it (``kinetics.timepoints.choose_time_points``)."""
    cycle_points = points[cycle_key]
    times_h = np.sort(cycle_points["time_h"].unique()).astype(np.float64)
    if times_h.size == 0:
        return None
    choice = choose_time_points(times_h, (nominal_h,))
    if not choice.matched:
        return None
    time_h = float(times_h[choice.indices[0]])
    return time_h, cycle_points[np.isclose(cycle_points["time_h"], time_h)].set_index("voi_label")


def _column(rows: pd.DataFrame, column: str, label: str) -> float:
    return _float(rows[column].get(label)) if label in rows.index else math.nan


def _single_point(
    doses: _ByCycle,
    points: _ByCycle,
    cycle: _Cycle,
    *,
    earlier: list[tuple[str, list[_VoiDose]]],
    earlier_ratio: dict[str, float],
    settings: PlanningSettings,
) -> list[_VoiDose] | None:
    """The cycle's VOI doses from one time point and the earlier full-schedule cycles' TIA per
    activity at that time (module docstring); None when no acquired point serves the nominal
    time or there is no earlier cycle."""
    nominal_h = settings.single_point_nominal_h
    here = _activity_at(points, cycle.cycle_key, nominal_h)
    if not earlier or here is None:
        return None
    _, at_time = here
    factors: dict[str, list[float]] = {}
    for cycle_key, vois in earlier:
        there = _activity_at(points, cycle_key, nominal_h)
        if there is None:
            continue
        for voi in vois:
            activity = _column(there[1], "activity_mbq", voi.label)
            if activity > 0 and math.isfinite(voi.tia_mbq_h):
                factors.setdefault(voi.label, []).append(voi.tia_mbq_h / activity)
    rows = doses[cycle.cycle_key]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = rows.assign(ratio=rows["mean_dose_gy"] / rows["tia_mbq_h"])
    ratios = ratios[np.isfinite(ratios["ratio"]) & (ratios["tia_mbq_h"] > 0)]
    this_ratio = ratios.groupby("voi_label")["ratio"].first().to_dict()
    result = []
    for key, row in rows.groupby("voi_label").first().iterrows():
        label = str(key)
        earlier_vois = [v for _, vois in earlier for v in vois if v.label == label]
        decay = mean_decay_constant_per_h([v.teff_h for v in earlier_vois])
        relative_sds = [
            v.dose_sd_gy / v.dose_gy
            for v in earlier_vois
            if math.isfinite(v.dose_sd_gy) and v.dose_gy > 0
        ]
        activity = _column(at_time, "activity_mbq", label)
        activity_sd = _column(at_time, "activity_sd_mbq", label)
        factor_h = float(np.mean(factors[label])) if label in factors else math.nan
        tia = activity * factor_h
        dose = tia * this_ratio.get(label, earlier_ratio.get(label, math.nan))
        activity_relative_sd = activity_sd / activity if activity > 0 else math.nan
        relative_sd = math.hypot(
            0.0 if math.isnan(activity_relative_sd) else activity_relative_sd,
            float(np.mean(relative_sds)) if relative_sds else math.nan,
        )
        result.append(
            _VoiDose(
                label=label,
                voi_type=str(row["voi_type"]),
                dose_gy=dose,
                dose_sd_gy=dose * relative_sd,
                teff_h=math.log(2.0) / decay if decay > 0 else math.nan,
                mass_g=_float(row["mass_g"]),
                tia_mbq_h=tia,
            )
        )
    return result


def _region_doses(vois: list[_VoiDose]) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(region, region type) → (dose, SD, T_eff): organs at risk mass-weighted over their VOIs
    (SDs likewise: the VOIs of a region share their calibration), the mean decay constant of
    its VOIs; lesions as they are."""
    regions: dict[tuple[str, str], list[_VoiDose]] = {}
    for voi in vois:
        if voi.voi_type == "lesion":
            regions.setdefault((voi.label, "lesion"), []).append(voi)
            continue
        name = oar_name(voi.label)
        if name is not None:
            regions.setdefault((name, "organ"), []).append(voi)
    result = {}
    for key, members in regions.items():
        mass = np.array([m.mass_g for m in members])
        dose = np.array([m.dose_gy for m in members])
        sd = np.array([m.dose_sd_gy for m in members])
        weights = mass / mass.sum() if mass.sum() > 0 else np.full(mass.size, 1.0 / mass.size)
        decay = mean_decay_constant_per_h([m.teff_h for m in members])
        result[key] = (
            float(np.dot(weights, dose)),
            float(np.dot(weights, sd)),
            math.log(2.0) / decay if decay > 0 else math.nan,
        )
    return result


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _patient_rows(
    history: list[tuple[_Cycle, str, bool, list[_VoiDose]]],
    settings: PlanningSettings,
    hashes: set[str],
) -> list[dict[str, Any]]:
    """The rows of one patient: one per region, the plan repeated on each."""
    limits = settings.limits
    per_region: dict[tuple[str, str], list[RegionCycleDose]] = {}
    for cycle, method, single_point, vois in history:
        for key, (dose, sd, teff) in _region_doses(vois).items():
            per_region.setdefault(key, []).append(
                RegionCycleDose(
                    cycle_number=cycle.number,
                    injected_activity_gbq=cycle.activity_gbq,
                    dose_gy=dose,
                    dose_sd_gy=sd,
                    teff_h=teff,
                    kinetics_method=method,
                    single_point=single_point,
                )
            )
    options = {
        "alpha_beta_gy": limits.alpha_beta_gy,
        "repair_half_time_h": limits.repair_half_time_h,
    }
    kidneys = per_region.get((KIDNEYS, "organ"))
    plan: NextActivity | None = None
    kidney_bed: tuple[list[float], float, float] | None = None
    if kidneys:
        kidney_dose = np.array([c.dose_gy for c in kidneys])
        kidney_sd = np.array([c.dose_sd_gy for c in kidneys])
        kidney_teff = np.array([c.teff_h for c in kidneys])
        beds = bed_gy(kidney_dose, kidney_teff, **options)
        slopes = bed_slope(kidney_dose, kidney_teff, **options)
        bed_sd = float(np.sqrt(np.sum((slopes * kidney_sd) ** 2)))
        kidney_bed = ([float(b) for b in beds], float(beds.sum()), bed_sd)
        cumulative, cumulative_sd = cumulative_dose_gy(kidneys)
        forecast = forecast_dose_per_gbq(kidneys, lesion=False)
        decay = mean_decay_constant_per_h(kidney_teff)
        plan = plan_next_activity(
            KidneyHistory(
                cumulative_dose_gy=cumulative,
                cumulative_dose_sd_gy=cumulative_sd,
                cumulative_bed_gy=kidney_bed[1],
                cumulative_bed_sd_gy=bed_sd,
                dose_per_gbq_gy=forecast.dose_per_gbq_gy,
                dose_per_gbq_sd_gy=forecast.dose_per_gbq_sd_gy,
                teff_h=math.log(2.0) / decay if decay > 0 else math.nan,
            ),
            limits,
        )
    first = history[0][0]
    next_cycle = max(cycle.number for cycle, *_ in history) + 1
    activity = plan.activity_gbq if plan is not None else math.nan
    rows = []
    for (region, region_type), cycles in sorted(per_region.items()):
        cumulative, cumulative_sd = cumulative_dose_gy(cycles)
        forecast = forecast_dose_per_gbq(cycles, lesion=region_type == "lesion")
        expected_next = activity * forecast.dose_per_gbq_gy
        bed = kidney_bed if region == KIDNEYS else None
        rows.append(
            {
                "cohort": CONSORTIUM_COHORT,
                "site_id": first.site_id,
                "subject_key": first.subject_key,
                "region": region,
                "region_type": region_type,
                "dose_method": settings.dose_method,
                "method_parameters_hash": hashlib.sha256(
                    "|".join(sorted(hashes)).encode("utf-8")
                ).hexdigest()[:16],
                "n_cycles": len(cycles),
                "cycle_numbers": [c.cycle_number for c in cycles],
                "cycle_kinetics_methods": [c.kinetics_method for c in cycles],
                "single_point_cycles": sum(c.single_point for c in cycles),
                "cycle_injected_activity_gbq": [_finite(c.injected_activity_gbq) for c in cycles],
                "cycle_dose_gy": [_finite(c.dose_gy) for c in cycles],
                "cycle_dose_sd_gy": [_finite(c.dose_sd_gy) for c in cycles],
                "cumulative_dose_gy": _finite(cumulative),
                "cumulative_dose_sd_gy": _finite(cumulative_sd),
                "cycle_bed_gy": [_finite(b) for b in bed[0]] if bed is not None else None,
                "cumulative_bed_gy": _finite(bed[1]) if bed is not None else None,
                "cumulative_bed_sd_gy": _finite(bed[2]) if bed is not None else None,
                "last_teff_h": _finite(cycles[-1].teff_h),
                "forecast_dose_per_gbq_gy": _finite(forecast.dose_per_gbq_gy),
                "forecast_dose_per_gbq_sd_gy": _finite(forecast.dose_per_gbq_sd_gy),
                "cycle_decline_ratio": _finite(forecast.decline_ratio),
                "next_cycle_number": next_cycle,
                "expected_next_dose_gy": _finite(expected_next),
                "expected_next_dose_sd_gy": _finite(activity * forecast.dose_per_gbq_sd_gy),
                "expected_cumulative_dose_gy": _finite(cumulative + expected_next),
                **_plan_columns(plan, limits),
            }
        )
    return rows


def _plan_columns(plan: NextActivity | None, limits: PlanningLimits) -> dict[str, Any]:
    columns: dict[str, Any] = {
        "kidney_dose_limit_gy": limits.kidney_dose_limit_gy,
        "kidney_bed_limit_gy": limits.kidney_bed_limit_gy,
        "max_activity_gbq": limits.max_activity_gbq,
        "exceedance_risk": limits.exceedance_risk,
        "alpha_beta_gy": limits.alpha_beta_gy,
        "repair_half_time_h": limits.repair_half_time_h,
    }
    names = (
        "activity_gbq",
        "dose_limited_activity_gbq",
        "bed_limited_activity_gbq",
        "risk_limited_activity_gbq",
        "expected_cumulative_dose_gy",
        "expected_cumulative_dose_sd_gy",
        "expected_cumulative_bed_gy",
        "expected_cumulative_bed_sd_gy",
        "probability_exceeding_dose_limit",
        "probability_exceeding_bed_limit",
    )
    for name in names:
        columns[f"next_{name}" if name == "activity_gbq" else f"kidney_{name}"] = (
            _finite(getattr(plan, name)) if plan is not None else None
        )
    columns["binding_constraint"] = str(plan.binding) if plan is not None else "unknown"
    return columns


def build_planning(
    inputs: dict[str, pa.Table],
    provenance: Provenance,
    settings: PlanningSettings | None = None,
) -> pa.Table:
    """Table ``planning`` from the current per-cycle rows (module docstring).

    Args:
        inputs: ``absorbed_dose``, ``kinetics``, ``patient_summary`` and ``voi_timepoints``
            with at least :data:`PLANNING_INPUT_COLUMNS` (``absorbed_dose`` also ``mass_g``).
        provenance: the rebuild's provenance.
        settings: methods and limits (default :class:`PlanningSettings`).
    """
    settings = settings or PlanningSettings()
    all_doses: pd.DataFrame = inputs["absorbed_dose"].to_pandas()
    all_doses = all_doses[all_doses["dose_method"] == settings.dose_method]
    doses = _ByCycle(all_doses)
    kinetics = _ByCycle(inputs["kinetics"].to_pandas())
    points = _ByCycle(inputs["voi_timepoints"].to_pandas())
    summary: pd.DataFrame = inputs["patient_summary"].to_pandas()
    patients: dict[tuple[str, str], list[_Cycle]] = {}
    for cycle in _cycles(all_doses, summary):
        patients.setdefault((cycle.site_id, cycle.subject_key), []).append(cycle)
    rows: list[dict[str, Any]] = []
    for cycles in patients.values():
        history: list[tuple[_Cycle, str, bool, list[_VoiDose]]] = []
        hashes: set[str] = set()
        for cycle in cycles:
            full = _full_schedule(doses, kinetics, cycle, settings)
            if full is not None:
                method, vois = full
                history.append((cycle, method, False, vois))
                chosen = doses[cycle.cycle_key]
                chosen = chosen[chosen["kinetics_method"] == method]
                hashes.update(chosen["method_parameters_hash"].astype(str))
                continue
            earlier = [(c.cycle_key, v) for c, _, single, v in history if not single]
            earlier_ratio = _earlier_ratios(history)
            vois_stp = _single_point(
                doses,
                points,
                cycle,
                earlier=earlier,
                earlier_ratio=earlier_ratio,
                settings=settings,
            )
            if vois_stp is not None:
                history.append((cycle, SINGLE_POINT_METHOD, True, vois_stp))
                hashes.add(f"{SINGLE_POINT_METHOD}:{settings.single_point_nominal_h:g}h")
        if history:
            rows.extend(_patient_rows(history, settings, hashes))
    return stamped_table(PLANNING, rows, provenance)


def _earlier_ratios(
    history: Sequence[tuple[_Cycle, str, bool, list[_VoiDose]]],
) -> dict[str, float]:
    """VOI label → mean dose per TIA (Gy/(MBq·h)) of its earlier full-schedule cycles."""
    ratios: dict[str, list[float]] = {}
    for _, _, single_point, vois in history:
        if single_point:
            continue
        for voi in vois:
            if math.isfinite(voi.dose_per_tia_gy_per_mbq_h):
                ratios.setdefault(voi.label, []).append(voi.dose_per_tia_gy_per_mbq_h)
    return {label: float(np.mean(values)) for label, values in ratios.items()}
