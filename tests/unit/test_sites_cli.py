"""Site lifecycle from the CLI (issue 16): `sites add`, `sites add-calibration`, `sites show`,
`protocol show`; the sites file's schema, entry-naming errors and plausible calibration factors."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]  # (installed with great-expectations)
import pytest
import yaml
from typer.testing import CliRunner

from concordose.calibration.findings import Severity
from concordose.calibration.gate import gate_time_point
from concordose.calibration.plausibility import check_calibration_factor
from concordose.calibration.protocol import load_protocol, packaged_protocol_dir
from concordose.calibration.registry import SITES_SCHEMA, SiteRegistry
from concordose.cli import EXIT_INPUT_ERROR, app
from concordose.dicom.nm import read_nm_header
from concordose.errors import ConfigurationError
from concordose.phantoms import GeneratedPatient

runner = CliRunner()


def _run(*arguments: str) -> tuple[int, str]:
    result = runner.invoke(app, list(arguments), env={"COLUMNS": "200"})
    return result.exit_code, " ".join((result.output + result.stderr).split())


def _add_padua(sites: Path) -> None:
    code, output = _run(
        "sites", "add", "--sites", str(sites), "--site", "padua", "--ae-title", "PADUA_NM"
    )
    assert code == 0, output


KNOWN_CF = (
    "--site",
    "padua",
    "--record-id",
    "padua-known-cf-2026",
    "--camera-model",
    "Symbia Intevo",
    "--collimator",
    "MEGP",
    "--valid-from",
    "2026-03-01",
)


def test_schema_file_is_the_generated_schema() -> None:
    assert json.loads(SITES_SCHEMA.path().read_text()) == SITES_SCHEMA.generated()


def test_sites_add_creates_the_file_then_adds_ae_titles(tmp_path: Path) -> None:
    sites = tmp_path / "conf" / "sites.yaml"
    code, output = _run(
        "sites", "add", "--sites", str(sites), "--site", "padua", "--ae-title", "PADUA_NM",
        "--institution", "Istituto Oncologico Veneto",
    )  # fmt: skip
    assert code == 0, output
    assert f"created {sites}" in output
    assert "site padua added (AE titles PADUA_NM)" in output
    code, output = _run(
        "sites", "add", "--sites", str(sites), "--site", "padua",
        "--ae-title", "PADUA_NM", "--ae-title", "PADUA_CT",
    )  # fmt: skip
    assert code == 0, output
    assert "AE title(s) PADUA_CT added" in output
    padua = SiteRegistry.load(sites).site("padua")
    assert padua.ae_titles == ["PADUA_NM", "PADUA_CT"]
    assert padua.institution == "Istituto Oncologico Veneto"
    # the written file is valid against the published JSON Schema too
    jsonschema.validate(yaml.safe_load(sites.read_text()), SITES_SCHEMA.generated())


def test_sites_add_keeps_comments_and_refuses_another_site_s_ae_title(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    sites.write_text(
        "# consortium sites, kept by hand\nformat_version: 1\nsites:\n"
        "  - site_id: milan\n    ae_titles: [MILAN_SPECT]   # the Intevo\n"
    )
    _add_padua(sites)
    text = sites.read_text()
    assert "# consortium sites, kept by hand" in text
    assert "# the Intevo" in text
    code, output = _run(
        "sites", "add", "--sites", str(sites), "--site", "padua", "--ae-title", "MILAN_SPECT"
    )
    assert code == EXIT_INPUT_ERROR
    assert "MILAN_SPECT (site milan)" in output
    code, output = _run(
        "sites", "add", "--sites", str(sites), "--site", "padua", "--ae-title", "PADUA\\NM"
    )
    assert code == EXIT_INPUT_ERROR
    assert "no backslash" in output
    assert "(the file was not changed)" in output
    assert sites.read_text() == text


def test_a_known_cf_is_added_and_a_unit_slip_refused(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    _add_padua(sites)
    before = sites.read_text()
    code, output = _run(
        "sites", "add-calibration", "--sites", str(sites), *KNOWN_CF, "--cf", "9100"
    )
    assert code == EXIT_INPUT_ERROR
    assert (
        "--cf: calibration factor 9100 cps/MBq is outside the plausible 2–40 cps/MBq for "
        "Lu-177 at 208 keV; did you enter cps/GBq (divide by 1000): 9.1 cps/MBq?"
    ) in output
    assert sites.read_text() == before
    code, output = _run(
        "sites", "add-calibration", "--sites", str(sites), *KNOWN_CF, "--cf", "9.1",
        "--cf-uncertainty", "0.05", "--energy-window-kev", "187.5,229.2",
    )  # fmt: skip
    assert code == 0, output
    (record,) = SiteRegistry.load(sites).site("padua").calibrations
    assert record.calibration_factor_cps_per_mbq == 9.1
    assert record.calibration_factor_relative_uncertainty == 0.05
    assert record.energy_window_kev == (187.5, 229.2)
    assert (record.camera_model, record.collimator) == ("Symbia Intevo", "MEGP")
    code, output = _run("sites", "add-calibration", "--sites", str(sites), *KNOWN_CF, "--cf", "9.3")
    assert code == EXIT_INPUT_ERROR
    assert "'padua-known-cf-2026' is already a record of site 'padua'" in output
    code, output = _run(
        "sites", "add-calibration", "--sites", str(sites), *KNOWN_CF, "--cf", "9.1",
        "--energy-window-kev", "100,130",
    )  # fmt: skip
    assert code == EXIT_INPUT_ERROR
    assert "no plausible calibration factor is known for Lu-177 with window (100.0, 130.0)" in (
        output
    )


@pytest.mark.parametrize(
    ("cf", "cause"),
    [
        (0.0091, "cps/kBq"),
        (546.0, "counts per minute"),
        (336.7, "cps/mCi"),
        (50.0, "check the unit"),
    ],
)
def test_each_likely_unit_slip_is_named(cf: float, cause: str) -> None:
    with pytest.raises(ConfigurationError, match=cause):
        check_calibration_factor(cf, where="--cf")


def test_sites_show_json_and_the_deprecated_form(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    _add_padua(sites)
    code, output = _run("sites", "add-calibration", "--sites", str(sites), *KNOWN_CF, "--cf", "9.1")
    assert code == 0, output
    result = runner.invoke(app, ["sites", "show", "--sites", str(sites), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["sites"][0]["site_id"] == "padua"
    assert shown["sites"][0]["calibrations"][0]["calibration_factor_cps_per_mbq"] == 9.1
    code, output = _run("sites", "--sites", str(sites))
    assert code == 0, output
    assert "deprecated" in output
    assert "concordose sites show --sites FILE" in output
    assert "padua-known-cf-2026" in output


def test_an_implausible_cf_in_the_file_is_refused_naming_the_entry(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    sites.write_text(
        "sites:\n  - site_id: milan\n    ae_titles: [MILAN_SPECT]\n"
        "  - site_id: padua\n    ae_titles: [PADUA_NM]\n"
        "    nominal_calibration_factor_cps_per_mbq: 0.5\n    calibrations:\n"
        "      - {record_id: ok, calibration_factor_cps_per_mbq: 9.1, valid_from: 2026-01-01}\n"
        "      - {record_id: slip, calibration_factor_cps_per_mbq: 9100, valid_from: 2026-02-01}\n"
    )
    with pytest.raises(ConfigurationError) as raised:
        SiteRegistry.load(sites)
    message = str(raised.value)
    assert "sites[1] (site_id 'padua').calibrations[1] (record_id 'slip'): calibration " in (
        message
    )
    assert "9100 cps/MBq is outside the plausible 2–40 cps/MBq" in message
    assert "sites[1] (site_id 'padua').nominal_calibration_factor_cps_per_mbq" in message


def test_field_errors_name_the_entry_and_what_was_found(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    sites.write_text(
        "sites:\n  - site_id: milan\n    ae_titles: [MILAN_SPECT]\n"
        "  - site_id: padua\n    ae_titles: [PADUA_NM]\n    calibrations:\n"
        "      - {record_id: r, calibration_factor_cps_per_mbq: -1, valid_from: 2026-01-01}\n"
    )
    with pytest.raises(ConfigurationError) as raised:
        SiteRegistry.load(sites)
    assert (
        "sites[1] (site_id 'padua').calibrations[0] (record_id 'r')."
        "calibration_factor_cps_per_mbq: Input should be greater than 0 (found -1)"
    ) in str(raised.value)


def test_changes_since_lists_what_a_reload_changed(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    _add_padua(sites)
    old = SiteRegistry.load(sites)
    _run("sites", "add", "--sites", str(sites), "--site", "padua", "--ae-title", "PADUA_CT")
    _run("sites", "add", "--sites", str(sites), "--site", "rome", "--ae-title", "ROME_NM")
    _run("sites", "add-calibration", "--sites", str(sites), *KNOWN_CF, "--cf", "9.1")
    assert SiteRegistry.load(sites).changes_since(old) == [
        "site rome added (AE titles ROME_NM)",
        "site padua: AE title(s) PADUA_CT added",
        "site padua: calibration record(s) padua-known-cf-2026 added",
    ]
    assert old.changes_since(old) == []


def test_protocol_overrides_come_from_env_then_sites_file_then_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONCORDOSE_PROTOCOL_DIR", raising=False)
    sites = tmp_path / "sites.yaml"
    _add_padua(sites)
    (tmp_path / "protocols").mkdir()
    (tmp_path / "protocols" / "padua.yaml").write_text("collimators: [MELP]\n")
    text = sites.read_text().replace(
        "format_version: 1\n", "format_version: 1\nprotocol_dir: protocols\n"
    )
    sites.write_text(text)
    registry = SiteRegistry.load(sites)
    assert registry.protocol_dir == tmp_path / "protocols"
    assert load_protocol("padua", registry.protocol_dir).collimators == ["MELP"]
    assert load_protocol("padua").collimators == []  # packaged: no padua file

    code, output = _run("protocol", "show", "--site", "padua", "--sites", str(sites))
    assert code == 0, output
    assert "collimators: - MELP" in output
    assert str(packaged_protocol_dir() / "default.yaml") in output
    assert str(tmp_path / "protocols" / "padua.yaml") in output

    env_dir = tmp_path / "env-protocols"
    env_dir.mkdir()
    (env_dir / "padua.yaml").write_text("collimators: [HEGP]\n")
    monkeypatch.setenv("CONCORDOSE_PROTOCOL_DIR", str(env_dir))
    result = runner.invoke(
        app, ["protocol", "show", "--site", "padua", "--sites", str(sites), "--json"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["protocol"]["collimators"] == ["HEGP"]
    assert shown["sources"] == [
        str(packaged_protocol_dir() / "default.yaml"),
        str(env_dir / "padua.yaml"),
    ]
    assert load_protocol("padua", registry.protocol_dir).collimators == ["HEGP"]
    # the packaged site files apply only when no folder is configured
    assert load_protocol("milan", registry.protocol_dir).collimators == []
    monkeypatch.delenv("CONCORDOSE_PROTOCOL_DIR")
    assert load_protocol("milan").collimators == ["MEGP"]

    sites.write_text(text.replace("protocol_dir: protocols", "protocol_dir: nowhere"))
    code, output = _run("protocol", "show", "--site", "padua", "--sites", str(sites))
    assert code == EXIT_INPUT_ERROR
    assert "protocol_dir of the sites file" in output
    assert "is not a folder" in output


def test_every_sites_and_protocol_command_has_an_example() -> None:
    for command in (
        ["sites", "add"],
        ["sites", "add-calibration"],
        ["sites", "show"],
        ["sites"],
        ["protocol", "show"],
        ["protocol"],
    ):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "Example: concordose" in result.output, command


def test_the_gate_reads_the_site_protocol_from_the_sites_file_folder(
    tmp_path: Path, small_patient: GeneratedPatient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONCORDOSE_PROTOCOL_DIR", raising=False)
    (tmp_path / "protocols").mkdir()
    override = tmp_path / "protocols" / "padua.yaml"
    override.write_text("collimators: [MELP]\n")
    sites = tmp_path / "sites.yaml"
    sites.write_text(
        "protocol_dir: protocols\nsites:\n  - site_id: padua\n    ae_titles: [PADUA_NM]\n"
        "    calibrations:\n"
        "      - {record_id: r, calibration_factor_cps_per_mbq: 9.1, valid_from: 2026-01-01}\n"
    )
    registry = SiteRegistry.load(sites)
    acquisition = read_nm_header(small_patient.nm_files[0])  # a MEGP study
    held = gate_time_point(acquisition, registry, calling_ae_title="PADUA_NM")
    assert held.held
    assert {f.rule for f in held.findings if f.severity is Severity.ERROR} == {"collimator"}
    override.write_text("collimators: [MEGP]\n")
    assert not gate_time_point(acquisition, registry, calling_ae_title="PADUA_NM").held


def test_a_duplicate_ae_title_names_both_sites(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    sites.write_text(
        "sites:\n  - site_id: a\n    ae_titles: [X, Y]\n  - site_id: b\n    ae_titles: [X]\n"
    )
    with pytest.raises(ConfigurationError, match=r"duplicate AE title\(s\): X in sites\[0\] "):
        SiteRegistry.load(sites)
    with pytest.raises(ConfigurationError, match=r"sites\[1\] \('b'\); expected each once"):
        SiteRegistry.load(sites)
