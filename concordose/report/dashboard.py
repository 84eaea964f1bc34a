"""The consortium dashboard: one self-contained HTML page over a whole output store (issue 17,
item 2), published at ``_reports/dashboard/index.html``.

Sections, each built from published tables only (:mod:`concordose.report.dashboard_tables`:
read once) and each saying where its numbers come from:

* ``cycles``: cycles with published rows per site, processed and held, time points, QC
  findings, and the held cycles' reasons (``acquisitions``, ``qc_findings``,
  ``voi_timepoints``); what never reached the store (still receiving, failed) is not counted;
* ``calibration``: each site's calibration records over their validity windows (CF, recovery
  curves' half-recovery volumes, PSF FWHM; ``site_calibrations``);
* ``method-agreement``: Bland–Altman plots of each kinetics method against the reference, per
  site and pooled, per VOI class (points: the TIA pairs of the current ``kinetics`` rows,
  :func:`concordose.consortium.kinetics_tia_pairs`; lines and tables: the published
  ``kinetics_agreement``);
* ``harmonisation``: the reference objects' error against truth and cross-site CoV per
  processing variant (``harmonisation_agreement``; a clinical store has none: it says so);
* ``threshold-concordance``: the published thresholds in each study's methodology against the
  reference (``threshold_concordance``);
* ``planning``: per patient (an anonymous number within its site), cumulative kidney dose over
  the published cycles and after the planned next cycle against the limit, per site the next
  activities and exceedance probabilities (``planning``, issue 20);
* ``whole-body-tumour``: each cycle's whole-body tumour volume and mean dose by one voxel dose
  method next to the lesion VOIs' GTD (``whole_body_tumour_dose``, issue 20).
* ``sink-effect``: organ-at-risk TIA per injected activity against tumour burden, every cycle's
  point with the per-site and pooled fits, and the fits' slopes, CIs, p-values and dose changes
  (``sink_effect``; :mod:`concordose.report.sink_effect_view`, issue 20 item 2).
* ``dose-prediction`` (issue 20, item 3): pre-therapy PET predictions of VOI dose per GBq
  against the measured first-cycle dose, leave-one-site-out, with the organ-level population
  baseline, and each held-out site's MAPE, NRMSE and interval coverage (``dose_prediction``).

A section whose table the store does not hold says so instead of drawing an empty plot.
Self-contained as the cycle report: inline CSS, PNG data URIs, no script, no external
reference. No patient key or attribute is shown (cycle keys are read only to count cycles).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd

from concordose import __version__
from concordose.consortium.agreement import POOLED_SITE_ID, kinetics_tia_pairs, with_voi_classes
from concordose.consortium.variants import VARIANTS
from concordose.consortium.voi_classes import LESION_UNKNOWN_VOLUME, LESION_VOLUME_BINS
from concordose.kinetics.comparison import relative_differences_percent
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.report.dashboard_figures import (
    BlandAltmanSeries,
    CalibrationSpan,
    ConcordancePoint,
    PredictionPoint,
    VariantValues,
    bland_altman_figure,
    calibration_history_figure,
    dose_prediction_figure,
    harmonisation_figure,
    threshold_concordance_figure,
)
from concordose.report.dashboard_tables import DashboardTables, read_dashboard_tables
from concordose.report.html import TEMPLATES, method_chip, number_text, numeric_cell
from concordose.report.palette import METHOD_STYLES
from concordose.report.planning_figures import (
    CumulativeKidneyBar,
    WholeBodyPoint,
    cumulative_kidney_figure,
    whole_body_tumour_figure,
)
from concordose.report.sink_effect_view import dashboard_sink_section
from concordose.results.object_store import ObjectStore

__all__ = [
    "DASHBOARD_KEY",
    "DASHBOARD_SECTION_IDS",
    "build_dashboard",
    "publish_dashboard",
    "render_dashboard",
]

DASHBOARD_KEY = "_reports/dashboard/index.html"
"""Store-relative key of the dashboard."""

DASHBOARD_SECTION_IDS = (
    "cycles",
    "calibration",
    "method-agreement",
    "harmonisation",
    "threshold-concordance",
    "planning",  # issue 20, item 1
    "whole-body-tumour",  # issue 20, item 4
    "sink-effect",  # issue 20, item 2
    "dose-prediction",  # issue 20 item 3
    "provenance",
)
"""The dashboard's sections, in order (each an element with this id)."""

POOLED_LABEL = "all sites (pooled)"
METRIC_TIA = "tia"
HELD_REASON_EXAMPLES = 3
"""Distinct messages shown per held reason (the most frequent first)."""

Row = dict[str, Any]


def _frame(tables: DashboardTables, name: str) -> pd.DataFrame:
    frame: pd.DataFrame = tables.table(name).to_pandas()
    return frame


def _finite(value: object) -> float | None:
    """A float for a cell, None for a missing or non-finite value (pandas NaN/NA included)."""
    if value is None or value is pd.NA:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _percent(value: object) -> float | None:
    number = _finite(value)
    return None if number is None else 100.0 * number


def _site_label(site_id: str) -> str:
    return POOLED_LABEL if site_id == POOLED_SITE_ID else site_id


def _site_order(site_ids: Iterable[str]) -> list[str]:
    """Pooled first, then sites alphabetically."""
    unique = set(site_ids)
    return [POOLED_SITE_ID] * (POOLED_SITE_ID in unique) + sorted(unique - {POOLED_SITE_ID})


def _method_order(methods: Iterable[str]) -> list[str]:
    """Palette order (reference, fits, simplified methods), unknown names after, sorted."""
    unique = set(methods)
    known = [m for m in METHOD_STYLES if m in unique]
    return known + sorted(unique - set(known))


def _class_order(classes: Iterable[str]) -> list[str]:
    """Organs alphabetically, then the lesion volume bins in order, then unknown volumes."""
    unique = set(classes)
    lesions = [b.label for b in LESION_VOLUME_BINS] + [LESION_UNKNOWN_VOLUME]
    return sorted(unique - set(lesions)) + [c for c in lesions if c in unique]


# --- cycles: received, processed, held -------------------------------------------------------


def _cycles_section(tables: DashboardTables) -> dict[str, Any]:
    acquisitions = _frame(tables, "acquisitions")
    findings = _frame(tables, "qc_findings")
    points = _frame(tables, "voi_timepoints")
    published = pd.concat(
        [acquisitions[["site_id", "cycle_key"]], findings[["site_id", "cycle_key"]]]
    ).drop_duplicates()
    processed = points[["site_id", "cycle_key"]].drop_duplicates()
    processed_keys = set(processed["cycle_key"])
    held = published[~published["cycle_key"].isin(processed_keys)]
    rows = []
    for site in [*sorted(set(published["site_id"])), POOLED_SITE_ID]:

        def of_site(frame: pd.DataFrame, site: str = site) -> pd.DataFrame:
            return frame if site == POOLED_SITE_ID else frame[frame["site_id"] == site]

        severities = of_site(findings)["severity"].value_counts()
        rows.append(
            {
                "site_id": site,
                "label": "all sites" if site == POOLED_SITE_ID else site,
                "published": numeric_cell(float(len(of_site(published)))),
                "processed": numeric_cell(float(len(of_site(processed)))),
                "held": numeric_cell(float(len(of_site(held)))),
                "time_points": numeric_cell(float(len(of_site(acquisitions)))),
                "errors": int(severities.get("error", 0)),
                "warnings": int(severities.get("warning", 0)),
                "infos": int(severities.get("info", 0)),
            }
        )
    held_findings = findings[
        findings["cycle_key"].isin(set(held["cycle_key"])) & (findings["severity"] == "error")
    ]
    reasons = []
    for (site, check), group in held_findings.groupby(["site_id", "check_name"], sort=True):
        messages = group["message"].value_counts()
        reasons.append(
            {
                "site_id": site,
                "check": check,
                "cycles": numeric_cell(float(group["cycle_key"].nunique())),
                "examples": [
                    {"message": message, "count": int(count)}
                    for message, count in messages.head(HELD_REASON_EXAMPLES).items()
                ],
                "more": max(0, len(messages) - HELD_REASON_EXAMPLES),
            }
        )
    without_reason = sorted(set(held["cycle_key"]) - set(held_findings["cycle_key"]))
    return {
        "available": len(published) > 0,
        "rows": rows,
        "reasons": reasons,
        "held_without_error": len(without_reason),
    }


# --- calibration history ---------------------------------------------------------------------


def _optional(row: Row, column: str) -> float | None:
    return _finite(row.get(column))


def _calibration_section(tables: DashboardTables, today: date) -> list[dict[str, Any]]:
    by_site: dict[str, list[Row]] = defaultdict(list)
    for row in tables.table("site_calibrations").to_pylist():
        by_site[str(row["site_id"])].append(row)
    sites = []
    for site in sorted(by_site):
        records = sorted(by_site[site], key=lambda r: (r["valid_from"], r["calibration_record_id"]))
        spans = [
            CalibrationSpan(
                record_id=str(r["calibration_record_id"]),
                valid_from=r["valid_from"],
                valid_to=r["valid_to"],
                cf_cps_per_mbq=float(r["calibration_factor_cps_per_mbq"]),
                cf_relative_uncertainty=_optional(r, "calibration_factor_relative_uncertainty"),
                recovery_a_ml=_optional(r, "recovery_a_ml"),
                contrast_recovery_a_ml=_optional(r, "contrast_recovery_a_ml"),
                psf_fwhm_mm=_optional(r, "psf_fwhm_mm"),
                psf_fwhm_sd_mm=_optional(r, "psf_fwhm_sd_mm"),
                psf_large_object_fwhm_mm=_optional(r, "psf_large_object_fwhm_mm"),
            )
            for r in records
        ]
        sites.append(
            {
                "site_id": site,
                "figure": calibration_history_figure(site, spans, today=today),
                "records": [
                    {
                        "record": r["calibration_record_id"],
                        "valid_from": str(r["valid_from"]),
                        "valid_to": "open" if r["valid_to"] is None else str(r["valid_to"]),
                        "camera": f"{r['camera_model'] or '–'} / {r['collimator'] or '–'}",
                        "cf": numeric_cell(_optional(r, "calibration_factor_cps_per_mbq")),
                        "cf_uncertainty": numeric_cell(
                            _percent(r["calibration_factor_relative_uncertainty"])
                        ),
                        "recovery_a": numeric_cell(_optional(r, "recovery_a_ml")),
                        "recovery_b": numeric_cell(_optional(r, "recovery_b")),
                        "contrast_recovery_a": numeric_cell(_optional(r, "contrast_recovery_a_ml")),
                        "psf": numeric_cell(
                            _optional(r, "psf_fwhm_mm"), _optional(r, "psf_fwhm_sd_mm")
                        ),
                        "psf_large": numeric_cell(
                            _optional(r, "psf_large_object_fwhm_mm"),
                            _optional(r, "psf_large_object_fwhm_sd_mm"),
                        ),
                        "pvc_model": r["partial_volume_model_chosen"] or "–",
                        "traceable": "yes" if r["dose_calibrator_traceable"] else "no",
                    }
                    for r in records
                ],
            }
        )
    return sites


# --- method agreement ------------------------------------------------------------------------


def _agreement_row(row: dict[Any, Any]) -> dict[str, Any]:
    return {
        "site_id": row["site_id"],
        "site": _site_label(str(row["site_id"])),
        "voi_class": row["voi_class"],
        "metric": row["metric"],
        "dose_method": "" if pd.isna(row["dose_method"]) else str(row["dose_method"]),
        "method": method_chip(str(row["kinetics_method"])),
        "n_cycles": numeric_cell(_finite(row["n_cycles"])),
        "n_pairs": numeric_cell(_finite(row["n_pairs"])),
        "n_missing": numeric_cell(_finite(row["n_missing"])),
        "bias": numeric_cell(_finite(row["bias_percent"])),
        "sd": numeric_cell(_finite(row["sd_percent"])),
        "loa_lower": numeric_cell(_finite(row["loa_lower_percent"])),
        "loa_upper": numeric_cell(_finite(row["loa_upper_percent"])),
    }


def _agreement_section(tables: DashboardTables) -> dict[str, Any]:
    agreement = _frame(tables, "kinetics_agreement")
    if agreement.empty:
        return {"available": False}
    reference = str(agreement["reference_method"].iloc[0])
    methods = _method_order(agreement["kinetics_method"])
    classes = _class_order(agreement["voi_class"])
    sites = _site_order(agreement["site_id"])
    ordered = agreement.assign(
        _site=agreement["site_id"].map(sites.index),
        _class=agreement["voi_class"].map(classes.index),
        _method=agreement["kinetics_method"].map(methods.index),
    ).sort_values(["_site", "_class", "_method", "dose_method"], na_position="first")
    tia = ordered[ordered["metric"] == METRIC_TIA]
    dose = ordered[ordered["metric"] != METRIC_TIA]

    pairs = pd.DataFrame()
    if tables.has("kinetics"):
        pairs = kinetics_tia_pairs(tables.table("kinetics"), reference_method=reference)
        if not pairs.empty:
            pairs = with_voi_classes(pairs, tables.table("voi_timepoints"))
            values = pairs["value"].to_numpy(dtype=np.float64, na_value=np.nan)
            references = pairs["reference_value"].to_numpy(dtype=np.float64, na_value=np.nan)
            pairs = pairs.assign(
                mean=(values + references) / 2.0,
                difference=relative_differences_percent(values, references),
            )
    figures = []
    for site in sites:
        rows = tia[tia["site_id"] == site]
        if rows.empty:
            continue
        mine = pairs if pairs.empty or site == POOLED_SITE_ID else pairs[pairs["site_id"] == site]
        grouped = (
            {key: group for key, group in mine.groupby(["kinetics_method", "voi_class"])}
            if not mine.empty
            else {}
        )
        series = []
        for row in rows.to_dict("records"):
            points = grouped.get((row["kinetics_method"], row["voi_class"]))
            series.append(
                BlandAltmanSeries(
                    method=str(row["kinetics_method"]),
                    voi_class=str(row["voi_class"]),
                    mean_mbq_h=np.empty(0)
                    if points is None
                    else points["mean"].to_numpy(dtype=np.float64),
                    difference_percent=np.empty(0)
                    if points is None
                    else points["difference"].to_numpy(dtype=np.float64),
                    bias_percent=_finite(row["bias_percent"]),
                    loa_lower_percent=_finite(row["loa_lower_percent"]),
                    loa_upper_percent=_finite(row["loa_upper_percent"]),
                )
            )
        figures.append(
            {
                "site_id": site,
                "site": _site_label(site),
                "src": bland_altman_figure(
                    f"TIA, {_site_label(site)}", series, reference_method=reference
                ),
            }
        )
    dose_tables = [
        {"dose_method": name, "rows": [_agreement_row(r) for r in group.to_dict("records")]}
        for name, group in dose.groupby("dose_method", sort=True)
    ]
    return {
        "available": True,
        "reference": reference,
        "figures": figures,
        "tia_rows": [_agreement_row(r) for r in tia.to_dict("records")],
        "dose_tables": dose_tables,
        "has_points": not pairs.empty,
    }


# --- harmonisation ---------------------------------------------------------------------------


def _variant_order(variants: Iterable[str]) -> list[str]:
    unique = set(variants)
    known = [v.value for v in VARIANTS if v.value in unique]
    return known + sorted(unique - set(known))


def _metric_label(metric: str, dose_method: str) -> str:
    if metric == "tia_mbq_h":
        return "TIA (MBq·h)"
    return f"mean absorbed dose (Gy), {dose_method}"


def _harmonisation_section(tables: DashboardTables) -> dict[str, Any]:
    frame = _frame(tables, "harmonisation_agreement")
    if frame.empty:
        return {"available": False, "no_reference": False}
    reference = REFERENCE_METHOD_NAME
    frame = frame[frame["kinetics_method"] == reference]
    if frame.empty:
        return {"available": False, "no_reference": True, "reference": reference}
    variants = _variant_order(frame["variant"])
    group = ["reference_object_id", "voi_label", "metric", "dose_method"]
    per_group = frame.drop_duplicates([*group, "variant"])
    metrics = list(
        dict.fromkeys(zip(frame["metric"], frame["dose_method"], strict=True))
    )  # TIA first: the table is sorted by metric, "mean_dose_gy" < "tia_mbq_h"
    metrics.sort(key=lambda m: (m[0] != "tia_mbq_h", m[1]))
    figures = []
    summary = []
    for metric, dose_method in metrics:
        rows = frame[(frame["metric"] == metric) & (frame["dose_method"] == dose_method)]
        groups = per_group[
            (per_group["metric"] == metric) & (per_group["dose_method"] == dose_method)
        ]
        values = []
        for variant in variants:
            for voi_type in sorted(set(rows["voi_type"])):
                errors = 100.0 * rows[
                    (rows["variant"] == variant) & (rows["voi_type"] == voi_type)
                ]["relative_error"].to_numpy(dtype=np.float64, na_value=np.nan)
                covs = 100.0 * groups[
                    (groups["variant"] == variant) & (groups["voi_type"] == voi_type)
                ]["cross_site_cov"].to_numpy(dtype=np.float64, na_value=np.nan)
                values.append(VariantValues(variant, voi_type, errors, covs))
                finite_errors = np.abs(errors[np.isfinite(errors)])
                finite_covs = covs[np.isfinite(covs)]
                summary.append(
                    {
                        "metric": _metric_label(metric, dose_method),
                        "voi_type": voi_type,
                        "variant": variant,
                        "n_values": len(finite_errors),
                        "error_median": numeric_cell(
                            float(np.median(finite_errors)) if finite_errors.size else None
                        ),
                        "error_max": numeric_cell(
                            float(finite_errors.max()) if finite_errors.size else None
                        ),
                        "cov_median": numeric_cell(
                            float(np.median(finite_covs)) if finite_covs.size else None
                        ),
                        "cov_max": numeric_cell(
                            float(finite_covs.max()) if finite_covs.size else None
                        ),
                    }
                )
        label = _metric_label(metric, dose_method)
        figures.append(
            {
                "metric": label,
                "src": harmonisation_figure(
                    f"reference objects, {reference}: {label}",
                    values,
                    variants=variants,
                ),
            }
        )
    cov_rows = []
    for keys, members in per_group.groupby(group, sort=True):
        by_variant = {str(r["variant"]): r for r in members.to_dict("records")}
        first = members.iloc[0]
        cov_rows.append(
            {
                "object": keys[0],
                "voi_label": keys[1],
                "voi_type": first["voi_type"],
                "metric": keys[2],
                "dose_method": keys[3],
                "n_sites": int(first["n_sites"]),
                "cells": [
                    numeric_cell(
                        _percent(by_variant[v]["cross_site_cov"]) if v in by_variant else None
                    )
                    for v in variants
                ],
            }
        )
    error_rows = []
    for keys, members in frame.groupby([*group, "site_id"], sort=True):
        by_variant = {str(r["variant"]): r for r in members.to_dict("records")}
        error_rows.append(
            {
                "object": keys[0],
                "voi_label": keys[1],
                "metric": keys[2],
                "dose_method": keys[3],
                "site_id": keys[4],
                "cells": [
                    numeric_cell(
                        _percent(by_variant[v]["relative_error"]) if v in by_variant else None
                    )
                    for v in variants
                ],
            }
        )
    return {
        "available": True,
        "reference": reference,
        "variants": variants,
        "figures": figures,
        "summary": summary,
        "cov_rows": cov_rows,
        "error_rows": error_rows,
        "objects": sorted(set(frame["reference_object_id"])),
    }


# --- threshold concordance -------------------------------------------------------------------


def _interval(low: object, high: object) -> str:
    low_value, high_value = _finite(low), _finite(high)
    if low_value is None or high_value is None:
        return ""
    return f"[{number_text(low_value)}, {number_text(high_value)}]"


def _threshold_section(tables: DashboardTables) -> dict[str, Any]:
    frame = _frame(tables, "threshold_concordance")
    if frame.empty:
        return {"available": False}
    cohort = frame[frame["level"] == "cohort"]
    sites = _site_order(cohort["site_id"])
    cohort = cohort.assign(_site=cohort["site_id"].map(sites.index)).sort_values(
        ["_site", "threshold_name"]
    )
    rows = [
        {
            "site_id": r["site_id"],
            "site": _site_label(str(r["site_id"])),
            "threshold": r["threshold_name"],
            "scope": r["threshold_scope"],
            "cut_off": numeric_cell(_finite(r["threshold_gy"])),
            "study": method_chip(str(r["study_kinetics_method"])),
            "study_dose": r["study_dose_method"],
            "reference": f"{r['reference_kinetics_method']} · {r['reference_dose_method']}",
            "n_classified": numeric_cell(_finite(r["n_classified"])),
            "n_missing": numeric_cell(_finite(r["n_missing"])),
            "flip_fraction": numeric_cell(_percent(r["flip_fraction"])),
            "kappa": numeric_cell(_finite(r["cohen_kappa"])),
            "slope": numeric_cell(_finite(r["slope"])),
            "slope_ci": _interval(r["slope_ci_lower"], r["slope_ci_upper"]),
            "equivalent": numeric_cell(_finite(r["reference_equivalent_gy"])),
            "equivalent_ci": _interval(
                r["reference_equivalent_ci_lower_gy"], r["reference_equivalent_ci_upper_gy"]
            ),
        }
        for r in cohort.to_dict("records")
    ]
    individual = frame[frame["level"] != "cohort"]
    points = [
        ConcordancePoint(
            threshold_name=str(r["threshold_name"]),
            study_kinetics_method=str(r["study_kinetics_method"]),
            study_value_gy=float(r["study_value_gy"]),
            reference_value_gy=float(r["reference_value_gy"]),
            flipped=False if pd.isna(r["flipped"]) else bool(r["flipped"]),
        )
        for r in individual.to_dict("records")
        if _finite(r["study_value_gy"]) is not None and _finite(r["reference_value_gy"]) is not None
    ]
    cut_offs = {
        str(name): float(value)
        for name, value in frame.drop_duplicates("threshold_name")[
            ["threshold_name", "threshold_gy"]
        ].itertuples(index=False)
    }
    reference = str(frame["reference_kinetics_method"].iloc[0])
    return {
        "available": True,
        "rows": rows,
        "figure": threshold_concordance_figure(points, cut_offs, reference_method=reference),
        "n_points": len(points),
        "n_individual": len(individual),
    }


# --- planning and whole-body tumour dose (issue 20, items 1 and 4) -----------------------------


def _planning_section(tables: DashboardTables) -> dict[str, Any]:
    """Kidneys rows of ``planning``: a bar per patient (numbered within its site, no key) and a
    summary row per site."""
    frame = _frame(tables, "planning")
    kidneys = frame[frame["region"] == "kidneys"] if not frame.empty else frame
    if kidneys.empty:
        return {"available": False}
    sites = _site_order(kidneys["site_id"])
    bars, rows = [], []
    for site in sites:
        of_site = kidneys[kidneys["site_id"] == site].sort_values("cumulative_dose_gy")
        for number, r in enumerate(of_site.to_dict("records"), start=1):
            doses = tuple(
                float(d)
                for d in (r["cycle_dose_gy"] if r["cycle_dose_gy"] is not None else [])
                if _finite(d) is not None
            )
            bars.append(
                CumulativeKidneyBar(
                    label=f"{site} #{number}",
                    cycle_dose_gy=doses,
                    expected_next_dose_gy=_finite(r["expected_next_dose_gy"]),
                    next_activity_gbq=_finite(r["next_activity_gbq"]),
                    limit_gy=float(r["kidney_dose_limit_gy"]),
                )
            )
            rows.append(
                {
                    "site_id": site,
                    "site": _site_label(str(site)),
                    "patient": number,
                    "n_cycles": numeric_cell(_finite(r["n_cycles"])),
                    "cumulative": numeric_cell(_finite(r["cumulative_dose_gy"])),
                    "bed": numeric_cell(_finite(r["cumulative_bed_gy"])),
                    "activity": numeric_cell(_finite(r["next_activity_gbq"])),
                    "binding": r["binding_constraint"],
                    "after_next": numeric_cell(_finite(r["kidney_expected_cumulative_dose_gy"])),
                    "probability": numeric_cell(
                        _percent(r["kidney_probability_exceeding_dose_limit"])
                    ),
                }
            )
    return {
        "available": True,
        "figure": cumulative_kidney_figure(bars),
        "rows": rows,
        "limits": ", ".join(
            sorted({number_text(_finite(v)) for v in kidneys["kidney_dose_limit_gy"]})
        ),
    }


def _whole_body_section(tables: DashboardTables) -> dict[str, Any]:
    """``whole_body_tumour_dose`` of the first voxel dose method (sorted): one bar pair per
    cycle, labelled by site and cycle number."""
    frame = _frame(tables, "whole_body_tumour_dose")
    if frame.empty:
        return {"available": False}
    method = sorted(frame["dose_method"].astype(str))[0]
    chosen = frame[frame["dose_method"] == method]
    sites = _site_order(chosen["site_id"])
    chosen = chosen.assign(_site=chosen["site_id"].map(sites.index)).sort_values(
        ["_site", "cycle_number", "tumour_volume_ml"]
    )
    records = chosen.to_dict("records")

    def label(r: dict[Any, Any]) -> str:
        number = _finite(r["cycle_number"])
        return f"{r['site_id']} c{int(number)}" if number is not None else str(r["site_id"])

    points = [
        WholeBodyPoint(
            label=label(r),
            tumour_volume_ml=float(r["tumour_volume_ml"]),
            mean_dose_gy=_finite(r["mean_dose_gy"]),
            lesion_voi_gtd_gy=_finite(r["lesion_voi_gtd_gy"]),
        )
        for r in records
    ]
    threshold = float(records[0]["threshold_gy"])
    return {
        "available": True,
        "dose_method": method,
        "threshold": number_text(threshold),
        "figure": whole_body_tumour_figure(points, threshold),
        "rows": [
            {
                "site_id": r["site_id"],
                "label": label(r),
                "volume": numeric_cell(_finite(r["tumour_volume_ml"])),
                "mean": numeric_cell(_finite(r["mean_dose_gy"])),
                "gtd": numeric_cell(_finite(r["lesion_voi_gtd_gy"])),
            }
            for r in records
        ],
    }


# --- issue 20 item 3: pre-therapy PET dose prediction ----------------------------------------


def _prediction_section(tables: DashboardTables) -> dict[str, Any]:
    frame = _frame(tables, "dose_prediction")
    if frame.empty:
        return {"available": False}
    vois = frame[frame["row_kind"] == "voi"]
    validated = vois[vois["validation"] == "leave_one_site_out"]
    points = [
        PredictionPoint(
            site_id=str(r["site_id"]),
            voi_type=str(r["voi_type"]),
            measured_gy_per_gbq=float(r["measured_dose_gy_per_gbq"]),
            predicted_gy_per_gbq=float(r["predicted_dose_gy_per_gbq"]),
            baseline_gy_per_gbq=_finite(r["baseline_dose_gy_per_gbq"]),
        )
        for r in validated.to_dict("records")
        if _finite(r["measured_dose_gy_per_gbq"]) is not None
        and _finite(r["predicted_dose_gy_per_gbq"]) is not None
    ]
    metrics = frame[frame["row_kind"] == "metrics"]
    sites = _site_order(metrics["site_id"])
    kinds = ["*", "organ", "lesion"]
    metrics = metrics.assign(
        _site=metrics["site_id"].map(sites.index), _kind=metrics["voi_type"].map(kinds.index)
    ).sort_values(["_site", "_kind"])
    rows = [
        {
            "site_id": r["site_id"],
            "site": _site_label(str(r["site_id"])),
            "voi_type": "organs and lesions" if r["voi_type"] == "*" else r["voi_type"],
            "n": numeric_cell(_finite(r["n_vois"])),
            "mape": numeric_cell(_finite(r["mape_percent"])),
            "nrmse": numeric_cell(_finite(r["nrmse"])),
            "coverage": numeric_cell(_percent(r["interval_coverage"])),
            "baseline_mape": numeric_cell(_finite(r["baseline_mape_percent"])),
            "baseline_nrmse": numeric_cell(_finite(r["baseline_nrmse"])),
        }
        for r in metrics.to_dict("records")
    ]
    first = frame.iloc[0]
    return {
        "available": True,
        "figure": dose_prediction_figure(points) if points else None,
        "rows": rows,
        "n_points": len(points),
        "n_no_therapy": int((vois["validation"] == "no_therapy_yet").sum()),
        "model": str(first["model"]),
        "level": numeric_cell(_percent(first["interval_level"])),
        "reference": f"{first['reference_kinetics_method']} · {first['reference_dose_method']}",
    }


# --- page ------------------------------------------------------------------------------------


def _provenance(tables: DashboardTables) -> list[dict[str, str]]:
    runs = []
    for name in (
        "kinetics_agreement",
        "threshold_concordance",
        "harmonisation_agreement",
        "planning",  # issue 20
        "sink_effect",  # issue 20, item 2
        "dose_prediction",  # issue 20 item 3
    ):
        for run_id in sorted(set(tables.table(name).column("run_id").to_pylist())):
            runs.append(
                {
                    "table": name,
                    "run_id": str(run_id),
                    "published_at": tables.published_at.get(str(run_id), "–"),
                }
            )
    return runs


def render_dashboard(tables: DashboardTables, *, generated_at: datetime | None = None) -> str:
    """The dashboard's HTML (self-contained) from the store's published rows."""
    now = generated_at or datetime.now(UTC)
    context = {
        "store_uri": tables.store_uri,
        "generated_at": now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "software_version": __version__,
        "section_ids": DASHBOARD_SECTION_IDS,
        "cycles": _cycles_section(tables),
        "calibration": _calibration_section(tables, now.date()),
        "agreement": _agreement_section(tables),
        "harmonisation": _harmonisation_section(tables),
        "thresholds": _threshold_section(tables),
        "planning": _planning_section(tables),  # issue 20, item 1
        "whole_body": _whole_body_section(tables),  # issue 20, item 4
        "sink_effect": dashboard_sink_section(tables.table("sink_effect").to_pylist()),
        "prediction": _prediction_section(tables),  # issue 20 item 3
        "provenance": _provenance(tables),
        "n_calibration_records": tables.table("site_calibrations").num_rows,
    }
    return TEMPLATES.get_template("dashboard.html.j2").render(context)


def build_dashboard(store: ObjectStore, *, generated_at: datetime | None = None) -> str:
    """The dashboard of ``store`` from its current published rows (read once).

    Raises:
        ConcordoseError: a malformed manifest; the store's errors.
    """
    return render_dashboard(read_dashboard_tables(store), generated_at=generated_at)


def publish_dashboard(store: ObjectStore, html: str) -> str:
    """Write the dashboard at ``_reports/dashboard/index.html`` (atomically); its path."""
    path = store.path(DASHBOARD_KEY)
    store.write_bytes_atomically(path, html.encode("utf-8"))
    return path
