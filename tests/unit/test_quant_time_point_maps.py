"""Activity maps of every time point on the first time point's SPECT grid, through registration.

Synthetic: a translation by a whole voxel moves the map by exactly one voxel and conserves the
activity; a map on a grid of another voxel size keeps its total. Consortium patient (preset
"test", no blur or noise, shifted by up to 5 mm per axis at each time point): with the
registered maps, organ activities read with the first time point's masks are closer to the
truth than with the unregistered maps, and the conservation factors stay within 3 % of 1
(activity does not leave the field of view).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import SimpleITK as sitk

from concordose.calibration.registry import SiteRegistry
from concordose.dicom.geometry import VolumeGeometry
from concordose.dicom.nm import read_nm_counts
from concordose.dicom.seg import read_segmentation
from concordose.phantoms.site_profiles import DEFAULT_SITE
from concordose.pipeline.alignment import TimePointAlignment
from concordose.pipeline.time_point_maps import (
    _to_reference_transform,
    registered_activity_maps,
    resample_activity,
)
from concordose.quant.activity import counts_to_activity_mbq
from concordose.quant.registration import RigidRegistration
from concordose.quant.voi import resample_vois, voi_totals
from tests.conftest import ShiftedPatient, shifted_patient

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _blob(shape: tuple[int, int, int]) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(3)
    values = np.zeros(shape)
    values[3:-3, 3:-3, 3:-3] = rng.gamma(2.0, 1.0, tuple(n - 6 for n in shape))
    return values


def test_whole_voxel_translation_moves_the_map_exactly_and_conserves_activity() -> None:
    geometry = VolumeGeometry((0.0, 0.0, 0.0), (4.0, 4.0, 4.0), IDENTITY, (12, 14, 16))
    activity = _blob(geometry.shape)
    # reference point p reads the source at p + (4, 0, 0) mm: one voxel along x (columns)
    moved, factor = resample_activity(
        activity, geometry, geometry, sitk.TranslationTransform(3, (4.0, 0.0, 0.0))
    )
    np.testing.assert_allclose(moved[:, :, :-1], activity[:, :, 1:], rtol=1e-12)
    assert factor == pytest.approx(1.0, abs=1e-12)
    assert moved.sum() == pytest.approx(activity.sum(), rel=1e-12)


def test_resampling_to_another_voxel_size_keeps_the_total() -> None:
    source = VolumeGeometry((0.0, 0.0, 0.0), (4.0, 4.0, 4.0), IDENTITY, (12, 14, 16))
    reference = VolumeGeometry((-1.0, -1.0, -1.0), (3.0, 3.0, 3.0), IDENTITY, (18, 20, 22))
    activity = _blob(source.shape)
    moved, factor = resample_activity(activity, source, reference, None)
    assert moved.sum() == pytest.approx(activity.sum(), rel=1e-12)
    assert factor == pytest.approx(1.0, abs=0.03)  # interpolation alone nearly conserves


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory) -> ShiftedPatient:
    return shifted_patient(tmp_path_factory.mktemp("shifted_maps"), "test")


def test_registered_maps_give_organ_activities_closer_to_truth(
    shifted: ShiftedPatient,
) -> None:
    cycle, truth, sites = shifted
    calibration = SiteRegistry.load(sites).site(DEFAULT_SITE.site_id).calibrations[0]
    maps = registered_activity_maps(cycle, calibration)
    assert maps.activity_mbq.shape == (len(cycle.time_points), *maps.geometry.shape)
    np.testing.assert_allclose(maps.conservation_factor, 1.0, atol=0.03)
    vois = resample_vois(
        read_segmentation(cycle.segmentation), maps.geometry, maps.alignments[0].mask_transform()
    )
    unregistered = np.stack(
        [
            counts_to_activity_mbq(
                read_nm_counts(p.acquisition),
                calibration_factor_cps_per_mbq=calibration.calibration_factor_cps_per_mbq,
                acquisition_duration_s=p.acquisition.acquisition_duration_s,
            )
            for p in cycle.time_points
        ]
    )
    true_voi = {v["label"]: v for v in truth["cycles"][0]["vois"]}
    for index, label in enumerate(vois.labels):
        if label not in ("kidney_left", "kidney_right", "spleen", "liver"):
            continue
        expected = np.asarray(true_voi[label]["activity_mbq"])
        mask = vois.masks[index : index + 1]
        with_registration = np.array([voi_totals(m, mask)[0] for m in maps.activity_mbq])
        without = np.array([voi_totals(m, mask)[0] for m in unregistered])
        error_with = np.max(np.abs(with_registration / expected - 1))
        error_without = np.max(np.abs(without / expected - 1))
        assert error_with < error_without, (label, error_with, error_without)


def _aligned(translation_mm: tuple[float, float, float]) -> TimePointAlignment:
    euler = sitk.Euler3DTransform()
    euler.SetTranslation(translation_mm)
    return TimePointAlignment(
        RigidRegistration(euler, translation_mm, (0.0, 0.0, 0.0), 0.0, 0, "synthetic")
    )


def test_reference_points_go_through_the_first_ct_into_the_time_points_spect() -> None:
    # registrations map first-CT points to each time point's CT: p ↦ p + t
    reference, point = _aligned((1.0, 2.0, 3.0)), _aligned((10.0, 20.0, 30.0))
    transform = _to_reference_transform(reference, point)
    assert transform is not None
    # reference SPECT → first CT (p − t₀) → this time point's CT (+ tᵢ)
    assert transform.TransformPoint((0.0, 0.0, 0.0)) == pytest.approx((9.0, 18.0, 27.0))
    assert _to_reference_transform(TimePointAlignment(None), TimePointAlignment(None)) is None
