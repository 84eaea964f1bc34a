"""Issue 20 item 3c: the pre-therapy PET registered to the post-therapy CT, SUV per VOI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from concordose.dicom.ct import read_ct_series
from concordose.phantoms.consortium import GeneratedConsortium, generate_consortium
from concordose.phantoms.site_profiles import CONSORTIUM_SITES
from concordose.pipeline.pretherapy_pet import pretherapy_pet_features
from concordose.prediction import peak_sphere_kernel, register_pet_ct, voi_suv_features


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> GeneratedConsortium:
    return generate_consortium(
        tmp_path_factory.mktemp("pet-consortium"),
        preset="test",
        sites=[CONSORTIUM_SITES[0]],
        n_patients=1,
        phantoms=False,
        pretherapy_pet=True,
        pet_only_patients=1,
    )


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def test_the_peak_sphere_is_one_millilitre_of_voxel_centres() -> None:
    kernel = peak_sphere_kernel((4.0, 4.0, 4.0))
    assert kernel.sum() == pytest.approx(1.0)
    assert np.count_nonzero(kernel) == 19  # centre, 6 faces, 12 edges: r = 6.20 mm
    assert np.count_nonzero(peak_sphere_kernel((2.0, 2.0, 2.0))) * 8e-3 == pytest.approx(
        1.0, rel=0.15
    )


def test_suv_statistics_of_a_known_image() -> None:
    suv = np.ones((20, 20, 20))
    suv[5:15, 5:15, 5:15] = 4.0  # a 40 mm cube of SUV 4 in SUV 1
    suv[10, 10, 10] = 10.0  # one hot voxel
    mask = np.zeros((1, *suv.shape), dtype=bool)
    mask[0, 5:15, 5:15, 5:15] = True
    ((suv_mean, suv_max, suv_peak, n),) = [s for s in voi_suv_features(suv, mask, (4, 4, 4)) if s]
    assert n == 1000
    assert suv_mean == pytest.approx((999 * 4 + 10) / 1000)
    assert suv_max == 10.0
    assert suv_peak == pytest.approx((18 * 4 + 10) / 19)  # the sphere around the hot voxel
    empty = np.zeros_like(mask)
    assert voi_suv_features(suv, empty, (4, 4, 4)) == [None]


def test_registration_recovers_the_pet_sessions_known_shift(
    consortium: GeneratedConsortium,
) -> None:
    patient = consortium.sites[0].folder / "patients" / "P001"
    truth = _load(patient / "ground_truth.json")
    pet_truth = _load(patient / "pretherapy_pet.json")
    therapy_shift = np.asarray(truth["cycles"][0]["ct_shift_mm"][0])
    pet_shift = np.asarray(pet_truth["shift_mm"])
    registration = register_pet_ct(
        read_ct_series(_files(patient / "dicom" / "cycle01" / "tp01" / "ct")),
        read_ct_series(_files(patient / "dicom" / "pet" / "ct")),
    )
    # fixed (therapy CT) point p of anatomy point a = p − s_therapy lies at a + s_pet in the PET
    expected = pet_shift - therapy_shift
    found = np.asarray(registration.translation_mm)
    np.testing.assert_allclose(found[:2], expected[:2], atol=1.0)  # 4.4 mm pixels in plane
    # The test grid's CT slices are 8.8 mm thick and sample the anatomy at their centres: a
    # shift along z shows only where an outline crosses a slice centre (half a slice).
    slice_mm = read_ct_series(_files(patient / "dicom" / "pet" / "ct")).GetSpacing()[2]
    assert abs(found[2] - expected[2]) < slice_mm / 2
    assert np.max(np.abs(registration.rotation_rad)) < 0.01


def test_suv_per_voi_of_the_post_therapy_segmentation(consortium: GeneratedConsortium) -> None:
    patient = consortium.sites[0].folder / "patients" / "P001"
    pet_truth = _load(patient / "pretherapy_pet.json")
    cycle = patient / "dicom" / "cycle01"
    result = pretherapy_pet_features(
        _files(patient / "dicom" / "pet" / "pt"),
        vois_path=cycle / "seg.dcm",
        vois_ct_files=_files(cycle / "tp01" / "ct"),
        pet_ct_files=_files(patient / "dicom" / "pet" / "ct"),
    )
    assert result.registration is not None
    truth = {v["label"]: v for v in pet_truth["vois"]}
    by_label = {f.label: f for f in result.features}
    assert set(by_label) == set(truth)
    # A large organ of SUV near the background's: blur and noise leave its mean within 5 %.
    assert by_label["liver"].suv_mean == pytest.approx(truth["liver"]["suv_mean"], rel=0.05)
    for label, features in by_label.items():
        ratio = features.suv_mean / truth[label]["suv_mean"]
        # Organs within 20 %; lesions lose to partial volume (5.5 mm FWHM on 4 mm voxels).
        assert (0.8 if features.voi_type == "organ" else 0.3) < ratio < 1.2, label
        assert features.suv_max >= features.suv_mean
        assert features.volume_ml > 0


def test_a_pet_only_patient_uses_the_vois_drawn_on_the_pets_ct(
    consortium: GeneratedConsortium,
) -> None:
    patient = consortium.sites[0].folder / "patients" / "P002"
    pet = patient / "dicom" / "pet"
    assert not (patient / "dicom" / "cycle01").exists()
    result = pretherapy_pet_features(
        _files(pet / "pt"), vois_path=pet / "seg.dcm", vois_ct_files=_files(pet / "ct")
    )
    assert result.registration is None
    truth = {v["label"]: v for v in _load(patient / "pretherapy_pet.json")["vois"]}
    liver = next(f for f in result.features if f.label == "liver")
    assert liver.suv_mean == pytest.approx(truth["liver"]["suv_mean"], rel=0.05)
