"""NM reader on the real Siemens vendor file and on synthetic studies."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from concordose.dicom.nm import read_nm_counts, read_nm_header
from concordose.errors import StudyIncompleteError, UnreadableDicomError
from concordose.phantoms import GeneratedPatient
from tests.conftest import SIEMENS_NM_FIXTURE


def test_vendor_geometry_matches_simpleitk_and_header_fields_are_read() -> None:
    acquisition = read_nm_header(SIEMENS_NM_FIXTURE)
    reference = sitk.ReadImage(str(SIEMENS_NM_FIXTURE))
    np.testing.assert_allclose(acquisition.geometry.origin_mm, reference.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(acquisition.geometry.spacing_mm, reference.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(acquisition.geometry.direction, reference.GetDirection(), atol=1e-9)
    assert acquisition.geometry.shape == (81, 128, 128)
    assert acquisition.is_recon_tomo
    assert acquisition.energy_windows_kev == ((184.4640045166, 225.45600891113),)
    # 48 views × 15.002 s per view
    assert acquisition.acquisition_duration_s == pytest.approx(48 * 15.002)
    counts = read_nm_counts(acquisition)
    np.testing.assert_array_equal(counts, sitk.GetArrayFromImage(reference))


def test_vendor_file_without_radiopharmaceutical_is_held_with_a_precise_reason() -> None:
    acquisition = read_nm_header(SIEMENS_NM_FIXTURE)
    assert acquisition.radiopharmaceutical is None
    with pytest.raises(StudyIncompleteError, match="RadiopharmaceuticalStartDateTime missing"):
        acquisition.hours_since_injection()


def test_synthetic_time_points_are_placed_after_injection(small_patient: GeneratedPatient) -> None:
    hours = [read_nm_header(path).hours_since_injection() for path in small_patient.nm_files]
    assert hours == pytest.approx([4.0, 24.0, 72.0, 168.0])
    first = read_nm_header(small_patient.nm_files[0])
    assert first.radiopharmaceutical is not None
    assert first.radiopharmaceutical.injected_activity_mbq == pytest.approx(7400.0)


def test_non_dicom_and_non_nm_files_are_refused(
    small_patient: GeneratedPatient, tmp_path: pytest.TempPathFactory
) -> None:
    with pytest.raises(UnreadableDicomError, match="expected NM Image Storage"):
        read_nm_header(small_patient.seg_path)
    junk = small_patient.out_dir.parent / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    with pytest.raises(UnreadableDicomError, match=r"junk\.dcm is not a readable DICOM file"):
        read_nm_header(junk)
