"""Threshold concordance (issue 14, item 6): kappa, Deming regression, flips, by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scipy import stats

from concordose.consortium import (
    POOLED_SITE_ID,
    STUDY_METHODOLOGIES,
    build_threshold_concordance,
    cohen_kappa,
    deming_regression,
)
from concordose.dose.thresholds import THRESHOLDS
from concordose.results.provenance import Provenance
from concordose.results.validation import validate_tables
from concordose.schemas.tables import THRESHOLD_CONCORDANCE

REF = "spectacular_6tp"
PROVENANCE = Provenance(run_id="r-thresholds")
LUMEN = [m for m in STUDY_METHODOLOGIES if m.kinetics_method == "lumen_3tp"]
HEBERT_MIN = [m for m in STUDY_METHODOLOGIES if m.threshold_name.startswith("Hebert minimal")]


def test_cohen_kappa_matches_hand_computation() -> None:
    first = [True, True, False, False, True]
    second = [True, False, False, False, True]
    # p_o = 4/5; p_e = 0.6·0.4 + 0.4·0.6 = 0.48; κ = 0.32/0.52
    assert cohen_kappa(first, second) == pytest.approx(0.32 / 0.52)
    assert cohen_kappa([True, False], [True, False]) == pytest.approx(1.0)
    assert np.isnan(cohen_kappa([True, True], [True, True]))  # chance agreement is 1
    with pytest.raises(ValueError, match="same cases"):
        cohen_kappa([True], [True, False])


def test_deming_regression_matches_hand_computation() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([1.2, 1.9, 3.4, 3.9, 5.3])
    fit = deming_regression(x, y)

    def by_hand(xs: list[float], ys: list[float]) -> tuple[float, float]:
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((a - mx) ** 2 for a in xs)
        syy = sum((b - my) ** 2 for b in ys)
        sxy = sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True))
        slope = (syy - sxx + ((syy - sxx) ** 2 + 4 * sxy**2) ** 0.5) / (2 * sxy)
        return slope, my - slope * mx

    slope, intercept = by_hand(x.tolist(), y.tolist())
    assert fit.slope.estimate == pytest.approx(slope)
    assert fit.intercept.estimate == pytest.approx(intercept)
    # jackknife of the prediction at 3.5 (Linnet 1993)
    loo = []
    for i in range(5):
        s, a = by_hand(np.delete(x, i).tolist(), np.delete(y, i).tolist())
        loo.append(a + s * 3.5)
    se = (4 / 5 * sum((v - sum(loo) / 5) ** 2 for v in loo)) ** 0.5
    half = stats.t.ppf(0.975, 4) * se
    predicted = fit.predict(3.5)
    assert predicted.estimate == pytest.approx(intercept + slope * 3.5)
    assert predicted.lower == pytest.approx(intercept + slope * 3.5 - half)
    assert predicted.upper == pytest.approx(intercept + slope * 3.5 + half)
    # orthogonal regression is symmetric: swapping the methods inverts the slope
    assert deming_regression(y, x).slope.estimate == pytest.approx(1 / slope)
    with pytest.raises(ValueError, match="at least 3 pairs"):
        deming_regression([1.0, 2.0], [1.0, 2.0])


def _doses(lesions: dict[tuple[str, str, str, str], list[float]]) -> pa.Table:
    """absorbed_dose rows: (site, subject, cycle, kinetics method) → lesion doses, sphere."""
    rows = []
    for (site, subject, cycle, method), doses in lesions.items():
        for index, dose in enumerate(doses):
            rows.append(
                {
                    "site_id": site,
                    "subject_key": subject,
                    "cycle_key": cycle,
                    "voi_label": f"lesion_{index}",
                    "voi_type": "lesion",
                    "kinetics_method": method,
                    "dose_method": "sphere",
                    "mean_dose_gy": dose,
                    "mass_g": 10.0,
                    "method_parameters_hash": f"h-{method}",
                }
            )
    return pa.Table.from_pylist(rows)


STUDY_LESIONS = {
    ("milan", "s1", "c1"): [40.0, 36.0],
    ("milan", "s1", "c2"): [50.0, 60.0],
    ("milan", "s2", "c3"): [20.0, 30.0],
    ("padua", "s3", "c4"): [44.0, 70.0],
}


def _lumen_case() -> pa.Table:
    lesions: dict[tuple[str, str, str, str], list[float]] = {}
    for (site, subject, cycle), doses in STUDY_LESIONS.items():
        lesions[(site, subject, cycle, "lumen_3tp")] = doses
        lesions[(site, subject, cycle, REF)] = [0.8 * d for d in doses]
    lesions[("padua", "s4", "c5", "lumen_3tp")] = [99.0]  # no reference: not compared
    return _doses(lesions)


def _by(table: pa.Table, **where: Any) -> list[dict[str, Any]]:
    return [r for r in table.to_pylist() if all(r[k] == v for k, v in where.items())]


def test_a_flip_is_detected_per_cycle_and_summarised_per_cohort() -> None:
    table = build_threshold_concordance(_lumen_case(), PROVENANCE, methodologies=LUMEN)
    cycles = {r["cycle_key"]: r for r in _by(table, level="cycle")}
    assert set(cycles) == {"c1", "c2", "c3", "c4"}
    c1 = cycles["c1"]  # minimal lesion dose 36 Gy (LUMEN) against 28.8 Gy (reference)
    assert c1["study_value_gy"] == pytest.approx(36.0)
    assert c1["reference_value_gy"] == pytest.approx(28.8)
    assert (c1["study_met"], c1["reference_met"], c1["flipped"]) == (True, False, True)
    assert c1["threshold_gy"] == 35.0
    assert (c1["study_kinetics_method"], c1["reference_kinetics_method"]) == ("lumen_3tp", REF)
    assert [cycles[c]["flipped"] for c in ("c2", "c3", "c4")] == [False, False, False]
    pooled = _by(table, level="cohort", site_id=POOLED_SITE_ID)[0]
    assert pooled["n_classified"] == 4
    assert pooled["flip_fraction"] == pytest.approx(0.25)
    # study met [T, T, F, T], reference [F, T, F, T]: p_o = 3/4, p_e = 1/2, κ = 1/2
    assert pooled["cohen_kappa"] == pytest.approx(0.5)
    # reference = 0.8 × study exactly: slope 0.8, intercept 0, 35 Gy ↔ 28 Gy
    assert pooled["slope"] == pytest.approx(0.8)
    assert pooled["intercept_gy"] == pytest.approx(0.0, abs=1e-9)
    assert pooled["reference_equivalent_gy"] == pytest.approx(28.0)
    assert pooled["reference_equivalent_ci_lower_gy"] == pytest.approx(28.0)
    milan = _by(table, level="cohort", site_id="milan")[0]
    assert (milan["n_classified"], milan["flip_fraction"]) == (3, pytest.approx(1 / 3))
    padua = _by(table, level="cohort", site_id="padua")[0]
    assert padua["slope"] is None  # one pair: no regression
    assert validate_tables({"threshold_concordance": table})["threshold_concordance"].success
    assert table.schema == THRESHOLD_CONCORDANCE.schema


def test_cumulative_thresholds_sum_each_lesion_over_a_patients_cycles() -> None:
    lesions = {
        ("milan", "s1", "c1", "hebert_4tp"): [30.0, 25.0],
        ("milan", "s1", "c2", "hebert_4tp"): [30.0, 30.0],
        ("milan", "s1", "c1", REF): [30.0, 20.0],
        ("milan", "s1", "c2", REF): [30.0, 30.0],
    }
    table = build_threshold_concordance(_doses(lesions), PROVENANCE, methodologies=HEBERT_MIN)
    patient = _by(table, level="patient")[0]
    assert patient["cycle_key"] is None
    assert patient["n_cycles"] == 2
    # lesion_1: 25 + 30 = 55 Gy ≥ 52.52 (Hebert) against 20 + 30 = 50 Gy (reference)
    assert patient["study_value_gy"] == pytest.approx(55.0)
    assert patient["reference_value_gy"] == pytest.approx(50.0)
    assert patient["flipped"] is True


def test_every_methodology_names_a_published_threshold() -> None:
    names = {threshold.name for threshold in THRESHOLDS}
    assert {m.threshold_name for m in STUDY_METHODOLOGIES} <= names
    assert len(STUDY_METHODOLOGIES) == 4  # LUMEN, LUTADOSE, Hebert minimum and mean


def _numbers(numbers: dict[str, int | None]) -> pa.Table:
    """patient_summary's (cycle_key, cycle_number) as the cohort reader gives them."""
    return pa.table(
        {"cycle_key": list(numbers), "cycle_number": list(numbers.values())},
        schema=pa.schema([("cycle_key", pa.string()), ("cycle_number", pa.int16())]),
    )


def test_cycle_1_thresholds_skip_cycles_numbered_otherwise_and_keep_unnumbered_ones() -> None:
    # s1: c1 is cycle 1, c2 cycle 2 (two patient_summary rows each, as one per method pair);
    # c3 has no number (published before numbers were); c4 is absent from patient_summary.
    summary = pa.concat_tables(
        [_numbers({"c1": 1, "c2": 2, "c3": None}), _numbers({"c1": 1, "c2": 2})]
    )
    table = build_threshold_concordance(
        _lumen_case(), PROVENANCE, patient_summary=summary, methodologies=LUMEN
    )
    cycles = {r["cycle_key"] for r in _by(table, level="cycle")}
    assert cycles == {"c1", "c3", "c4"}  # c2 is not compared with an "after cycle 1" cut-off
    pooled = _by(table, level="cohort", site_id=POOLED_SITE_ID)[0]
    assert (pooled["n_classified"], pooled["n_cycles"]) == (3, 3)
    assert pooled["flip_fraction"] == pytest.approx(1 / 3)  # c1 flips, c3 and c4 do not
    # Cumulative thresholds still sum every cycle of the patient, whatever its number.
    lesions = {
        ("milan", "s1", cycle, method): [30.0, 30.0]
        for cycle in ("c1", "c2")
        for method in ("hebert_4tp", REF)
    }
    hebert = build_threshold_concordance(
        _doses(lesions), PROVENANCE, patient_summary=summary, methodologies=HEBERT_MIN
    )
    assert _by(hebert, level="patient")[0]["n_cycles"] == 2


def _hebert_patient() -> tuple[pa.Table, pa.Table, pa.Table, pa.Table]:
    """One patient, four cycles on the SPECTacular schedule: hebert_4tp and the reference in
    each; lesion_0 clears with T_eff 60 h in cycle 1 and 80 h in cycle 2."""
    doses = _doses(
        {
            ("milan", "s1", c, m): [30.0]
            for c in ("c1", "c2", "c3", "c4")
            for m in ("hebert_4tp", REF)
        }
    ).to_pylist()
    for row in doses:
        row["tia_mbq_h"] = 1000.0  # the reference's dose per TIA: 30 Gy / 1000 MBq·h
    teff_h = {"c1": 60.0, "c2": 80.0, "c3": 500.0, "c4": 500.0}  # c3, c4 fits must not be used
    kinetics = pa.Table.from_pylist(
        [
            {"cycle_key": c, "voi_label": "lesion_0", "kinetics_method": "hebert_4tp", "teff_h": t}
            for c, t in teff_h.items()
        ]
    )
    schedule_h = {
        "c1": (4.0, 24.0, 48.0, 96.0, 168.0, 240.0),
        "c2": (4.0, 24.0, 48.0, 96.0, 168.0, 240.0),
        "c3": (4.0, 26.0, 48.0, 96.0, 168.0, 240.0),
        "c4": (4.0, 48.0, 96.0, 168.0, 240.0),  # nothing in 14.4-33.6 h: not emulated
    }
    points = pa.Table.from_pylist(
        [
            {
                "cycle_key": c,
                "voi_label": "lesion_0",
                "time_point_index": i,
                "time_h": t,
                "activity_mbq": 20.0 if t == 26.0 else 1.0,
            }
            for c, times in schedule_h.items()
            for i, t in enumerate(times)
        ]
    )
    numbers = _numbers({"c1": 1, "c2": 2, "c3": 3, "c4": 4})
    return pa.Table.from_pylist(doses), kinetics, points, numbers


def test_hebert_cycles_3_and_4_use_the_24_h_point_with_the_half_life_of_cycles_1_and_2() -> None:
    doses, kinetics, points, numbers = _hebert_patient()
    table = build_threshold_concordance(
        doses,
        PROVENANCE,
        patient_summary=numbers,
        kinetics=kinetics,
        voi_timepoints=points,
        methodologies=HEBERT_MIN,
    )
    patient = _by(table, level="patient")[0]
    # c4 has no point serving 24 h: left out on both sides; c3 is the single-point cycle.
    assert (patient["n_cycles"], patient["study_single_point_cycles"]) == (3, 1)
    # c3: λ = mean(ln2/60, ln2/80) per h; TIA = 20 MBq · e^(26 λ) / λ; dose = TIA · 0.03 Gy/MBq·h
    decay_per_h = np.mean([np.log(2) / 60.0, np.log(2) / 80.0])
    cycle_3_gy = 20.0 * np.exp(26.0 * decay_per_h) / decay_per_h * 30.0 / 1000.0
    assert patient["study_value_gy"] == pytest.approx(30.0 + 30.0 + cycle_3_gy)
    assert patient["reference_value_gy"] == pytest.approx(90.0)
    assert patient["study_kinetics_method"] == "hebert_4tp"
    pooled = _by(table, level="cohort", site_id=POOLED_SITE_ID)[0]
    assert pooled["study_single_point_cycles"] == 1
    assert validate_tables({"threshold_concordance": table})["threshold_concordance"].success

    # Without cycles 1-2 the lesion has no half-life: cycle 3's dose is missing, so is the sum.
    late_only = numbers.filter(pc.is_in(numbers["cycle_key"], pa.array(["c3"])))
    alone = build_threshold_concordance(
        doses.filter(pc.equal(doses["cycle_key"], "c3")),
        PROVENANCE,
        patient_summary=late_only,
        kinetics=kinetics,
        voi_timepoints=points,
        methodologies=HEBERT_MIN,
    )
    row = _by(alone, level="patient")[0]
    assert (row["n_cycles"], row["study_single_point_cycles"]) == (1, 1)
    assert row["study_value_gy"] is None
    assert row["study_met"] is None


def test_without_the_per_time_point_tables_later_hebert_cycles_are_not_compared() -> None:
    doses, _, _, numbers = _hebert_patient()
    table = build_threshold_concordance(
        doses, PROVENANCE, patient_summary=numbers, methodologies=HEBERT_MIN
    )
    patient = _by(table, level="patient")[0]
    assert (patient["n_cycles"], patient["study_single_point_cycles"]) == (2, 0)
    assert patient["study_value_gy"] == pytest.approx(60.0)
