"""Respiratory blur of abdominal activity (``phantoms.respiratory_motion``)."""

from __future__ import annotations

import numpy as np
import pytest

from concordose.phantoms.anatomy import (
    Anatomy,
    Ellipsoid,
    Voi,
    VoiType,
    default_anatomy,
    sample_label_map,
    sphere,
)
from concordose.phantoms.grid import VoxelGrid
from concordose.phantoms.imaging import region_activity_map
from concordose.phantoms.respiratory_motion import (
    DIAPHRAGM_AMPLITUDE_MM,
    displacement_kernel,
    motion_averaged_activity,
    respiratory_amplitudes_mm,
    shift_along_z,
)

COS4_MEAN = 3.0 / 8.0
COS4_VARIANCE = 17.0 / 128.0


@pytest.mark.parametrize(("amplitude_mm", "voxel_mm"), [(16.0, 1.0), (10.4, 4.42), (12.8, 3.9)])
def test_kernel_has_the_cos4_traces_mean_and_variance(amplitude_mm: float, voxel_mm: float) -> None:
    offsets, weights = displacement_kernel(amplitude_mm, voxel_mm)
    assert weights.sum() == pytest.approx(1.0, rel=1e-12)
    mean_mm = float((offsets * weights).sum()) * voxel_mm
    variance_mm2 = float(((offsets * voxel_mm - mean_mm) ** 2 * weights).sum())
    assert mean_mm == pytest.approx(-COS4_MEAN * amplitude_mm, rel=1e-9)
    expected = COS4_VARIANCE * amplitude_mm**2
    # Linear splitting adds f(1 − f) voxel² on average, at most voxel²/4.
    assert expected <= variance_mm2 <= expected + voxel_mm**2 / 4.0


def test_shift_keeps_the_total_at_the_edges() -> None:
    image = np.arange(5 * 2 * 2, dtype=np.float64).reshape(5, 2, 2)
    for offset in (-7, -2, 0, 3, 9):
        assert shift_along_z(image, offset).sum() == pytest.approx(image.sum(), rel=1e-15)
    assert np.array_equal(shift_along_z(image, 1)[1:4], image[:3])


def _kidney_anatomy() -> Anatomy:
    kidney = Voi("kidney_left", VoiType.ORGAN, Ellipsoid((0.0, 0.0, 0.0), (28.0, 25.0, 50.0)), 1)
    lesion = Voi("lesion_1", VoiType.LESION, sphere((0.0, 0.0, 100.0), 20.0), 2)
    return Anatomy(body=default_anatomy().body, vois=(kidney, lesion))


def test_motion_blur_keeps_the_total_and_widens_the_kidney_profile_by_the_trace() -> None:
    anatomy = _kidney_anatomy()
    grid = VoxelGrid.around((0.0, 0.0, 20.0), (220, 40, 40), (2.0, 2.0, 1.0))
    labels = sample_label_map(anatomy, grid)
    activity, _ = region_activity_map(labels, {1: 40.0, 2: 5.0, 255: 100.0})
    amplitudes = respiratory_amplitudes_mm(anatomy)
    assert amplitudes == {"kidney_left": pytest.approx(0.65 * DIAPHRAGM_AMPLITUDE_MM)}
    amplitude_mm = amplitudes["kidney_left"]
    blurred = motion_averaged_activity(activity, labels, {1: amplitude_mm}, voxel_mm_z=1.0)

    assert blurred.sum() == pytest.approx(activity.sum(), rel=1e-12)
    static = labels != 1
    kidney_only = np.where(labels == 1, activity, 0.0)
    moved = motion_averaged_activity(kidney_only, labels, {1: amplitude_mm}, voxel_mm_z=1.0)
    # Static regions (body, the lesion outside the liver) keep their activity exactly.
    assert np.allclose(blurred - moved, np.where(static, activity, 0.0), rtol=0, atol=1e-15)

    z_mm = grid.axis_coordinates_mm()[2]
    before = kidney_only.sum(axis=(1, 2))
    after = moved.sum(axis=(1, 2))

    def moments(profile: np.ndarray) -> tuple[float, float]:
        mean = float((profile * z_mm).sum() / profile.sum())
        return mean, float((profile * (z_mm - mean) ** 2).sum() / profile.sum())

    mean_before, var_before = moments(before)
    mean_after, var_after = moments(after)
    assert mean_after - mean_before == pytest.approx(-COS4_MEAN * amplitude_mm, abs=1e-9)
    widening_mm2 = var_after - var_before
    expected = COS4_VARIANCE * amplitude_mm**2
    assert expected <= widening_mm2 <= expected + 0.25  # + ≤ voxel²/4 from linear splitting


def test_hepatic_lesions_move_with_the_liver_and_others_stay() -> None:
    base = default_anatomy()
    amplitudes = respiratory_amplitudes_mm(base)
    assert amplitudes["liver"] == DIAPHRAGM_AMPLITUDE_MM
    assert amplitudes["spleen"] == pytest.approx(0.8 * DIAPHRAGM_AMPLITUDE_MM)
    assert amplitudes["kidney_right"] == pytest.approx(0.65 * DIAPHRAGM_AMPLITUDE_MM)
    assert amplitudes["lesion_1"] == DIAPHRAGM_AMPLITUDE_MM  # inside the liver
    assert "lesion_2" not in amplitudes  # retroperitoneal node
