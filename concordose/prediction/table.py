"""The ``dose_prediction`` table from PET features and the harmonised dose tables (issue 20).

Inputs (Arrow tables, pure function, no I/O):

* ``pet_features``: one row per VOI of a pre-therapy PET (:data:`PET_FEATURE_COLUMNS`), as
  :func:`pet_feature_rows` makes them from :class:`~concordose.prediction.PetVoiFeatures`;
* ``absorbed_dose`` and ``patient_summary``: the current published rows.

The target of a VOI is its **first cycle's** mean absorbed dose (reference kinetics method, dose
method ``reference_dose_method``) per injected GBq: the pre-therapy PET precedes cycle 1, and
later cycles' uptake declines (the tumour response the PET cannot see). The injected activity is
the traceable one when ``patient_summary`` publishes it (the doses' scale), else the recorded
one. A VOI with a PET and no such dose (no therapy published yet) is predicted by the model of
every site (``validation = no_therapy_yet``); a VOI with one is predicted leave-one-site-out.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from concordose.consortium.voi_classes import voi_classes
from concordose.prediction.model import (
    INTERVAL_LEVEL,
    MODEL_NAME,
    MODEL_VERSION,
    NUMERIC_FEATURES,
    RIDGE_ALPHA,
    FeatureTable,
    agreement_metrics,
    fit_predictor,
    leave_one_site_out,
    population_baseline,
)
from concordose.prediction.pet_features import PEAK_SPHERE_ML, PetVoiFeatures
from concordose.results.provenance import Provenance
from concordose.schemas.tables import DOSE_PREDICTION, PET_PREDICTION_COHORT

REFERENCE_DOSE_METHOD = "sphere"
"""Dose method of the measured dose by default (the VOI-level method every site protocol runs
and the threshold studies use)."""
PET_FEATURE_COLUMNS = ("site_id", "subject_key", "voi_label", "voi_type", *NUMERIC_FEATURES)
"""Columns of the ``pet_features`` input."""
POOLED = "*"
MBQ_PER_GBQ = 1000.0


def pet_feature_rows(
    site_id: str, subject_key: str, features: Iterable[PetVoiFeatures]
) -> list[dict[str, Any]]:
    """Rows of the ``pet_features`` input for one patient's PET."""
    return [
        {
            "site_id": site_id,
            "subject_key": subject_key,
            "voi_label": f.label,
            "voi_type": f.voi_type,
            "suv_mean": f.suv_mean,
            "suv_max": f.suv_max,
            "suv_peak": f.suv_peak,
            "volume_ml": f.volume_ml,
        }
        for f in features
    ]


def predictor_parameters_hash(level: float = INTERVAL_LEVEL) -> str:
    """Hash of the predictor's settings (features, penalty, interval level, peak sphere)."""
    settings = {
        "model": f"{MODEL_NAME}/{MODEL_VERSION}",
        "features": list(NUMERIC_FEATURES),
        "ridge_alpha": RIDGE_ALPHA,
        "interval_level": level,
        "peak_sphere_ml": PEAK_SPHERE_ML,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def measured_doses_per_gbq(
    absorbed_dose: pa.Table,
    patient_summary: pa.Table,
    *,
    reference_method: str,
    reference_dose_method: str = REFERENCE_DOSE_METHOD,
) -> pd.DataFrame:
    """First-cycle dose per GBq per (site_id, subject_key, voi_label) (module docstring).

    ``patient_summary`` needs ``cycle_key``, ``cycle_number``, ``injected_activity_mbq`` and
    may have ``injected_activity_traceable_mbq``. A cycle without a number counts as cycle 1
    only when it is the patient's only one.
    """
    columns = ["site_id", "subject_key", "voi_label", "dose_gy_per_gbq"]
    dose = absorbed_dose.to_pandas()
    dose = dose[
        (dose["kinetics_method"] == reference_method)
        & (dose["dose_method"] == reference_dose_method)
        & dose["mean_dose_gy"].notna()
    ]
    summary = patient_summary.to_pandas()
    if dose.empty or summary.empty:
        return pd.DataFrame(columns=columns)
    traceable = (
        summary["injected_activity_traceable_mbq"]
        if "injected_activity_traceable_mbq" in summary
        else pd.Series(np.nan, index=summary.index)
    )
    summary = summary.assign(activity_mbq=traceable.fillna(summary["injected_activity_mbq"]))
    per_cycle = (
        summary.dropna(subset=["activity_mbq"])
        .groupby("cycle_key", as_index=False)
        .agg(cycle_number=("cycle_number", "min"), activity_mbq=("activity_mbq", "first"))
    )
    merged = dose.merge(per_cycle, on="cycle_key", how="inner")
    cycles_per_subject = merged.groupby(["site_id", "subject_key"])["cycle_key"].transform(
        "nunique"
    )
    first = (merged["cycle_number"] == 1) | (
        merged["cycle_number"].isna() & (cycles_per_subject == 1)
    )
    merged = merged[first & (merged["activity_mbq"] > 0)]
    merged = merged.assign(
        dose_gy_per_gbq=merged["mean_dose_gy"] / (merged["activity_mbq"] / MBQ_PER_GBQ)
    )
    result: pd.DataFrame = (
        merged.groupby(["site_id", "subject_key", "voi_label"], as_index=False)["dose_gy_per_gbq"]
        .mean()
        .loc[:, columns]
    )
    return result


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def build_dose_prediction(
    pet_features: pa.Table,
    absorbed_dose: pa.Table,
    patient_summary: pa.Table,
    provenance: Provenance,
    *,
    reference_method: str,
    reference_dose_method: str = REFERENCE_DOSE_METHOD,
    level: float = INTERVAL_LEVEL,
) -> pa.Table:
    """Table ``dose_prediction`` (module docstring; schema in ``schemas/tables.py``).

    Raises:
        ValueError: ``pet_features`` lacks a column of :data:`PET_FEATURE_COLUMNS`, or a VOI
            has a non-positive SUV or volume.
    """
    missing = sorted(set(PET_FEATURE_COLUMNS) - set(pet_features.column_names))
    if missing:
        raise ValueError(f"pet_features: expected columns {PET_FEATURE_COLUMNS}, missing {missing}")
    features = pet_features.select(list(PET_FEATURE_COLUMNS)).to_pandas()
    features = features.sort_values(["site_id", "subject_key", "voi_label"], ignore_index=True)
    measured = measured_doses_per_gbq(
        absorbed_dose,
        patient_summary,
        reference_method=reference_method,
        reference_dose_method=reference_dose_method,
    )
    features = features.merge(measured, on=["site_id", "subject_key", "voi_label"], how="left")
    if features.empty:
        return pa.Table.from_pylist([], schema=DOSE_PREDICTION.schema)
    classes = voi_classes(
        features["voi_type"].to_numpy(), features["voi_label"].to_numpy(), features["volume_ml"]
    )
    table = FeatureTable(
        site_id=features["site_id"].to_numpy(dtype=str),
        voi_class=np.asarray(classes, dtype=str),
        numeric=features[list(NUMERIC_FEATURES)].to_numpy(dtype=np.float64),
        dose_gy_per_gbq=features["dose_gy_per_gbq"].to_numpy(dtype=np.float64, na_value=np.nan),
    )
    n = len(features)
    predicted = np.full(n, np.nan)
    low = np.full(n, np.nan)
    high = np.full(n, np.nan)
    baseline = np.full(n, np.nan)
    validation = np.where(table.measured, "leave_one_site_out", "no_therapy_yet")
    training: list[tuple[str, ...]] = [()] * n
    for site in leave_one_site_out(table, level):
        for position, row in enumerate(site.rows):
            if table.measured[row]:
                predicted[row] = site.predicted[position]
                low[row], high[row] = site.low[position], site.high[position]
                baseline[row] = site.baseline[position]
                training[row] = site.training_sites
    unmeasured = np.flatnonzero(~table.measured)
    final = fit_predictor(table, level)
    if unmeasured.size and final is not None:
        subset = table.subset(unmeasured)
        values, lows, highs = final.predict(subset)
        predicted[unmeasured], low[unmeasured], high[unmeasured] = values, lows, highs
        baseline[unmeasured] = population_baseline(table, subset.voi_class)
        for row in unmeasured:
            training[row] = final.training_sites

    common = {
        "cohort": PET_PREDICTION_COHORT,
        "model": f"{MODEL_NAME}/{MODEL_VERSION}",
        "interval_level": level,
        "reference_kinetics_method": reference_method,
        "reference_dose_method": reference_dose_method,
        "method_parameters_hash": predictor_parameters_hash(level),
        "schema_version": DOSE_PREDICTION.version,
        **provenance.columns(),
    }
    rows: list[dict[str, Any]] = []
    for i, record in enumerate(features.itertuples(index=False)):
        rows.append(
            {
                **common,
                "row_kind": "voi",
                "site_id": record.site_id,
                "subject_key": record.subject_key,
                "voi_label": record.voi_label,
                "voi_type": record.voi_type,
                "voi_class": str(table.voi_class[i]),
                "suv_mean": float(record.suv_mean),
                "suv_max": float(record.suv_max),
                "suv_peak": float(record.suv_peak),
                "volume_ml": float(record.volume_ml),
                "validation": str(validation[i]),
                "measured_dose_gy_per_gbq": _finite_or_none(table.dose_gy_per_gbq[i]),
                "predicted_dose_gy_per_gbq": _finite_or_none(predicted[i]),
                "prediction_low_gy_per_gbq": _finite_or_none(low[i]),
                "prediction_high_gy_per_gbq": _finite_or_none(high[i]),
                "baseline_dose_gy_per_gbq": _finite_or_none(baseline[i]),
                "training_sites": list(training[i]),
            }
        )
    rows.extend(
        _metrics_rows(
            common,
            table,
            voi_type=features["voi_type"].to_numpy(dtype=str),
            predicted=predicted,
            low=low,
            high=high,
            baseline=baseline,
            training=training,
        )
    )
    return pa.Table.from_pylist(rows, schema=DOSE_PREDICTION.schema)


def _metrics_rows(
    common: dict[str, Any],
    table: FeatureTable,
    *,
    voi_type: np.ndarray[Any, np.dtype[np.str_]],
    predicted: np.ndarray[Any, np.dtype[np.float64]],
    low: np.ndarray[Any, np.dtype[np.float64]],
    high: np.ndarray[Any, np.dtype[np.float64]],
    baseline: np.ndarray[Any, np.dtype[np.float64]],
    training: Sequence[tuple[str, ...]],
) -> list[dict[str, Any]]:
    """Per held-out site and pooled, per VOI type and both: model and baseline agreement."""
    rows = []
    measured = table.measured
    sites = [*sorted(set(table.site_id[measured].tolist())), POOLED]
    for site in sites:
        in_site = measured & (table.site_id == site if site != POOLED else True)
        for kind in (POOLED, "organ", "lesion"):
            chosen = in_site & (voi_type == kind if kind != POOLED else True)
            if not chosen.any():
                continue
            y = table.dose_gy_per_gbq[chosen]
            model = agreement_metrics(y, predicted[chosen], low[chosen], high[chosen])
            population = agreement_metrics(y, baseline[chosen])
            training_sites = sorted(
                {s for row in np.flatnonzero(chosen).tolist() for s in training[row]}
            )
            rows.append(
                {
                    **common,
                    "row_kind": "metrics",
                    "site_id": site,
                    "subject_key": POOLED,
                    "voi_label": POOLED,
                    "voi_type": kind,
                    "voi_class": None,
                    "validation": "leave_one_site_out",
                    "training_sites": training_sites,
                    "n_vois": model.n,
                    "mape_percent": _finite_or_none(model.mape_percent),
                    "nrmse": _finite_or_none(model.nrmse),
                    "interval_coverage": _finite_or_none(model.coverage),
                    "baseline_mape_percent": _finite_or_none(population.mape_percent),
                    "baseline_nrmse": _finite_or_none(population.nrmse),
                }
            )
    return rows
