"""The demo's whole path: phantom → C-STORE → spool → Prefect flow → Parquet, against truth.

Tolerances: VOI activities carry Poisson noise of < 0.5 % (≥ 40 000 counts per VOI and time
point) and the truth kinetics are mono-exponential, so fitted TIAs must be within 2 % of truth.
Masses are measured on the segmentation (CT) grid while the truth counts SPECT voxels: ≤ 3 %
apart for the smallest (4 mL) lesion; doses therefore within 4 %.

The demo patient is imaged on the SPECTacular six-point schedule and processed with the site
protocol's default method set (issue 14): every kinetics method × every VOI dose method, and the
comparison of each simplified method with the reference.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pydicom
import pytest
from prefect.settings import get_current_settings
from typer.testing import CliRunner

from concordose.calibration.protocol import DEFAULT_DOSE_METHODS, DEFAULT_KINETICS_METHODS
from concordose.cli import app
from concordose.dose.sphere_svalues import lu177_sphere_table
from concordose.results.catalogue import query, read_current
from concordose.results.object_store import open_object_store
from concordose.schemas.tables import ABSORBED_DOSE
from concordose.settings import Settings

pytestmark = pytest.mark.integration

TIA_RELATIVE_TOLERANCE = 0.02
MASS_RELATIVE_TOLERANCE = 0.03
DOSE_RELATIVE_TOLERANCE = 0.04
SIX_POINTS = 6
"""The demo's schedule: 4, 24, 48, 96, 168, 240 h (``flows.demo.DEMO_TIME_POINTS_H``)."""


class _Records(logging.Handler):
    """Every log record of the run, formatted with its arguments (what any log sink gets)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.levelname} {record.getMessage()}")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Path:
    workdir = tmp_path_factory.mktemp("demo") / "run"
    records = _Records()
    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    for logger in loggers:
        logger.addHandler(records)
    try:
        result = CliRunner().invoke(app, ["demo", "--workdir", str(workdir)])
    finally:
        for logger in loggers:
            logger.removeHandler(records)
    assert result.exit_code == 0, result.output
    assert "published run" in result.output
    (workdir / "cli-output.txt").write_text(result.output)
    (workdir / "log-records.txt").write_text("\n".join(records.lines))
    return workdir


def _cycle_manifests(output: Path) -> list[dict[str, Any]]:
    """The manifests of cycle runs, oldest first (the cohort tables' rebuilds are runs of
    their own, scoped by ``cohort``)."""
    loaded = [json.loads(p.read_text()) for p in sorted((output / "_manifests").glob("*.json"))]
    return [m for m in loaded if "cycle_key" in m["scopes"]]


def _manifest(workdir: Path) -> dict[str, Any]:
    manifests = _cycle_manifests(workdir / "output")
    assert len(manifests) == 1
    return manifests[0]


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
    rows = _table(demo_run, "absorbed_dose")
    # every kinetics method × every dose method of the default protocol, for every VOI
    assert {(row["kinetics_method"], row["dose_method"]) for row in rows} == {
        (kinetics, dose) for kinetics in DEFAULT_KINETICS_METHODS for dose in DEFAULT_DOSE_METHODS
    }
    assert len(rows) == len(truth["vois"]) * len(DEFAULT_KINETICS_METHODS) * len(
        DEFAULT_DOSE_METHODS
    )
    # the mono-exponential fit (as before issue 14) and the reference, by the sphere model
    for kinetics in ("mono_exponential", "spectacular_6tp"):
        doses = {
            row["voi_label"]: row
            for row in rows
            if row["kinetics_method"] == kinetics and row["dose_method"] == "sphere"
        }
        assert set(doses) == {voi["label"] for voi in truth["vois"]}
        for voi in truth["vois"]:
            row = doses[voi["label"]]
            assert row["status"] == "ok"
            assert row["tia_mbq_h"] == pytest.approx(voi["tia_mbq_h"], rel=TIA_RELATIVE_TOLERANCE)
            assert row["mass_g"] == pytest.approx(voi["mass_g"], rel=MASS_RELATIVE_TOLERANCE)
            s_value = float(table.s_value_mgy_per_mbq_h(voi["mass_g"]))
            true_dose_gy = voi["tia_mbq_h"] * s_value / 1000
            assert row["mean_dose_gy"] == pytest.approx(true_dose_gy, rel=DOSE_RELATIVE_TOLERANCE)


def test_kinetics_and_time_points_match_truth(demo_run: Path) -> None:
    truth = {
        voi["label"]: voi
        for voi in json.loads((demo_run / "input" / "ground_truth.json").read_text())["vois"]
    }
    kinetics = _table(demo_run, "kinetics")
    assert {row["kinetics_method"] for row in kinetics} == set(DEFAULT_KINETICS_METHODS)
    # on six points every method of the default set applies to every VOI
    assert {row["status"] for row in kinetics} == {"ok"}
    for row in kinetics:
        if row["kinetics_method"] not in ("mono_exponential", "spectacular_6tp"):
            continue
        expected = truth[row["voi_label"]]["kinetics"]
        assert row["teff_h"] == pytest.approx(expected["teff_h"], rel=0.03)
        assert row["n_time_points"] == SIX_POINTS
    points = _table(demo_run, "voi_timepoints")
    assert len(points) == SIX_POINTS * len(truth)
    for row in points:
        expected_mbq = truth[row["voi_label"]]["activity_mbq"][row["time_point_index"]]
        assert row["activity_mbq"] == pytest.approx(expected_mbq, rel=0.01)


def test_rows_carry_provenance_and_no_direct_identifier(demo_run: Path) -> None:
    truth = json.loads((demo_run / "input" / "ground_truth.json").read_text())
    manifest = _manifest(demo_run)
    for obj in manifest["objects"]:
        rows = pq.read_table(obj["path"]).to_pylist()
        assert {row["run_id"] for row in rows} == {manifest["run_id"]}
        if obj["table"] == "site_calibrations":  # per calibration record, not per subject
            assert [row["calibration_record_id"] for row in rows] == ["milan-phantom-2026-01"]
            continue
        for row in rows:
            assert row["flow_run_id"], "flow run id missing"
            assert row["calibration_record_id"] == "milan-phantom-2026-01"
            # a row of one acquisition (an acquisition, a time point's QC finding — here the
            # info that no time zone was known) cites that acquisition; every other row the six
            of_one = obj["table"] == "acquisitions" or (
                obj["table"] == "qc_findings" and row["time_point_index"] is not None
            )
            expected = 1 if of_one else SIX_POINTS
            assert len(row["input_uid_hashes"]) == expected
            assert row["subject_key"].startswith("sub-")
        blob = Path(obj["path"]).read_bytes() + obj["path"].encode()
        for identifier in (truth["patient"]["patient_id"], truth["patient"]["patient_name"]):
            assert identifier.encode() not in blob


def test_output_is_a_hive_partitioned_dataset(demo_run: Path) -> None:
    dataset = pads.dataset(
        demo_run / "output" / "absorbed_dose" / f"v{ABSORBED_DOSE.version}",
        format="parquet",
        partitioning="hive",
    )
    table = dataset.to_table()
    assert set(table.column("site_id").to_pylist()) == {"milan"}
    assert table.schema.field("mean_dose_gy").metadata[b"unit"] == b"Gy"


def _input_identifiers(workdir: Path) -> set[str]:
    """Every direct identifier the input DICOM files carry (the things that must not leak)."""
    identifiers: set[str] = set()
    for path in (workdir / "input").rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "AccessionNumber", "InstitutionName"):
            value = str(ds.get(keyword, "") or "")
            if value:
                identifiers.add(value)
        birth = str(ds.get("PatientBirthDate", "") or "")
        if birth:
            identifiers.update({birth, f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"})
    return identifiers


def _readable_text(path: Path) -> str:
    """A file's content as text: Parquet decoded (values and metadata), anything else raw."""
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        metadata = pq.read_metadata(path).metadata or {}
        return json.dumps(table.to_pylist(), default=str) + repr(metadata)
    return path.read_bytes().decode("utf-8", errors="replace")


def test_no_output_object_or_key_carries_an_input_identifier(demo_run: Path) -> None:
    identifiers = _input_identifiers(demo_run)
    assert len(identifiers) >= 5, identifiers  # name, ID, birth date (2 forms), accession, site
    output = demo_run / "output"
    files = [p for p in output.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    assert any(p.name == "index.html" for p in files)  # Data Docs are scanned too
    secret = os.environ["CONCORDOSE_PSEUDONYM_KEY"]
    for path in files:
        text = _readable_text(path)
        key = path.relative_to(output).as_posix()
        for identifier in identifiers:
            assert identifier not in text, f"{identifier!r} found in {key}"
            assert identifier not in key, f"{identifier!r} in object key {key}"
        assert secret not in text, f"the pseudonymisation secret is in {key}"
    assert secret not in (demo_run / "cli-output.txt").read_text()


def test_cycle_level_tables_are_published(demo_run: Path) -> None:
    acquisitions = _table(demo_run, "acquisitions")
    assert [row["time_point_index"] for row in acquisitions] == list(range(SIX_POINTS))
    assert {row["qc_status"] for row in acquisitions} == {"pass"}
    summaries = _table(demo_run, "patient_summary")  # one per kinetics and dose method
    assert len(summaries) == len(DEFAULT_KINETICS_METHODS) * len(DEFAULT_DOSE_METHODS)
    (summary,) = [
        row
        for row in summaries
        if row["kinetics_method"] == "spectacular_6tp" and row["dose_method"] == "sphere"
    ]
    lesion_doses = [
        row["mean_dose_gy"]
        for row in _table(demo_run, "absorbed_dose")
        if row["voi_type"] == "lesion"
        and row["kinetics_method"] == "spectacular_6tp"
        and row["dose_method"] == "sphere"
    ]
    assert summary["n_lesions"] == len(lesion_doses)
    assert summary["lesion_min_dose_gy"] == pytest.approx(min(lesion_doses))
    assert summary["meets_min_lesion_35gy"] == (min(lesion_doses) >= 35.0)


def test_reprocessing_the_study_replaces_its_rows(demo_run: Path, tmp_path: Path) -> None:
    """The same spool processed twice: two manifests, but each row once, from the second run."""
    output = tmp_path / "reprocessed"
    arguments = ["process", "--spool", str(demo_run / "spool"), "--sites"]
    arguments += [str(demo_run / "input" / "sites.yaml"), "--output", str(output)]
    for _ in range(2):
        result = CliRunner().invoke(app, arguments)
        assert result.exit_code == 0, result.output
    manifests = _cycle_manifests(output)
    assert len(manifests) == 2
    second = manifests[-1]
    store = open_object_store(str(output), Settings())
    for table in ("absorbed_dose", "kinetics", "voi_timepoints", "acquisitions"):
        rows = read_current(store, table).to_pylist()
        assert rows, table
        assert {row["run_id"] for row in rows} == {second["run_id"]}, table
    doses = read_current(store, "absorbed_dose")
    truth = json.loads((demo_run / "input" / "ground_truth.json").read_text())
    once = len(truth["vois"]) * len(DEFAULT_KINETICS_METHODS) * len(DEFAULT_DOSE_METHODS)
    assert doses.num_rows == once  # not twice
    counted = query(store, "SELECT count(*) AS n FROM absorbed_dose").to_pylist()
    assert counted == [{"n": once}]


def test_every_simplified_method_is_compared_with_the_reference(demo_run: Path) -> None:
    """``method_comparison`` (empty before issue 14: the reference was not run) has one row per
    VOI, simplified kinetics method and dose method, each against ``spectacular_6tp``."""
    truth = json.loads((demo_run / "input" / "ground_truth.json").read_text())
    rows = _table(demo_run, "method_comparison")
    simplified = set(DEFAULT_KINETICS_METHODS) - {"spectacular_6tp"}
    assert len(rows) == len(truth["vois"]) * len(simplified) * len(DEFAULT_DOSE_METHODS)
    assert {row["reference_kinetics_method"] for row in rows} == {"spectacular_6tp"}
    assert {row["kinetics_method"] for row in rows} == simplified
    lumen = [
        r for r in rows if r["kinetics_method"] == "lumen_3tp" and r["dose_method"] == "sphere"
    ]
    assert len(lumen) == len(truth["vois"])
    # mono-exponential truth: LUMEN's three points agree with the six-point reference
    assert all(abs(row["relative_difference"]) < 0.02 for row in lumen)


def test_the_demo_prints_the_methods_side_by_side_and_their_agreement(demo_run: Path) -> None:
    output = (demo_run / "cli-output.txt").read_text()
    assert "TIA by kinetics method, MBq·h (reference spectacular_6tp)" in output
    assert "Mean absorbed dose by kinetics method, Gy" in output
    assert "Agreement with spectacular_6tp" in output
    truth = json.loads((demo_run / "input" / "ground_truth.json").read_text())
    kinetics = {
        (row["voi_label"], row["kinetics_method"]): row["tia_mbq_h"]
        for row in _table(demo_run, "kinetics")
    }
    lines = output.splitlines()
    for method in DEFAULT_KINETICS_METHODS:
        # one row per method in the TIA table, holding every VOI's TIA as published
        (tia_line,) = [line for line in lines if f"│ {method} " in line][:1]
        for voi in truth["vois"]:
            assert f"{kinetics[(voi['label'], method)]:,.0f}" in tia_line, (method, tia_line)
        if method != "spectacular_6tp":  # in the agreement table: bias and limits
            (agreement_line,) = [line for line in lines if f"│ {method} " in line][2:3]
            assert " to " in agreement_line, agreement_line


def _prefect_database_text() -> str:
    """Every text value of every table of the (temporary) Prefect server's database: flow and
    task runs with their parameters and results, logs, artifacts, events."""
    url = get_current_settings().server.database.connection_url
    assert url is not None
    path = url.get_secret_value().split(":///", 1)[1]
    chunks: list[str] = []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                chunks.extend(
                    v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                    for v in row
                    if isinstance(v, str | bytes)
                )
    return "\n".join(chunks)


def test_no_identifier_or_secret_in_logs_or_prefect_database(demo_run: Path) -> None:
    """Issue 18 item 7: after a run, no patient identifier and not the pseudonymisation secret in
    what was logged (every record, any logger), printed, or stored by Prefect (runs, parameters,
    logs, artifacts, events)."""
    identifiers = _input_identifiers(demo_run)
    secret = os.environ["CONCORDOSE_PSEUDONYM_KEY"]
    logged = (demo_run / "log-records.txt").read_text()
    printed = (demo_run / "cli-output.txt").read_text()
    prefect = _prefect_database_text()
    assert "published" in logged or "Completed" in logged  # the handler did see the run
    assert "process-cycle" in prefect  # the database holds this run's flow runs
    for where, text in (("logs", logged), ("CLI output", printed), ("Prefect database", prefect)):
        for identifier in identifiers:
            assert identifier not in text, f"{identifier!r} found in the {where}"
        assert secret not in text, f"the pseudonymisation secret is in the {where}"
