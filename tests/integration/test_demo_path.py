"""The demo's whole path: phantom → C-STORE → spool → Prefect flow → Parquet, against truth.

Tolerances: VOI activities carry Poisson noise of < 0.5 % (≥ 40 000 counts per VOI and time
point) and the truth kinetics are mono-exponential, so fitted TIAs must be within 2 % of truth.
Masses are measured on the segmentation (CT) grid while the truth counts SPECT voxels: ≤ 3 %
apart for the smallest (4 mL) lesion; doses therefore within 4 %.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from concordose.cli import app
from concordose.dose.sphere_svalues import lu177_sphere_table

pytestmark = pytest.mark.integration

TIA_RELATIVE_TOLERANCE = 0.02
MASS_RELATIVE_TOLERANCE = 0.03
DOSE_RELATIVE_TOLERANCE = 0.04


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Path:
    workdir = tmp_path_factory.mktemp("demo") / "run"
    result = CliRunner().invoke(app, ["demo", "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    assert "published run" in result.output
    return workdir


def _manifest(workdir: Path) -> dict[str, Any]:
    manifests = sorted((workdir / "output" / "_manifests").glob("*.json"))
    assert len(manifests) == 1
    loaded: dict[str, Any] = json.loads(manifests[0].read_text())
    return loaded


def _table(workdir: Path, name: str) -> list[dict[str, Any]]:
    paths = [obj["path"] for obj in _manifest(workdir)["objects"] if obj["table"] == name]
    assert paths, f"no {name} object in the manifest"
    rows: list[dict[str, Any]] = []
    for path in paths:
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def test_published_doses_match_ground_truth(demo_run: Path) -> None:
    truth = json.loads((demo_run / "input" / "ground_truth.json").read_text())
    table = lu177_sphere_table()
    doses = {row["voi_label"]: row for row in _table(demo_run, "absorbed_dose")}
    assert set(doses) == {voi["label"] for voi in truth["vois"]}
    for voi in truth["vois"]:
        row = doses[voi["label"]]
        assert row["status"] == "ok"
        assert row["dose_method"] == "sphere"
        assert row["kinetics_method"] == "mono_exponential"
        assert row["tia_mbq_h"] == pytest.approx(voi["tia_mbq_h"], rel=TIA_RELATIVE_TOLERANCE)
        assert row["mass_g"] == pytest.approx(voi["mass_g"], rel=MASS_RELATIVE_TOLERANCE)
        true_dose_gy = voi["tia_mbq_h"] * float(table.s_value_mgy_per_mbq_h(voi["mass_g"])) / 1000
        assert row["mean_dose_gy"] == pytest.approx(true_dose_gy, rel=DOSE_RELATIVE_TOLERANCE)


def test_kinetics_and_time_points_match_truth(demo_run: Path) -> None:
    truth = {
        voi["label"]: voi
        for voi in json.loads((demo_run / "input" / "ground_truth.json").read_text())["vois"]
    }
    for row in _table(demo_run, "kinetics"):
        expected = truth[row["voi_label"]]["kinetics"]
        assert row["teff_h"] == pytest.approx(expected["teff_h"], rel=0.03)
        assert row["n_time_points"] == 4
    points = _table(demo_run, "voi_timepoints")
    assert len(points) == 4 * len(truth)
    for row in points:
        expected_mbq = truth[row["voi_label"]]["activity_mbq"][row["time_point_index"]]
        assert row["activity_mbq"] == pytest.approx(expected_mbq, rel=0.01)


def test_rows_carry_provenance_and_no_direct_identifier(demo_run: Path) -> None:
    truth = json.loads((demo_run / "input" / "ground_truth.json").read_text())
    manifest = _manifest(demo_run)
    for obj in manifest["objects"]:
        rows = pq.read_table(obj["path"]).to_pylist()
        assert {row["run_id"] for row in rows} == {manifest["run_id"]}
        for row in rows:
            assert row["flow_run_id"], "flow run id missing"
            assert row["calibration_record_id"] == "milan-phantom-2026-01"
            assert len(row["input_uid_hashes"]) == 4
            assert row["subject_key"].startswith("sub-")
        blob = Path(obj["path"]).read_bytes() + obj["path"].encode()
        for identifier in (truth["patient"]["patient_id"], truth["patient"]["patient_name"]):
            assert identifier.encode() not in blob


def test_output_is_a_hive_partitioned_dataset(demo_run: Path) -> None:
    dataset = pads.dataset(
        demo_run / "output" / "absorbed_dose" / "v1", format="parquet", partitioning="hive"
    )
    table = dataset.to_table()
    assert set(table.column("site_id").to_pylist()) == {"milan"}
    assert table.schema.field("mean_dose_gy").metadata[b"unit"] == b"Gy"
