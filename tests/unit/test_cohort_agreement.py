"""Cohort agreement tables (issue 14, item 4) against hand computations on constructed rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from concordose.consortium import (
    LESION_VOLUME_BINS,
    POOLED_SITE_ID,
    build_dose_agreement,
    build_kinetics_agreement,
    voi_classes,
)
from concordose.kinetics.comparison import relative_bland_altman
from concordose.results.provenance import Provenance
from concordose.results.validation import validate_tables
from concordose.schemas.tables import DOSE_AGREEMENT, KINETICS_AGREEMENT

REF = "spectacular_6tp"
PROVENANCE = Provenance(run_id="r-cohort")

# (site, cycle, voi, type, volume mL): lesion volumes sit on and around the bin boundaries
VOIS = [
    ("milan", "c1", "kidney_left", "organ", 150.0),
    ("milan", "c1", "lesion_1", "lesion", 3.99),
    ("milan", "c1", "lesion_2", "lesion", 4.0),
    ("padua", "c2", "kidney_left", "organ", 140.0),
    ("padua", "c2", "lesion_1", "lesion", 20.0),
    ("padua", "c2", "lesion_2", "lesion", 20.01),
]
TIA_REF = [1000.0, 50.0, 80.0, 900.0, 300.0, 400.0]
TIA_LUMEN = [1100.0, 45.0, 88.0, 810.0, None, 440.0]  # padua lesion_1: LUMEN not applicable


def _difference(x: float, ref: float) -> float:
    return 100.0 * (x - ref) / ((x + ref) / 2.0)


DOSE_COLUMNS = pa.schema(
    [
        *[(name, pa.string()) for name in ("site_id", "cycle_key", "voi_label", "voi_type")],
        ("kinetics_method", pa.string()),
        ("dose_method", pa.string()),
        ("mean_dose_gy", pa.float64()),
        ("method_parameters_hash", pa.string()),
    ]
)


def _kinetics() -> pa.Table:
    rows = []
    for method, tias in ((REF, TIA_REF), ("lumen_3tp", TIA_LUMEN)):
        for (site, cycle, label, kind, _), tia in zip(VOIS, tias, strict=True):
            rows.append(
                {
                    "site_id": site,
                    "cycle_key": cycle,
                    "voi_label": label,
                    "voi_type": kind,
                    "kinetics_method": method,
                    "tia_mbq_h": tia,
                    "method_parameters_hash": f"h-{method}",
                }
            )
    return pa.Table.from_pylist(rows)


def _voi_timepoints() -> pa.Table:
    rows = [
        {"cycle_key": c, "voi_label": v, "time_point_index": t, "volume_ml": volume + t}
        for _, c, v, _, volume in VOIS
        for t in (1, 0)  # the first time point's volume counts, whatever the row order
    ]
    return pa.Table.from_pylist(rows)


def _doses(kinetics: pa.Table, gy_per_mbq_h: dict[str, float]) -> pa.Table:
    """absorbed_dose rows: dose = TIA × a per-method factor (so dose ratios are TIA ratios)."""
    rows = []
    for row in kinetics.to_pylist():
        for method, factor in gy_per_mbq_h.items():
            tia = row["tia_mbq_h"]
            rows.append(
                {
                    **{k: row[k] for k in ("site_id", "cycle_key", "voi_label", "voi_type")},
                    "kinetics_method": row["kinetics_method"],
                    "dose_method": method,
                    "mean_dose_gy": None if tia is None else tia * factor,
                    "method_parameters_hash": f"d-{method}",
                }
            )
    return pa.Table.from_pylist(rows, schema=DOSE_COLUMNS)


def _rows(table: pa.Table, **where: Any) -> list[dict[str, Any]]:
    return [r for r in table.to_pylist() if all(r[k] == v for k, v in where.items())]


def test_lesion_bins_at_their_boundaries_and_organs_by_name() -> None:
    classes = voi_classes(
        ["lesion"] * 6 + ["organ"],
        ["l"] * 6 + ["spleen"],
        [0.5, 3.99, 4.0, 20.0, 20.01, np.nan, 200.0],
    )
    assert classes.tolist() == [
        "lesion_lt_4ml",
        "lesion_lt_4ml",
        "lesion_4_20ml",
        "lesion_4_20ml",
        "lesion_gt_20ml",
        "lesion_unknown_volume",
        "spleen",
    ]
    assert [b.label for b in LESION_VOLUME_BINS] == [
        "lesion_lt_4ml",
        "lesion_4_20ml",
        "lesion_gt_20ml",
    ]
    with pytest.raises(ValueError, match="VOI types"):
        voi_classes(["tumour"], ["x"], [1.0])


def test_tia_agreement_per_site_pooled_and_voi_class_matches_hand_computation() -> None:
    table = build_kinetics_agreement(
        _kinetics(), _doses(_kinetics(), {}), _voi_timepoints(), PROVENANCE
    )
    tia = _rows(table, metric="tia")
    assert {r["kinetics_method"] for r in tia} == {"lumen_3tp"}  # never the reference itself
    assert {r["reference_method"] for r in tia} == {REF}
    assert all(r["dose_method"] is None for r in tia)
    groups = {(r["site_id"], r["voi_class"]): r for r in tia}
    assert set(groups) == {
        ("milan", "kidney_left"),
        ("milan", "lesion_lt_4ml"),
        ("milan", "lesion_4_20ml"),
        ("padua", "kidney_left"),
        ("padua", "lesion_4_20ml"),
        ("padua", "lesion_gt_20ml"),
        (POOLED_SITE_ID, "kidney_left"),
        (POOLED_SITE_ID, "lesion_lt_4ml"),
        (POOLED_SITE_ID, "lesion_4_20ml"),
        (POOLED_SITE_ID, "lesion_gt_20ml"),
    }
    # pooled kidneys: milan +10 %-ish and padua −10 %-ish by hand
    d = np.array([_difference(1100.0, 1000.0), _difference(810.0, 900.0)])
    kidneys = groups[(POOLED_SITE_ID, "kidney_left")]
    assert kidneys["n_pairs"] == 2
    assert kidneys["n_missing"] == 0
    assert kidneys["n_cycles"] == 2
    assert kidneys["bias_percent"] == pytest.approx(d.mean())
    assert kidneys["sd_percent"] == pytest.approx(d.std(ddof=1))
    assert kidneys["loa_lower_percent"] == pytest.approx(d.mean() - 1.96 * d.std(ddof=1))
    assert kidneys["loa_upper_percent"] == pytest.approx(d.mean() + 1.96 * d.std(ddof=1))
    # one kidney per site: a bias, no SD
    milan = groups[("milan", "kidney_left")]
    assert milan["bias_percent"] == pytest.approx(_difference(1100.0, 1000.0))
    assert milan["sd_percent"] is None
    # 4.0 mL (milan) and 20.0 mL (padua, LUMEN missing) share the middle bin when pooled
    middle = groups[(POOLED_SITE_ID, "lesion_4_20ml")]
    assert (middle["n_pairs"], middle["n_missing"], middle["n_cycles"]) == (1, 1, 2)
    assert middle["bias_percent"] == pytest.approx(_difference(88.0, 80.0))
    padua_middle = groups[("padua", "lesion_4_20ml")]
    assert (padua_middle["n_pairs"], padua_middle["n_missing"]) == (0, 1)
    assert padua_middle["bias_percent"] is None
    assert groups[("milan", "lesion_lt_4ml")]["voi_type"] == "lesion"


def test_mean_dose_agreement_uses_the_same_dose_method_on_both_sides() -> None:
    kinetics = _kinetics()
    table = build_kinetics_agreement(
        kinetics, _doses(kinetics, {"sphere": 0.01, "ldm": 0.02}), _voi_timepoints(), PROVENANCE
    )
    dose = _rows(table, metric="mean_dose", site_id=POOLED_SITE_ID, voi_class="kidney_left")
    assert {r["dose_method"] for r in dose} == {"sphere", "ldm"}
    tia = _rows(table, metric="tia", site_id=POOLED_SITE_ID, voi_class="kidney_left")[0]
    for row in dose:  # dose ∝ TIA with one factor per dose method: the TIA's agreement
        assert row["bias_percent"] == pytest.approx(tia["bias_percent"])
        assert row["kinetics_method"] == "lumen_3tp"
    assert len({r["method_parameters_hash"] for r in dose}) == 2


def test_no_reference_no_rows() -> None:
    kinetics = _kinetics().filter(pa.compute.equal(_kinetics()["kinetics_method"], "lumen_3tp"))
    table = build_kinetics_agreement(kinetics, _doses(kinetics, {}), _voi_timepoints(), PROVENANCE)
    assert table.num_rows == 0
    assert table.schema == KINETICS_AGREEMENT.schema


def test_dose_methods_against_each_other_on_the_reference_kinetics() -> None:
    kinetics = _kinetics()
    doses = _doses(kinetics, {"sphere": 0.010, "organ_s_am": 0.011})
    voxel = pa.Table.from_pylist(
        [
            {**r, "kinetics_method": "voxel_mono_exponential", "dose_method": "vsv_4.42mm"}
            for r in _doses(
                kinetics.filter(pa.compute.equal(kinetics["kinetics_method"], REF)), {"x": 0.012}
            ).to_pylist()
        ]
    )
    table = build_dose_agreement(doses, voxel, _voi_timepoints(), PROVENANCE)
    pooled = _rows(table, site_id=POOLED_SITE_ID, voi_class="kidney_left")
    pairs = {(r["dose_method"], r["comparator_dose_method"]): r for r in pooled}
    # each unordered pair once; the comparator is the first in (source, method, kinetics) order
    assert set(pairs) == {
        ("sphere", "organ_s_am"),
        ("vsv_4.42mm", "organ_s_am"),
        ("vsv_4.42mm", "sphere"),
    }
    sphere = pairs[("sphere", "organ_s_am")]
    assert sphere["kinetics_method"] == sphere["comparator_kinetics_method"] == REF
    assert sphere["n_pairs"] == 2
    assert sphere["bias_percent"] == pytest.approx(_difference(0.010, 0.011))
    assert sphere["sd_percent"] == pytest.approx(0.0, abs=1e-9)
    vsv = pairs[("vsv_4.42mm", "sphere")]
    assert (vsv["dose_source"], vsv["comparator_dose_source"]) == ("voxel_dose", "absorbed_dose")
    assert vsv["kinetics_method"] == "voxel_mono_exponential"
    assert vsv["bias_percent"] == pytest.approx(_difference(0.012, 0.010))
    # lumen_3tp's VOI doses are not compared here: the reference kinetics' only
    assert all(
        r["comparator_kinetics_method"] == REF
        for r in table.to_pylist()
        if r["comparator_dose_source"] == "absorbed_dose"
    )


def test_a_method_is_never_compared_with_itself() -> None:
    with pytest.raises(ValueError, match="the reference itself"):
        relative_bland_altman(np.ones(2), np.ones(2), method="sphere", reference="sphere")


def test_cohort_tables_pass_their_expectations() -> None:
    kinetics = _kinetics()
    doses = _doses(kinetics, {"sphere": 0.01, "ldm": 0.02})
    tables = {
        "kinetics_agreement": build_kinetics_agreement(
            kinetics, doses, _voi_timepoints(), PROVENANCE
        ),
        "dose_agreement": build_dose_agreement(doses, None, _voi_timepoints(), PROVENANCE),
    }
    outcomes = validate_tables(tables)
    assert all(o.success for o in outcomes.values()), {k: o.failed for k, o in outcomes.items()}
    assert tables["dose_agreement"].schema == DOSE_AGREEMENT.schema
