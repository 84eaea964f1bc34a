"""Issue 20 item 3d: the ``dose_prediction`` table from PET features and published dose rows
(synthetic cohort with a known SUV-dose relation; first cycle only; PET-only patients)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from concordose.consortium.cohort_tables import rebuild_dose_prediction
from concordose.consortium.sink_effect import build_sink_effect
from concordose.prediction.table import build_dose_prediction, measured_doses_per_gbq
from concordose.results.catalogue import read_current
from concordose.results.object_store import open_object_store
from concordose.results.publish import publish_tables
from concordose.results.validation import validate_tables
from concordose.schemas.tables import DOSE_PREDICTION
from concordose.settings import Settings
from tests.prediction_cohort import (
    ORGANS,
    PROVENANCE,
    REFERENCE,
    SITES,
    prediction_cohort,
)
from tests.results_rows import provenance, run_tables
from tests.sink_cohort import sink_patients, sink_tables


def test_measured_dose_is_the_first_cycles_per_injected_gbq() -> None:
    _, doses, summaries, truth = prediction_cohort()
    measured = measured_doses_per_gbq(doses, summaries, reference_method=REFERENCE)
    assert len(measured) == len(SITES) * 6 * len(ORGANS)
    for row in measured.to_dict("records"):
        key = (str(row["site_id"]), str(row["subject_key"]), str(row["voi_label"]))
        assert row["dose_gy_per_gbq"] == pytest.approx(truth[key])


def test_the_table_predicts_leave_one_site_out_and_for_pet_only_patients() -> None:
    features, doses, summaries, truth = prediction_cohort()
    table = build_dose_prediction(
        features, doses, summaries, PROVENANCE, reference_method=REFERENCE
    )
    assert table.schema.equals(DOSE_PREDICTION.schema, check_metadata=False)
    assert validate_tables({"dose_prediction": table})["dose_prediction"].success
    rows = table.to_pylist()
    vois = [r for r in rows if r["row_kind"] == "voi"]
    assert len(vois) == len(SITES) * 7 * len(ORGANS)
    for row in vois:
        expected = truth[(row["site_id"], row["subject_key"], row["voi_label"])]
        if row["subject_key"].endswith("s6"):
            assert row["validation"] == "no_therapy_yet"
            assert row["measured_dose_gy_per_gbq"] is None
            assert row["training_sites"] == list(SITES)
        else:
            assert row["validation"] == "leave_one_site_out"
            assert row["measured_dose_gy_per_gbq"] == pytest.approx(expected)
            assert row["site_id"] not in row["training_sites"]
        # the truth relation is learnable: every prediction within 40 % (noise 10 %)
        assert row["predicted_dose_gy_per_gbq"] == pytest.approx(expected, rel=0.4)
        assert row["prediction_low_gy_per_gbq"] < row["predicted_dose_gy_per_gbq"]
        assert row["predicted_dose_gy_per_gbq"] < row["prediction_high_gy_per_gbq"]
    metrics = {(r["site_id"], r["voi_type"]): r for r in rows if r["row_kind"] == "metrics"}
    assert set(metrics) == {(s, k) for s in (*SITES, "*") for k in ("*", "organ")}
    pooled = metrics["*", "*"]
    assert pooled["n_vois"] == len(SITES) * 6 * len(ORGANS)
    assert pooled["mape_percent"] < 15.0
    assert pooled["baseline_mape_percent"] > 1.5 * pooled["mape_percent"]
    assert 0.7 <= pooled["interval_coverage"] <= 1.0
    assert not math.isnan(pooled["nrmse"])


def test_no_pet_gives_an_empty_table() -> None:
    _, doses, summaries, _ = prediction_cohort()
    empty: Any = pa.Table.from_pylist(
        [],
        schema=pa.schema(
            [
                ("site_id", pa.string()),
                ("subject_key", pa.string()),
                ("voi_label", pa.string()),
                ("voi_type", pa.string()),
                ("suv_mean", pa.float64()),
                ("suv_max", pa.float64()),
                ("suv_peak", pa.float64()),
                ("volume_ml", pa.float64()),
            ]
        ),
    )
    table = build_dose_prediction(empty, doses, summaries, PROVENANCE, reference_method=REFERENCE)
    assert table.num_rows == 0


def test_rebuild_publishes_the_table_from_the_stores_doses(tmp_path: Path) -> None:
    features, _, _, _ = prediction_cohort()
    store = open_object_store(str(tmp_path / "store"), Settings())
    publish_tables(store, run_tables("run-1", {"cyc-a": 40.0}), provenance("run-1"))
    empty = features.slice(0, 0)
    assert rebuild_dose_prediction(store, empty, provenance("run-2")) is None
    published = rebuild_dose_prediction(store, features, provenance("run-3"))
    assert published is not None
    current = read_current(store, "dose_prediction")
    vois = [r for r in current.to_pylist() if r["row_kind"] == "voi"]
    assert len(vois) == features.num_rows
    # the store's one dose is of no PET patient: every VOI waits for its therapy
    assert {r["validation"] for r in vois} == {"no_therapy_yet"}


def test_publishing_it_alone_neither_hides_nor_is_hidden_by_the_cohort_rebuild(
    tmp_path: Path,
) -> None:
    """A run's scope values hide every earlier run's rows of those values in every table:
    ``dose_prediction`` (published alone) and the cohort rebuild's tables (published together)
    must not share one, or each publication would blank the other's rows."""
    features, _, _, _ = prediction_cohort()
    store = open_object_store(str(tmp_path / "store"), Settings())
    publish_tables(store, run_tables("run-1", {"cyc-a": 40.0}), provenance("run-1"))
    inputs = sink_tables(sink_patients(sink_effect=True, per_site=5))

    def sink_run(run_id: str) -> dict[str, list[pa.Table]]:  # what a cohort rebuild publishes
        table = build_sink_effect(
            inputs["kinetics"],
            inputs["voi_timepoints"],
            inputs["patient_summary"],
            provenance(run_id),
            absorbed_dose=inputs["absorbed_dose"],
        )
        return {"sink_effect": [table]}

    publish_tables(store, sink_run("run-2"), provenance("run-2"))
    n_sink = read_current(store, "sink_effect").num_rows
    assert n_sink > 0
    assert rebuild_dose_prediction(store, features, provenance("run-3")) is not None
    assert read_current(store, "sink_effect").num_rows == n_sink
    publish_tables(store, sink_run("run-4"), provenance("run-4"))  # the next rebuild
    assert read_current(store, "dose_prediction").num_rows > 0
