"""Vendor variants accepted with their source recorded (issue 16, items 2–3): legacy SRT codes,
activity in Bq, frame duration from the top level or the functional groups, injection from a
start time without date, UTC offsets from DT values, TimezoneOffsetFromUTC or the site's
declared time zone. Headers: the real Siemens fixture where it has the attribute, else
synthetic variants written by editing the generated phantom's NM headers."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread

from concordose.calibration.findings import Finding, Severity
from concordose.calibration.gate import gate_time_point
from concordose.calibration.metadata_checks import check_acquisition
from concordose.calibration.protocol import SiteProtocol
from concordose.calibration.registry import CalibrationRecord, Site, SiteRegistry
from concordose.dicom.codes import LU177, equivalent_code
from concordose.dicom.nm import NMAcquisition, read_nm_counts, read_nm_header
from concordose.errors import ConfigurationError
from concordose.phantoms import GeneratedPatient
from concordose.pipeline.assembly import assemble_cycles
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.quantify import quantify_cycle
from concordose.pipeline.time_point_activity import time_point_activity_mbq
from concordose.spool.timepoints import InstanceSummary
from tests.conftest import SIEMENS_NM_FIXTURE

PROTOCOL = SiteProtocol(collimators=["MEGP"], voxel_mm={"min": 4.0, "max": 9.0})  # type: ignore[arg-type]


def _variant(source: Path, out: Path, edit: Callable[[Dataset], None]) -> NMAcquisition:
    """``source``'s header edited by ``edit``, written to ``out`` and read back."""
    dataset = dcmread(source)
    edit(dataset)
    dataset.save_as(out)
    return read_nm_header(out)


def _of(findings: tuple[Finding, ...] | list[Finding], rule: str) -> list[Finding]:
    return [f for f in findings if f.rule == rule]


def _registry(timezone: str | None = None) -> SiteRegistry:
    record = CalibrationRecord(
        record_id="r1", calibration_factor_cps_per_mbq=9.1, valid_from=date(2000, 1, 1)
    )
    site = Site(
        site_id="milan", ae_titles=["MILAN_SPECT"], calibrations=[record], timezone=timezone
    )
    return SiteRegistry(sites=[site])


# --- codes -----------------------------------------------------------------------------------


def test_the_legacy_srt_code_of_lu177_is_its_snomed_ct_code_by_annex_o() -> None:
    assert LU177.value == "447553000"
    match = equivalent_code("C-101ED", "SRT", ["447553000"])
    assert match is not None
    assert match.legacy
    assert match.canonical == "447553000"
    assert equivalent_code("C-101ED", None, ["447553000"]) is not None  # designator omitted
    assert equivalent_code("C-101ED", "DCM", ["447553000"]) is None  # another scheme
    assert equivalent_code("C-145A8", "SRT", ["447553000"]) is None  # not in Annex O


def _srt_code(value: str) -> Callable[[Dataset], None]:
    def edit(dataset: Dataset) -> None:
        code = dataset.RadiopharmaceuticalInformationSequence[0].RadionuclideCodeSequence[0]
        code.CodeValue = value
        code.CodingSchemeDesignator = "SRT"

    return edit


def test_a_legacy_srt_radionuclide_code_passes_with_an_info_finding(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    acquisition = _variant(small_patient.nm_files[1], tmp_path / "nm.dcm", _srt_code("C-101ED"))
    (finding,) = _of(check_acquisition(acquisition, PROTOCOL), "radionuclide")
    assert finding.severity is Severity.INFO
    assert "SRT C-101ED" in finding.message
    assert "SNOMED CT 447553000" in finding.message


def test_an_unknown_code_is_held_and_says_how_a_site_adds_one(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    acquisition = _variant(small_patient.nm_files[1], tmp_path / "nm.dcm", _srt_code("C-145A8"))
    (finding,) = _of(check_acquisition(acquisition, PROTOCOL), "radionuclide")
    assert finding.severity is Severity.ERROR
    assert "'C-145A8' (SRT" in finding.message
    assert "radionuclide_codes" in finding.message
    site_codes = PROTOCOL.model_copy(update={"radionuclide_codes": ["447553000", "C-145A8"]})
    assert _of(check_acquisition(acquisition, site_codes), "radionuclide") == []


# --- injected activity unit -------------------------------------------------------------------


def _in_bq(dataset: Dataset) -> None:
    dataset.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose = "7.4e9"


@pytest.mark.parametrize(
    ("unit", "severity", "fragment"),
    [
        ("Bq", Severity.INFO, "read as Bq by the site's declaration"),
        ("auto", Severity.WARNING, "read as Bq by plausibility"),
        ("MBq", Severity.ERROR, "declare injected_activity_unit: Bq"),
    ],
)
def test_activity_in_bq_by_declaration_or_plausibility(
    small_patient: GeneratedPatient, tmp_path: Path, unit: str, severity: Severity, fragment: str
) -> None:
    acquisition = _variant(small_patient.nm_files[1], tmp_path / "nm.dcm", _in_bq)
    protocol = PROTOCOL.model_copy(update={"injected_activity_unit": unit})
    result = gate_time_point(acquisition, _registry(), calling_ae_title=None, site_id="milan",
                             protocol=protocol)  # fmt: skip
    (finding,) = _of(result.findings, "injected_activity")
    assert finding.severity is severity
    assert fragment in finding.message
    assert result.held is (severity is Severity.ERROR)
    assert result.acquisition is not None
    assert result.acquisition.radiopharmaceutical is not None
    expected_mbq = 7.4e9 if unit == "MBq" else 7400.0  # held as written when not converted
    assert result.acquisition.radiopharmaceutical.injected_activity_mbq == pytest.approx(
        expected_mbq
    )


def test_a_bq_declaration_does_not_pass_an_implausible_activity(
    small_patient: GeneratedPatient,
) -> None:
    acquisition = read_nm_header(small_patient.nm_files[1])  # 7400 written, declared Bq
    protocol = PROTOCOL.model_copy(update={"injected_activity_unit": "Bq"})
    (finding,) = _of(check_acquisition(acquisition, protocol), "injected_activity")
    assert finding.severity is Severity.ERROR
    assert "read as Bq: 0.0074 MBq" in finding.message


# --- acquisition duration ---------------------------------------------------------------------


def test_frame_duration_from_rotations_is_silent_on_the_vendor_file() -> None:
    acquisition = read_nm_header(SIEMENS_NM_FIXTURE)
    assert acquisition.acquisition_duration_source == "RotationInformationSequence"
    assert _of(check_acquisition(acquisition, PROTOCOL), "acquisition_duration") == []


def _frame_duration_top_level(dataset: Dataset) -> None:
    rotation = dataset.RotationInformationSequence[0]
    dataset.ActualFrameDuration = rotation.ActualFrameDuration
    del rotation.ActualFrameDuration


def _frames_in_rotation_top_level(dataset: Dataset) -> None:
    rotation = dataset.RotationInformationSequence[0]
    dataset.NumberOfFramesInRotation = rotation.NumberOfFramesInRotation
    del rotation.NumberOfFramesInRotation


def _frame_duration_in_functional_groups(dataset: Dataset) -> None:
    del dataset.RotationInformationSequence
    content = Dataset()
    content.FrameAcquisitionDuration = 48 * 15002.0  # ms: every slice is made of the whole scan
    group = Dataset()
    group.FrameContentSequence = [content]
    dataset.SharedFunctionalGroupsSequence = [group]


@pytest.mark.parametrize(
    ("edit", "source"),
    [
        (_frame_duration_top_level, "top-level ActualFrameDuration × NumberOfFramesInRotation"),
        (_frames_in_rotation_top_level, "ActualFrameDuration × top-level NumberOfFramesInRotation"),
        (_frame_duration_in_functional_groups, "functional groups FrameAcquisitionDuration"),
    ],
)
def test_frame_duration_falls_back_with_an_info_finding(
    tmp_path: Path, edit: Callable[[Dataset], None], source: str
) -> None:
    acquisition = _variant(SIEMENS_NM_FIXTURE, tmp_path / "siemens.dcm", edit)
    assert acquisition.acquisition_duration_s == pytest.approx(48 * 15.002)
    assert acquisition.acquisition_duration_source == source
    (finding,) = _of(check_acquisition(acquisition, PROTOCOL), "acquisition_duration")
    assert finding.severity is Severity.INFO
    assert source in finding.message


def test_no_frame_duration_anywhere_is_an_error(tmp_path: Path) -> None:
    acquisition = _variant(
        SIEMENS_NM_FIXTURE,
        tmp_path / "siemens.dcm",
        lambda d: delattr(d.RotationInformationSequence[0], "ActualFrameDuration"),
    )
    (finding,) = _of(check_acquisition(acquisition, PROTOCOL), "acquisition_duration")
    assert finding.severity is Severity.ERROR
    assert "top-level ActualFrameDuration" in finding.message


# --- injection time ---------------------------------------------------------------------------


def _start_time_only(time: str) -> Callable[[Dataset], None]:
    def edit(dataset: Dataset) -> None:
        item = dataset.RadiopharmaceuticalInformationSequence[0]
        del item.RadiopharmaceuticalStartDateTime
        item.RadiopharmaceuticalStartTime = time

    return edit


def test_injection_from_start_time_is_held_unless_the_site_declares_the_scan_date(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    original = read_nm_header(small_patient.nm_files[0])  # 4 h after injection, same day
    assert original.radiopharmaceutical is not None
    injection = original.radiopharmaceutical.injection_datetime
    assert injection is not None
    acquisition = _variant(
        small_patient.nm_files[0], tmp_path / "nm.dcm", _start_time_only(f"{injection:%H%M%S}")
    )
    assert acquisition.hours_since_injection() == pytest.approx(4.0)
    (held,) = _of(check_acquisition(acquisition, PROTOCOL), "injection_datetime")
    assert held.severity is Severity.ERROR  # by default: the date is unknown
    assert "declare injection_time_without_date: scan_date" in held.message
    declared = PROTOCOL.model_copy(update={"injection_time_without_date": "scan_date"})
    (finding,) = _of(check_acquisition(acquisition, declared), "injection_datetime")
    assert finding.severity is Severity.WARNING
    assert "RadiopharmaceuticalStartTime on AcquisitionDate" in finding.message


def test_a_start_time_later_than_the_scan_means_the_day_before(tmp_path: Path) -> None:
    def edit(dataset: Dataset) -> None:  # the vendor file scanned 2017-10-04 17:22
        item = Dataset()
        item.RadiopharmaceuticalStartTime = "190000"
        dataset.RadiopharmaceuticalInformationSequence = [item]

    acquisition = _variant(SIEMENS_NM_FIXTURE, tmp_path / "siemens.dcm", edit)
    assert acquisition.radiopharmaceutical is not None
    assert acquisition.radiopharmaceutical.injection_datetime == datetime(2017, 10, 3, 19, 0)
    assert "day before AcquisitionDate" in str(acquisition.radiopharmaceutical.injection_source)


# --- time zones -------------------------------------------------------------------------------


def _dst_study(dataset: Dataset) -> None:
    """Injected 2026-03-28 10:00 local, scanned 2026-03-29 10:00 local (CET → CEST that night:
    EU summer time starts on the last Sunday of March, 29 March 2026, 02:00 → 03:00)."""
    dataset.RadiopharmaceuticalInformationSequence[
        0
    ].RadiopharmaceuticalStartDateTime = "20260328100000"
    dataset.AcquisitionDateTime = "20260329100000"
    dataset.AcquisitionDate = "20260329"
    dataset.AcquisitionTime = "100000"


def test_site_time_zone_makes_a_dst_change_count_23_hours(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    acquisition = _variant(small_patient.nm_files[1], tmp_path / "nm.dcm", _dst_study)
    assert acquisition.hours_since_injection() == pytest.approx(24.0)  # local clock
    (unknown,) = _of(check_acquisition(acquisition, PROTOCOL), "time_zone")
    assert unknown.severity is Severity.INFO
    assert "no time zone known" in unknown.message

    result = gate_time_point(
        acquisition,
        _registry("Europe/Rome"),
        calling_ae_title="MILAN_SPECT",
        protocol=PROTOCOL,
    )
    assert not result.held
    assert result.acquisition is not None
    assert result.acquisition.hours_since_injection() == pytest.approx(23.0)
    (finding,) = _of(result.findings, "time_zone")
    assert finding.severity is Severity.INFO
    assert "site time zone Europe/Rome" in finding.message
    assert "+01:00" in finding.message
    assert "+02:00" in finding.message
    later = dataclasses.replace(result.acquisition, acquisition_datetime=datetime(2026, 4, 4, 10))
    assert later.hours_since_injection() == pytest.approx(7 * 24 - 1)


def test_offsets_in_dt_values_are_honoured_and_win_over_the_site(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    def edit(dataset: Dataset) -> None:
        _dst_study(dataset)
        item = dataset.RadiopharmaceuticalInformationSequence[0]
        item.RadiopharmaceuticalStartDateTime = "20260328100000+0100"
        dataset.AcquisitionDateTime = "20260329100000+0200"

    acquisition = _variant(small_patient.nm_files[1], tmp_path / "nm.dcm", edit)
    assert acquisition.hours_since_injection() == pytest.approx(23.0)
    assert acquisition.time_zone_source == "offsets written in DT values"
    in_tokyo = acquisition.with_time_zone("Asia/Tokyo")  # stated offsets are kept
    assert in_tokyo.hours_since_injection() == pytest.approx(23.0)
    assert in_tokyo.time_zone_source == "offsets written in DT values"


def test_timezone_offset_from_utc_applies_to_times_without_their_own(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    def edit(dataset: Dataset) -> None:
        _dst_study(dataset)
        dataset.TimezoneOffsetFromUTC = "+0100"
        dataset.AcquisitionDateTime = "20260329100000+0200"  # its own offset wins

    acquisition = _variant(small_patient.nm_files[1], tmp_path / "nm.dcm", edit)
    assert acquisition.hours_since_injection() == pytest.approx(23.0)
    (finding,) = _of(check_acquisition(acquisition, PROTOCOL), "time_zone")
    assert "TimezoneOffsetFromUTC (0008,0201)" in finding.message


def test_only_one_offset_known_is_a_warning(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    def edit(dataset: Dataset) -> None:
        _dst_study(dataset)
        dataset.AcquisitionDateTime = "20260329100000+0200"

    acquisition = _variant(small_patient.nm_files[1], tmp_path / "nm.dcm", edit)
    (finding,) = _of(check_acquisition(acquisition, PROTOCOL), "time_zone")
    assert finding.severity is Severity.WARNING
    assert "only the acquisition time states a UTC offset" in finding.message
    completed = acquisition.with_time_zone("Europe/Rome")  # the site fills the injection's
    assert completed.hours_since_injection() == pytest.approx(23.0)
    (info,) = _of(check_acquisition(completed, PROTOCOL), "time_zone")
    assert info.severity is Severity.INFO
    assert "missing ones: site time zone Europe/Rome" in info.message


def test_a_site_timezone_must_be_an_iana_name(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    sites.write_text(
        "sites:\n  - site_id: milan\n    ae_titles: [MILAN_SPECT]\n    timezone: Europe/Milano\n"
    )
    with pytest.raises(ConfigurationError, match="expected an IANA time zone name"):
        SiteRegistry.load(sites)
    sites.write_text(
        "sites:\n  - site_id: milan\n    ae_titles: [MILAN_SPECT]\n    timezone: Europe/Rome\n"
    )
    assert SiteRegistry.load(sites).site("milan").timezone == "Europe/Rome"


# --- vendor quantitative SPECT (Units BQML) ---------------------------------------------------

CF_CPS_PER_MBQ = 9.1
BQML_PROTOCOL = PROTOCOL.model_copy(update={"accepted_units": ["counts", "BQML"]})


def _as_bqml(acquisition: NMAcquisition) -> Callable[[Dataset], None]:
    """The vendor's quantification of the same image: counts / (CF · T) in Bq/mL, stored as
    uint16 with a RescaleSlope, Units BQML."""

    def edit(dataset: Dataset) -> None:
        counts = read_nm_counts(acquisition)
        assert acquisition.acquisition_duration_s is not None
        activity_mbq = counts / (CF_CPS_PER_MBQ * acquisition.acquisition_duration_s)
        bq_per_ml = activity_mbq * 1e6 / acquisition.geometry.voxel_volume_ml
        slope = float(bq_per_ml.max()) / 60000.0
        dataset.PixelData = np.round(bq_per_ml / slope).astype(np.uint16).tobytes()
        dataset.RescaleSlope = f"{slope:.10g}"
        dataset.RescaleIntercept = "0"
        dataset.Units = "BQML"

    return edit


def _bqml_registry(bias: float | None) -> SiteRegistry:
    record = CalibrationRecord(
        record_id="r1",
        calibration_factor_cps_per_mbq=1000.0,  # deliberately wrong: must not be applied
        valid_from=date(2000, 1, 1),
        vendor_quantification_bias_relative=bias,
        vendor_quantification_bias_sd_relative=None if bias is None else 0.02,
    )
    return SiteRegistry(sites=[Site(site_id="milan", ae_titles=["M"], calibrations=[record])])


def test_a_bqml_image_is_activity_without_the_cf(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    counts_image = read_nm_header(small_patient.nm_files[1])
    vendor = _variant(small_patient.nm_files[1], tmp_path / "nm.dcm", _as_bqml(counts_image))
    assert vendor.is_vendor_quantitative
    record = _bqml_registry(0.03).sites[0].calibrations[0]
    activity, counts = time_point_activity_mbq(vendor, record)
    assert counts is None  # no counts: no Poisson part
    expected = read_nm_counts(counts_image) / (
        CF_CPS_PER_MBQ * float(counts_image.acquisition_duration_s or 0)
    )
    assert activity.sum() == pytest.approx(expected.sum(), rel=1e-4)
    np.testing.assert_allclose(activity, expected, atol=float(expected.max()) / 60000.0)


@pytest.mark.parametrize(
    ("bias", "severity", "fragment"),
    [
        (0.03, Severity.INFO, "vendor calibration used"),
        (None, Severity.ERROR, "states no phantom-derived accuracy"),
        (-0.15, Severity.ERROR, "exceeds the protocol's ±10%"),
    ],
)
def test_the_gate_checks_the_vendor_calibration_against_the_sites_phantom(
    small_patient: GeneratedPatient,
    tmp_path: Path,
    bias: float | None,
    severity: Severity,
    fragment: str,
) -> None:
    counts_image = read_nm_header(small_patient.nm_files[1])
    vendor = _variant(small_patient.nm_files[1], tmp_path / "nm.dcm", _as_bqml(counts_image))
    result = gate_time_point(
        vendor, _bqml_registry(bias), calling_ae_title="M", protocol=BQML_PROTOCOL
    )
    (finding,) = _of(result.findings, "vendor_quantification")
    assert finding.severity is severity
    assert fragment in finding.message
    assert result.held is (severity is Severity.ERROR)
    assert _of(result.findings, "units") == []


def test_bqml_is_refused_where_the_protocol_does_not_accept_it(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    counts_image = read_nm_header(small_patient.nm_files[1])
    vendor = _variant(small_patient.nm_files[1], tmp_path / "nm.dcm", _as_bqml(counts_image))
    (finding,) = _of(check_acquisition(vendor, PROTOCOL), "units")
    assert finding.severity is Severity.ERROR


def test_a_bqml_cycle_quantifies_like_its_counts_with_the_right_cf(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    folder = tmp_path / "dicom"
    shutil.copytree(small_patient.out_dir / "dicom", folder)
    for path in small_patient.nm_files:
        copy = folder / path.relative_to(small_patient.out_dir / "dicom")
        _variant(copy, copy, _as_bqml(read_nm_header(path)))
    (counts_cycle,) = assemble_cycles(catalogue(small_patient.out_dir / "dicom"))
    (vendor_cycle,) = assemble_cycles(catalogue(folder))
    right_cf = CalibrationRecord(
        record_id="cf", calibration_factor_cps_per_mbq=CF_CPS_PER_MBQ, valid_from=date(2000, 1, 1)
    )
    vendor_record = _bqml_registry(0.03).sites[0].calibrations[0]
    expected = quantify_cycle(counts_cycle, right_cf, partial_volume_correction=False)
    vendor = quantify_cycle(vendor_cycle, vendor_record, partial_volume_correction=False)
    np.testing.assert_allclose(vendor.activity_mbq, expected.activity_mbq, rtol=1e-3)
    assert vendor.counts is None
    assert vendor.calibration_relative_sd == pytest.approx(0.02)


def test_the_spool_groups_a_start_time_only_study_by_the_readers_injection(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    original = read_nm_header(small_patient.nm_files[0])
    assert original.radiopharmaceutical is not None
    injection = original.radiopharmaceutical.injection_datetime
    assert injection is not None
    acquisition = _variant(
        small_patient.nm_files[0], tmp_path / "nm.dcm", _start_time_only(f"{injection:%H%M%S}")
    )
    summary = InstanceSummary.from_dataset(dcmread(tmp_path / "nm.dcm", stop_before_pixels=True))
    assert acquisition.radiopharmaceutical is not None
    assert summary.injection_datetime == acquisition.radiopharmaceutical.injection_datetime
    assert summary.injection_datetime == injection
