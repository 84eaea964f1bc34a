"""The site protocol's partial-volume switch through the flow ("test" preset, one patient).

With ``partial_volume_correction: {enabled: true, model: rc0_local_background}`` in milan's
protocol and an RC0 curve in its calibration record, the flow's lesion rows carry the model, the
local background (MBq/mL) and its SD, and their activities are exactly the library's
background-aware correction with the protocol's (non-default) shell; organ rows are as measured.
With the same protocol and a record without RC0 (the generator's record), the flow does not
crash: lesions are published as measured with a status and a QC finding naming the record.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

import concordose.calibration.protocol as protocol_module
from concordose.calibration.registry import SiteRegistry
from concordose.flows.sweep import process_spool
from concordose.phantoms import GeneratedPatient, generate_patient
from concordose.pipeline.assembly import assemble_cycles
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.quantify import quantify_cycle
from concordose.quant.pvc import BACKGROUND_MODEL, STATUS_OK
from concordose.results.cycle_summary import PARTIAL_VOLUME_CHECK

pytestmark = pytest.mark.integration

RC0_A_ML, RC0_B = 3.0, 1.4  # plausible Lu-177 MEGP RC0 curve: RC0 = 0.5 at 3 mL
RC0_COVARIANCE = [[0.01, 0.0], [0.0, 0.001]]
SHELL_GAP_MM, SHELL_WIDTH_MM = 8.0, 12.0  # not the library's 10/10: proves the threading


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> GeneratedPatient:
    return generate_patient(tmp_path_factory.mktemp("patient"), seed=11, preset="test")


@pytest.fixture
def pvc_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Milan's protocol with the background-aware correction switched on."""
    folder = tmp_path / "protocols"
    shutil.copytree(protocol_module.packaged_protocol_dir(), folder)
    milan = yaml.safe_load((folder / "milan.yaml").read_text()) or {}
    milan["partial_volume_correction"] = {
        "enabled": True,
        "model": BACKGROUND_MODEL,
        "shell_gap_mm": SHELL_GAP_MM,
        "shell_width_mm": SHELL_WIDTH_MM,
    }
    (folder / "milan.yaml").write_text(yaml.safe_dump(milan))
    monkeypatch.setenv("CONCORDOSE_PROTOCOL_DIR", str(folder))
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-key-not-secret")


def _with_rc0(patient: GeneratedPatient, path: Path) -> Path:
    document = yaml.safe_load(patient.sites_path.read_text())
    record = document["sites"][0]["calibrations"][0]
    record.update(
        contrast_recovery_a_ml=RC0_A_ML,
        contrast_recovery_b=RC0_B,
        contrast_recovery_covariance=RC0_COVARIANCE,
    )
    path.write_text(yaml.safe_dump(document))
    return path


def _by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(row["voi_label"], row["time_point_index"]): row for row in rows}


@pytest.mark.usefixtures("prefect_server", "pvc_on")
def test_protocol_switch_corrects_lesions_and_publishes_the_background(
    patient: GeneratedPatient, tmp_path: Path
) -> None:
    sites = _with_rc0(patient, tmp_path / "sites.yaml")
    result = process_spool(
        patient.out_dir / "dicom", sites, output_uri=str(tmp_path / "out"), site_id="milan"
    )
    rows = _by_key(result.tables["voi_timepoints"].to_pylist())
    (cycle,) = assemble_cycles(catalogue(patient.out_dir / "dicom"))
    (site,) = SiteRegistry.load(sites).sites
    (calibration,) = site.calibrations
    plain = quantify_cycle(cycle, calibration)
    expected = quantify_cycle(
        cycle,
        calibration,
        partial_volume_correction=True,
        partial_volume_model=BACKGROUND_MODEL,
        background_gap_mm=SHELL_GAP_MM,
        background_width_mm=SHELL_WIDTH_MM,
    )
    assert expected.partial_volume_background_mbq_per_ml is not None
    n_corrected = 0
    for voi, label in enumerate(plain.labels):
        for point in range(len(plain.time_h)):
            row = rows[(label, point)]
            if plain.voi_types[voi] == "organ":
                assert row["activity_mbq"] == pytest.approx(plain.activity_mbq[voi, point])
                assert row["partial_volume_model"] is None
                assert row["local_background_mbq_per_ml"] is None
                continue
            assert row["partial_volume_status"] == STATUS_OK
            assert row["partial_volume_model"] == BACKGROUND_MODEL
            background = expected.partial_volume_background_mbq_per_ml[voi, point]
            assert row["local_background_mbq_per_ml"] == pytest.approx(background)
            assert row["local_background_sd_mbq_per_ml"] > 0
            assert 0 < row["recovery_coefficient"] < 1
            # Hot lesion in a cooler background: spill-out outweighs spill-in, so the
            # correction raises the activity, by exactly the library's amount.
            assert row["activity_mbq"] > plain.activity_mbq[voi, point]
            assert row["activity_mbq"] == pytest.approx(expected.activity_mbq[voi, point])
            n_corrected += 1
    assert n_corrected >= 2 * len(plain.time_h)  # both lesions, every time point


@pytest.mark.usefixtures("prefect_server", "pvc_on")
def test_protocol_switch_without_rc0_leaves_lesions_as_measured_with_a_finding(
    patient: GeneratedPatient, tmp_path: Path
) -> None:
    result = process_spool(
        patient.out_dir / "dicom",
        patient.sites_path,
        output_uri=str(tmp_path / "out"),
        site_id="milan",
    )
    rows = result.tables["voi_timepoints"].to_pylist()
    lesions = [row for row in rows if row["voi_type"] == "lesion"]
    assert lesions
    for row in lesions:
        assert row["partial_volume_model"] is None
        assert row["recovery_coefficient"] is None
        assert row["local_background_mbq_per_ml"] is None
        assert "carries no background-independent recovery curve" in row["partial_volume_status"]
    findings = [
        row
        for row in result.tables["qc_findings"].to_pylist()
        if row["check_name"] == PARTIAL_VOLUME_CHECK
    ]
    # one finding for the one reason, naming every lesion it left as measured
    (finding,) = findings
    named = finding["message"].split("[", 1)[1].split("]", 1)[0].split(", ")
    assert set(named) == {row["voi_label"] for row in lesions}
    assert all("milan-phantom-2026-01" in row["message"] for row in findings)
    assert all(row["severity"] == "warning" for row in findings)
    indices = [row["finding_index"] for row in result.tables["qc_findings"].to_pylist()]
    assert len(set(indices)) == len(indices)  # numbered after the gate's findings
