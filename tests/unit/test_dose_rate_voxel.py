"""Hänscheid and Madsen single-time-point variants on voxel dose-rate maps (issue 7, item 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from concordose.dicom.geometry import VolumeGeometry
from concordose.dose.dose_rate import single_time_point_dose_map_gy
from concordose.dose.models import VoxelDoseInput
from concordose.dose.registry import VOXEL_DOSE_METHODS
from concordose.errors import ConcordoseError

SPACING_MM = (4.42, 4.42, 4.42)
SCAN_H = 96.0
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _two_regions() -> tuple[np.ndarray, np.ndarray]:
    """Activity at injection (MBq per voxel) and Teff (h) per voxel: a fast region
    (Teff = 48 h = t/2, Hänscheid exact) and a slow one (Teff = 150 h, Hänscheid −17.9 %)."""
    activity_0 = np.zeros((16, 18, 20))
    teff_h = np.full(activity_0.shape, 100.0)
    activity_0[4:12, 3:9, 4:16] = 1.0
    teff_h[4:12, 3:9, 4:16] = 48.0
    activity_0[4:12, 10:15, 4:16] = 2.0
    teff_h[4:12, 10:15, 4:16] = 150.0
    return activity_0, teff_h


def test_voxel_ldm_dose_rate_follows_the_hanscheid_error_curve_and_madsen_is_exact() -> None:
    # LDM is per voxel, so each voxel's dose-rate route can be checked against its own truth:
    # D_true = Ḋ(0)·Teff/ln2; Hänscheid / truth = 2x·2^(−x), x = t/Teff (Hänscheid 2018);
    # Madsen with the voxel's own Teff is exact, with a wrong population Teff it is off by
    # (k_true/k)·e^((k − k_true)·t).
    activity_0, teff_h = _two_regions()
    activity_t = activity_0 * 2.0 ** (-SCAN_H / teff_h)
    method = VOXEL_DOSE_METHODS.get("ldm")
    truth = method.compute_map(
        VoxelDoseInput(activity_0 * teff_h / math.log(2), SPACING_MM)
    ).dose_gy
    source = activity_0 > 0
    hanscheid = single_time_point_dose_map_gy(activity_t, SPACING_MM, SCAN_H, method)
    x = SCAN_H / teff_h[source]
    np.testing.assert_allclose(hanscheid[source] / truth[source], 2 * x * 2.0**-x, rtol=1e-12)
    fast = source & (teff_h == 48.0)
    np.testing.assert_allclose(hanscheid[fast], truth[fast], rtol=1e-12)  # exact at Teff = t/2
    assert hanscheid[source & (teff_h == 150.0)].max() / truth[
        source & (teff_h == 150.0)
    ].max() == (pytest.approx(2 * 0.64 * 2**-0.64, rel=1e-9))
    madsen_map = single_time_point_dose_map_gy(
        activity_t, SPACING_MM, SCAN_H, method, effective_half_life_h=teff_h
    )
    np.testing.assert_allclose(madsen_map, truth, rtol=1e-12, atol=1e-15)
    population = single_time_point_dose_map_gy(
        activity_t, SPACING_MM, SCAN_H, method, effective_half_life_h=100.0
    )
    k, k_true = math.log(2) / 100.0, math.log(2) / teff_h[source]
    np.testing.assert_allclose(
        population[source] / truth[source], (k_true / k) * np.exp((k - k_true) * SCAN_H), rtol=1e-12
    )


def test_voxel_dose_rate_route_onto_the_ct_grid_equals_the_tia_route() -> None:
    # Mono-exponential voxels with Teff = 96 h scanned at 96 h: both variants are exact, also
    # when the dose lands on a CT grid of another origin and spacing.
    spect = VolumeGeometry((0.0, 0.0, 0.0), SPACING_MM, IDENTITY, (16, 18, 20))
    ct = VolumeGeometry((-30.3, -25.1, -27.0), (1.3, 1.3, 3.0), IDENTITY, (46, 100, 110))
    activity_0, _ = _two_regions()
    method = VOXEL_DOSE_METHODS.get("vsv_4.42mm")
    truth = method.compute_map(
        VoxelDoseInput(
            activity_0 * SCAN_H / math.log(2), SPACING_MM, geometry=spect, output_geometry=ct
        )
    ).dose_gy
    for teff in (None, SCAN_H):
        dose = single_time_point_dose_map_gy(
            activity_0 * 0.5,
            SPACING_MM,
            SCAN_H,
            method,
            effective_half_life_h=teff,
            geometry=spect,
            output_geometry=ct,
        )
        assert dose.shape == ct.shape
        np.testing.assert_allclose(dose, truth, rtol=1e-9, atol=1e-12 * truth.max())


def test_madsen_refuses_a_non_positive_half_life_in_the_map() -> None:
    activity_0, teff_h = _two_regions()
    teff_h[0, 0, 0] = 0.0
    with pytest.raises(ConcordoseError, match="effective half-life"):
        single_time_point_dose_map_gy(
            activity_0,
            SPACING_MM,
            SCAN_H,
            VOXEL_DOSE_METHODS.get("ldm"),
            effective_half_life_h=teff_h,
        )
