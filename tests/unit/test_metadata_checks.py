"""Every metadata rule and the calibration gate, each with a study that breaks it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from concordose.calibration.findings import Finding, Severity
from concordose.calibration.gate import gate_time_point
from concordose.calibration.metadata_checks import check_acquisition
from concordose.calibration.protocol import SiteProtocol, load_protocol
from concordose.calibration.registry import CalibrationRecord, Site, SiteRegistry
from concordose.dicom.nm import NMAcquisition, read_nm_header
from concordose.errors import ConfigurationError
from concordose.phantoms import GeneratedPatient
from tests.conftest import SIEMENS_NM_FIXTURE

PROTOCOL = SiteProtocol(collimators=["MEGP"], voxel_mm={"min": 4.0, "max": 9.0})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def good(small_patient: GeneratedPatient) -> NMAcquisition:
    return read_nm_header(small_patient.nm_files[1])


def _drug(acquisition: NMAcquisition, **changes: Any) -> NMAcquisition:
    assert acquisition.radiopharmaceutical is not None
    return dataclasses.replace(
        acquisition,
        radiopharmaceutical=dataclasses.replace(acquisition.radiopharmaceutical, **changes),
    )


def _problems(findings: Sequence[Finding]) -> list[Finding]:
    """Errors and warnings only (info findings record provenance, e.g. the time zone used)."""
    return [f for f in findings if f.severity is not Severity.INFO]


def _injection(acquisition: NMAcquisition) -> datetime:
    assert acquisition.radiopharmaceutical is not None
    assert acquisition.radiopharmaceutical.injection_datetime is not None
    return acquisition.radiopharmaceutical.injection_datetime


def test_a_conforming_synthetic_study_has_no_finding(good: NMAcquisition) -> None:
    # Only provenance: the synthetic headers state no time zone, so the local clock is used.
    findings = check_acquisition(good, PROTOCOL)
    assert [(f.rule, f.severity) for f in findings] == [("time_zone", Severity.INFO)]
    assert "no time zone known" in findings[0].message


BREAKERS: dict[str, tuple[Callable[[NMAcquisition], NMAcquisition], Severity, str]] = {
    "image_type": (
        lambda a: dataclasses.replace(a, image_type=("ORIGINAL", "PRIMARY", "STATIC")),
        Severity.ERROR,
        "RECON TOMO",
    ),
    "radionuclide": (
        lambda a: _drug(a, radionuclide_code="21576001", radionuclide="^99m^Technetium"),
        Severity.ERROR,
        "^99m^Technetium",
    ),
    "injected_activity": (
        lambda a: _drug(a, injected_activity_mbq=7.4e9),
        Severity.ERROR,
        "looks like Bq (7400 MBq)",
    ),
    "injection_datetime": (
        lambda a: _drug(a, injection_datetime=None),
        Severity.ERROR,
        "RadiopharmaceuticalStartDateTime",
    ),
    "acquisition_datetime": (
        lambda a: dataclasses.replace(a, acquisition_datetime=None),
        Severity.ERROR,
        "AcquisitionDateTime",
    ),
    "time_since_injection": (
        lambda a: dataclasses.replace(a, acquisition_datetime=_injection(a) - timedelta(days=3)),
        Severity.ERROR,
        "BEFORE the injection",
    ),
    "energy_window": (
        lambda a: dataclasses.replace(a, energy_windows_kev=((101.7, 124.3),)),
        Severity.ERROR,
        "no energy window contains the 208.37 keV photopeak",
    ),
    "collimator": (
        lambda a: dataclasses.replace(a, collimator="LEHR"),
        Severity.ERROR,
        "found 'LEHR'",
    ),
    "corrections": (
        lambda a: dataclasses.replace(a, corrections=("ATTN",)),
        Severity.ERROR,
        "lacks SCAT",
    ),
    "units": (
        lambda a: dataclasses.replace(a, pixel_units="PROPCNTS"),
        Severity.ERROR,
        "'PROPCNTS' not accepted",
    ),
    "acquisition_duration": (
        lambda a: dataclasses.replace(a, acquisition_duration_s=None),
        Severity.ERROR,
        "ActualFrameDuration",
    ),
    "patient_weight": (
        lambda a: dataclasses.replace(a, patient_weight_kg=7490.0),
        Severity.WARNING,
        "7490 kg",
    ),
    "voxel_geometry": (
        lambda a: dataclasses.replace(
            a, geometry=dataclasses.replace(a.geometry, spacing_mm=(2.0, 2.0, 2.0))
        ),
        Severity.WARNING,
        "2 × 2 × 2 mm",
    ),
}


@pytest.mark.parametrize("rule", sorted(BREAKERS))
def test_each_rule_catches_its_breakage(good: NMAcquisition, rule: str) -> None:
    breaker, severity, fragment = BREAKERS[rule]
    findings = _problems(check_acquisition(breaker(good), PROTOCOL))
    assert [f.rule for f in findings] == [rule], findings
    assert findings[0].severity is severity
    assert fragment in findings[0].message


def test_energy_window_width_off_protocol_is_a_warning(good: NMAcquisition) -> None:
    findings = _problems(
        check_acquisition(dataclasses.replace(good, energy_windows_kev=((170.0, 250.0),)), PROTOCOL)
    )
    assert [(f.rule, f.severity) for f in findings] == [("energy_window", Severity.WARNING)]


def test_decay_corrected_counts_are_refused(good: NMAcquisition) -> None:
    findings = _problems(
        check_acquisition(dataclasses.replace(good, corrections=("ATTN", "SCAT", "DECY")), PROTOCOL)
    )
    assert [f.message for f in findings] == [
        "CorrectedImage has DECY: counts must not be decay corrected"
    ]


def test_real_vendor_file_gets_precise_findings_and_no_crash() -> None:
    acquisition = read_nm_header(SIEMENS_NM_FIXTURE)
    registry = SiteRegistry(
        sites=[
            Site(
                site_id="milan",
                ae_titles=["MILAN_SPECT"],
                calibrations=[
                    CalibrationRecord(
                        record_id="intevo-2017",
                        camera_model="Encore2",
                        reconstruction="3DOSEM,4i,8s",
                        calibration_factor_cps_per_mbq=9.6,
                        valid_from=date(2017, 1, 1),
                    )
                ],
            )
        ]
    )
    result = gate_time_point(
        acquisition, registry, calling_ae_title="MILAN_SPECT", protocol=SiteProtocol()
    )
    assert result.held
    rules = {(f.rule, f.severity) for f in result.findings}
    assert rules == {("radionuclide", Severity.ERROR), ("patient_weight", Severity.WARNING)}
    assert result.calibration is not None
    assert result.calibration.record_id == "intevo-2017"


def _registry(*records: CalibrationRecord) -> SiteRegistry:
    return SiteRegistry(
        sites=[Site(site_id="milan", ae_titles=["MILAN_SPECT"], calibrations=list(records))]
    )


def _record(**changes: object) -> CalibrationRecord:
    base = {
        "record_id": "r1",
        "camera_model": "Symbia Intevo",
        "collimator": "MEGP",
        "calibration_factor_cps_per_mbq": 9.1,
        "valid_from": date(2020, 1, 1),
    }
    return CalibrationRecord.model_validate({**base, **changes})


def test_gate_passes_with_a_matching_record(good: NMAcquisition) -> None:
    result = gate_time_point(
        good, _registry(_record()), calling_ae_title="MILAN_SPECT", protocol=PROTOCOL
    )
    assert not result.held
    assert result.calibration is not None
    assert result.calibration.record_id == "r1"


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        (_record(valid_to=date(2021, 1, 1)), "no calibration valid on"),
        (_record(camera_model="Discovery NM/CT 670"), "camera model 'Symbia Intevo' ≠ calibrated"),
        (_record(collimator="MELP"), "collimator 'MEGP' ≠ calibrated 'MELP'"),
        (
            _record(reconstruction="OSEM 6i10s RR"),
            "reconstruction None ≠ calibrated 'OSEM 6i10s RR'",
        ),
    ],
)
def test_gate_holds_without_a_fitting_calibration(
    good: NMAcquisition, record: CalibrationRecord, fragment: str
) -> None:
    result = gate_time_point(
        good, _registry(record), calling_ae_title="MILAN_SPECT", protocol=PROTOCOL
    )
    assert result.held
    assert result.calibration is None
    assert [f.rule for f in _problems(result.findings)] == ["calibration"]
    assert fragment in _problems(result.findings)[0].message


def test_gate_holds_an_unknown_sender(good: NMAcquisition) -> None:
    result = gate_time_point(
        good, _registry(_record()), calling_ae_title="ROGUE", protocol=PROTOCOL
    )
    assert result.held
    assert "'ROGUE' belongs to no site" in result.findings[0].message


def test_site_protocol_files_merge_and_validate(tmp_path: Path) -> None:
    (tmp_path / "default.yaml").write_text(
        "collimators: [MEGP, MELP]\nvoxel_mm: {min: 2, max: 6}\n"
    )
    (tmp_path / "padua.yaml").write_text("collimators: [MELP]\n")
    protocol = load_protocol("padua", tmp_path)
    assert protocol.collimators == ["MELP"]
    assert protocol.voxel_mm.max == 6
    (tmp_path / "bad.yaml").write_text("voxel_mm: {min: 6, max: 2}\n")
    with pytest.raises(ConfigurationError, match=r"min 6\.0 > max 2\.0"):
        load_protocol("bad", tmp_path)


def test_packaged_protocols_load() -> None:
    assert load_protocol("milan").collimators == ["MEGP"]
    assert load_protocol("unknown-site").photopeak_kev == pytest.approx(208.37)
