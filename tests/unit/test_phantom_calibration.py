"""Analytic checks of the calibration-factor and recovery-coefficient maths."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from concordose.calibration.recovery import fit_recovery_curve, sphere_recovery
from concordose.calibration.uniform_cylinder import calibration_factor
from concordose.dicom.geometry import VolumeGeometry
from concordose.errors import OutOfRangeError
from concordose.nuclides import LU177

# NEMA IEC body phantom sphere inner diameters (mm), NEMA NU 2.
NEMA_DIAMETERS_MM = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)


def test_cf_without_decay_is_counts_over_time_and_activity() -> None:
    moment = datetime(2026, 1, 1, 10, 0)
    # A 1e-9 s acquisition makes decay negligible: CF = C / (T · A).
    result = calibration_factor(
        total_counts=9.1 * 1e-9 * 500.0,
        acquisition_duration_s=1e-9,
        activity_mbq=500.0,
        activity_reference=moment,
        scan_start=moment,
        activity_relative_uncertainty=0.02,
    )
    assert result.cf_cps_per_mbq == pytest.approx(9.1, rel=1e-9)


def test_cf_decays_activity_to_the_scan_and_averages_over_it() -> None:
    reference = datetime(2026, 1, 1, 8, 0)
    scan = reference + timedelta(hours=LU177.half_life_h)  # one half-life later: half the activity
    duration_s = 1800.0
    lam_per_s = LU177.decay_constant_per_h / 3600.0
    mean_mbq = 250.0 * (1 - math.exp(-lam_per_s * duration_s)) / (lam_per_s * duration_s)
    counts = 10.0 * duration_s * mean_mbq
    result = calibration_factor(
        total_counts=counts,
        acquisition_duration_s=duration_s,
        activity_mbq=500.0,
        activity_reference=reference,
        scan_start=scan,
        activity_relative_uncertainty=0.03,
    )
    assert result.mean_activity_mbq == pytest.approx(mean_mbq, rel=1e-12)
    assert result.cf_cps_per_mbq == pytest.approx(10.0, rel=1e-12)
    assert result.relative_uncertainty == pytest.approx(math.sqrt(1 / counts + 0.03**2))


def test_rc_curve_fit_recovers_known_parameters() -> None:
    volumes_ml = np.array([(math.pi / 6) * (d / 10) ** 3 for d in NEMA_DIAMETERS_MM])
    a_ml, b = 2.1, 1.3
    rc = 1 / (1 + (a_ml / volumes_ml) ** b)
    curve = fit_recovery_curve(volumes_ml, rc)
    assert curve.a_ml == pytest.approx(a_ml, rel=1e-6)
    assert curve.b == pytest.approx(b, rel=1e-6)
    assert curve.covariance.shape == (2, 2)
    np.testing.assert_allclose(curve.rc(volumes_ml), rc, rtol=1e-6)


def test_rc_fit_refuses_too_few_spheres() -> None:
    with pytest.raises(OutOfRangeError, match="≥ 3 spheres"):
        fit_recovery_curve([1.0, 2.0], [0.4, 0.6])


def test_sphere_recovery_falls_with_size_under_blur() -> None:
    voxel_mm = 2.0
    shape = (60, 60, 120)
    geometry = VolumeGeometry(
        origin_mm=(0.0, 0.0, 0.0),
        spacing_mm=(voxel_mm, voxel_mm, voxel_mm),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        shape=shape,
    )
    k, j, i = np.indices(shape) * voxel_mm
    image = np.zeros(shape)
    centres = [(20.0 + 38.0 * n, 60.0, 60.0) for n in range(6)]
    for (x, y, z), diameter in zip(centres, NEMA_DIAMETERS_MM, strict=True):
        image[(i - x) ** 2 + (j - y) ** 2 + (k - z) ** 2 <= (diameter / 2) ** 2] = 1.0
    unblurred = sphere_recovery(
        image, geometry, centres_mm=centres, diameters_mm=NEMA_DIAMETERS_MM, true_concentration=1.0
    )
    np.testing.assert_allclose(unblurred, 1.0)
    fwhm_mm = 10.0
    blurred = gaussian_filter(image, sigma=fwhm_mm / 2.3548 / voxel_mm)
    rc = sphere_recovery(
        blurred,
        geometry,
        centres_mm=centres,
        diameters_mm=NEMA_DIAMETERS_MM,
        true_concentration=1.0,
    )
    assert np.all(np.diff(rc) > 0), rc  # recovery rises with size
    assert rc[0] < 0.5 < rc[-1] < 1.0
