"""The command line for scripts and people (issue 16, item 5): an example in every `--help`,
`--json` documents, nothing cut when piped, CSV with list columns, non-DICOM files skipped with
a count, exit 1 for held cycles, `--sites` everywhere, and no PatientID unless `--show-phi`."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from concordose.calibration.records import CalibrationRecord
from concordose.cli import EXIT_INPUT_ERROR, app
from concordose.cli.console import EXIT_HELD, PipeFriendlyConsole
from concordose.dicom.pseudonym import PATIENT_HIDDEN
from concordose.phantoms import GeneratedPatient
from concordose.results.calibration_table import build_site_calibrations
from concordose.results.object_store import open_object_store
from concordose.results.provenance import Provenance, new_run_id
from concordose.results.publish import publish_tables
from concordose.settings import Settings
from concordose.spool.completion import CompletionMonitor
from concordose.spool.store import InstanceIdentity, Spool
from concordose.spool.timepoints import InstanceSummary
from tests.conftest import SIEMENS_NM_FIXTURE

runner = CliRunner()

PATIENT_ID = "PAT-0042-SECRET"
LONG_REASON = "from ROGUE: " + "undecodable data set " * 20 + "[dataset] [/x] END-OF-REASON"
"""Long, and with brackets console markup would take for tags: printed as stored all the same."""
LONG_STUDY_UID = "1.2.826.0.1.3680043.8.498.10001000100010001000100010001000100010"
"""64 characters, the most a UID may have."""


def _command_paths(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under ``command`` (a click command or group), as CLI paths."""
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():
        paths.extend(_command_paths(sub, (*path, name)))
    return paths


def test_every_commands_help_has_an_example() -> None:
    paths = _command_paths(typer.main.get_command(app))
    assert ("spool", "status") in paths  # the walk sees groups' commands
    assert ("receive",) in paths
    assert ("sites", "add-calibration") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Example: concordose" in result.output, path


def test_option_help_text_in_brackets_is_not_swallowed_as_markup() -> None:
    """Rich reads ``[default: …]`` in a help string as a markup tag and drops it (``receive
    --port`` showed "TCP port ."): the settings an option defaults to must be shown."""
    result = runner.invoke(app, ["receive", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for setting in ("CONCORDOSE_RECEIVER_PORT", "CONCORDOSE_RECEIVER_AE_TITLE", "131072"):
        assert setting in text, setting


def _spool_with_a_patient(root: Path) -> Spool:
    spool = Spool(root)
    identity = InstanceIdentity.checked(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.20",
        sop_instance_uid="1.2.3.4.5",
        study_uid=LONG_STUDY_UID,
        series_uid="1.2.3.4",
        transfer_syntax="1.2.840.10008.1.2.1",
    )
    summary = InstanceSummary(
        PATIENT_ID, "NM", datetime(2026, 11, 21, 9, 0), datetime(2026, 11, 20, 9, 0)
    )
    spool.store(identity, b"bytes", "MILAN_SPECT", summary, now=datetime.now(UTC))
    spool.quarantine(b"junk", LONG_REASON)
    return spool


def test_spool_status_hides_the_patient_id_unless_show_phi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = _spool_with_a_patient(tmp_path / "spool")
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-secret")
    hidden = runner.invoke(app, ["spool", "status", "--spool", str(spool.root)])
    assert hidden.exit_code == 0, hidden.output
    assert PATIENT_ID not in hidden.output
    assert "sub-" in hidden.output  # the subject key the published tables carry
    shown = runner.invoke(app, ["spool", "status", "--spool", str(spool.root), "--show-phi"])
    assert PATIENT_ID in shown.output
    monkeypatch.delenv("CONCORDOSE_PSEUDONYM_KEY")
    no_key = runner.invoke(app, ["spool", "status", "--spool", str(spool.root), "--json"])
    assert PATIENT_ID not in no_key.output
    assert json.loads(no_key.output)["cycles"][0]["patient"] == PATIENT_HIDDEN


def test_spool_status_piped_keeps_long_values_whole(tmp_path: Path) -> None:
    spool = _spool_with_a_patient(tmp_path / "spool")
    result = runner.invoke(app, ["spool", "status", "--spool", str(spool.root)])  # not a TTY
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(LONG_REASON in line for line in lines)  # on one line, not wrapped
    assert any(LONG_STUDY_UID in line for line in lines)  # the table column is not folded


def test_piped_output_ignores_a_terminal_width_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # COLUMNS describes a terminal (pytest-xdist's workers and some shells export it): piped
    # output still keeps each value whole; a width given explicitly still wins.
    monkeypatch.setenv("COLUMNS", "80")
    value = "x" * 150
    piped = PipeFriendlyConsole(file=io.StringIO())
    piped.print(value)
    assert value in piped.file.getvalue().splitlines()  # type: ignore[attr-defined]
    narrow = PipeFriendlyConsole(file=io.StringIO(), width=80)
    narrow.print(value)
    assert value not in narrow.file.getvalue().splitlines()  # type: ignore[attr-defined]


def test_spool_status_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-secret")
    spool = _spool_with_a_patient(tmp_path / "spool")
    result = runner.invoke(app, ["spool", "status", "--spool", str(spool.root), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert set(document) == {"spool", "cycles", "unassigned_time_points", "totals", "quarantined"}
    (cycle,) = document["cycles"]
    assert cycle["state"] == "receiving"
    assert cycle["injection"] == "2026-11-20T09:00:00"
    (point,) = cycle["time_points"]
    assert point["sender"] == "MILAN_SPECT"
    assert point["modalities"] == ["NM"]
    assert point["time_h"] == pytest.approx(24.0)
    assert document["totals"]["time_points"]["receiving"] == 1
    assert document["totals"]["quarantined"] == 1
    assert document["quarantined"][0]["reason"] == LONG_REASON
    assert PATIENT_ID not in result.output


def test_receiver_log_names_no_patient_unless_show_phi(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = _spool_with_a_patient(tmp_path / "spool")
    study = spool.timepoints()[0].study_uid
    caplog.set_level(logging.INFO, logger="concordose.spool.completion")
    CompletionMonitor(spool, on_complete=lambda _event: None).trigger(study)
    completion_lines = [r.getMessage() for r in caplog.records if "complete" in r.getMessage()]
    assert completion_lines
    assert all(PATIENT_ID not in line for line in completion_lines)
    assert any(PATIENT_HIDDEN in line for line in completion_lines)

    caplog.clear()
    other = _spool_with_a_patient(tmp_path / "other")
    CompletionMonitor(other, on_complete=lambda _event: None, show_phi=True).trigger(study)
    assert any(PATIENT_ID in r.getMessage() for r in caplog.records)


def test_receive_takes_sites_and_keeps_config_as_alias(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    sites.write_text("format_version: 1\nsites:\n  - site_id: milan\n    ae_titles: [MILAN]\n")
    for flag in ("--sites", "--config"):
        args = ["receive", "--spool", str(tmp_path / "spool"), flag, str(sites), "--port", "0"]
        result = runner.invoke(app, [*args, "--tls-cert", str(sites)])
        assert result.exit_code == EXIT_INPUT_ERROR, (flag, result.output)
        assert "TLS needs all of" in result.output + result.stderr  # got past option parsing


def _publish_one_calibration(output: Path) -> None:
    record = CalibrationRecord(
        record_id="milan-2026",
        calibration_factor_cps_per_mbq=9.1,
        energy_window_kev=(187.5, 229.2),
        recovery_a_ml=1.3,
        recovery_b=0.5,
        valid_from=date(2026, 1, 1),
    )
    provenance = Provenance(run_id=new_run_id())
    table = build_site_calibrations([("milan", record)], provenance)
    store = open_object_store(str(output), Settings())
    publish_tables(store, {"site_calibrations": [table]}, provenance)


def test_query_csv_json_encodes_list_and_struct_columns(tmp_path: Path) -> None:
    output = tmp_path / "out"
    _publish_one_calibration(output)
    sql = (
        "SELECT calibration_record_id, [1.5, 2.5, 4.0] AS dose_levels_gy, "
        "{'a': 1, 'b': 'x'} AS extra FROM site_calibrations"
    )
    result = runner.invoke(app, ["query", sql, "--output", str(output), "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    (row,) = list(csv.DictReader(io.StringIO(result.output)))
    assert row["calibration_record_id"] == "milan-2026"
    assert json.loads(row["dose_levels_gy"]) == [1.5, 2.5, 4.0]
    assert json.loads(row["extra"]) == {"a": 1, "b": "x"}


def test_query_table_shows_brackets_in_values_as_written(tmp_path: Path) -> None:
    """The table format prints cell text as it is stored: a QC message naming its VOIs as
    ``[lesion_1, lesion_2]`` and a list column keep their brackets (not read as console
    markup and dropped)."""
    output = tmp_path / "out"
    _publish_one_calibration(output)
    sql = (
        "SELECT '2 lesion VOI(s) [lesion_1, lesion_2]: x' AS message, "
        "['lesion_1', 'lesion_2'] AS voi_labels FROM site_calibrations"
    )
    result = runner.invoke(app, ["query", sql, "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "[lesion_1, lesion_2]" in result.output
    assert "['lesion_1', 'lesion_2']" in result.output


def test_check_json_and_exit_status(small_patient: GeneratedPatient, tmp_path: Path) -> None:
    args = ["--sites", str(small_patient.sites_path), "--site", "milan", "--json"]
    held = runner.invoke(app, ["check", str(SIEMENS_NM_FIXTURE), *args])
    assert held.exit_code == EXIT_HELD
    document = json.loads(held.stdout)
    assert document["held"] is True
    (item,) = document["files"]
    assert item["file"] == str(SIEMENS_NM_FIXTURE)
    assert {"radionuclide", "collimator"} <= {f["rule"] for f in item["findings"]}
    assert {"error"} <= {f["severity"] for f in item["findings"]}

    folder = tmp_path / "tp01"
    folder.mkdir()
    shutil.copy(small_patient.nm_files[0], folder / "nm.dcm")
    (folder / "notes.json").write_text("{}")
    passes = runner.invoke(app, ["check", str(folder), *args])
    assert passes.exit_code == 0, passes.output
    document = json.loads(passes.stdout)
    assert [item["held"] for item in document["files"]] == [False]
    assert document["skipped_non_dicom"] == [str(folder / "notes.json")]


def test_process_skips_non_dicom_files_and_exits_1_when_held(
    small_patient: GeneratedPatient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-secret")
    monkeypatch.setenv("CONCORDOSE_OUTPUT_URI", str(tmp_path / "published"))
    folder = tmp_path / "incoming"
    shutil.copytree(small_patient.out_dir / "dicom", folder)
    shutil.copy(small_patient.ground_truth_path, folder / "ground_truth.json")
    (folder / "README.txt").write_text("exported from the PACS\n")
    sites = tmp_path / "sites.yaml"
    sites.write_text(  # no calibration valid on the acquisition date: the cycle is held
        small_patient.sites_path.read_text().replace(
            "valid_from: 2026-01-01", "valid_from: 2027-01-01"
        )
    )
    result = runner.invoke(
        app, ["process", "--spool", str(folder), "--sites", str(sites), "--site", "milan"]
    )
    output = " ".join((result.output + result.stderr).split())
    assert result.exit_code == EXIT_HELD, output
    assert "skipped 2 non-DICOM file(s)" in output
    assert "every cycle is held" in output
    # stdout only: Prefect's log handler may report, on stderr, a stream an earlier CliRunner
    # invocation closed (a test-harness artefact, not this command's output)
    assert "Traceback" not in result.stdout
