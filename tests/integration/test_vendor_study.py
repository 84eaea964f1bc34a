"""A study nobody here generated (issue 16): its NM headers rewritten as a new vendor writes them
— the legacy SRT code of Lu-177, RadionuclideTotalDose in Bq, the frame duration only at the top
level — at a site that declares ``injected_activity_unit: Bq`` and its time zone. It is
processed, not held, the published ``qc_findings`` say how each value was read, and every table
that publishes the injected activity gives it in MBq."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
import yaml

import concordose.calibration.protocol as protocol_module
from concordose.flows.sweep import process_spool
from concordose.phantoms import GeneratedPatient, generate_patient

pytestmark = pytest.mark.integration


def _as_the_new_vendor_writes_it(path: Path) -> None:
    dataset = pydicom.dcmread(path)
    item = dataset.RadiopharmaceuticalInformationSequence[0]
    code = item.RadionuclideCodeSequence[0]
    code.CodeValue, code.CodingSchemeDesignator = "C-101ED", "SRT"
    item.RadionuclideTotalDose = f"{float(item.RadionuclideTotalDose) * 1e6:g}"  # Bq
    rotation = dataset.RotationInformationSequence[0]
    dataset.ActualFrameDuration = rotation.ActualFrameDuration
    del rotation.ActualFrameDuration
    dataset.save_as(path)


@pytest.fixture
def vendor_patient(tmp_path: Path) -> GeneratedPatient:
    patient = generate_patient(tmp_path / "patient", seed=11, preset="test")
    for path in patient.nm_files:
        _as_the_new_vendor_writes_it(path)
    return patient


@pytest.fixture
def site_declares_bq(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "protocols"
    shutil.copytree(protocol_module.packaged_protocol_dir(), folder)
    milan = yaml.safe_load((folder / "milan.yaml").read_text()) or {}
    milan["injected_activity_unit"] = "Bq"
    (folder / "milan.yaml").write_text(yaml.safe_dump(milan))
    monkeypatch.setenv("CONCORDOSE_PROTOCOL_DIR", str(folder))
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-key-not-secret")


@pytest.mark.usefixtures("prefect_server", "site_declares_bq")
def test_a_new_vendors_study_is_processed_with_its_fallbacks_published(
    vendor_patient: GeneratedPatient, tmp_path: Path
) -> None:
    sites = yaml.safe_load(vendor_patient.sites_path.read_text())
    sites["sites"][0]["timezone"] = "Europe/Rome"
    sites_path = tmp_path / "sites.yaml"
    sites_path.write_text(yaml.safe_dump(sites))

    result = process_spool(
        vendor_patient.out_dir / "dicom",
        sites_path,
        output_uri=str(tmp_path / "out"),
        site_id="milan",
    )
    assert not result.held, [run.reason for run in result.held]
    (run,) = result.processed
    findings = run.tables["qc_findings"].to_pylist()
    n_points = len(vendor_patient.nm_files)
    by_rule: dict[str, list[dict[str, object]]] = {}
    for row in findings:
        by_rule.setdefault(str(row["check_name"]), []).append(row)
    for rule, fragment in (
        ("radionuclide", "SRT C-101ED"),
        ("injected_activity", "read as Bq by the site's declaration"),
        ("acquisition_duration", "top-level ActualFrameDuration"),
        ("time_zone", "site time zone Europe/Rome"),
    ):
        rows = by_rule[rule]
        assert len(rows) == n_points, rule
        assert {row["severity"] for row in rows} == {"info"}, rule
        assert all(fragment in str(row["message"]) for row in rows), rule
    acquisitions = run.tables["acquisitions"].to_pylist()
    assert {row["qc_status"] for row in acquisitions} <= {"pass", "warn"}
    activities = [row["injected_activity_mbq"] for row in acquisitions]
    assert activities == pytest.approx([7400.0] * n_points)  # 7.4e9 Bq, published in MBq
    for table in ("patient_summary", "voxel_dose_summary"):  # as the gate read it, not raw
        summary = [row["injected_activity_mbq"] for row in run.tables[table].to_pylist()]
        assert summary, table
        assert summary == pytest.approx([7400.0] * len(summary)), table
    assert run.tables["absorbed_dose"].num_rows > 0
