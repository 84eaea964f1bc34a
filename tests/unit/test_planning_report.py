"""The planning and whole-body tumour dose figures and cycle-report sections (issue 20, item
5): each figure draws the table's numbers, and the report shows them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from matplotlib.patches import Rectangle

from concordose.report import SECTION_IDS, CycleRows, render_cycle_report
from concordose.report.planning_figures import (
    CumulativeKidneyBar,
    WholeBodyPoint,
    cumulative_kidney_figure,
    draw_cumulative_kidney,
    draw_whole_body_tumour,
    whole_body_tumour_figure,
)
from tests.dashboard_page import parse_dashboard

GENERATED_AT = datetime(2026, 12, 6, tzinfo=UTC)
PROVENANCE = {
    "schema_version": 1,
    "software_version": "0.1.0",
    "run_id": "run-1",
    "flow_run_id": None,
    "calibration_record_id": "padua-2026",
    "input_uid_hashes": ["abc123"],
}


def _bars(figure: Any, axes_index: int = 0) -> list[Rectangle]:
    axes = figure.axes[axes_index]
    return [p for p in axes.patches if isinstance(p, Rectangle)]


def test_the_kidney_figure_stacks_the_cycles_and_the_planned_one_under_the_limit() -> None:
    bar = CumulativeKidneyBar("cycles 1, 2", (3.0, 2.5), 2.9, 7.4, 23.0)
    figure = draw_cumulative_kidney([bar])
    bars = _bars(figure)
    assert [r.get_y() for r in bars] == pytest.approx([0.0, 3.0, 5.5])
    assert [r.get_height() for r in bars] == pytest.approx([3.0, 2.5, 2.9])
    (limit,) = [line for line in figure.axes[0].lines if line.get_linestyle() == "--"]
    assert np.asarray(limit.get_ydata(), dtype=np.float64).tolist() == [23.0, 23.0]
    assert "7.4 GBq" in [t.get_text() for t in figure.axes[0].texts]


def test_the_whole_body_figure_draws_volume_mean_dose_and_the_lesion_gtd() -> None:
    points = [WholeBodyPoint("ldm", 120.0, 18.0, 15.0), WholeBodyPoint("vsv", 140.0, 16.5, None)]
    figure = draw_whole_body_tumour(points, 5.0)
    assert [r.get_height() for r in _bars(figure, 0)] == [120.0, 140.0]
    doses = [r.get_height() for r in _bars(figure, 1)]
    assert doses[:2] == [18.0, 16.5]
    assert doses[2] == 15.0
    assert np.isnan(doses[3])


def _planning_rows() -> list[dict[str, Any]]:
    common = {
        "site_id": "padua",
        "subject_key": "sub-1",
        "kidney_dose_limit_gy": 23.0,
        "kidney_bed_limit_gy": 28.0,
        "max_activity_gbq": 7.4,
        "exceedance_risk": 0.05,
        "alpha_beta_gy": 2.6,
        "repair_half_time_h": 2.8,
        "next_activity_gbq": 7.4,
        "binding_constraint": "max_activity",
        "kidney_dose_limited_activity_gbq": 30.2,
        "kidney_bed_limited_activity_gbq": 28.1,
        "kidney_risk_limited_activity_gbq": 25.0,
        "kidney_expected_cumulative_dose_gy": 8.4,
        "kidney_expected_cumulative_dose_sd_gy": 0.3,
        "kidney_expected_cumulative_bed_gy": 9.1,
        "kidney_expected_cumulative_bed_sd_gy": 0.35,
        "kidney_probability_exceeding_dose_limit": 0.0,
        "kidney_probability_exceeding_bed_limit": 0.0,
        "next_cycle_number": 3,
        "cycle_numbers": [1, 2],
        "cycle_kinetics_methods": ["mono_exponential", "prior_cycles_stp"],
        "n_cycles": 2,
    }
    return [
        {
            **common,
            "region": "kidneys",
            "region_type": "organ",
            "cycle_dose_gy": [3.0, 2.5],
            "cumulative_dose_gy": 5.5,
            "cumulative_dose_sd_gy": 0.2,
            "cumulative_bed_gy": 5.9,
            "cumulative_bed_sd_gy": 0.25,
            "forecast_dose_per_gbq_gy": 0.39,
            "cycle_decline_ratio": None,
            "expected_next_dose_gy": 2.9,
            "expected_next_dose_sd_gy": 0.2,
            "expected_cumulative_dose_gy": 8.4,
        },
        {
            **common,
            "region": "lesion_1",
            "region_type": "lesion",
            "cycle_dose_gy": [30.0, 27.0],
            "cumulative_dose_gy": 57.0,
            "cumulative_dose_sd_gy": 3.0,
            "cumulative_bed_gy": None,
            "cumulative_bed_sd_gy": None,
            "forecast_dose_per_gbq_gy": 3.3,
            "cycle_decline_ratio": 0.9,
            "expected_next_dose_gy": 24.3,
            "expected_next_dose_sd_gy": 2.0,
            "expected_cumulative_dose_gy": 81.3,
        },
    ]


def _whole_body_rows() -> list[dict[str, Any]]:
    return [
        {
            "site_id": "padua",
            "subject_key": "sub-1",
            "cycle_key": "cyc-1",
            "kinetics_method": "voxel_mono_exponential",
            "dose_method": method,
            "threshold_gy": 5.0,
            "margin_mm": 10.0,
            "excluded_organs": ["kidney_left", "kidney_right", "liver"],
            "tumour_volume_ml": volume,
            "mean_dose_gy": mean,
            "max_dose_gy": 60.0,
            "excluded_volume_ml": 300.0,
            "lesion_voi_volume_ml": 20.0,
            "lesion_voi_recovered_ml": 14.0,
            "lesion_voi_gtd_gy": 22.6,
            **PROVENANCE,
        }
        for method, volume, mean in (("ldm", 14.1, 24.9), ("vsv_4.42mm", 7.9, 31.2))
    ]


def _cell(html: str, css: str) -> list[float]:
    return [
        float(c["data-value"])
        for c in parse_dashboard(html).cells
        if css in c["class"].split() and c["data-value"]
    ]


def test_the_cycle_report_shows_the_patients_plan_and_the_whole_body_tumour_dose() -> None:
    rows = CycleRows(
        "cyc-1",
        {"whole_body_tumour_dose": _whole_body_rows()},
        site_calibrations=[],
        threshold_concordance=[],
        planning=_planning_rows(),
    )
    html = render_cycle_report(rows, None, generated_at=GENERATED_AT)
    for section in SECTION_IDS:
        assert f'id="{section}"' in html
    planning = html[html.index('id="planning"') : html.index('id="whole-body-tumour"')]
    assert _cell(planning, "next-activity") == [7.4]
    assert _cell(planning, "cumulative") == [5.5, 57.0]
    assert _cell(planning, "next-dose") == [2.9, 24.3]
    kidneys = _planning_rows()[0]
    expected = cumulative_kidney_figure(
        [CumulativeKidneyBar("cycles 1, 2", (3.0, 2.5), 2.9, 7.4, 23.0)]
    )
    shown = re.search(r'<figure class="planning"><img [^>]*src="([^"]+)"', planning)
    assert shown is not None
    assert shown[1] == expected
    assert kidneys["binding_constraint"] in planning
    whole = html[html.index('id="whole-body-tumour"') : html.index('id="provenance"')]
    assert _cell(whole, "volume") == [14.1, 7.9]
    assert _cell(whole, "gtd") == [22.6, 22.6]
    points = [
        WholeBodyPoint(r["dose_method"], r["tumour_volume_ml"], r["mean_dose_gy"], 22.6)
        for r in _whole_body_rows()
    ]
    drawn = re.search(r'<figure class="whole-body-tumour"><img [^>]*src="([^"]+)"', whole)
    assert drawn is not None
    assert drawn[1] == whole_body_tumour_figure(points, 5.0)


def test_a_cycle_without_planning_or_voxel_dose_says_so() -> None:
    rows = CycleRows(
        "cyc-1",
        {
            "qc_findings": [
                {
                    "subject_key": "sub-1",
                    "site_id": "padua",
                    "cycle_key": "cyc-1",
                    "finding_index": 0,
                    "check_name": "calibration",
                    "severity": "error",
                    "message": "no valid calibration",
                    "time_point_index": None,
                    **PROVENANCE,
                }
            ]
        },
        site_calibrations=[],
        threshold_concordance=[],
    )
    html = render_cycle_report(rows, None, generated_at=GENERATED_AT)
    assert "No planning" in html
    assert "No whole-body tumour dose" in html
    assert '<figure class="planning">' not in html
