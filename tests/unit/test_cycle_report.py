"""Report building blocks (issue 17, item 1 and 3): the method palette, the curves a kinetics row
implies, the image products' file, and a held cycle's report (no science rows).

The report of a processed cycle against its published tables is tested end to end in
``tests/integration/test_cycle_report.py``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from concordose.dose.voxel_dosimetry import lesion_slice_box, voxel_kinetics_names
from concordose.kinetics.fitting.model import BI_UPTAKE, evaluate_model
from concordose.kinetics.registry import KINETICS_METHODS
from concordose.prediction import build_dose_prediction
from concordose.quant.voi import CroppedMask
from concordose.report import (
    SECTION_IDS,
    CycleRows,
    cycle_images,
    method_style,
    read_cycle_images,
    render_cycle_report,
    write_cycle_images,
)
from concordose.report.curves import implied_activity_mbq
from concordose.report.cycle_report import build_cycle_report
from concordose.report.images import MAX_MIP_PIXELS
from concordose.report.palette import METHOD_STYLES, OKABE_ITO, UNKNOWN_METHOD_STYLE
from concordose.results.object_store import open_object_store
from concordose.results.publish import publish_tables
from concordose.schemas.tables import DOSE_PREDICTION
from concordose.settings import Settings
from tests.prediction_cohort import REFERENCE, prediction_cohort
from tests.results_rows import provenance, run_tables


def test_every_kinetics_method_has_its_own_colour_blind_safe_style() -> None:
    names = KINETICS_METHODS.names() + voxel_kinetics_names()
    styles = [method_style(name) for name in names]
    assert UNKNOWN_METHOD_STYLE not in styles
    assert set(KINETICS_METHODS.names()) == set(METHOD_STYLES)
    assert len({(s.colour, s.line_style) for s in styles}) == len(names)
    assert {s.colour for s in styles} <= set(OKABE_ITO.values()) - {OKABE_ITO["yellow"]}


def test_implied_curve_is_the_fitted_model() -> None:
    time_h = np.array([0.0, 4.0, 24.0, 96.0, 240.0])
    parameters = {"a1_mbq": 50.0, "a2_mbq": 20.0, "lambda1_per_h": 0.01, "lambda2_per_h": 0.1}
    parameters["lambda_uptake_per_h"] = 0.5
    row = {"status": "ok", "fit_parameters_json": json.dumps(parameters)}
    # the model's own evaluation, from its transformed parameters (log amplitudes, log rate
    # increments over a zero floor)
    rates = [0.01, 0.1, 0.5]
    theta = np.log([[50.0, 20.0, rates[0], rates[1] - rates[0], rates[2] - rates[1]]])
    expected, _ = evaluate_model(theta, time_h, BI_UPTAKE, np.zeros(3))
    curve = implied_activity_mbq(row, time_h)
    assert curve is not None
    np.testing.assert_allclose(curve, expected[0], rtol=1e-12, atol=1e-12)
    assert curve[0] == pytest.approx(0.0, abs=1e-12)  # uptake: nothing at injection


def test_implied_curve_of_a_simplified_method_and_of_none() -> None:
    time_h = np.array([0.0, 100.0])
    mono = {"status": "ok", "fit_parameters_json": None, "a0_mbq": 10.0, "lambda_eff_per_h": 0.01}
    curve = implied_activity_mbq(mono, time_h)
    assert curve is not None
    np.testing.assert_allclose(curve, [10.0, 10.0 * np.exp(-1.0)])
    trapezoid = {"status": "ok", "fit_parameters_json": '{"tail_fraction": 0.2}', "a0_mbq": None}
    trapezoid["lambda_eff_per_h"] = None
    assert implied_activity_mbq(trapezoid, time_h) is None
    assert implied_activity_mbq({**mono, "status": "fit failed"}, time_h) is None


def test_single_point_formula_implies_its_mono_exponential() -> None:
    # Hänscheid: TIA = A(t)·2t/ln2 is the mono-exponential with Teff = t through A(t)
    point_h, activity = 96.0, 20.0
    row = {
        "status": "ok",
        "fit_parameters_json": None,
        "a0_mbq": None,
        "lambda_eff_per_h": None,
        "time_points_used_h": [point_h],
        "tia_mbq_h": activity * 2 * point_h / np.log(2),
    }
    grid = np.array([0.0, point_h, 2 * point_h])
    curve = implied_activity_mbq(row, grid, {4.0: 80.0, point_h: activity})
    assert curve is not None
    np.testing.assert_allclose(curve, [2 * activity, activity, activity / 2], rtol=1e-9)
    assert implied_activity_mbq(row, grid) is None  # without the measured point: no curve


def test_image_products_round_trip_and_are_downsampled_by_maximum() -> None:
    rng = np.random.default_rng(3)
    activity = rng.random((2, 300, 20, 90))
    activity[1, 150, 5, 45] = 7.0  # a hot voxel survives the downsampling
    masks = np.zeros((1, 300, 20, 90), dtype=bool)
    masks[0, 100:120, 5:8, 10:20] = True
    images = cycle_images(
        np.array([4.0, 24.0]), activity, (2.0, 3.0, 4.0), voi_masks=masks, voi_labels=["kidney"]
    )
    assert max(images.mip_mbq.shape[1:]) <= MAX_MIP_PIXELS
    assert images.mip_mbq[1].max() == pytest.approx(7.0)
    assert images.pixel_mm == (2.0 * 3, 4.0 * 3)  # factor ceil(300 / 128) = 3
    assert images.voi_masks[0].any()
    back = read_cycle_images(write_cycle_images(images))
    np.testing.assert_array_equal(back.mip_mbq, images.mip_mbq)
    np.testing.assert_array_equal(back.voi_masks, images.voi_masks)
    assert back.voi_labels == ("kidney",)
    assert back.pixel_mm == images.pixel_mm


def _finding(index: int, severity: str, message: str) -> dict[str, object]:
    return {
        "subject_key": "sub-1",
        "site_id": "padua",
        "cycle_key": "cyc-1",
        "finding_index": index,
        "check_name": "calibration",
        "severity": severity,
        "message": message,
        "time_point_index": None,
        "schema_version": 1,
        "software_version": "0.1.0",
        "run_id": "run-1",
        "flow_run_id": None,
        "calibration_record_id": "none",
        "input_uid_hashes": ["abc123"],
    }


def test_held_cycle_report_shows_findings_and_says_what_is_missing() -> None:
    rows = CycleRows(
        "cyc-1",
        {"qc_findings": [_finding(0, "error", "no valid calibration <record> for padua")]},
        site_calibrations=[],
        threshold_concordance=[],
    )
    html = render_cycle_report(rows, None, generated_at=datetime(2026, 1, 1, tzinfo=UTC))
    for section in SECTION_IDS:
        assert f'id="{section}"' in html
    assert "held" in html
    assert "no valid calibration &lt;record&gt; for padua" in html  # autoescaped
    assert "Images are not available for this cycle" in html
    assert "No TIA: the cycle was not processed." in html
    assert "run-1" in html
    assert "abc123" in html
    assert not re.search(r"https?://", html)


def test_lesion_slice_is_its_fullest_slice_with_a_clipped_margin() -> None:
    mask = np.zeros((3, 4, 5), dtype=bool)
    mask[1] = True  # the fullest slice
    mask[0, 0, 0] = True
    crop = CroppedMask((slice(10, 13), slice(2, 6), slice(50, 55)), mask)
    box, on_slice = lesion_slice_box(crop, (20, 30, 60), (10.0, 5.0))  # 2 rows, 4 columns margin
    assert box == (slice(11, 12), slice(0, 8), slice(46, 59))  # rows clipped at 0
    assert on_slice.shape == (8, 13)
    assert on_slice.sum() == 4 * 5
    assert on_slice[2:6, 4:9].all()


# --- issue 20, item 2: where this patient sits on the cohort's tumour-sink regression ----------


def test_the_report_places_its_cycle_on_the_cohorts_sink_regression() -> None:
    from tests.dashboard_page import parse_dashboard  # noqa: PLC0415
    from tests.sink_cohort import sink_effect_table, sink_patients, sink_tables  # noqa: PLC0415

    cohort = sink_effect_table(
        sink_tables(sink_patients(sink_effect=True, sites=("padua", "milan"), per_site=8))
    ).to_pylist()
    mine = [r for r in cohort if r["level"] == "cycle" and r["site_id"] == "padua"][:2]
    cycle_key = str(mine[0]["cycle_key"])
    rows = CycleRows(
        cycle_key,
        {"qc_findings": [{**_finding(0, "info", "ok"), "cycle_key": cycle_key}]},
        site_calibrations=[],
        threshold_concordance=[],
        sink_effect=cohort,
    )
    html = render_cycle_report(rows, None, generated_at=datetime(2026, 1, 1, tzinfo=UTC))
    page = parse_dashboard(html)
    assert 'id="sink-effect"' in html
    fits = {(r["oar"], r["burden_metric"], r["site_id"]): r for r in cohort if r["level"] == "fit"}
    own = [r for r in cohort if r["level"] == "cycle" and r["cycle_key"] == cycle_key]
    assert {r["oar"] for r in own} == {"kidneys", "spleen"}
    measured = {(c["data-oar"], c["data-burden"]): c for c in page.table("sink-effect", "measured")}
    pooled = {
        (c["data-oar"], c["data-burden"]): c for c in page.table("sink-effect", "pooled-predicted")
    }
    site = {
        (c["data-oar"], c["data-burden"]): c for c in page.table("sink-effect", "site-predicted")
    }
    assert len(measured) == len(pooled) == 4  # two OARs × two burden metrics
    for row in own:
        for burden in ("total_lesion_volume_ml", "total_lesion_tia_per_ia_h"):
            key = (row["oar"], burden)
            assert float(measured[key]["data-value"]) == row["oar_tia_per_ia_h"]
            for cells, fit_site in ((pooled, "*"), (site, "padua")):
                fit = fits[(row["oar"], burden, fit_site)]
                expected = fit["intercept_h"] + fit["slope_h_per_unit"] * row[burden]
                assert float(cells[key]["data-value"]) == pytest.approx(expected, rel=1e-12)
    assert html.count('<figure class="sink-effect">') == 1
    # the site column is its own site's fit, not another site's
    padua = fits[("kidneys", "total_lesion_volume_ml", "padua")]
    milan = fits[("kidneys", "total_lesion_volume_ml", "milan")]
    section = html.split('id="sink-effect"', 1)[1]
    assert f"{padua['slope_h_per_unit']:.4g} [" in section
    assert f"{milan['slope_h_per_unit']:.4g} [" not in section
    assert "Not available: the cohort table" not in html


def test_a_cycle_without_sink_rows_says_so() -> None:
    rows = CycleRows(
        "cyc-1", {"qc_findings": [_finding(0, "error", "held")]}, [], [], sink_effect=[]
    )
    html = render_cycle_report(rows, None, generated_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert "Not available: the cohort table <code>sink_effect</code>" in html


# --- issue 20 item 3: the patient's pre-therapy PET prediction -------------------------------


def test_the_report_shows_the_patients_pet_prediction_from_the_store(tmp_path: Path) -> None:
    features, doses, summaries, _ = prediction_cohort()
    predictions = build_dose_prediction(
        features, doses, summaries, provenance("run-cohort"), reference_method=REFERENCE
    ).to_pylist()
    # The published cycle's patient (tests.results_rows: subject "sub-cyc-a") had a PET.
    mine = [r for r in predictions if r["subject_key"] == "lyon-s0"]
    for row in mine:
        row["subject_key"] = "sub-cyc-a"
    store = open_object_store(str(tmp_path / "store"), Settings())
    publish_tables(store, run_tables("run-1", {"cyc-a": 40.0}), provenance("run-1"))
    publish_tables(
        store,
        {"dose_prediction": [pa.Table.from_pylist(predictions, schema=DOSE_PREDICTION.schema)]},
        provenance("run-cohort"),
    )
    html = build_cycle_report(store, "cyc-a", generated_at=datetime(2026, 1, 1, tzinfo=UTC))
    section = html[html.index('<section id="pet-prediction">') :]
    section = section[: section.index("</section>")]
    shown = re.findall(r'class="num predicted" data-value="([^"]*)"', section)
    assert sorted(float(v) for v in shown) == pytest.approx(
        sorted(r["predicted_dose_gy_per_gbq"] for r in mine)
    )
    assert "leave_one_site_out" in section
    assert "lyon-s1" not in section  # another patient's rows are not shown


def test_a_patient_without_pet_says_so() -> None:
    rows = CycleRows(
        "cyc-1",
        {"qc_findings": [_finding(0, "error", "no valid calibration")]},
        site_calibrations=[],
        threshold_concordance=[],
    )
    assert rows.dose_prediction == []
    html = render_cycle_report(rows, None, generated_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert 'id="pet-prediction"' in html
    assert "No pre-therapy PET prediction" in html
