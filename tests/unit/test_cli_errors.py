"""Bad input gets one clear message and exit status 2, never a traceback."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from concordose.calibration.ledger import append_record
from concordose.calibration.records import CalibrationRecord
from concordose.cli import EXIT_INPUT_ERROR, app
from concordose.cli.console import EXIT_HELD
from concordose.phantoms import GeneratedPatient
from tests.conftest import SIEMENS_NM_FIXTURE

runner = CliRunner()


@pytest.fixture(autouse=True)
def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pseudonymisation key, and held cycles' findings published under the test's folder."""
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-secret")
    monkeypatch.setenv("CONCORDOSE_OUTPUT_URI", str(tmp_path / "published"))


def _process(spool: Path, sites: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["process", "--spool", str(spool), "--sites", str(sites), *extra])
    # An exception escaping the command is exit status 1 under CliRunner, the same as "held":
    # never let it pass for one.
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def _copy_input(patient: GeneratedPatient, tmp_path: Path) -> Path:
    folder = tmp_path / "incoming"
    shutil.copytree(patient.out_dir / "dicom", folder)
    return folder


def test_missing_spool_folder(small_patient: GeneratedPatient, tmp_path: Path) -> None:
    code, output = _process(tmp_path / "no-such-spool", small_patient.sites_path)
    assert code == EXIT_INPUT_ERROR
    assert "no-such-spool does not exist or is not a folder" in output
    assert "Traceback" not in output


def test_error_naming_a_folder_with_brackets_prints_it_whole(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    """Messages are not console markup: a folder called ``scans [milan] [/2026]`` is printed as
    it is named (not cut at a bracket taken for a tag, nor a traceback on the unmatched
    ``[/2026]``)."""
    code, output = _process(tmp_path / "scans [milan] [/2026]", small_patient.sites_path)
    assert code == EXIT_INPUT_ERROR
    assert "scans [milan] [/2026] does not exist or is not a folder" in output
    assert output.startswith("error: ")
    assert "Traceback" not in output


def test_unreadable_dicom_file(small_patient: GeneratedPatient, tmp_path: Path) -> None:
    folder = _copy_input(small_patient, tmp_path)
    (folder / "tp02" / "broken.dcm").write_bytes(b"\x00" * 200 + b"definitely not DICOM")
    code, output = _process(folder, small_patient.sites_path, "--site", "milan")
    assert code == EXIT_INPUT_ERROR
    assert "broken.dcm is not a readable DICOM file" in " ".join(output.split())
    assert "Traceback" not in output


def test_study_without_vois(small_patient: GeneratedPatient, tmp_path: Path) -> None:
    folder = _copy_input(small_patient, tmp_path)
    (folder / "seg.dcm").unlink()
    code, output = _process(folder, small_patient.sites_path, "--site", "milan")
    assert code == EXIT_HELD  # held until its VOIs arrive, not bad input
    assert "no segmentation (DICOM SEG) with VOIs" in " ".join(output.split())
    assert "Traceback" not in output


def test_folder_without_site_asks_for_it(small_patient: GeneratedPatient, tmp_path: Path) -> None:
    folder = _copy_input(small_patient, tmp_path)
    code, output = _process(folder, small_patient.sites_path)
    assert code == EXIT_INPUT_ERROR
    assert "pass --site" in output


def test_missing_pseudonymisation_key_is_one_message_before_any_flow(
    small_patient: GeneratedPatient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONCORDOSE_PSEUDONYM_KEY")
    folder = _copy_input(small_patient, tmp_path)
    code, output = _process(folder, small_patient.sites_path, "--site", "milan")
    assert code == EXIT_INPUT_ERROR
    assert "no pseudonymisation key: set CONCORDOSE_PSEUDONYM_KEY" in output
    assert "Traceback" not in output
    assert "flow run" not in output.lower()
    assert not (tmp_path / "published").exists()


def test_bad_sites_file(small_patient: GeneratedPatient, tmp_path: Path) -> None:
    folder = _copy_input(small_patient, tmp_path)
    code, output = _process(folder, tmp_path / "missing-sites.yaml", "--site", "milan")
    assert code == EXIT_INPUT_ERROR
    assert "missing-sites.yaml does not exist" in " ".join(output.split())


def test_check_reports_the_vendor_files_missing_data_precisely(
    small_patient: GeneratedPatient,
) -> None:
    result = runner.invoke(
        app,
        [
            "check",
            str(SIEMENS_NM_FIXTURE),
            "--sites",
            str(small_patient.sites_path),
            "--site",
            "milan",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1
    assert "held" in result.output
    for rule in ("radionuclide", "collimator", "calibration", "patient_weight"):
        assert rule in result.output
    assert "Traceback" not in result.output


def test_check_passes_a_conforming_study(small_patient: GeneratedPatient) -> None:
    result = runner.invoke(
        app,
        [
            "check",
            str(small_patient.nm_files[0]),
            "--sites",
            str(small_patient.sites_path),
            "--site",
            "milan",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "passes" in result.output


def test_cycles_without_valid_calibration_are_held_with_the_reason(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    folder = _copy_input(small_patient, tmp_path)
    sites = tmp_path / "sites.yaml"
    sites.write_text(
        small_patient.sites_path.read_text().replace(
            "valid_from: 2026-01-01", "valid_from: 2027-01-01"
        )
    )
    code, output = _process(folder, sites, "--site", "milan")
    assert code == EXIT_HELD  # held is not bad input: exit 1, as process-cycle and check
    flat = " ".join(output.split())
    assert "every cycle is held" in flat
    assert "no calibration valid on" in flat


def test_sites_lists_calibrations(small_patient: GeneratedPatient) -> None:
    result = runner.invoke(
        app, ["sites", "--sites", str(small_patient.sites_path)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "milan-phantom-2026-01" in result.output
    assert "9.100" in result.output


def test_sites_publishes_the_registry_as_a_table(tmp_path: Path) -> None:
    (tmp_path / "sites.yaml").write_text(
        "format_version: 1\ncalibration_ledger: calibrations.jsonl\n"
        "sites:\n  - site_id: milan\n    ae_titles: [MILAN_SPECT]\n"
    )
    append_record(
        tmp_path / "calibrations.jsonl",
        "milan",
        CalibrationRecord(
            record_id="milan-2026",
            calibration_factor_cps_per_mbq=9.1,
            energy_window_kev=(187.5, 229.2),
            recovery_a_ml=1.3,
            recovery_b=0.5,
            valid_from=date(2026, 1, 1),
        ),
    )
    output = tmp_path / "out"
    published = runner.invoke(
        app,
        ["sites", "--sites", str(tmp_path / "sites.yaml"), "--publish", "--output", str(output)],
    )
    assert published.exit_code == 0, published.output
    assert "published 1 calibration record(s)" in published.output
    queried = runner.invoke(
        app,
        [
            "query",
            "SELECT calibration_record_id, recovery_a_ml, energy_window_lower_kev "
            "FROM site_calibrations",
            "--output",
            str(output),
            "--format",
            "json",
        ],
    )
    assert queried.exit_code == 0, queried.output
    assert json.loads(queried.output) == [
        {
            "calibration_record_id": "milan-2026",
            "recovery_a_ml": 1.3,
            "energy_window_lower_kev": 187.5,
        }
    ]


@pytest.mark.parametrize(
    "command",
    [["query", "select 1"], ["report"], ["report", "--dashboard"]],
    ids=["query", "report", "report-dashboard"],
)
def test_readers_refuse_a_missing_store_and_create_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "no" / "such" / "output"
    result = runner.invoke(app, [command[0], "--output", str(missing), *command[1:]])
    assert result.exit_code == EXIT_INPUT_ERROR, result.output
    assert "found no such folder" in result.output
    assert not (tmp_path / "no").exists()


def test_prediction_build_without_a_spool_is_one_line_and_exit_2(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    result = runner.invoke(
        app,
        ["prediction", "build", "--spool", str(tmp_path / "none"), "--sites", str(sites)],
    )
    assert result.exit_code == EXIT_INPUT_ERROR
    output = result.output + (result.stderr if result.stderr_bytes else "")
    assert "sites file" in output
    assert "Traceback" not in output
