"""Cumulative dosimetry and kidney-limited planning (issue 20, item 1): BED against a hand
computation, the next activity against its limits, and table ``planning`` against the truth of
a multi-cycle virtual patient on the Hebert protocol (4 time points in cycles 1-2, 24 h only in
cycles 3-4), its per-cycle tables built from the true doses with known noise."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from scipy.optimize import brentq

from concordose.phantoms.protocols import protocol
from concordose.phantoms.virtual_patient import (
    INJECTED_ACTIVITY_MBQ,
    cycle_truth,
    draw_virtual_patient,
    region_truth,
)
from concordose.planning import (
    DOBATOC_KIDNEY_DOSE_LIMIT_GY,
    PLANNING_INPUT_COLUMNS,
    SINGLE_POINT_METHOD,
    BindingConstraint,
    KidneyHistory,
    PlanningLimits,
    PlanningSettings,
    bed_gy,
    build_planning,
    cumulative_after,
    cumulative_bed_after,
    plan_next_activity,
    planning_settings,
)
from concordose.results.provenance import Provenance
from concordose.schemas.tables import TABLES
from concordose.settings import Settings

DOSE_RELATIVE_SD = 0.05  # the noise put on the true doses, and the SD published with them


def test_bed_of_one_cycle_matches_a_hand_computation() -> None:
    # 10 Gy with T_eff 50 h, alpha/beta 2.6 Gy, T_rep 2.8 h:
    # BED = 10 (1 + 10/2.6 * 2.8/52.8) = 12.0396 Gy
    assert float(bed_gy(10.0, 50.0)) == pytest.approx(12.03963, abs=1e-4)
    assert float(bed_gy(10.0, 50.0, alpha_beta_gy=3.0, repair_half_time_h=1.5)) == (
        pytest.approx(10.0 * (1 + 10.0 / 3.0 * 1.5 / 51.5))
    )
    assert math.isnan(float(bed_gy(10.0, float("nan"))))


HISTORY = KidneyHistory(
    cumulative_dose_gy=9.0,
    cumulative_dose_sd_gy=0.5,
    cumulative_bed_gy=10.2,
    cumulative_bed_sd_gy=0.6,
    dose_per_gbq_gy=0.6,
    dose_per_gbq_sd_gy=0.06,
    teff_h=45.0,
)


def test_the_dose_limited_activity_reaches_the_limit_and_the_bed_limit_binds_when_lower() -> None:
    limits = PlanningLimits(max_activity_gbq=None, kidney_bed_limit_gy=1000.0)
    plan = plan_next_activity(HISTORY, limits)
    assert plan.binding is BindingConstraint.DOSE_LIMIT
    assert plan.activity_gbq == pytest.approx((23.0 - 9.0) / 0.6)
    assert plan.expected_cumulative_dose_gy == pytest.approx(23.0)
    assert plan.probability_exceeding_dose_limit == pytest.approx(0.5)
    # the risk-limited activity keeps P(exceed) at 5 %
    risk_mean, risk_sd = cumulative_after(HISTORY, plan.risk_limited_activity_gbq)
    assert risk_mean + 1.6448536 * risk_sd == pytest.approx(23.0, abs=1e-6)
    assert plan.risk_limited_activity_gbq < plan.activity_gbq

    tight = PlanningLimits(max_activity_gbq=None, kidney_bed_limit_gy=20.0)
    by_bed = plan_next_activity(HISTORY, tight)
    assert by_bed.binding is BindingConstraint.BED_LIMIT
    bed_mean, _ = cumulative_bed_after(HISTORY, by_bed.activity_gbq, tight)
    assert bed_mean == pytest.approx(20.0)

    capped = plan_next_activity(HISTORY, PlanningLimits())  # 7.4 GBq cap, 23 Gy: cap binds
    assert capped.binding is BindingConstraint.MAX_ACTIVITY
    assert capped.activity_gbq == 7.4
    assert 0.0 <= capped.probability_exceeding_dose_limit < 0.01


def _mono_decay_per_h(curve: Any, time_h: float) -> float:
    """The decay constant whose mono-exponential through A(time_h) integrates to the true TIA
    (what a perfect single-point method with the right half-life would use)."""
    activity = float(curve.activity_mbq(np.array([time_h]))[0])
    return float(
        brentq(
            lambda lam: activity * math.exp(lam * time_h) / lam - curve.tia_mbq_h,
            1e-5,
            1.0 / time_h,
        )
    )


def _hebert_tables(seed: int) -> tuple[dict[str, pa.Table], dict[int, dict[str, Any]], Any]:
    """Per-cycle input tables of one four-cycle Hebert patient from its truth: the true
    activities at the protocol's time points (4/24/72/192 h in cycles 1-2, 24 h in 3-4); cycles
    1-2 with a full-schedule fit (true TIA, true dose × (1 + 5 % noise), SD 5 %, the half-life
    of the mono-exponential through A(24 h) integrating to the true TIA), cycles 3-4 with a
    single-point method's row giving only the dose per TIA (the true S-value)."""
    patient = draw_virtual_patient(seed, 1, protocol=protocol("hebert"), max_cycles=4)
    masses = {row["label"]: row["mass_g"] for row in region_truth(patient)}
    rng = np.random.default_rng(seed)
    truths = {c: cycle_truth(patient, c) for c in range(1, 5)}
    dose_rows, kinetics_rows, summary_rows, point_rows = [], [], [], []
    for cycle, truth in truths.items():
        key = f"c{cycle}"
        summary_rows.append(
            {
                "cycle_key": key,
                "cycle_number": cycle,
                "injected_activity_mbq": INJECTED_ACTIVITY_MBQ,
                "injected_activity_traceable_mbq": None,
            }
        )
        for voi in truth["vois"]:
            label = voi["label"]
            curve = patient.curves[cycle][label]
            true_dose = voi["mean_dose_gy"]
            base = {
                "site_id": "s",
                "subject_key": "p",
                "cycle_key": key,
                "voi_label": label,
                "voi_type": "lesion" if label.startswith("lesion") else "organ",
                "dose_method": "sphere",
                "mass_g": masses[label],
                "method_parameters_hash": "h",
            }
            if cycle <= 2:
                noisy = None if true_dose is None else true_dose * (1 + rng.normal(0, 0.05))
                dose_rows.append(
                    {
                        **base,
                        "kinetics_method": "mono_exponential",
                        "mean_dose_gy": noisy,
                        "dose_sd_gy": None if noisy is None else noisy * DOSE_RELATIVE_SD,
                        "tia_mbq_h": voi["tia_mbq_h"],
                    }
                )
                kinetics_rows.append(
                    {
                        "cycle_key": key,
                        "voi_label": label,
                        "kinetics_method": "mono_exponential",
                        "teff_h": math.log(2) / _mono_decay_per_h(curve, 24.0),
                    }
                )
            for index, (time_h, activity) in enumerate(
                zip(truth["time_points_h"], voi["activity_mbq"], strict=True)
            ):
                point_rows.append(
                    {
                        "cycle_key": key,
                        "voi_label": label,
                        "time_point_index": index,
                        "time_h": time_h,
                        "activity_mbq": activity,
                        "activity_sd_mbq": 0.0,
                        "volume_ml": masses[label],
                    }
                )
            if cycle > 2:
                dose_rows.append(
                    {
                        **base,
                        "kinetics_method": "madsen_stp",
                        "mean_dose_gy": true_dose,
                        "dose_sd_gy": None,
                        "tia_mbq_h": voi["tia_mbq_h"],
                    }
                )
    rows = {
        "absorbed_dose": dose_rows,
        "kinetics": kinetics_rows,
        "patient_summary": summary_rows,
        "voi_timepoints": point_rows,
    }
    tables = {}
    for name, table_rows in rows.items():
        schema = TABLES[name].schema
        columns = [*PLANNING_INPUT_COLUMNS[name]]
        if name == "absorbed_dose":
            columns = [*columns, "mass_g"] if "mass_g" not in columns else columns
        tables[name] = pa.Table.from_pylist(
            [{c: r[c] for c in columns} for r in table_rows],
            schema=pa.schema([schema.field(c) for c in columns]),
        )
    return tables, truths, masses


def _true_kidney_dose(truth: dict[str, Any], masses: dict[str, float]) -> float:
    kidneys = [v for v in truth["vois"] if v["label"].startswith("kidney")]
    total = sum(masses[v["label"]] for v in kidneys)
    return float(sum(v["mean_dose_gy"] * masses[v["label"]] for v in kidneys) / total)


def test_planning_of_a_hebert_patient_matches_its_truth() -> None:
    tables, truths, masses = _hebert_tables(seed=31)
    settings = PlanningSettings(limits=PlanningLimits(max_activity_gbq=None))
    rows = build_planning(tables, Provenance(run_id="t"), settings).to_pylist()
    by_region = {row["region"]: row for row in rows}
    kidneys = by_region["kidneys"]
    assert kidneys["n_cycles"] == 4
    assert kidneys["cycle_numbers"] == [1, 2, 3, 4]
    assert kidneys["single_point_cycles"] == 2
    assert kidneys["cycle_kinetics_methods"][2:] == [SINGLE_POINT_METHOD] * 2
    true_per_cycle = [_true_kidney_dose(truths[c], masses) for c in range(1, 5)]
    # cycles 1-2 carry 5 % noise; cycles 3-4 use the TIA per 24 h activity of cycles 1-2,
    # exact here because a cycle's curve is the first's scaled (same shape): within 1 %
    for measured, true in zip(kidneys["cycle_dose_gy"][2:], true_per_cycle[2:], strict=True):
        assert measured == pytest.approx(true, rel=0.01)
    assert kidneys["cumulative_dose_gy"] == pytest.approx(sum(true_per_cycle), rel=0.06)
    assert kidneys["cumulative_dose_gy"] == pytest.approx(sum(kidneys["cycle_dose_gy"]))
    # BED of cycle 1 by hand: D (1 + D / 2.6 Gy × 2.8 h / (2.8 h + T_eff)), T_eff from the mean
    # decay constant of the two kidneys' published half-lives
    teff = {(r["cycle_key"], r["voi_label"]): r["teff_h"] for r in tables["kinetics"].to_pylist()}
    decay = np.mean([math.log(2) / teff[("c1", k)] for k in ("kidney_left", "kidney_right")])
    dose_1 = kidneys["cycle_dose_gy"][0]
    by_hand = dose_1 * (1 + dose_1 / 2.6 * 2.8 / (2.8 + math.log(2) / decay))
    assert kidneys["cycle_bed_gy"][0] == pytest.approx(by_hand, rel=1e-9)
    assert kidneys["cumulative_bed_gy"] == pytest.approx(sum(kidneys["cycle_bed_gy"]))
    # the recommended activity brings the expected cumulative kidney dose (or BED) to its limit
    if kidneys["binding_constraint"] == "dose_limit":
        assert kidneys["kidney_expected_cumulative_dose_gy"] == pytest.approx(23.0, rel=1e-9)
    else:
        assert kidneys["binding_constraint"] == "bed_limit"
        assert kidneys["kidney_expected_cumulative_bed_gy"] == pytest.approx(28.0, rel=1e-9)
    forecast = kidneys["forecast_dose_per_gbq_gy"]
    assert forecast == pytest.approx(np.mean(true_per_cycle) / 7.4, rel=0.05)
    assert kidneys["expected_next_dose_gy"] == pytest.approx(
        kidneys["next_activity_gbq"] * forecast
    )
    assert 0.0 < kidneys["kidney_probability_exceeding_dose_limit"] <= 0.5
    # lesions: the measured decline per cycle is the patient's true decline
    patient = draw_virtual_patient(31, 1, protocol=protocol("hebert"), max_cycles=4)
    lesions = [r for r in rows if r["region_type"] == "lesion" and r["cumulative_dose_gy"]]
    assert lesions
    for lesion in lesions:
        assert lesion["cycle_decline_ratio"] == pytest.approx(
            patient.tumour_decline_per_cycle, rel=0.05
        )
        assert lesion["expected_next_dose_gy"] == pytest.approx(
            lesion["next_activity_gbq"] * lesion["forecast_dose_per_gbq_gy"]
        )
    assert {r["next_activity_gbq"] for r in rows} == {kidneys["next_activity_gbq"]}


def test_the_limits_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORDOSE_KIDNEY_DOSE_LIMIT_GY", str(DOBATOC_KIDNEY_DOSE_LIMIT_GY))
    monkeypatch.setenv("CONCORDOSE_PLANNING_MAX_ACTIVITY_GBQ", "")  # empty: no cap
    settings = planning_settings(Settings())
    assert settings.limits.kidney_dose_limit_gy == 24.0
    assert settings.limits.max_activity_gbq is None
    tables, _, _ = _hebert_tables(seed=31)
    rows = build_planning(tables, Provenance(run_id="t"), settings).to_pylist()
    (kidneys,) = [r for r in rows if r["region"] == "kidneys"]
    assert kidneys["kidney_dose_limit_gy"] == 24.0
    assert kidneys["max_activity_gbq"] is None
    assert kidneys["next_activity_gbq"] > 7.4  # uncapped: the kidneys allow far more here
