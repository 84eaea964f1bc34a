"""``sink_effect``: organ-at-risk uptake against tumour burden across the cohort (issue 20,
item 2): the tumour-sink effect.

A large tumour burden takes up a larger share of the injected radioligand and leaves less for
the organs at risk: lower kidney, spleen and salivary-gland uptake with higher total tumour
volume or uptake (Beauregard et al., Eur J Nucl Med Mol Imaging 2012;39:50-6, 68Ga-DOTATATE:
spleen, liver and kidney uptake lower with higher tumour burden; Gaertner et al., Oncotarget
2017;8:55094-103, PSMA-11 PET: parotid, submandibular, kidney and spleen SUV falling with
tumour load; Violet et al., J Nucl Med 2019;60:517-23,
Lu-177-PSMA-617: salivary and kidney doses lower with higher tumour volume). The platform
quantifies it on the harmonised tables, so a consortium can see how much an organ's dose per
injected activity falls per unit of tumour burden, and whether sites agree.

Per cycle (``level = 'cycle'``): for each OAR present (:data:`SINK_EFFECT_OARS`; VOIs grouped
by :func:`concordose.dose.metrics.oar_name`: kidneys left + right, spleen, salivary glands), the
OAR's TIA by the reference kinetics (summed over its VOIs) per injected activity (MBq·h/MBq = h;
the activity on the traceable scale when the calibration record is traceable, as the TIA is),
and the tumour burden: total lesion volume (mL, each lesion's first time point's volume, as the
cohort's VOI classes) and total lesion TIA per injected activity (h: the share of the injected
activity's time integral held by tumour, which does not scale with the activity given, as the
OAR response does not). A cycle whose OAR or lesion values are incomplete (a member VOI without
a reference TIA or volume) has a null for that value and is left out of the fits that need it.
A cycle without any lesion has a burden of 0 (nothing segmented as tumour).

Per site and pooled (``level = 'fit'``, one row per OAR and burden metric): ordinary least
squares of OAR TIA/IA on the burden (statsmodels), one point per patient and site (the means
of its cycles' values: a patient's cycles share its uptake and are not independent
observations; the model is linear, so the means follow the same line). Per site
``y ~ burden``; pooled ``y ~ burden + C(site_id)``: one common slope, an intercept per site
(site as a fixed effect). Why fixed, not a random site effect (MixedLM): a consortium has a
handful of sites (4 in the digital consortium), too few to estimate a between-site variance
(MixedLM's REML estimate then sits on the boundary or is unstable), and the question is the
within-site slope, which fixed site intercepts give without assuming the site offsets (residual
calibration differences) uncorrelated with burden. Standard errors are the classical OLS ones
(Student's t, n − p degrees of freedom). Why not heteroscedasticity- or cluster-robust ones:
tumour burden is right-skewed (a few patients with several hundred mL), and the sandwich
estimators are then anti-conservative at a few dozen patients (measured on the digital
consortium's draws without the effect: p ≈ 5e-5 robust against 0.025 classical for the same
null slope, driven by one high-leverage patient). A fit needs :data:`MIN_FIT_PATIENTS` patients
and a burden that varies; otherwise no fit row. The digital consortium images the same virtual
patients at every site under site-specific patient IDs, so its pooled fit counts each virtual
patient once per site (a real consortium treats a patient at one site).

Expected OAR-dose change per unit of burden: the slope times the group's median OAR dose per
TIA (``dose_method``, default ``ldm``, on the reference kinetics' TIA: LDM is defined for every
OAR, the salivary glands included, which the packaged organ S-value tables do not cover, and is
linear in the TIA, so dose per TIA is the OAR's energy per decay over its mass), in Gy per GBq
injected per unit of burden, with the slope's interval scaled alike (the dose per TIA taken as
known).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import statsmodels.formula.api as smf

from concordose.consortium.agreement import POOLED_SITE_ID, with_voi_classes
from concordose.dicom.seg import VoiType
from concordose.dose.metrics import oar_name
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.results.provenance import Provenance, stamped_table
from concordose.schemas.tables import CONSORTIUM_COHORT, SINK_EFFECT

SINK_EFFECT_OARS = ("kidneys", "spleen", "salivary_glands")
"""The organs at risk whose uptake is regressed on tumour burden (issue 20, item 2)."""

LEVEL_CYCLE = "cycle"
LEVEL_FIT = "fit"

BURDEN_VOLUME = "total_lesion_volume_ml"
BURDEN_TIA = "total_lesion_tia_per_ia_h"


@dataclass(frozen=True)
class BurdenMetric:
    """A tumour-burden regressor: its name (a cycle-row column), unit and label for people."""

    name: str
    unit: str
    label: str


BURDEN_METRICS: tuple[BurdenMetric, ...] = (
    BurdenMetric(BURDEN_VOLUME, "mL", "total lesion volume (mL)"),
    BurdenMetric(BURDEN_TIA, "h", "total lesion TIA per injected activity (h)"),
)
"""The tumour-burden regressors, in the order of the fit rows."""

MIN_FIT_PATIENTS = 5
"""Fewest patients (per-patient points) a fit needs: a site's fit then has 3 residual degrees
of freedom (t quantile 3.18); fewer make the interval uninformative (a modelling choice)."""

DEFAULT_SINK_DOSE_METHOD = "ldm"
"""Dose method of the dose-per-TIA conversion (module docstring)."""

CONFIDENCE_LEVEL = 0.95

REGRESSION_SITE = "ols_patient_means"
REGRESSION_POOLED = "ols_patient_means_site_fixed_effects"
MBQ_PER_GBQ = 1000.0


def _cycles(patient_summary: pa.Table) -> pd.DataFrame:
    """One row per cycle: site, subject, cycle number and injected activity (MBq; the traceable
    value when there is one). Cycles without a positive activity are left out."""
    frame: pd.DataFrame = patient_summary.select(
        [
            "site_id",
            "subject_key",
            "cycle_key",
            "cycle_number",
            "injected_activity_mbq",
            "injected_activity_traceable_mbq",
        ]
    ).to_pandas()
    frame = frame.sort_values(["cycle_key", "site_id", "subject_key"]).drop_duplicates("cycle_key")
    traceable = frame["injected_activity_traceable_mbq"].to_numpy(dtype=np.float64, na_value=np.nan)
    raw = frame["injected_activity_mbq"].to_numpy(dtype=np.float64, na_value=np.nan)
    frame["injected_activity_mbq"] = np.where(np.isfinite(traceable), traceable, raw)
    frame = frame[frame["injected_activity_mbq"] > 0]
    return frame[
        ["site_id", "subject_key", "cycle_key", "cycle_number", "injected_activity_mbq"]
    ].reset_index(drop=True)


def _total(values: pd.Series) -> float:
    """Sum, or NaN when any member is unknown."""
    array = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return float(array.sum()) if np.isfinite(array).all() else float("nan")


def _reference_vois(kinetics: pa.Table, reference_method: str) -> pd.DataFrame:
    frame: pd.DataFrame = kinetics.select(
        [
            "cycle_key",
            "voi_label",
            "voi_type",
            "kinetics_method",
            "tia_mbq_h",
            "method_parameters_hash",
        ]
    ).to_pandas()
    frame = frame[frame["kinetics_method"] == reference_method].drop_duplicates(
        ["cycle_key", "voi_label"]
    )
    frame["oar"] = [
        oar_name(str(label)) if voi_type == str(VoiType.ORGAN) else None
        for label, voi_type in zip(frame["voi_label"], frame["voi_type"], strict=True)
    ]
    return frame.reset_index(drop=True)


def _dose_per_tia(
    absorbed_dose: pa.Table, reference_method: str, dose_method: str
) -> dict[tuple[str, str], float]:
    """(cycle key, OAR) → the OAR's mass-weighted mean dose over its summed TIA, Gy/(MBq·h)."""
    frame: pd.DataFrame = absorbed_dose.select(
        [
            "cycle_key",
            "voi_label",
            "voi_type",
            "kinetics_method",
            "dose_method",
            "mean_dose_gy",
            "tia_mbq_h",
            "mass_g",
        ]
    ).to_pandas()
    frame = frame[
        (frame["kinetics_method"] == reference_method)
        & (frame["dose_method"] == dose_method)
        & (frame["voi_type"] == str(VoiType.ORGAN))
    ]
    frame = frame.assign(
        oar=pd.Series([oar_name(str(label)) for label in frame["voi_label"]], index=frame.index)
    )
    result: dict[tuple[str, str], float] = {}
    for (cycle, oar), group in frame.dropna(subset=["oar"]).groupby(["cycle_key", "oar"]):
        dose = group["mean_dose_gy"].to_numpy(dtype=np.float64, na_value=np.nan)
        mass = group["mass_g"].to_numpy(dtype=np.float64, na_value=np.nan)
        tia = group["tia_mbq_h"].to_numpy(dtype=np.float64, na_value=np.nan)
        if not (np.isfinite(dose).all() and np.isfinite(mass).all() and np.isfinite(tia).all()):
            continue
        if tia.sum() <= 0 or mass.sum() <= 0:
            continue
        result[(str(cycle), str(oar))] = float(np.dot(dose, mass) / mass.sum() / tia.sum())
    return result


def sink_effect_points(
    kinetics: pa.Table,
    voi_timepoints: pa.Table,
    patient_summary: pa.Table,
    absorbed_dose: pa.Table | None = None,
    *,
    reference_method: str = REFERENCE_METHOD_NAME,
    dose_method: str = DEFAULT_SINK_DOSE_METHOD,
) -> pd.DataFrame:
    """The cycle-level points (module docstring): one row per cycle and OAR present, with
    columns ``site_id``, ``subject_key``, ``cycle_key``, ``cycle_number``, ``oar``,
    ``injected_activity_mbq``, ``oar_tia_mbq_h``, ``oar_tia_per_ia_h``,
    ``oar_dose_per_tia_gy_per_mbq_h``, ``oar_dose_per_ia_gy_per_gbq``, ``n_lesions``,
    ``total_lesion_volume_ml``, ``total_lesion_tia_per_ia_h``, ``method_parameters_hash``."""
    cycles = _cycles(patient_summary)
    vois = _reference_vois(kinetics, reference_method)
    vois = vois[vois["cycle_key"].isin(set(cycles["cycle_key"]))]
    lesions = with_voi_classes(
        vois[vois["voi_type"] == str(VoiType.LESION)][
            ["cycle_key", "voi_label", "voi_type", "tia_mbq_h"]
        ],
        voi_timepoints,
    )
    doses = (
        _dose_per_tia(absorbed_dose, reference_method, dose_method)
        if absorbed_dose is not None
        else {}
    )
    ia = dict(zip(cycles["cycle_key"], cycles["injected_activity_mbq"], strict=True))
    lesion_groups = dict(tuple(lesions.groupby("cycle_key")))
    hashes = {
        str(cycle): "|".join(sorted(set(group["method_parameters_hash"].astype(str))))
        for cycle, group in vois.groupby("cycle_key")
    }
    rows: list[dict[str, Any]] = []
    organs = vois.dropna(subset=["oar"])
    organs = organs[organs["oar"].isin(SINK_EFFECT_OARS)]
    identity = cycles.set_index("cycle_key")
    for (cycle, oar), group in organs.groupby(["cycle_key", "oar"], sort=True):
        cycle_key = str(cycle)
        activity = float(ia[cycle_key])
        cycle_lesions = lesion_groups.get(cycle_key)
        if cycle_lesions is None:
            n_lesions, volume_ml, lesion_tia = 0, 0.0, 0.0
        else:
            n_lesions = len(cycle_lesions)
            volume_ml = _total(cycle_lesions["volume_ml"])
            lesion_tia = _total(cycle_lesions["tia_mbq_h"])
        oar_tia = _total(group["tia_mbq_h"])
        dose_per_tia = doses.get((cycle_key, str(oar)), float("nan"))
        tia_per_ia = oar_tia / activity
        rows.append(
            {
                "site_id": str(identity.at[cycle_key, "site_id"]),
                "subject_key": str(identity.at[cycle_key, "subject_key"]),
                "cycle_key": cycle_key,
                "cycle_number": identity.at[cycle_key, "cycle_number"],
                "oar": str(oar),
                "injected_activity_mbq": activity,
                "oar_tia_mbq_h": oar_tia,
                "oar_tia_per_ia_h": tia_per_ia,
                "oar_dose_per_tia_gy_per_mbq_h": dose_per_tia,
                "oar_dose_per_ia_gy_per_gbq": tia_per_ia * dose_per_tia * MBQ_PER_GBQ,
                "n_lesions": n_lesions,
                BURDEN_VOLUME: volume_ml,
                BURDEN_TIA: lesion_tia / activity,
                "method_parameters_hash": hashes.get(cycle_key, ""),
            }
        )
    columns = [
        "site_id", "subject_key", "cycle_key", "cycle_number", "oar", "injected_activity_mbq",
        "oar_tia_mbq_h", "oar_tia_per_ia_h", "oar_dose_per_tia_gy_per_mbq_h",
        "oar_dose_per_ia_gy_per_gbq", "n_lesions", BURDEN_VOLUME, BURDEN_TIA,
        "method_parameters_hash",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class SinkFit:
    """One regression of OAR TIA/IA (h) on a burden metric.

    Attributes:
        slope, slope_se, slope_ci_lower, slope_ci_upper, slope_p_value: the burden coefficient
            (h per burden unit), its standard error, 95 % interval and two-sided p-value
            (H0: slope 0).
        intercept_h: OAR TIA/IA at zero burden (h); pooled: site intercepts' mean over the points.
        r_squared: of the OLS fit.
        n_cycles, n_patients, n_sites: cycles, points regressed (patients per site), sites.
    """

    slope: float
    slope_se: float
    slope_ci_lower: float
    slope_ci_upper: float
    slope_p_value: float
    intercept_h: float
    r_squared: float
    n_cycles: int
    n_patients: int
    n_sites: int


def fit_sink_slope(points: pd.DataFrame, burden: str, *, pooled: bool) -> SinkFit | None:
    """OLS of ``oar_tia_per_ia_h`` on ``burden`` over per-patient means (module docstring);
    ``pooled`` adds site fixed effects (when there are several sites). None when fewer than
    :data:`MIN_FIT_PATIENTS` patients have both values or the burden does not vary."""
    data = points[["site_id", "subject_key", "oar_tia_per_ia_h", burden]].dropna()
    data = data.rename(columns={"oar_tia_per_ia_h": "y", burden: "x"})
    data = data[np.isfinite(data["y"]) & np.isfinite(data["x"])]
    n_cycles = len(data)
    means = data.groupby(["site_id", "subject_key"], as_index=False, sort=True)[["y", "x"]].mean()
    if len(means) < MIN_FIT_PATIENTS or float(means["x"].std(ddof=0)) == 0.0:
        return None
    n_sites = int(means["site_id"].nunique())
    formula = "y ~ x + C(site_id)" if pooled and n_sites > 1 else "y ~ x"
    result = smf.ols(formula, data=means).fit()
    lower, upper = result.conf_int(alpha=1.0 - CONFIDENCE_LEVEL).loc["x"]
    slope = float(result.params["x"])
    intercept = float(np.mean(result.fittedvalues - slope * means["x"]))
    return SinkFit(
        slope=slope,
        slope_se=float(result.bse["x"]),
        slope_ci_lower=float(lower),
        slope_ci_upper=float(upper),
        slope_p_value=float(result.pvalues["x"]),
        intercept_h=intercept,
        r_squared=float(result.rsquared),
        n_cycles=n_cycles,
        n_patients=len(means),
        n_sites=n_sites,
    )


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _hash(values: Sequence[str]) -> str:
    return hashlib.sha256("|".join(sorted(set(values))).encode("utf-8")).hexdigest()[:16]


def _fit_row(
    points: pd.DataFrame, metric: BurdenMetric, site_id: str, oar: str
) -> dict[str, Any] | None:
    pooled = site_id == POOLED_SITE_ID
    fit = fit_sink_slope(points, metric.name, pooled=pooled)
    if fit is None:
        return None
    dose_per_tia = points["oar_dose_per_tia_gy_per_mbq_h"].to_numpy(dtype=np.float64)
    dose_per_tia = dose_per_tia[np.isfinite(dose_per_tia)]
    scale = float(np.median(dose_per_tia)) * MBQ_PER_GBQ if dose_per_tia.size else float("nan")
    return {
        "level": LEVEL_FIT,
        "site_id": site_id,
        "oar": oar,
        "burden_metric": metric.name,
        "burden_unit": metric.unit,
        "regression_method": REGRESSION_POOLED if pooled else REGRESSION_SITE,
        "method_parameters_hash": _hash(points["method_parameters_hash"].astype(str).tolist()),
        "n_cycles": fit.n_cycles,
        "n_patients": fit.n_patients,
        "n_sites": fit.n_sites,
        "slope_h_per_unit": fit.slope,
        "slope_se_h_per_unit": fit.slope_se,
        "slope_ci_lower_h_per_unit": fit.slope_ci_lower,
        "slope_ci_upper_h_per_unit": fit.slope_ci_upper,
        "slope_p_value": _finite(fit.slope_p_value),
        "intercept_h": fit.intercept_h,
        "relative_slope_per_unit": _finite(fit.slope / fit.intercept_h)
        if fit.intercept_h
        else None,
        "r_squared": _finite(fit.r_squared),
        "oar_dose_per_tia_gy_per_mbq_h": _finite(scale / MBQ_PER_GBQ),
        "dose_change_gy_per_gbq_per_unit": _finite(fit.slope * scale),
        "dose_change_ci_lower_gy_per_gbq_per_unit": _finite(
            min(fit.slope_ci_lower * scale, fit.slope_ci_upper * scale)
        ),
        "dose_change_ci_upper_gy_per_gbq_per_unit": _finite(
            max(fit.slope_ci_lower * scale, fit.slope_ci_upper * scale)
        ),
    }


def build_sink_effect(
    kinetics: pa.Table,
    voi_timepoints: pa.Table,
    patient_summary: pa.Table,
    provenance: Provenance,
    *,
    absorbed_dose: pa.Table | None = None,
    reference_method: str = REFERENCE_METHOD_NAME,
    dose_method: str = DEFAULT_SINK_DOSE_METHOD,
) -> pa.Table:
    """Table ``sink_effect`` (module docstring): cycle rows, then per OAR and burden metric a
    fit row per site and pooled (``'*'``). Empty when no cycle has a reference TIA for an OAR
    and an injected activity.

    Args:
        kinetics: current ``kinetics`` rows (``cycle_key``, ``voi_label``, ``voi_type``,
            ``kinetics_method``, ``tia_mbq_h``, ``method_parameters_hash``).
        voi_timepoints: current rows (``cycle_key``, ``voi_label``, ``time_point_index``,
            ``volume_ml``): lesion volumes.
        patient_summary: current rows (``site_id``, ``subject_key``, ``cycle_key``,
            ``cycle_number``, ``injected_activity_mbq``, ``injected_activity_traceable_mbq``).
        provenance: the rebuild's provenance.
        absorbed_dose: current rows (``kinetics_method``, ``dose_method``, ``mean_dose_gy``,
            ``tia_mbq_h``, ``mass_g``, ...) for the dose per TIA; None: doses are null.
        reference_method: the kinetics method whose TIAs are regressed.
        dose_method: the dose method of the dose-per-TIA conversion.
    """
    points = sink_effect_points(
        kinetics,
        voi_timepoints,
        patient_summary,
        absorbed_dose,
        reference_method=reference_method,
        dose_method=dose_method,
    )
    rows: list[dict[str, Any]] = []
    for point in points.to_dict("records"):
        rows.append(
            {
                "level": LEVEL_CYCLE,
                **{key: point[key] for key in ("site_id", "subject_key", "cycle_key", "oar")},
                "cycle_number": None
                if pd.isna(point["cycle_number"])
                else int(point["cycle_number"]),
                "method_parameters_hash": point["method_parameters_hash"],
                "n_lesions": int(point["n_lesions"]),
                **{
                    key: _finite(float(point[key]))
                    for key in (
                        "injected_activity_mbq",
                        "oar_tia_mbq_h",
                        "oar_tia_per_ia_h",
                        "oar_dose_per_tia_gy_per_mbq_h",
                        "oar_dose_per_ia_gy_per_gbq",
                        BURDEN_VOLUME,
                        BURDEN_TIA,
                    )
                },
            }
        )
    for oar in SINK_EFFECT_OARS:
        of_oar = points[points["oar"] == oar]
        if of_oar.empty:
            continue
        for metric in BURDEN_METRICS:
            for site in [*sorted(set(of_oar["site_id"])), POOLED_SITE_ID]:
                group = of_oar if site == POOLED_SITE_ID else of_oar[of_oar["site_id"] == site]
                row = _fit_row(group, metric, site, oar)
                if row is not None:
                    rows.append(row)
    common = {
        "cohort": CONSORTIUM_COHORT,
        "kinetics_method": reference_method,
        "dose_method": dose_method,
    }
    return stamped_table(SINK_EFFECT, ({**common, **row} for row in rows), provenance)
