"""The per-cycle report: one self-contained HTML page from a cycle's published rows.

What it shows (issue 17, item 1): QC findings and the calibration record used; SPECT MIPs per
time point with VOI outlines and dose-map slices through each lesion (from the cycle's image
products, :mod:`concordose.report.images`, when published); each VOI's time-activity curve with
every method's implied curve and the time points it used; TIA and dose tables by method with
uncertainties; DVHs; threshold flags with their sources and the concordance between
methodologies; where the patient sits on the cohort's tumour-sink regression (issue 20, item 2:
:func:`concordose.report.sink_effect_view.cycle_sink_section`); the patient's pre-therapy PET
dose prediction (issue 20, item 3: the cohort table ``dose_prediction``); a provenance footer.
Every number comes from the published tables (:mod:`concordose.report.cycle_tables`), so the
report built by the flow and one rebuilt later by ``concordose report`` agree.

Self-contained: CSS inline, figures as PNG data URIs, no script, no external reference — it
renders the same on a closed hospital network. Pseudonymised keys only (``subject_key``,
``cycle_key``), and input UID *hashes*.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np

from concordose import __version__
from concordose.dose.thresholds import THRESHOLDS
from concordose.report.curves import implied_activity_mbq
from concordose.report.cycle_tables import CycleRows, read_cycle_rows
from concordose.report.figures import (
    DvhCurve,
    MethodCurve,
    dose_slice_figure,
    dvh_figure,
    mip_figure,
    tac_figure,
)
from concordose.report.html import TEMPLATES, method_chip, number_text, numeric_cell
from concordose.report.images import (
    CYCLE_REPORTS_DIR,
    CycleImages,
    image_products_key,
    read_cycle_images,
)
from concordose.report.planning_figures import (
    CumulativeKidneyBar,
    WholeBodyPoint,
    cumulative_kidney_figure,
    whole_body_tumour_figure,
)
from concordose.report.sink_effect_view import cycle_sink_section
from concordose.results.catalogue import connect
from concordose.results.object_store import ObjectStore

__all__ = [
    "SECTION_IDS",
    "build_cycle_report",
    "cycle_report_key",
    "publish_cycle_report",
    "render_cycle_report",
]

SECTION_IDS = (
    "qc",
    "calibration",
    "images",
    "time-activity",
    "tia",
    "dose",
    "dvh",
    "dose-slices",
    "thresholds",
    "concordance",
    "planning",  # issue 20, item 1
    "whole-body-tumour",  # issue 20, item 4
    "sink-effect",  # issue 20, item 2
    "pet-prediction",  # issue 20 item 3
    "provenance",
)
"""The report's sections, in order (each an element with this id)."""

PATIENT_SUMMARY_FLAGS = {
    "meets_min_lesion_35gy": "LUMEN minimal lesion dose",
    "meets_mean_lesion_10_6gy": "LUTADOSE GTD1",
}
"""``patient_summary``'s flag columns → the threshold (:data:`concordose.dose.thresholds.THRESHOLDS`
name) each evaluates."""

TAC_GRID_POINTS = 200

Row = dict[str, Any]


def cycle_report_key(cycle_key: str) -> str:
    """Store-relative key of a cycle's report: ``_reports/cycles/<cycle_key>.html``."""
    return f"{CYCLE_REPORTS_DIR}/{cycle_key}.html"


def _tac_figures(rows: CycleRows) -> list[dict[str, str]]:
    points: dict[str, list[Row]] = defaultdict(list)
    for row in rows.rows("voi_timepoints"):
        points[row["voi_label"]].append(row)
    fits: dict[str, list[Row]] = defaultdict(list)
    for row in rows.rows("kinetics"):
        fits[row["voi_label"]].append(row)
    figures = []
    for label, voi_points in points.items():
        voi_points.sort(key=lambda r: r["time_point_index"])
        time_h = np.array([r["time_h"] for r in voi_points], dtype=np.float64)
        activity = np.array([r["activity_mbq"] for r in voi_points], dtype=np.float64)
        sds = [r["activity_sd_mbq"] for r in voi_points]
        sd = None if any(s is None for s in sds) else np.array(sds, dtype=np.float64)
        grid = np.linspace(0.0, float(time_h.max()) * 1.15, TAC_GRID_POINTS)
        measured = dict(zip(time_h.tolist(), activity.tolist(), strict=True))
        curves = [
            MethodCurve(
                method=row["kinetics_method"],
                activity_mbq=implied_activity_mbq(row, grid, measured),
                time_points_used_h=tuple(row["time_points_used_h"] or time_h.tolist()),
                tia_mbq_h=row["tia_mbq_h"],
            )
            for row in sorted(
                fits[label],
                key=lambda r: (r["kinetics_method"] == "spectacular_6tp", r["kinetics_method"]),
            )
        ]
        title = f"{label} ({voi_points[0]['voi_type']})"
        figures.append(
            {
                "voi_label": label,
                "src": tac_figure(
                    title, time_h, activity, activity_sd_mbq=sd, grid_h=grid, curves=curves
                ),
            }
        )
    return figures


def _tia_table(rows: CycleRows) -> list[dict[str, Any]]:
    table = []
    for row in rows.rows("kinetics"):
        sd = (
            row["tia_total_sd_mbq_h"]
            if row["tia_total_sd_mbq_h"] is not None
            else row["tia_sd_mbq_h"]
        )
        table.append(
            {
                "voi_label": row["voi_label"],
                "voi_type": row["voi_type"],
                "method": method_chip(row["kinetics_method"]),
                "model": row["model"] or "–",
                "time_points": ", ".join(number_text(t) for t in row["time_points_used_h"] or [])
                or "all",
                "tia": numeric_cell(row["tia_mbq_h"], sd),
                "tia_sd": numeric_cell(sd),
                "teff": numeric_cell(row["teff_h"]),
                "status": row["status"],
            }
        )
    return table


def _dose_table(rows: CycleRows) -> tuple[list[str], list[dict[str, Any]]]:
    dose_methods = list(dict.fromkeys(r["dose_method"] for r in rows.rows("absorbed_dose")))
    grouped: dict[tuple[str, str], dict[str, Row]] = defaultdict(dict)
    types: dict[str, str] = {}
    for row in rows.rows("absorbed_dose"):
        grouped[(row["voi_label"], row["kinetics_method"])][row["dose_method"]] = row
        types[row["voi_label"]] = row["voi_type"]
    table = []
    for (label, kinetics), by_dose in grouped.items():
        cells = []
        for method in dose_methods:
            found = by_dose.get(method)
            if found is None or found["status"] != "ok":
                cells.append(
                    {
                        "text": "n/a" if found is None else "–",
                        "value": "",
                        "title": "" if found is None else found["status"],
                    }
                )
            else:
                cell = numeric_cell(found["mean_dose_gy"], found["dose_sd_gy"])
                cells.append({**cell, "title": ""})
        table.append(
            {
                "voi_label": label,
                "voi_type": types[label],
                "method": method_chip(kinetics),
                "cells": cells,
            }
        )
    return dose_methods, table


def _voxel_table(rows: CycleRows) -> list[dict[str, Any]]:
    return [
        {
            "voi_label": row["voi_label"],
            "method": method_chip(row["kinetics_method"]),
            "dose_method": row["dose_method"],
            "dose_grid": row["dose_grid"],
            "mean": numeric_cell(row["mean_dose_gy"], row["dose_sd_gy"]),
            "d98": numeric_cell(row["d98_gy"]),
            "d50": numeric_cell(row["d50_gy"]),
            "d2": numeric_cell(row["d2_gy"]),
            "status": row["status"],
        }
        for row in rows.rows("voxel_dose")
    ]


def _dvh(rows: CycleRows) -> str | None:
    curves = [
        DvhCurve(
            voi_label=row["voi_label"],
            kinetics_method=row["kinetics_method"],
            dose_method=row["dose_method"],
            dose_gy=np.asarray(row["dvh_dose_gy"], dtype=np.float64),
            mass_fraction=np.asarray(row["dvh_mass_fraction"], dtype=np.float64),
        )
        for row in rows.rows("voxel_dose")
        if row["dvh_dose_gy"] and row["dvh_mass_fraction"]
    ]
    return dvh_figure(curves) if curves else None


def _flag(value: bool | None) -> str:
    return "–" if value is None else ("met" if value else "not met")


def _thresholds(rows: CycleRows) -> list[dict[str, Any]]:
    by_name = {threshold.name: threshold for threshold in THRESHOLDS}
    table = []
    for summary in ("patient_summary", "voxel_dose_summary"):
        for row in rows.rows(summary):
            for column, name in PATIENT_SUMMARY_FLAGS.items():
                threshold = by_name[name]
                value = (
                    row["lesion_min_dose_gy"]
                    if column == "meets_min_lesion_35gy"
                    else row["lesion_mean_dose_gy"]
                )
                table.append(
                    {
                        "method": method_chip(row["kinetics_method"]),
                        "dose_method": row["dose_method"],
                        "threshold": name,
                        "threshold_gy": number_text(threshold.threshold_gy),
                        "value": numeric_cell(value),
                        "flag": _flag(row[column]),
                        "source": threshold.source,
                    }
                )
    return table


def _concordance(rows: CycleRows) -> list[dict[str, Any]]:
    by_name = {threshold.name: threshold for threshold in THRESHOLDS}
    return [
        {
            "threshold": row["threshold_name"],
            "threshold_gy": number_text(row["threshold_gy"]),
            "study": f"{row['study_kinetics_method']} · {row['study_dose_method']}",
            "study_value": numeric_cell(row["study_value_gy"]),
            "study_met": _flag(row["study_met"]),
            "reference": f"{row['reference_kinetics_method']} · {row['reference_dose_method']}",
            "reference_value": numeric_cell(row["reference_value_gy"]),
            "reference_met": _flag(row["reference_met"]),
            "flipped": "yes" if row["flipped"] else ("no" if row["flipped"] is not None else "–"),
            "source": by_name[row["threshold_name"]].source
            if row["threshold_name"] in by_name
            else "",
        }
        for row in rows.threshold_concordance
    ]


def _method_comparison(rows: CycleRows) -> tuple[list[dict[str, str]], list[dict[str, Any]], str]:
    comparison = rows.rows("method_comparison")
    methods = list(dict.fromkeys(r["kinetics_method"] for r in comparison))
    grouped: dict[tuple[str, str], dict[str, Row]] = defaultdict(dict)
    for row in comparison:
        grouped[(row["voi_label"], row["dose_method"])][row["kinetics_method"]] = row
    table = []
    for (label, dose_method), by_method in grouped.items():
        cells = []
        for method in methods:
            compared = by_method.get(method)
            difference = None if compared is None else compared["relative_difference"]
            percent = None if difference is None else 100.0 * difference
            cell = numeric_cell(percent)
            if percent is not None:
                cell["text"] = f"{percent:+.2f}"  # a percentage: two decimals read best
            cells.append(cell)
        table.append({"voi_label": label, "dose_method": dose_method, "cells": cells})
    reference = comparison[0]["reference_kinetics_method"] if comparison else ""
    return [method_chip(m) for m in methods], table, reference


# --- planning and whole-body tumour dose (issue 20, items 1 and 4) ---
def _planning_section(rows: CycleRows) -> dict[str, Any]:
    """The patient's cumulative doses and next-cycle plan (table ``planning``)."""
    if not rows.planning:
        return {"available": False}
    kidneys = next((r for r in rows.planning if r["region"] == "kidneys"), None)
    regions = [
        {
            "region": r["region"],
            "region_type": r["region_type"],
            "cycles": ", ".join(str(n) for n in r["cycle_numbers"]),
            "methods": ", ".join(r["cycle_kinetics_methods"]),
            "cumulative": numeric_cell(r["cumulative_dose_gy"], r["cumulative_dose_sd_gy"]),
            "bed": numeric_cell(r["cumulative_bed_gy"], r["cumulative_bed_sd_gy"]),
            "forecast": numeric_cell(r["forecast_dose_per_gbq_gy"]),
            "decline": numeric_cell(r["cycle_decline_ratio"]),
            "next_dose": numeric_cell(r["expected_next_dose_gy"], r["expected_next_dose_sd_gy"]),
            "after_next": numeric_cell(r["expected_cumulative_dose_gy"]),
        }
        for r in rows.planning
    ]
    plan: dict[str, Any] = {}
    figure = None
    if kidneys is not None:
        probability = kidneys["kidney_probability_exceeding_dose_limit"]
        bed_probability = kidneys["kidney_probability_exceeding_bed_limit"]
        plan = {
            "next_cycle": kidneys["next_cycle_number"],
            "activity": numeric_cell(kidneys["next_activity_gbq"]),
            "binding": kidneys["binding_constraint"],
            "dose_limited": numeric_cell(kidneys["kidney_dose_limited_activity_gbq"]),
            "bed_limited": numeric_cell(kidneys["kidney_bed_limited_activity_gbq"]),
            "risk_limited": numeric_cell(kidneys["kidney_risk_limited_activity_gbq"]),
            "risk": number_text(100.0 * kidneys["exceedance_risk"]),
            "dose_limit": number_text(kidneys["kidney_dose_limit_gy"]),
            "bed_limit": number_text(kidneys["kidney_bed_limit_gy"]),
            "cap": number_text(kidneys["max_activity_gbq"]),
            "after_next": numeric_cell(
                kidneys["kidney_expected_cumulative_dose_gy"],
                kidneys["kidney_expected_cumulative_dose_sd_gy"],
            ),
            "bed_after_next": numeric_cell(
                kidneys["kidney_expected_cumulative_bed_gy"],
                kidneys["kidney_expected_cumulative_bed_sd_gy"],
            ),
            "probability": numeric_cell(None if probability is None else 100.0 * probability),
            "bed_probability": numeric_cell(
                None if bed_probability is None else 100.0 * bed_probability
            ),
            "alpha_beta": number_text(kidneys["alpha_beta_gy"]),
            "repair": number_text(kidneys["repair_half_time_h"]),
        }
        doses = tuple(float(d) for d in kidneys["cycle_dose_gy"] if d is not None)
        if doses:
            figure = cumulative_kidney_figure(
                [
                    CumulativeKidneyBar(
                        label="cycles " + ", ".join(str(n) for n in kidneys["cycle_numbers"]),
                        cycle_dose_gy=doses,
                        expected_next_dose_gy=kidneys["expected_next_dose_gy"],
                        next_activity_gbq=kidneys["next_activity_gbq"],
                        limit_gy=float(kidneys["kidney_dose_limit_gy"]),
                    )
                ]
            )
    return {"available": True, "regions": regions, "plan": plan, "figure": figure}


def _whole_body_section(rows: CycleRows) -> dict[str, Any]:
    """The cycle's whole-body tumour dose per voxel method (table ``whole_body_tumour_dose``)."""
    found = rows.rows("whole_body_tumour_dose")
    if not found:
        return {"available": False}
    points = [
        WholeBodyPoint(
            label=str(r["dose_method"]),
            tumour_volume_ml=float(r["tumour_volume_ml"]),
            mean_dose_gy=r["mean_dose_gy"],
            lesion_voi_gtd_gy=r["lesion_voi_gtd_gy"],
        )
        for r in found
    ]
    return {
        "available": True,
        "threshold": number_text(found[0]["threshold_gy"]),
        "margin": number_text(found[0]["margin_mm"]),
        "organs": ", ".join(found[0]["excluded_organs"]) or "none",
        "rows": [
            {
                "method": method_chip(r["kinetics_method"]),
                "dose_method": r["dose_method"],
                "volume": numeric_cell(r["tumour_volume_ml"]),
                "mean": numeric_cell(r["mean_dose_gy"]),
                "max": numeric_cell(r["max_dose_gy"]),
                "excluded": numeric_cell(r["excluded_volume_ml"]),
                "lesion_volume": numeric_cell(r["lesion_voi_volume_ml"]),
                "recovered": numeric_cell(r["lesion_voi_recovered_ml"]),
                "gtd": numeric_cell(r["lesion_voi_gtd_gy"]),
            }
            for r in found
        ],
        "figure": whole_body_tumour_figure(points, float(found[0]["threshold_gy"])),
    }


# --- end planning and whole-body tumour dose ---


def _provenance(rows: CycleRows) -> dict[str, Any]:
    every = [
        *(row for table in rows.tables.values() for row in table),
        *rows.site_calibrations,
        *rows.threshold_concordance,
    ]
    schema_versions = {
        name: sorted({int(r["schema_version"]) for r in table})
        for name, table in rows.tables.items()
        if table
    }
    return {
        "run_ids": sorted({str(r["run_id"]) for r in every}),
        "flow_run_ids": sorted({str(r["flow_run_id"]) for r in every if r.get("flow_run_id")}),
        "software_versions": sorted({str(r["software_version"]) for r in every}),
        "schema_versions": [
            {"table": name, "versions": ", ".join(map(str, versions))}
            for name, versions in schema_versions.items()
        ],
        "calibration_records": sorted(
            {str(r["calibration_record_id"]) for r in every if r.get("calibration_record_id")}
        ),
        "input_uid_hashes": sorted({h for r in every for h in (r.get("input_uid_hashes") or [])}),
        "report_software_version": __version__,
    }


def _images(images: CycleImages | None) -> tuple[str | None, list[dict[str, str]]]:
    if images is None:
        return None, []
    mip = mip_figure(
        images.time_h, images.mip_mbq, images.voi_masks, images.voi_labels, images.pixel_mm
    )
    slices = [
        {
            "voi_label": s.voi_label,
            "src": dose_slice_figure(
                f"{s.voi_label} — {s.dose_method}", s.dose_gy, s.mask, s.pixel_mm
            ),
        }
        for s in images.dose_slices
    ]
    return mip, slices


def render_cycle_report(
    rows: CycleRows,
    images: CycleImages | None = None,
    *,
    generated_at: datetime | None = None,
) -> str:
    """The report's HTML (self-contained) from a cycle's published rows and image products
    (None: the report says the images are not available)."""
    first = rows.first_row
    processed = bool(rows.rows("voi_timepoints"))
    dose_methods, dose_table = _dose_table(rows)
    comparison_methods, comparison_table, reference = _method_comparison(rows)
    mip, dose_slices = _images(images)
    findings = rows.rows("qc_findings")
    context = {
        "cycle_key": rows.cycle_key,
        "subject_key": first["subject_key"],
        "site_id": first["site_id"],
        "cycle_number": next(
            (r["cycle_number"] for r in rows.rows("patient_summary") if r.get("cycle_number")), None
        ),
        "status": "processed" if processed else "held",
        "generated_at": (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "n_errors": sum(1 for f in findings if f["severity"] == "error"),
        "n_warnings": sum(1 for f in findings if f["severity"] == "warning"),
        "findings": findings,
        "acquisitions": [
            {
                **row,
                "time": number_text(row["time_h"]),
                "cf": number_text(row["calibration_factor_cps_per_mbq"]),
                "injected": number_text(row["injected_activity_mbq"]),
            }
            for row in rows.rows("acquisitions")
        ],
        "calibrations": [
            {
                "record": row["calibration_record_id"],
                "site_id": row["site_id"],
                "camera": f"{row['camera_model'] or '–'} / {row['collimator'] or '–'}",
                "cf": numeric_cell(row["calibration_factor_cps_per_mbq"]),
                "cf_uncertainty": number_text(
                    None
                    if row["calibration_factor_relative_uncertainty"] is None
                    else 100.0 * row["calibration_factor_relative_uncertainty"]
                ),
                "valid": f"{row['valid_from']} – {row['valid_to'] or 'open'}",
                "traceable": "yes" if row["dose_calibrator_traceable"] else "no",
                "psf": number_text(row.get("psf_fwhm_mm")),
                "pvc_model": row.get("partial_volume_model_chosen") or "–",
            }
            for row in rows.site_calibrations
        ],
        "mip": mip,
        "dose_slices": dose_slices,
        "has_voxel_dose": bool(rows.rows("voxel_dose")),
        "tac_figures": _tac_figures(rows),
        "tia_table": _tia_table(rows),
        "dose_methods": dose_methods,
        "dose_table": dose_table,
        "voxel_table": _voxel_table(rows),
        "dvh": _dvh(rows),
        "thresholds": _thresholds(rows),
        "concordance": _concordance(rows),
        "comparison_methods": comparison_methods,
        "comparison_table": comparison_table,
        "reference_method": reference,
        "planning": _planning_section(rows),  # issue 20, item 1
        "whole_body": _whole_body_section(rows),  # issue 20, item 4
        "provenance": _provenance(rows),
        "sink_effect": cycle_sink_section(rows.sink_effect, rows.cycle_key),
        "pet_prediction": _pet_prediction(rows),  # issue 20 item 3
    }
    return TEMPLATES.get_template("cycle_report.html.j2").render(context)


def _pet_prediction(rows: CycleRows) -> list[dict[str, Any]]:
    """The patient's pre-therapy PET prediction per VOI (issue 20 item 3), next to the measured
    first-cycle dose per GBq."""
    return [
        {
            "voi_label": r["voi_label"],
            "voi_type": r["voi_type"],
            "suv_mean": numeric_cell(r["suv_mean"]),
            "suv_peak": numeric_cell(r["suv_peak"]),
            "measured": numeric_cell(r["measured_dose_gy_per_gbq"]),
            "predicted": numeric_cell(r["predicted_dose_gy_per_gbq"]),
            "interval": (
                f"[{number_text(r['prediction_low_gy_per_gbq'])}, "
                f"{number_text(r['prediction_high_gy_per_gbq'])}]"
            ),
            "baseline": numeric_cell(r["baseline_dose_gy_per_gbq"]),
            "validation": r["validation"],
            "level": number_text(100.0 * float(r["interval_level"])),
            "model": r["model"],
        }
        for r in rows.dose_prediction
    ]


def _stored_images(store: ObjectStore, cycle_key: str) -> CycleImages | None:
    path = store.path(image_products_key(cycle_key))
    if path not in store.list_files(path.rsplit("/", 1)[0]):
        return None
    return read_cycle_images(store.read_bytes(path))


def build_cycle_report(
    store: ObjectStore,
    cycle_key: str,
    *,
    connection: duckdb.DuckDBPyConnection | None = None,
    generated_at: datetime | None = None,
) -> str:
    """The report of ``cycle_key`` from the store's current published rows and its image
    products (if published). ``connection``: a :func:`~concordose.results.catalogue.connect`
    to reuse over several cycles.

    Raises:
        ConcordoseError: the cycle has no published rows; the store's errors.
    """
    own = connection is None
    connection = connect(store) if connection is None else connection
    try:
        rows = read_cycle_rows(connection, cycle_key)
    finally:
        if own:
            connection.close()
    return render_cycle_report(rows, _stored_images(store, cycle_key), generated_at=generated_at)


def publish_cycle_report(store: ObjectStore, cycle_key: str, html: str) -> str:
    """Write a report at ``_reports/cycles/<cycle_key>.html`` (atomically); its path."""
    path = store.path(cycle_report_key(cycle_key))
    store.write_bytes_atomically(path, html.encode("utf-8"))
    return path
