"""The tumour-sink analytics (issue 20, item 2): the digital consortium's known coefficient is
recovered from per-cycle tables built from many virtual patients' truth plus measurement noise.

Processing dozens of patients through the whole platform would take the suite minutes per
patient; the cohort builder reads only the published per-cycle rows, so
:mod:`tests.sink_cohort` writes those rows from the truth (with site calibration offsets and
per-VOI noise of the order the platform measures) and the test runs :func:`build_sink_effect`
on them, as the cohort rebuild does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from concordose.consortium.agreement import POOLED_SITE_ID
from concordose.consortium.sink_effect import (
    BURDEN_TIA,
    BURDEN_VOLUME,
    LEVEL_CYCLE,
    LEVEL_FIT,
    MIN_FIT_PATIENTS,
    build_sink_effect,
)
from concordose.dose.metrics import oar_name
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.phantoms.kinetics import (
    SINK_EFFECT_PER_LITRE,
    SINK_EFFECT_REFERENCE_VOLUME_ML,
    sink_effect_factor,
)
from concordose.phantoms.protocols import protocol
from concordose.phantoms.virtual_patient import (
    INJECTED_ACTIVITY_MBQ,
    VirtualPatient,
    cycle_truth,
    draw_virtual_patient,
    region_truth,
)
from concordose.schemas.tables import SINK_EFFECT
from tests.sink_cohort import (
    PATIENTS_PER_SITE,
    PROVENANCE,
    SEED,
    SITES,
    sink_effect_table,
    sink_patients,
    sink_tables,
)


def _fit(table: pa.Table, oar: str, site: str, burden: str = BURDEN_VOLUME) -> dict[str, Any]:
    rows: list[dict[str, Any]] = table.to_pylist()
    (row,) = [
        r
        for r in rows
        if r["level"] == LEVEL_FIT
        and r["oar"] == oar
        and r["site_id"] == site
        and r["burden_metric"] == burden
    ]
    return row


def _true_slope_h_per_ml(patients: list[tuple[str, VirtualPatient]], oar: str) -> float:
    """The truth's slope of OAR TIA/IA on total lesion volume: the OAR's TIA/IA without the
    effect falls by k per litre of tumour, so E[y | V] = mean(y0) × (1 − k V / 1 L)."""
    prefix = "kidney" if oar == "kidneys" else oar
    unaffected = []
    for _, patient in patients:
        tia = sum(
            curve.tia_mbq_h
            for label, curve in patient.curves[1].items()
            if label.startswith(prefix)
        )
        unaffected.append(tia / patient.sink_effect_oar_factor / INJECTED_ACTIVITY_MBQ)
    return -SINK_EFFECT_PER_LITRE / SINK_EFFECT_REFERENCE_VOLUME_ML * float(np.mean(unaffected))


@pytest.fixture(scope="module")
def with_effect() -> tuple[list[tuple[str, VirtualPatient]], pa.Table]:
    patients = sink_patients(sink_effect=True)
    return patients, sink_effect_table(sink_tables(patients))


@pytest.mark.parametrize("oar", ["kidneys", "spleen"])
def test_the_known_coefficient_is_recovered_within_the_pooled_ci(
    with_effect: tuple[list[tuple[str, VirtualPatient]], pa.Table], oar: str
) -> None:
    patients, table = with_effect
    assert table.schema.equals(SINK_EFFECT.schema)
    true_slope = _true_slope_h_per_ml(patients, oar)
    pooled = _fit(table, oar, POOLED_SITE_ID)
    assert pooled["n_patients"] == len(SITES) * PATIENTS_PER_SITE
    assert pooled["n_sites"] == len(SITES)
    assert pooled["slope_ci_lower_h_per_unit"] < true_slope < pooled["slope_ci_upper_h_per_unit"]
    assert pooled["slope_ci_upper_h_per_unit"] < 0  # the CI excludes 0
    assert pooled["slope_p_value"] < 0.05
    # the relative slope estimates −k per mL (intercept: the OAR's uptake without tumour)
    assert pooled["relative_slope_per_unit"] == pytest.approx(
        -SINK_EFFECT_PER_LITRE / SINK_EFFECT_REFERENCE_VOLUME_ML, rel=0.5
    )
    for site in SITES:  # each site's CI holds the truth too (40 patients: wider)
        row = _fit(table, oar, site)
        assert row["regression_method"] == "ols_patient_means"
        assert row["slope_ci_lower_h_per_unit"] < true_slope < row["slope_ci_upper_h_per_unit"]


def test_the_dose_change_is_the_slope_times_the_dose_per_tia(
    with_effect: tuple[list[tuple[str, VirtualPatient]], pa.Table],
) -> None:
    _, table = with_effect
    pooled = _fit(table, "kidneys", POOLED_SITE_ID)
    cycles = [r for r in table.to_pylist() if r["level"] == LEVEL_CYCLE and r["oar"] == "kidneys"]
    median = float(np.median([r["oar_dose_per_tia_gy_per_mbq_h"] for r in cycles]))
    assert pooled["oar_dose_per_tia_gy_per_mbq_h"] == pytest.approx(median)
    assert pooled["dose_change_gy_per_gbq_per_unit"] == pytest.approx(
        pooled["slope_h_per_unit"] * median * 1000.0
    )
    assert (
        pooled["dose_change_ci_lower_gy_per_gbq_per_unit"]
        < pooled["dose_change_gy_per_gbq_per_unit"]
        < pooled["dose_change_ci_upper_gy_per_gbq_per_unit"]
        < 0
    )
    first = cycles[0]
    assert first["oar_tia_per_ia_h"] == pytest.approx(
        first["oar_tia_mbq_h"] / first["injected_activity_mbq"]
    )
    assert first["oar_dose_per_ia_gy_per_gbq"] == pytest.approx(
        first["oar_tia_per_ia_h"] * first["oar_dose_per_tia_gy_per_mbq_h"] * 1000.0
    )
    # one cycle row per cycle and OAR; both burden metrics fitted
    assert len(cycles) == len(SITES) * PATIENTS_PER_SITE
    assert _fit(table, "kidneys", POOLED_SITE_ID, BURDEN_TIA)["burden_unit"] == "h"


def test_without_the_effect_the_ci_contains_zero() -> None:
    table = sink_effect_table(sink_tables(sink_patients(sink_effect=False)))
    for oar in ("kidneys", "spleen"):
        pooled = _fit(table, oar, POOLED_SITE_ID)
        assert pooled["slope_ci_lower_h_per_unit"] < 0 < pooled["slope_ci_upper_h_per_unit"]


def test_the_phantom_records_the_coefficient_and_leaves_other_truths_alone() -> None:
    schedule = protocol("spectacular")
    plain = draw_virtual_patient(SEED, 3, protocol=schedule, max_cycles=1)
    sink = draw_virtual_patient(SEED, 3, protocol=schedule, max_cycles=1, sink_effect=True)
    volume_ml = sum(r["volume_ml"] for r in region_truth(plain) if r["voi_type"] == "lesion")
    factor = sink_effect_factor(volume_ml, SINK_EFFECT_PER_LITRE)
    assert sink.sink_effect_oar_factor == pytest.approx(factor)
    assert factor < 1.0
    for label, curve in plain.curves[1].items():
        scaled = sink.curves[1][label]
        expected = factor if oar_name(label) in ("kidneys", "spleen") else 1.0
        assert scaled.tia_mbq_h == pytest.approx(curve.tia_mbq_h * expected, rel=1e-12)
    recorded = cycle_truth(sink, 1)["sink_effect"]
    assert recorded["coefficient_per_litre"] == SINK_EFFECT_PER_LITRE
    assert recorded["oar_factor"] == pytest.approx(factor)
    assert "sink_effect" not in cycle_truth(plain, 1)  # default off: truths as before
    assert plain.sink_effect_oar_factor == 1.0


def test_salivary_glands_where_present_and_too_few_patients_give_no_fit() -> None:
    rows: dict[str, list[dict[str, Any]]] = {"kinetics": [], "voi_timepoints": [], "ps": []}
    for n in range(MIN_FIT_PATIENTS - 1):
        cycle = f"c{n}"
        rows["ps"].append(
            {
                "site_id": "s1",
                "subject_key": f"p{n}",
                "cycle_key": cycle,
                "cycle_number": 1,
                "injected_activity_mbq": 7400.0,
                "injected_activity_traceable_mbq": 7000.0,  # the traceable value wins
            }
        )
        for label, voi_type, tia in (
            ("parotid_left", "organ", 70.0),
            ("parotid_right", "organ", 70.0),
            ("lesion_1", "lesion", 100.0 * (n + 1)),
        ):
            rows["kinetics"].append(
                {
                    "cycle_key": cycle,
                    "voi_label": label,
                    "voi_type": voi_type,
                    "kinetics_method": REFERENCE_METHOD_NAME,
                    "tia_mbq_h": tia,
                    "method_parameters_hash": "h",
                }
            )
            rows["voi_timepoints"].append(
                {"cycle_key": cycle, "voi_label": label, "time_point_index": 0, "volume_ml": 10.0}
            )
    table = build_sink_effect(
        pa.Table.from_pylist(rows["kinetics"]),
        pa.Table.from_pylist(rows["voi_timepoints"]),
        pa.Table.from_pylist(rows["ps"]),
        PROVENANCE,
    )
    records = table.to_pylist()
    assert {r["level"] for r in records} == {LEVEL_CYCLE}  # 4 patients: no fit
    assert {r["oar"] for r in records} == {"salivary_glands"}
    first = records[0]
    assert first["oar_tia_mbq_h"] == 140.0
    assert first["oar_tia_per_ia_h"] == pytest.approx(140.0 / 7000.0)
    assert first["total_lesion_volume_ml"] == 10.0
    assert first["oar_dose_per_ia_gy_per_gbq"] is None  # no absorbed_dose rows given
