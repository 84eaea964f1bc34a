"""Tests of the digital phantom generator (``phantoms``), on the small ``"test"`` preset."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
import yaml
from numpy.typing import NDArray

from concordose.nuclides import LU177
from concordose.phantoms import DEFAULT_SITE, GeneratedPatient, generate_patient
from concordose.phantoms.anatomy import (
    BODY_VALUE,
    OUTSIDE_VALUE,
    Anatomy,
    VoiType,
    default_anatomy,
    sample_label_map,
)
from concordose.phantoms.presets import nm_grid_for

TIME_POINTS_H = (4.0, 24.0, 72.0, 168.0)
LU177_PHOTOPEAK_KEV = 208.4


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> GeneratedPatient:
    return generate_patient(
        tmp_path_factory.mktemp("patient"), seed=7, preset="test", time_points_h=TIME_POINTS_H
    )


@pytest.fixture(scope="module")
def truth(patient: GeneratedPatient) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(patient.ground_truth_path.read_text(encoding="utf-8"))
    return loaded


def _nm_label_map() -> NDArray[np.uint8]:
    return sample_label_map(default_anatomy(), nm_grid_for(DEFAULT_SITE, "test"))


def _fingerprint(generated: GeneratedPatient) -> list[tuple[str, str, bytes]]:
    """(relative path, SOP instance UID, pixel bytes) of every DICOM file."""
    rows = []
    for path in generated.dicom_files:
        ds = pydicom.dcmread(path)
        rows.append((str(path.relative_to(generated.out_dir)), ds.SOPInstanceUID, ds.PixelData))
    return rows


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    first = generate_patient(tmp_path / "a", seed=11, preset="test", time_points_h=(24.0, 96.0))
    again = generate_patient(tmp_path / "b", seed=11, preset="test", time_points_h=(24.0, 96.0))
    other = generate_patient(tmp_path / "c", seed=12, preset="test", time_points_h=(24.0, 96.0))

    assert _fingerprint(first) == _fingerprint(again)
    for path_a, path_b in zip(first.dicom_files, again.dicom_files, strict=True):
        assert path_a.read_bytes() == path_b.read_bytes(), path_a.name
    assert first.ground_truth_path.read_text() == again.ground_truth_path.read_text()

    uids_first = {uid for _, uid, _ in _fingerprint(first)}
    uids_other = {uid for _, uid, _ in _fingerprint(other)}
    assert uids_first.isdisjoint(uids_other)
    nm_first = pydicom.dcmread(first.nm_files[0]).pixel_array
    nm_other = pydicom.dcmread(other.nm_files[0]).pixel_array
    assert not np.array_equal(nm_first, nm_other)


def test_counts_in_each_region_match_activity_times_calibration(
    patient: GeneratedPatient, truth: dict[str, Any]
) -> None:
    labels = _nm_label_map()
    counts_per_mbq = (
        truth["site"]["calibration_factor_cps_per_mbq"] * truth["site"]["acquisition_duration_s"]
    )
    assert counts_per_mbq == pytest.approx(9.1 * 60 * 20.0)
    regions = [*truth["vois"], truth["body_remainder"]]
    for tp_index, nm_path in enumerate(patient.nm_files):
        counts = pydicom.dcmread(nm_path).pixel_array.astype(np.int64)
        assert int(counts[labels == OUTSIDE_VALUE].sum()) == 0
        for region in regions:
            value = BODY_VALUE if region["segment_number"] is None else region["segment_number"]
            mask = labels == value
            assert int(mask.sum()) == region["n_voxels_nm"]
            expected = region["activity_mbq"][tp_index] * counts_per_mbq
            measured = int(counts[mask].sum())
            assert abs(measured - expected) <= 4.0 * math.sqrt(expected), (
                region["label"],
                tp_index,
            )


def test_nm_file_has_the_attributes_a_reader_needs(
    patient: GeneratedPatient, truth: dict[str, Any]
) -> None:
    grid = nm_grid_for(DEFAULT_SITE, "test")
    injection = dt.datetime.fromisoformat(truth["injection_datetime"])
    for index, nm_path in enumerate(patient.nm_files):
        ds = pydicom.dcmread(nm_path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.20"
        assert ds.Modality == "NM"
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
        assert ds.NumberOfFrames == ds.NumberOfSlices == 32
        assert ds.FrameIncrementPointer == 0x00540080
        assert list(ds.SliceVector) == list(range(1, 33))
        assert (ds.Rows, ds.Columns) == (48, 48)
        assert ds.pixel_array.shape == (32, 48, 48)
        voxel_mm = grid.spacing_mm_xyz[0]
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([voxel_mm, voxel_mm])
        assert float(ds.SliceThickness) == pytest.approx(voxel_mm)
        assert float(ds.SpacingBetweenSlices) == pytest.approx(voxel_mm)
        detector = ds.DetectorInformationSequence[0]
        assert [float(v) for v in detector.ImagePositionPatient] == pytest.approx(
            list(grid.origin_mm_xyz)
        )
        assert [float(v) for v in detector.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert detector.CollimatorGridName == "MEGP"
        window = ds.EnergyWindowInformationSequence[0].EnergyWindowRangeSequence[0]
        assert ds.NumberOfEnergyWindows == 1
        assert (
            float(window.EnergyWindowLowerLimit)
            < LU177_PHOTOPEAK_KEV
            < float(window.EnergyWindowUpperLimit)
        )
        assert "DECY" not in ds.CorrectedImage
        assert {"ATTN", "SCAT"} <= set(ds.CorrectedImage)
        pharma = ds.RadiopharmaceuticalInformationSequence[0]
        assert float(pharma.RadionuclideTotalDose) == pytest.approx(7400.0)  # MBq
        assert float(pharma.RadionuclideHalfLife) == pytest.approx(LU177.half_life_s, rel=1e-6)
        assert pharma.RadionuclideCodeSequence[0].CodeValue == "447553000"
        start = dt.datetime.strptime(pharma.RadiopharmaceuticalStartDateTime, "%Y%m%d%H%M%S")
        assert start == injection
        rotation = ds.RotationInformationSequence[0]
        assert rotation.ActualFrameDuration == 20_000
        assert rotation.NumberOfFramesInRotation == 60
        assert float(rotation.ScanArc) == 360.0
        acquired = dt.datetime.strptime(ds.AcquisitionDate + ds.AcquisitionTime, "%Y%m%d%H%M%S")
        assert (acquired - start) / dt.timedelta(hours=1) == pytest.approx(TIME_POINTS_H[index])
        assert ds.InstitutionName == DEFAULT_SITE.institution_name
        assert ds.PatientID == patient.patient_id
        assert float(ds.PatientWeight) == truth["patient"]["weight_kg"]
        assert ds.PatientPosition == "HFS"


def test_ct_series_shares_the_nm_frame_of_reference_and_grid(patient: GeneratedPatient) -> None:
    grid = nm_grid_for(DEFAULT_SITE, "test")
    for nm_path in patient.nm_files:
        nm = pydicom.dcmread(nm_path)
        ct_paths = sorted((nm_path.parent / "ct").glob("*.dcm"))
        assert len(ct_paths) == grid.n_slices
        for k, ct_path in enumerate(ct_paths):
            ct = pydicom.dcmread(ct_path)
            assert ct.FrameOfReferenceUID == nm.FrameOfReferenceUID
            assert ct.StudyInstanceUID == nm.StudyInstanceUID
            x0, y0, z0 = grid.origin_mm_xyz
            assert [float(v) for v in ct.ImagePositionPatient] == pytest.approx(
                [x0, y0, z0 + k * grid.spacing_mm_xyz[2]]
            )
            assert (ct.Rows, ct.Columns) == (96, 96)
        hu = pydicom.dcmread(ct_paths[0]).pixel_array * 1.0 - 1024.0
        assert hu[0, 0] == pytest.approx(-1000.0, abs=30.0)


def test_seg_masks_map_back_onto_the_spect_label_map(patient: GeneratedPatient) -> None:
    seg = hd.seg.segread(patient.seg_path)
    labels_by_number = {
        number: seg.get_segment_description(number).segment_label for number in seg.segment_numbers
    }
    assert labels_by_number == {
        1: "kidney_left",
        2: "kidney_right",
        3: "liver",
        4: "spleen",
        5: "lesion_1",
        6: "lesion_2",
    }
    first_ct = pydicom.dcmread(patient.nm_files[0].parent / "ct" / "0001.dcm")
    assert seg.FrameOfReferenceUID == first_ct.FrameOfReferenceUID

    # highdicom orders the volume its own way; reorient to [slice (+z), row (+y), column (+x)].
    volume = seg.get_volume(combine_segments=True).to_patient_orientation("HPL")
    assert volume.affine[:3, 3] == pytest.approx([float(v) for v in first_ct.ImagePositionPatient])
    ct_labels = volume.array
    nm_labels = _nm_label_map()
    downsampled = ct_labels[:, ::2, ::2]
    assert downsampled.shape == nm_labels.shape
    for number in labels_by_number:
        np.testing.assert_array_equal(downsampled == number, nm_labels == number)
        assert (nm_labels == number).any()


def test_ground_truth_is_internally_consistent(truth: dict[str, Any]) -> None:
    assert truth["format"] == "concordose.ground_truth"
    assert truth["format_version"] == 1
    assert truth["time_points_h"] == list(TIME_POINTS_H)
    voxel_ml = truth["nm_voxel_mm"] ** 3 / 1000.0
    for region in [*truth["vois"], truth["body_remainder"]]:
        kinetics = region["kinetics"]
        a0_mbq, lambda_per_h = kinetics["a0_mbq"], kinetics["lambda_eff_per_h"]
        assert lambda_per_h > LU177.decay_constant_per_h
        assert kinetics["teff_h"] == pytest.approx(math.log(2) / lambda_per_h)
        assert region["tia_mbq_h"] == pytest.approx(a0_mbq / lambda_per_h)
        assert region["activity_mbq"] == pytest.approx(
            [a0_mbq * math.exp(-lambda_per_h * t) for t in TIME_POINTS_H]
        )
        assert region["volume_ml"] == pytest.approx(region["n_voxels_nm"] * voxel_ml)
        assert region["mass_g"] == pytest.approx(region["volume_ml"])
    by_label = {v["label"]: v for v in truth["vois"]}
    assert {by_label[k]["voi_type"] for k in ("liver", "spleen", "kidney_left")} == {"organ"}
    assert 40.0 <= by_label["kidney_left"]["kinetics"]["teff_h"] <= 60.0
    assert 70.0 <= by_label["lesion_1"]["kinetics"]["teff_h"] <= 120.0
    assert by_label["lesion_1"]["voi_type"] == "lesion"
    # Discretised on 8.84 mm voxels, the 30 mm sphere (14.1 mL) keeps its volume within 20 %.
    assert by_label["lesion_1"]["volume_ml"] == pytest.approx(
        4 / 3 * math.pi * 15.0**3 / 1000, rel=0.2
    )


def test_lesion_1_lies_in_the_liver_and_overrides_it() -> None:
    anatomy = default_anatomy()
    grid = nm_grid_for(DEFAULT_SITE, "demo")
    with_lesions = sample_label_map(anatomy, grid)
    organs_only = Anatomy(
        body=anatomy.body,
        vois=tuple(v for v in anatomy.vois if v.voi_type is not VoiType.LESION),
    )
    without_lesions = sample_label_map(organs_only, grid)
    lesion_1 = with_lesions == anatomy.voi("lesion_1").value
    assert lesion_1.any()
    assert (without_lesions[lesion_1] == anatomy.voi("liver").value).all()
    lesion_2 = with_lesions == anatomy.voi("lesion_2").value
    assert (without_lesions[lesion_2] == BODY_VALUE).all()


def test_sites_yaml_has_the_registry_shape(patient: GeneratedPatient) -> None:
    document = yaml.safe_load(patient.sites_path.read_text(encoding="utf-8"))
    assert document["format_version"] == 1
    (site,) = document["sites"]
    assert site["site_id"] == "milan"
    assert site["ae_titles"] == ["MILAN_SPECT"]
    (record,) = site["calibrations"]
    assert record["calibration_factor_cps_per_mbq"] == 9.1
    assert record["valid_from"] == dt.date(2026, 1, 1)
    assert record["collimator"] == "MEGP"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"time_points_h": ()}, "at least one time point"),
        ({"time_points_h": (24.0, -1.0)}, "positive"),
        ({"time_points_h": (24.0, 4.0)}, "increasing"),
        ({"preset": "huge"}, "unknown preset"),
    ],
)
def test_invalid_arguments_are_rejected(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        generate_patient(tmp_path, **kwargs)
