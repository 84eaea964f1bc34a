"""The results store on a local folder: replacement semantics, versions, validation, query."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from concordose.cli import app
from concordose.errors import ConcordoseError
from concordose.results.catalogue import query, read_current
from concordose.results.object_store import ObjectStore, open_object_store
from concordose.results.publish import (
    MANIFEST_DIR,
    ValidationFailedError,
    publish_tables,
)
from concordose.schemas.tables import ABSORBED_DOSE, VOI_TIMEPOINTS
from concordose.settings import Settings
from tests.results_rows import (
    calibration_table,
    dose_table,
    kinetics_table,
    provenance,
    provenance_columns,
    run_tables,
)


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_object_store(str(tmp_path / "out"), Settings())


def _doses(store: ObjectStore) -> dict[str, tuple[float, str]]:
    table = read_current(store, "absorbed_dose")
    return {row["cycle_key"]: (row["mean_dose_gy"], row["run_id"]) for row in table.to_pylist()}


def test_rerun_replaces_the_cycles_rows_and_keeps_the_others(store: ObjectStore) -> None:
    publish_tables(store, run_tables("run-a", {"c1": 40.0, "c2": 20.0}), provenance("run-a"))
    publish_tables(store, run_tables("run-b", {"c1": 42.0}), provenance("run-b"))

    assert _doses(store) == {"c1": (42.0, "run-b"), "c2": (20.0, "run-a")}
    kinetics = read_current(store, "kinetics")
    assert kinetics.num_rows == 4  # 2 VOIs × 2 cycles: the re-run did not duplicate c1
    counts = query(
        store, "SELECT cycle_key, count(*) AS n FROM kinetics GROUP BY 1 ORDER BY 1"
    ).to_pylist()
    assert counts == [{"cycle_key": "c1", "n": 2}, {"cycle_key": "c2", "n": 2}]
    # Both runs' objects still exist (history), but only the current rows are visible.
    manifests = sorted((Path(store.base) / MANIFEST_DIR).glob("*.json"))
    assert [m.stem for m in manifests] == ["run-a", "run-b"]
    assert json.loads(manifests[1].read_text())["scopes"] == {"cycle_key": ["c1"]}


def test_rerun_that_no_longer_produces_a_table_removes_its_old_rows(store: ObjectStore) -> None:
    publish_tables(store, run_tables("run-a", {"c1": 40.0}), provenance("run-a"))
    publish_tables(store, {"kinetics": [kinetics_table("run-b", "c1")]}, provenance("run-b"))
    assert read_current(store, "absorbed_dose").num_rows == 0
    assert set(read_current(store, "kinetics").column("run_id").to_pylist()) == {"run-b"}


def test_unmanifested_objects_are_invisible(store: ObjectStore) -> None:
    publish_tables(store, run_tables("run-a", {"c1": 40.0}), provenance("run-a"))
    version = f"v{ABSORBED_DOSE.version}"
    orphan = Path(store.base) / "absorbed_dose" / version / "site_id=milan" / "run-x.parquet"
    pq.write_table(dose_table("run-x", "c1", dose_gy=99.0), orphan)
    assert _doses(store) == {"c1": (40.0, "run-a")}


def test_site_calibrations_are_replaced_per_record(store: ObjectStore) -> None:
    publish_tables(
        store, {"site_calibrations": [calibration_table("run-a", 9.5)]}, provenance("run-a")
    )
    publish_tables(
        store, {"site_calibrations": [calibration_table("run-b", 9.7)]}, provenance("run-b")
    )
    rows = read_current(store, "site_calibrations").to_pylist()
    assert [(r["calibration_record_id"], r["calibration_factor_cps_per_mbq"]) for r in rows] == [
        ("cal-1", 9.7)
    ]


def test_rows_of_an_older_schema_version_are_read_upgraded(store: ObjectStore) -> None:
    """A v1 voi_timepoints object (as concordose 0.1 wrote it) reads in the v2 schema."""
    v1 = VOI_TIMEPOINTS.schema_of(1)
    row = {
        "subject_key": "sub-1",
        "site_id": "milan",
        "cycle_key": "c-old",
        "voi_label": "liver",
        "voi_type": "organ",
        "time_point_index": 0,
        "time_h": 4.0,
        "activity_mbq": 500.0,
        "volume_ml": 1500.0,
        "schema_version": 1,
        **provenance_columns("run-old"),
    }
    path = Path(store.base) / "voi_timepoints" / "v1" / "site_id=milan" / "run-old.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=v1), path)
    manifest = {  # manifest format 1: no scopes, no keys
        "run_id": "run-old",
        "flow_run_id": None,
        "software_version": "0.1.0",
        "created_at": "2026-01-01T00:00:00+00:00",
        "objects": [{"table": "voi_timepoints", "path": str(path), "rows": 1, "schema_version": 1}],
    }
    (Path(store.base) / MANIFEST_DIR).mkdir()
    (Path(store.base) / MANIFEST_DIR / "run-old.json").write_text(json.dumps(manifest))

    table = read_current(store, "voi_timepoints")
    assert table.schema.equals(VOI_TIMEPOINTS.schema)
    (upgraded,) = table.to_pylist()
    assert upgraded["schema_version"] == 1
    assert upgraded["quantification_method"] == "cf_voi_sum"
    assert upgraded["activity_mbq"] == 500.0


def test_failing_batch_is_quarantined_and_nothing_is_published(store: ObjectStore) -> None:
    publish_tables(store, run_tables("run-a", {"c1": 40.0}), provenance("run-a"))
    bad = run_tables("run-b", {"c1": 40.0})
    bad["absorbed_dose"] = [dose_table("run-b", "c1", dose_gy=-3.0)]  # negative dose

    with pytest.raises(ValidationFailedError, match=r"absorbed_dose.*mean_dose_gy"):
        publish_tables(store, bad, provenance("run-b"))

    base = Path(store.base)
    assert [m.stem for m in (base / MANIFEST_DIR).glob("*.json")] == ["run-a"]
    assert not list(base.glob("*/v*/site_id=*/run-b.parquet"))
    quarantined = pq.read_table(base / "_quarantine" / "run-b" / "absorbed_dose.parquet")
    assert quarantined.column("mean_dose_gy").to_pylist() == [-3.0]
    result = json.loads(
        (base / "_quarantine" / "run-b" / "absorbed_dose.validation.json").read_text()
    )
    assert result["success"] is False
    assert _doses(store) == {"c1": (40.0, "run-a")}
    run_docs = base / "_data_docs" / "runs" / "run-b"
    (page,) = (run_docs / "validations" / "absorbed_dose").rglob("*.html")
    assert "mean_dose_gy" in page.read_text()


def test_duplicate_keys_and_unknown_methods_fail_validation(store: ObjectStore) -> None:
    twice = {"kinetics": [kinetics_table("r", "c1"), kinetics_table("r", "c1")]}
    with pytest.raises(ValidationFailedError, match="compound_columns_to_be_unique"):
        publish_tables(store, twice, provenance("r"))
    unknown = kinetics_table("r2", "c1").set_column(
        5, "kinetics_method", pa.array(["made_up", "made_up"])
    )
    with pytest.raises(ValidationFailedError, match="made_up"):
        publish_tables(store, {"kinetics": [unknown]}, provenance("r2"))


def test_rows_stamped_with_another_run_are_refused(store: ObjectStore) -> None:
    with pytest.raises(ConcordoseError, match="run id"):
        publish_tables(store, run_tables("run-a", {"c1": 40.0}), provenance("run-z"))


def test_data_docs_and_validation_results_of_the_run(store: ObjectStore) -> None:
    publish_tables(store, run_tables("run-a", {"c1": 40.0}), provenance("run-a"))
    base = Path(store.base)
    assert (base / "_data_docs" / "index.html").is_file()
    validations = base / "_data_docs" / "runs" / "run-a" / "validations"
    pages = list(validations.rglob("*.html"))
    assert {p.relative_to(validations).parts[0] for p in pages} == {"absorbed_dose", "kinetics"}
    results = json.loads((base / "_validation" / "run-a.json").read_text())
    assert results["kinetics"]["success"] is True
    manifest = json.loads((base / MANIFEST_DIR / "run-a.json").read_text())
    suite = f"absorbed_dose.v{ABSORBED_DOSE.version}"
    assert manifest["validation"]["absorbed_dose"]["suite"] == suite


def test_query_command_lesion_dose_by_site_and_method(store: ObjectStore) -> None:
    publish_tables(
        store,
        {
            "absorbed_dose": [
                dose_table("run-a", "c1", site="milan", dose_gy=40.0),
                dose_table("run-a", "c2", site="padua", dose_gy=30.0),
                dose_table("run-a", "c3", site="padua", dose_gy=50.0),
            ]
        },
        provenance("run-a"),
    )
    sql = (
        "SELECT site_id, dose_method, avg(mean_dose_gy) AS mean_gy, count(*) AS n "
        "FROM absorbed_dose WHERE voi_type = 'lesion' GROUP BY ALL ORDER BY site_id"
    )
    result = CliRunner().invoke(app, ["query", sql, "--output", store.base, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"site_id": "milan", "dose_method": "sphere", "mean_gy": 40.0, "n": 1},
        {"site_id": "padua", "dose_method": "sphere", "mean_gy": 40.0, "n": 2},
    ]
    bad = CliRunner().invoke(app, ["query", "SELECT * FROM nowhere", "--output", store.base])
    assert bad.exit_code == 2
    assert "query failed" in bad.output
