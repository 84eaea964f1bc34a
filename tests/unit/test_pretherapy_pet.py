"""Issue 20 item 3a/b: the digital consortium's pre-therapy PET and the PT reader's SUV."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import dcmread
from scipy import ndimage

from concordose.dicom.pt import read_pt_series, suv_bw_factor
from concordose.errors import MalformedHeaderError
from concordose.nuclides import nuclide
from concordose.phantoms.anatomy import sample_label_map, shape_volume_ml
from concordose.phantoms.consortium import consortium_patient_info
from concordose.phantoms.pretherapy_pet import (
    GA68_HALF_LIFE_S,
    PET_NUCLIDE,
    GeneratedPet,
    generate_pretherapy_pet,
)
from concordose.phantoms.protocols import DEFAULT_PROTOCOL
from concordose.phantoms.protocols import protocol as protocol_named
from concordose.phantoms.site_profiles import CONSORTIUM_SITES
from concordose.phantoms.virtual_patient import VirtualPatient, draw_virtual_patient

SITE = CONSORTIUM_SITES[0]


def _patient() -> VirtualPatient:
    return draw_virtual_patient(
        7,
        1,
        protocol=protocol_named(DEFAULT_PROTOCOL),
        max_cycles=1,
        n_lesions_range=(3, 4),
        lesion_volume_range_ml=(4.0, 60.0),
    )


def _generate(folder: Path, *, blur: bool, noise: bool, with_seg: bool = False) -> GeneratedPet:
    patient = _patient()
    hu = {r.value: 40.0 for r in (*patient.anatomy.vois, patient.anatomy.body)}
    hu[0] = -1000.0
    return generate_pretherapy_pet(
        patient,
        SITE,
        folder,
        seed=7,
        grid_preset="test",
        patient_info=consortium_patient_info(patient, SITE),
        hu_by_value=hu,
        ct_noise_sd_hu=5.0,
        with_seg=with_seg,
        blur=blur,
        noise=noise,
    )


def test_ga68_half_life_is_the_nuclide_data() -> None:
    assert pytest.approx(nuclide(PET_NUCLIDE).half_life_s, rel=1e-6) == GA68_HALF_LIFE_S


def test_suv_bw_factor_decays_the_dose() -> None:
    # 70 kg, 100 MBq, one half-life later: 70 000 g / 50 MBq.
    factor = suv_bw_factor(
        weight_kg=70.0, injected_activity_bq=1e8, half_life_s=4062.6, elapsed_s=4062.6
    )
    assert factor == pytest.approx(70_000.0 / 5e7, rel=1e-12)


def test_pt_reader_recovers_the_generated_suv(tmp_path: Path) -> None:
    generated = _generate(tmp_path, blur=False, noise=False)
    header = dcmread(generated.pt_files[0], stop_before_pixels=True)
    assert header.Modality == "PT"
    assert header.Units == "BQML"
    assert header.DecayCorrection == "START"
    item = header.RadiopharmaceuticalInformationSequence[0]
    assert float(item.RadionuclideHalfLife) == pytest.approx(4062.6)
    series = read_pt_series(list(reversed(generated.pt_files)))  # order comes from positions
    suv = sitk.GetArrayFromImage(series.suv_image())
    truth = generated.suv_map
    assert suv.shape == truth.shape
    # int16 storage with a per-slice slope: at most half a step of each slice's maximum.
    step = truth.max(axis=(1, 2), keepdims=True) / 32767.0
    assert np.all(np.abs(suv - truth) <= 0.51 * step + 1e-6)
    grid = generated.truth.grid
    assert series.image_bq_per_ml.GetOrigin() == pytest.approx(grid.origin_mm_xyz)
    assert series.image_bq_per_ml.GetSpacing() == pytest.approx(grid.spacing_mm_xyz)
    # Each VOI's SUVmean on its own voxels (no blur, no noise) is the model's SUV.
    patient = _patient()
    shift = generated.truth.shift_mm
    labels = sample_label_map(patient.anatomy, grid.translated((-shift[0], -shift[1], -shift[2])))
    for voi in patient.anatomy.vois:
        inside = labels == voi.value
        if inside.any():
            assert float(suv[inside].mean()) == pytest.approx(
                generated.truth.suv_by_label[voi.label], rel=1e-3
            )


def test_pt_reader_suv_of_a_noisy_blurred_pet_is_close_in_a_large_organ(tmp_path: Path) -> None:
    generated = _generate(tmp_path, blur=True, noise=True)
    series = read_pt_series(generated.pt_files)
    suv = sitk.GetArrayFromImage(series.suv_image())
    patient = _patient()
    shift = generated.truth.shift_mm
    grid = generated.truth.grid
    labels = sample_label_map(patient.anatomy, grid.translated((-shift[0], -shift[1], -shift[2])))
    liver = patient.anatomy.voi("liver")
    core = ndimage.binary_erosion(labels == liver.value, iterations=2)
    assert float(suv[core].mean()) == pytest.approx(generated.truth.suv_by_label["liver"], rel=0.05)


def _rewrite(path: Path, **values: object) -> None:
    dataset = dcmread(path)
    for keyword, value in values.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    dataset.save_as(path)


def test_pt_reader_refuses_other_units_naming_tag_and_value(tmp_path: Path) -> None:
    generated = _generate(tmp_path, blur=False, noise=False)
    first = min(generated.pt_files)
    _rewrite(first, Units="CNTS")
    with pytest.raises(MalformedHeaderError, match=r"Units \(0054,1001\) is 'CNTS'"):
        read_pt_series(generated.pt_files)


def test_pt_reader_refuses_a_missing_weight(tmp_path: Path) -> None:
    generated = _generate(tmp_path, blur=False, noise=False)
    first = min(generated.pt_files)
    _rewrite(first, PatientWeight=None)
    with pytest.raises(MalformedHeaderError, match=r"PatientWeight \(0010,1030\) is 'missing'"):
        read_pt_series(generated.pt_files)


def test_pet_truth_relates_suv_to_post_therapy_uptake(tmp_path: Path) -> None:
    generated = _generate(tmp_path, blur=False, noise=False)
    truth = generated.truth
    patient = _patient()
    for voi in patient.anatomy.vois:
        model = (
            truth.peak_uptake_fraction_by_label[voi.label]
            * patient.weight_kg
            * 1000.0
            / shape_volume_ml(voi.shape)
        )
        ratio = truth.suv_by_label[voi.label] / model
        # the lognormal mismatch: median 1, σ_ln 0.35 → within ±5 σ
        assert abs(math.log(ratio)) < 5 * 0.35
