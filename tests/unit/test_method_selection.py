"""Which methods a run computes (issue 14, item 1): the site protocol names them, the default is
the full SPECTacular-style set, a site narrows it, the CLI overrides it per run; unknown names are
refused before anything runs, naming the name and the valid ones."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from concordose.calibration.protocol import (
    DEFAULT_DOSE_METHODS,
    DEFAULT_KINETICS_METHODS,
    SiteProtocol,
    load_protocol,
)
from concordose.cli import EXIT_INPUT_ERROR, app
from concordose.dose.registry import DOSE_METHODS
from concordose.errors import ConfigurationError
from concordose.flows import sweep
from concordose.flows.sweep import SweepResult
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.kinetics.registry import KINETICS_METHODS
from concordose.phantoms import GeneratedPatient

PROTOCOLS = Path(__file__).resolve().parents[2] / "schemas" / "protocols"

SPECTACULAR_STYLE_SET = {
    "spectacular_6tp",  # the reference
    "hanscheid_stp",
    "madsen_stp",
    "lutadose_2tp",
    "lumen_3tp",
    "hebert_4tp",
    "mono_exponential",
    "bi_exponential",
    "trapezoid",
}
"""Issue 14's default kinetics set, spelt out independently of the code's constant."""


def _site_folder(tmp_path: Path, site_yaml: str) -> Path:
    folder = tmp_path / "protocols"
    folder.mkdir()
    shutil.copy(PROTOCOLS / "default.yaml", folder / "default.yaml")
    (folder / "padua.yaml").write_text(site_yaml)
    return folder


def test_the_default_protocol_runs_the_full_spectacular_style_set() -> None:
    protocol = load_protocol("milan")  # milan.yaml names no methods: the consortium's
    assert set(protocol.kinetics_methods) == SPECTACULAR_STYLE_SET
    assert protocol.reference_method == REFERENCE_METHOD_NAME == "spectacular_6tp"
    assert set(protocol.dose_methods) == {"sphere", "organ_s_am", "organ_s_af", "ldm"}
    # default.yaml and the model's defaults say the same (one baseline)
    assert protocol.kinetics_methods == SiteProtocol().kinetics_methods == DEFAULT_KINETICS_METHODS
    assert protocol.dose_methods == SiteProtocol().dose_methods == DEFAULT_DOSE_METHODS
    methods = protocol.run_methods()
    assert methods.kinetics_methods == DEFAULT_KINETICS_METHODS
    assert methods.dose_methods == DEFAULT_DOSE_METHODS
    assert methods.reference_method == "spectacular_6tp"


def test_a_site_narrows_the_set(tmp_path: Path) -> None:
    folder = _site_folder(
        tmp_path,
        "kinetics_methods: [spectacular_6tp, lumen_3tp, mono_exponential]\ndose_methods: sphere\n",
    )
    padua = load_protocol("padua", folder)
    assert padua.kinetics_methods == ("spectacular_6tp", "lumen_3tp", "mono_exponential")
    assert padua.dose_methods == ("sphere",)
    assert load_protocol("other", folder).kinetics_methods == DEFAULT_KINETICS_METHODS


def test_all_in_a_protocol_is_every_registered_method(tmp_path: Path) -> None:
    folder = _site_folder(tmp_path, "kinetics_methods: all\ndose_methods: all\n")
    padua = load_protocol("padua", folder)
    assert padua.kinetics_methods == tuple(KINETICS_METHODS.names())
    assert padua.dose_methods == tuple(DOSE_METHODS.names())


@pytest.mark.parametrize(
    ("site_yaml", "expected"),
    [
        (
            "kinetics_methods: [spectacular_6tp, mono_exp]\n",
            ["kinetics_methods", "'mono_exp'", "mono_exponential", "hebert_4tp"],
        ),
        ("dose_methods: [sphere, organ_s]\n", ["dose_methods", "'organ_s'", "organ_s_am", "ldm"]),
        (
            "kinetics_methods: [mono_exponential, trapezoid]\n",
            ["reference_method 'spectacular_6tp' must be one of kinetics_methods"],
        ),
        (
            "reference_method: lumen_3tp\nkinetics_methods: [spectacular_6tp, mono_exponential]\n",
            ["reference_method 'lumen_3tp' must be one of kinetics_methods"],
        ),
    ],
)
def test_a_bad_method_list_in_a_protocol_is_refused_with_the_valid_names(
    tmp_path: Path, site_yaml: str, expected: list[str]
) -> None:
    folder = _site_folder(tmp_path, site_yaml)
    with pytest.raises(ConfigurationError) as caught:
        load_protocol("padua", folder)
    message = str(caught.value)
    assert "padua.yaml" in message
    for text in expected:
        assert text in message


def test_a_run_overrides_the_protocol_and_always_runs_the_reference() -> None:
    protocol = load_protocol("milan")
    methods = protocol.run_methods("mono_exponential, trapezoid", "sphere")
    assert methods.kinetics_methods == ("spectacular_6tp", "mono_exponential", "trapezoid")
    assert methods.dose_methods == ("sphere",)
    every = protocol.run_methods("all", "all")
    assert every.kinetics_methods == tuple(KINETICS_METHODS.names())
    assert every.dose_methods == tuple(DOSE_METHODS.names())
    with pytest.raises(ConfigurationError, match=r"unknown kinetics method.*'nope'.*trapezoid"):
        protocol.run_methods("nope")


def test_selection_keeps_the_order_given_without_repeats() -> None:
    assert KINETICS_METHODS.select("trapezoid,mono_exponential,trapezoid", where="x") == (
        "trapezoid",
        "mono_exponential",
    )
    with pytest.raises(ConfigurationError, match="--dose-methods: expected at least one"):
        DOSE_METHODS.select(" , ", where="--dose-methods")


# --- the command line -------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """``process_spool`` replaced by a recorder (the flow itself is tested in integration)."""
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-secret")
    monkeypatch.setenv("CONCORDOSE_OUTPUT_URI", str(tmp_path / "published"))
    calls: dict[str, Any] = {}

    def record(*args: Any, **kwargs: Any) -> SweepResult:
        calls.update(kwargs)
        return SweepResult(runs=(), failed={}, considered=0)

    monkeypatch.setattr(sweep, "process_spool", record)
    return calls


def _process(patient: GeneratedPatient, *extra: str) -> tuple[int, str]:
    arguments = ["process", "--spool", str(patient.out_dir / "dicom")]
    arguments += ["--sites", str(patient.sites_path), "--site", "milan", *extra]
    result = runner.invoke(app, arguments)
    return result.exit_code, result.output


def test_cli_without_methods_leaves_them_to_the_protocol(
    small_patient: GeneratedPatient, captured: dict[str, Any]
) -> None:
    code, output = _process(small_patient)
    assert code == 0, output
    assert captured["kinetics_methods"] is None
    assert captured["dose_methods"] is None


def test_cli_method_lists_and_all(
    small_patient: GeneratedPatient, captured: dict[str, Any]
) -> None:
    code, output = _process(
        small_patient, "--kinetics-methods", "lumen_3tp,mono_exponential", "--dose-methods", "all"
    )
    assert code == 0, output
    assert captured["kinetics_methods"] == ("lumen_3tp", "mono_exponential")
    assert captured["dose_methods"] == tuple(DOSE_METHODS.names())
    code, output = _process(small_patient, "--kinetics-methods", "all")
    assert code == 0, output
    assert captured["kinetics_methods"] == tuple(KINETICS_METHODS.names())


@pytest.mark.parametrize(
    ("flag", "value", "known"),
    [
        ("--kinetics-methods", "mono_exponential,madsen", "madsen_stp"),
        ("--dose-methods", "sphere,voxel", "organ_s_am"),
    ],
)
def test_cli_refuses_an_unknown_method_before_processing(
    small_patient: GeneratedPatient, captured: dict[str, Any], flag: str, value: str, known: str
) -> None:
    code, output = _process(small_patient, flag, value)
    assert code == EXIT_INPUT_ERROR
    text = " ".join(output.split())
    unknown = value.split(",")[1]
    assert f"{flag}: unknown" in text
    assert f"'{unknown}'" in text
    assert known in text
    assert "Traceback" not in output
    assert captured == {}  # nothing ran
