"""The consortium dashboard (issue 17, items 2, 3, 5): its sections from published rows, the
empty state of each, no external reference, and one colour per method.

Built from synthetic published rows (the dashboard reads nothing else); the cohort agreement
rows come from the real builder (:func:`concordose.consortium.build_kinetics_agreement`). The
dashboard over a digital-consortium store, against its tables, is tested in
``tests/integration/test_dashboard.py``.
"""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from matplotlib.image import imread

from concordose.consortium import build_kinetics_agreement
from concordose.external_references import external_references
from concordose.kinetics.comparison import relative_bland_altman
from concordose.prediction import build_dose_prediction
from concordose.report import (
    DASHBOARD_KEY,
    DASHBOARD_SECTION_IDS,
    DashboardTables,
    method_style,
    read_dashboard_tables,
    render_dashboard,
)
from concordose.report.dashboard_figures import BlandAltmanSeries, bland_altman_figure
from concordose.report.dashboard_tables import DASHBOARD_COLUMNS
from concordose.report.palette import OKABE_ITO
from concordose.results.object_store import open_object_store
from concordose.results.provenance import Provenance
from concordose.results.publish import publish_tables
from concordose.schemas.tables import TABLES
from concordose.settings import Settings
from concordose.tasks.report import dashboard_task
from tests.dashboard_page import parse_dashboard
from tests.prediction_cohort import prediction_cohort
from tests.results_rows import calibration_table, provenance, run_tables
from tests.sink_cohort import sink_effect_table, sink_patients, sink_tables

GENERATED_AT = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
REFERENCE = "spectacular_6tp"
METHODS = ("lumen_3tp", "hanscheid_stp")
CYCLES = {"cyc-1": "milan", "cyc-2": "milan", "cyc-3": "brussels"}
HELD = {"cyc-4": "brussels"}


def _table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema([TABLES[name].schema.field(c) for c in DASHBOARD_COLUMNS[name]])
    return pa.Table.from_pylist([{c: row.get(c) for c in schema.names} for row in rows], schema)


def _kinetics_rows() -> list[dict[str, Any]]:
    rows = []
    for index, (cycle, site) in enumerate(CYCLES.items()):
        for label, voi_type, tia in (("kidney_left", "organ", 900.0), ("lesion_1", "lesion", 50.0)):
            reference = tia * (1.0 + 0.1 * index)
            for method, factor in ((REFERENCE, 1.0), ("lumen_3tp", 1.05 + 0.01 * index)):
                rows.append(
                    {
                        "site_id": site,
                        "cycle_key": cycle,
                        "voi_label": label,
                        "voi_type": voi_type,
                        "kinetics_method": method,
                        "tia_mbq_h": reference * factor,
                        "method_parameters_hash": f"h-{method}",
                    }
                )
            rows.append(
                {
                    "site_id": site,
                    "cycle_key": cycle,
                    "voi_label": label,
                    "voi_type": voi_type,
                    "kinetics_method": "hanscheid_stp",
                    "tia_mbq_h": reference * (0.9 - 0.02 * index),
                    "method_parameters_hash": "h-hanscheid",
                }
            )
    return rows


def _voi_timepoints_rows() -> list[dict[str, Any]]:
    return [
        {
            "site_id": site,
            "cycle_key": cycle,
            "voi_label": label,
            "time_point_index": point,
            "volume_ml": volume,
        }
        for cycle, site in CYCLES.items()
        for label, volume in (("kidney_left", 150.0), ("lesion_1", 10.0))
        for point in range(3)
    ]


def _calibration(
    site: str, record: str, start: date, end: date | None, cf: float
) -> dict[str, Any]:
    return {
        "site_id": site,
        "calibration_record_id": record,
        "camera_model": "Symbia Intevo",
        "collimator": "MEGP",
        "calibration_factor_cps_per_mbq": cf,
        "calibration_factor_relative_uncertainty": 0.03,
        "valid_from": start,
        "valid_to": end,
        "recovery_a_ml": 1.2,
        "recovery_b": 0.5,
        "contrast_recovery_a_ml": 2.0,
        "dose_calibrator_traceable": True,
        "psf_fwhm_mm": 8.4,
        "psf_fwhm_sd_mm": 0.2,
        "psf_large_object_fwhm_mm": 9.0,
        "psf_large_object_fwhm_sd_mm": 0.1,
        "partial_volume_model_chosen": "rc_curve",
        "run_id": f"run-{record}",
    }


def _threshold_rows() -> list[dict[str, Any]]:
    common = {
        "threshold_name": "LUMEN minimal lesion dose",
        "metric": "min_lesion_dose_gy",
        "threshold_scope": "cycle 1",
        "threshold_gy": 35.0,
        "direction": "at_least",
        "study_kinetics_method": "lumen_3tp",
        "study_dose_method": "sphere",
        "reference_kinetics_method": REFERENCE,
        "reference_dose_method": "sphere",
        "run_id": "run-cohort",
    }
    return [
        {**common, "level": "cycle", "site_id": "milan", "cycle_key": "cyc-1", "n_cycles": 1,
         "study_value_gy": 40.0, "reference_value_gy": 30.0, "study_met": True,
         "reference_met": False, "flipped": True},
        {**common, "level": "cycle", "site_id": "milan", "cycle_key": "cyc-2", "n_cycles": 1,
         "study_value_gy": 20.0, "reference_value_gy": 21.0, "study_met": False,
         "reference_met": False, "flipped": False},
        {**common, "level": "cohort", "site_id": "*", "n_cycles": 2, "n_classified": 2,
         "n_missing": 0, "flip_fraction": 0.5, "cohen_kappa": 0.0, "slope": 1.1,
         "slope_ci_lower": 0.9, "slope_ci_upper": 1.3, "reference_equivalent_gy": 38.5,
         "reference_equivalent_ci_lower_gy": 33.0, "reference_equivalent_ci_upper_gy": 44.0},
    ]  # fmt: skip


def _harmonisation_rows() -> list[dict[str, Any]]:
    rows = []
    for variant, cov in (("raw", 0.14), ("harmonised", 0.02), ("harmonised_pvc", 0.01)):
        for site, error in (("milan", 0.1), ("brussels", -0.05)):
            for label, voi_type in (("kidney_left", "organ"), ("lesion_1", "lesion")):
                rows.append(
                    {
                        "reference_object_id": "digital-P001-cycle1",
                        "reference_object_kind": "digital_patient",
                        "voi_label": label,
                        "voi_type": voi_type,
                        "site_id": site,
                        "variant": variant,
                        "metric": "tia_mbq_h",
                        "kinetics_method": REFERENCE,
                        "dose_method": "none",
                        "measured": 100.0 * (1 + error),
                        "truth": 100.0,
                        "relative_error": error,
                        "n_sites": 2,
                        "cross_site_cov": cov,
                        "run_id": "run-harmonisation",
                    }
                )
    return rows


def _sink_effect_rows() -> list[dict[str, Any]]:
    """issue 20, item 2: the real builder's rows over a small digital cohort with the effect."""
    patients = sink_patients(sink_effect=True, sites=("brussels", "milan"), per_site=8)
    rows: list[dict[str, Any]] = sink_effect_table(sink_tables(patients)).to_pylist()
    return rows


def _prediction_rows() -> list[dict[str, Any]]:
    features, doses, summaries, _ = prediction_cohort()
    table = build_dose_prediction(
        features, doses, summaries, Provenance(run_id="run-cohort"), reference_method=REFERENCE
    )
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def _published(**overrides: list[dict[str, Any]]) -> DashboardTables:
    kinetics = _kinetics_rows()
    voi_timepoints = _voi_timepoints_rows()
    full_kinetics = pa.Table.from_pylist(kinetics)
    absorbed = pa.table(
        {
            name: pa.array([], type=TABLES["absorbed_dose"].schema.field(name).type)
            for name in (
                "site_id", "cycle_key", "voi_label", "voi_type", "kinetics_method",
                "dose_method", "mean_dose_gy", "method_parameters_hash",
            )
        }
    )  # fmt: skip
    agreement = build_kinetics_agreement(
        full_kinetics,
        absorbed,
        pa.Table.from_pylist(voi_timepoints),
        Provenance(run_id="run-cohort"),
    ).to_pylist()
    rows: dict[str, list[dict[str, Any]]] = {
        "site_calibrations": [
            _calibration("milan", "milan-2025", date(2025, 1, 1), date(2025, 12, 31), 9.1),
            _calibration("milan", "milan-2026", date(2026, 1, 1), None, 9.3),
            _calibration("brussels", "brussels-2026", date(2026, 1, 1), None, 10.8),
        ],
        "kinetics_agreement": agreement,
        "threshold_concordance": _threshold_rows(),
        "harmonisation_agreement": _harmonisation_rows(),
        "qc_findings": [
            {"site_id": "brussels", "cycle_key": "cyc-4", "severity": "error",
             "check_name": "calibration", "message": "no calibration record covers 2026-11-02"},
            {"site_id": "milan", "cycle_key": "cyc-1", "severity": "warning",
             "check_name": "voxel_geometry", "message": "voxel size outside the protocol"},
        ],
        "acquisitions": [
            {"site_id": site, "cycle_key": cycle, "time_point_index": point, "qc_status": "pass"}
            for cycle, site in {**CYCLES, **HELD}.items()
            for point in range(3)
        ],
        "kinetics": kinetics,
        "voi_timepoints": voi_timepoints,
        "planning": PLANNING_ROWS,
        "whole_body_tumour_dose": WHOLE_BODY_ROWS,
        "sink_effect": _sink_effect_rows(),  # issue 20, item 2
        "dose_prediction": _prediction_rows(),  # issue 20 item 3
    }  # fmt: skip
    rows.update(overrides)
    tables = {name: _table(name, rows[name]) for name in DASHBOARD_COLUMNS}
    return DashboardTables("/data/published", tables, {"run-cohort": "2026-12-05T02:00:00+00:00"})


# issue 20: one kidneys row per patient (and a lesion row the section ignores), and the
# whole-body tumour dose of two cycles by two voxel methods
PLANNING_ROWS: list[dict[str, Any]] = [
    {"site_id": "milan", "region": "kidneys", "n_cycles": 2, "cycle_dose_gy": [3.0, 2.5],
     "cumulative_dose_gy": 5.5, "cumulative_bed_gy": 5.9, "expected_next_dose_gy": 2.9,
     "next_activity_gbq": 7.4, "binding_constraint": "max_activity",
     "kidney_dose_limit_gy": 23.0, "kidney_expected_cumulative_dose_gy": 8.4,
     "kidney_probability_exceeding_dose_limit": 0.0001, "run_id": "run-cohort",
     "created_at": GENERATED_AT},
    {"site_id": "brussels", "region": "kidneys", "n_cycles": 3,
     "cycle_dose_gy": [7.0, 6.5, 6.8], "cumulative_dose_gy": 20.3, "cumulative_bed_gy": 25.1,
     "expected_next_dose_gy": 2.7, "next_activity_gbq": 2.9, "binding_constraint": "dose_limit",
     "kidney_dose_limit_gy": 23.0, "kidney_expected_cumulative_dose_gy": 23.0,
     "kidney_probability_exceeding_dose_limit": 0.5, "run_id": "run-cohort",
     "created_at": GENERATED_AT},
    {"site_id": "brussels", "region": "lesion_1", "n_cycles": 3, "cycle_dose_gy": [30.0],
     "cumulative_dose_gy": 80.0, "kidney_dose_limit_gy": 23.0, "run_id": "run-cohort",
     "binding_constraint": "dose_limit", "created_at": GENERATED_AT},
]  # fmt: skip
WHOLE_BODY_ROWS: list[dict[str, Any]] = [
    {"site_id": site, "cycle_number": cycle, "kinetics_method": "voxel_mono_exponential",
     "dose_method": method, "threshold_gy": 5.0, "tumour_volume_ml": volume,
     "mean_dose_gy": mean, "lesion_voi_gtd_gy": gtd}
    for site, cycle, method, volume, mean, gtd in (
        ("milan", 1, "ldm", 120.0, 18.0, 15.0),
        ("milan", 2, "ldm", 95.0, 16.0, 13.5),
        ("milan", 1, "vsv_4.42mm", 140.0, 16.5, 14.0),
    )
]  # fmt: skip


def test_every_section_is_built_from_the_published_rows() -> None:
    tables = _published()
    html = render_dashboard(tables, generated_at=GENERATED_AT)
    page = parse_dashboard(html)
    assert set(DASHBOARD_SECTION_IDS) <= page.ids
    assert "not available" not in html

    # counts: 3 processed + 1 held cycle (no voi_timepoints), and why it is held
    counts = {c["data-site"]: c for c in page.table("cycle-counts", "held")}
    assert float(counts["brussels"]["data-value"]) == 1
    assert float(counts["milan"]["data-value"]) == 0
    assert float(counts["*"]["data-value"]) == 1
    processed = {c["data-site"]: c for c in page.table("cycle-counts", "processed")}
    assert float(processed["*"]["data-value"]) == 3
    assert "no calibration record covers 2026-11-02 (1×)" in html
    assert "voxel size outside the protocol" not in html  # a processed cycle's warning

    # calibration history: every record, one figure per site
    records = {c["data-value"] for c in page.table("calibrations", "cf")}
    assert records == {"9.1", "9.3", "10.8"}
    assert html.count('class="calibration-history"') == 2

    # method agreement: every published bias and limit, per site and pooled, per VOI class
    agreement = tables.table("kinetics_agreement").to_pylist()
    shown = {
        (c["data-site"], c["data-voi-class"], c["data-method"]): c
        for c in page.table("agreement", "bias")
    }
    assert len(shown) == len(agreement) > 0
    for row in agreement:
        cell = shown[(row["site_id"], row["voi_class"], row["kinetics_method"])]
        assert float(cell["data-value"]) == row["bias_percent"]
    assert {row["site_id"] for row in agreement} == {"milan", "brussels", "*"}
    assert html.count('class="bland-altman"') == 3  # pooled, brussels, milan

    # harmonisation: CoV per variant of the reference-object VOI
    covs = {(c["data-voi"], c["data-variant"]): c for c in page.table("harmonisation-cov", "cov")}
    assert float(covs[("kidney_left", "raw")]["data-value"]) == pytest.approx(14.0)
    assert float(covs[("lesion_1", "harmonised_pvc")]["data-value"]) == pytest.approx(1.0)

    # threshold concordance: the cohort row's numbers
    (flips,) = page.table("threshold-cohort", "flip-fraction")
    assert float(flips["data-value"]) == pytest.approx(50.0)
    (equivalent,) = page.table("threshold-cohort", "equivalent")
    assert float(equivalent["data-value"]) == 38.5
    assert "[33, 44]" in html

    # planning (issue 20): each patient's kidneys row, no patient key
    cumulative = {
        (c["data-site"], c["data-patient"]): c for c in page.table("planning", "cumulative")
    }
    assert {k: float(c["data-value"]) for k, c in cumulative.items()} == {
        ("brussels", "1"): 20.3,
        ("milan", "1"): 5.5,
    }
    activities = [float(c["data-value"]) for c in page.table("planning", "next-activity")]
    assert sorted(activities) == [2.9, 7.4]
    assert html.count('class="planning"') == 2  # the figure and the table
    # whole-body tumour dose: the first voxel method's rows (ldm), per cycle
    volumes = {
        c["data-cycle"]: float(c["data-value"]) for c in page.table("whole-body-tumour", "volume")
    }
    assert volumes == {"milan c1": 120.0, "milan c2": 95.0}
    assert '<figure class="whole-body-tumour">' in html


def test_bias_lines_are_the_statistics_of_the_plotted_points() -> None:
    """The points the Bland–Altman plot draws (relative differences of the kinetics pairs)
    summarise to the published bias: one definition of the difference in both places."""
    tables = _published()
    kinetics = tables.table("kinetics").to_pylist()
    reference = {
        (r["cycle_key"], r["voi_label"]): r["tia_mbq_h"]
        for r in kinetics
        if r["kinetics_method"] == REFERENCE
    }
    lumen = [
        r
        for r in kinetics
        if r["kinetics_method"] == "lumen_3tp" and r["voi_label"] == "kidney_left"
    ]
    agreement = relative_bland_altman(
        np.array([r["tia_mbq_h"] for r in lumen]),
        np.array([reference[(r["cycle_key"], r["voi_label"])] for r in lumen]),
        method="lumen_3tp",
        reference=REFERENCE,
    )
    (pooled,) = [
        r for r in tables.table("kinetics_agreement").to_pylist()
        if r["site_id"] == "*" and r["voi_class"] == "kidney_left"
        and r["kinetics_method"] == "lumen_3tp" and r["metric"] == "tia"
    ]  # fmt: skip
    assert pooled["bias_percent"] == pytest.approx(agreement.bias_percent)


def test_a_store_without_tables_says_so_in_every_section() -> None:
    empty: dict[str, list[dict[str, Any]]] = {name: [] for name in DASHBOARD_COLUMNS}
    html = render_dashboard(_published(**empty), generated_at=GENERATED_AT)
    page = parse_dashboard(html)
    assert set(DASHBOARD_SECTION_IDS) <= page.ids
    assert "No cycle published in this store" in html
    assert "No calibration history: this store has no <code>site_calibrations</code>" in html
    assert "Method agreement is not available" in html
    assert "Harmonisation: not available" in html
    assert "a clinical store has no truth" in html
    assert "Threshold concordance is not available" in html
    assert "Planning is not available" in html
    assert "Whole-body tumour dose is not available" in html
    assert "Tumour-sink effect is not available" in html  # issue 20, item 2
    assert "Pre-therapy PET dose prediction is not available" in html
    assert "<img" not in html


def test_a_clinical_store_has_no_harmonisation_but_every_other_section() -> None:
    html = render_dashboard(_published(harmonisation_agreement=[]), generated_at=GENERATED_AT)
    assert "Harmonisation: not available" in html
    assert "Method agreement is not available" not in html
    assert html.count("not available") == 1


def test_agreement_without_kinetics_rows_draws_the_published_lines_only() -> None:
    html = render_dashboard(_published(kinetics=[]), generated_at=GENERATED_AT)
    assert "only the published lines are drawn" in html
    assert html.count('class="bland-altman"') == 3


def test_no_external_reference_script_or_identifier(tmp_path: Path) -> None:
    html = render_dashboard(_published(), generated_at=GENERATED_AT)
    page_file = tmp_path / "index.html"
    page_file.write_text(html, encoding="utf-8")
    assert external_references(page_file) == []  # the project's one scanner
    assert not re.search(r"https?://", html)
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "@import" not in html
    assert "url(" not in html
    page = parse_dashboard(html)
    assert page.references
    for reference in page.references:
        assert reference.startswith(("data:image/png;base64,", "#")), reference[:40]
    assert "subject_key" not in html  # no per-patient key is shown at all


def _colours_in(data_uri: str) -> set[str]:
    pixels = imread(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1])), format="png")
    rgb = np.round(pixels[..., :3] * 255).astype(int).reshape(-1, 3)
    return {"#{:02X}{:02X}{:02X}".format(*colour) for colour in np.unique(rgb, axis=0)}


def test_each_method_is_drawn_and_listed_in_its_palette_colour() -> None:
    series = [
        BlandAltmanSeries(
            method,
            "kidney_left",
            np.array([100.0, 200.0, 300.0]),
            np.array([-5.0, 0.0, 5.0]),
            bias_percent=0.0,
            loa_lower_percent=-9.8,
            loa_upper_percent=9.8,
        )
        for method in METHODS
    ]
    colours = _colours_in(bland_altman_figure("TIA", series, reference_method=REFERENCE))
    for method in METHODS:
        assert method_style(method).colour in colours
    assert OKABE_ITO["bluish_green"] not in colours  # no other method's colour appears

    html = render_dashboard(_published(), generated_at=GENERATED_AT)
    for method in METHODS:
        colour = method_style(method).colour
        assert f'<span class="chip" style="background: {colour}"></span>{method}' in html


def test_the_nightly_task_skips_an_empty_store_and_writes_a_published_one(
    tmp_path: Path,
) -> None:
    store = open_object_store(str(tmp_path / "store"), Settings())
    assert dashboard_task.fn(store) is None  # nothing published: no page
    assert not (tmp_path / "store" / DASHBOARD_KEY).exists()

    publish_tables(
        store,
        {**run_tables("run-1", {"cyc-a": 40.0}), "site_calibrations": [calibration_table("run-1")]},
        provenance("run-1"),
        validate=False,
    )
    path = dashboard_task.fn(store)
    assert path == str(tmp_path / "store" / DASHBOARD_KEY)
    html = Path(path).read_text()
    tables = read_dashboard_tables(store)
    assert tables.table("kinetics").num_rows == 2  # the published rows, read back
    cf = parse_dashboard(html).table("calibrations", "cf")
    assert [float(c["data-value"]) for c in cf] == [9.5]
    assert "Method agreement is not available" in html  # no cohort table published


# --- issue 20, item 2: the tumour-sink effect --------------------------------------------------


def test_the_sink_effect_section_shows_every_published_fit_and_its_plot() -> None:
    tables = _published()
    html = render_dashboard(tables, generated_at=GENERATED_AT)
    page = parse_dashboard(html)
    fits = [r for r in tables.table("sink_effect").to_pylist() if r["level"] == "fit"]
    shown = {
        (c["data-site"], c["data-oar"], c["data-burden"]): c
        for c in page.table("sink-effect-fits", "slope")
    }
    assert len(shown) == len(fits) > 0
    for row in fits:
        cell = shown[(row["site_id"], row["oar"], row["burden_metric"])]
        assert float(cell["data-value"]) == row["slope_h_per_unit"]
    assert {r["site_id"] for r in fits} == {"brussels", "milan", "*"}
    doses = {
        (c["data-site"], c["data-oar"], c["data-burden"]): float(c["data-value"])
        for c in page.table("sink-effect-fits", "dose-change")
    }
    pooled = next(r for r in fits if r["site_id"] == "*" and r["oar"] == "kidneys")
    key = ("*", "kidneys", pooled["burden_metric"])
    assert doses[key] == pooled["dose_change_gy_per_gbq_per_unit"]
    assert html.count('class="sink-effect"') == 1
    start = html.index('id="sink-effect"')
    end = html.index("</section>", start)  # the section's own figure, not a later section's
    (figure,) = [
        ref for ref in page.references if ref.startswith("data:image/png") and ref in html
        and start < html.index(ref) < end
    ]  # fmt: skip
    image = imread(io.BytesIO(base64.b64decode(figure.split(",", 1)[1])))
    assert image.shape[0] > 300  # two OARs (kidneys, spleen) × two burden metrics


def test_sink_effect_rows_without_a_fit_say_why() -> None:
    cycles = [r for r in _sink_effect_rows() if r["level"] == "cycle"]
    html = render_dashboard(_published(sink_effect=cycles), generated_at=GENERATED_AT)
    assert "No fit yet" in html
    assert "Tumour-sink effect is not available" not in html


# --- issue 20 item 3: pre-therapy PET dose prediction ----------------------------------------


def test_the_dose_prediction_section_plots_each_held_out_site_and_lists_its_metrics() -> None:
    tables = _published()
    html = render_dashboard(tables, generated_at=GENERATED_AT)
    page = parse_dashboard(html)
    assert "dose-prediction" in page.ids
    section = html[html.index('<section id="dose-prediction">') :]
    section = section[: section.index("</section>")]
    assert '<img alt="Predicted against measured dose per GBq' in section
    published = {
        (r["site_id"], r["voi_type"]): r
        for r in tables.table("dose_prediction").to_pylist()
        if r["row_kind"] == "metrics"
    }
    shown = page.table("dose-prediction-metrics", "mape")
    assert len(shown) == len(published)
    pooled = next(c for c in shown if c["data-site"] == "*")
    assert float(pooled["data-value"]) == pytest.approx(published["*", "*"]["mape_percent"])
    baseline = page.table("dose-prediction-metrics", "baseline-mape")
    for model_cell, baseline_cell in zip(shown, baseline, strict=True):
        assert float(baseline_cell["data-value"]) > float(model_cell["data-value"])
    # 3 sites × 3 organs of the PET-only patients are predicted by the model of every site
    assert "9 VOIs of patients with a PET and no therapy yet" in section
    assert "lyon-s6" not in section  # no patient key on the page
    # one panel per held-out site: three side by side
    src = section.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    image = imread(io.BytesIO(base64.b64decode(src)), format="png")
    assert image.shape[1] > 2.5 * image.shape[0]
