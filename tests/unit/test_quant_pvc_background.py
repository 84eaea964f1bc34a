"""Background-aware partial-volume correction on an analytic blurred sphere in known backgrounds.

One sphere (20 mm, 1 mm voxels, Gaussian FWHM 8 mm) is imaged twice: as a NEMA-like phantom
sphere at 4:1 over a warm background, and as a "lesion" at 20:1 over a colder one. The phantom
gives RC (with its background's spill-in) and RC0 = (C_meas − C_B)/(C_S − C_B); RC0 must equal
the recovery of the same sphere in a cold background (linearity of the blur) and the analytic
one. The lesion is then corrected with its shell background: C_L = (C_meas − (1 − RC0)·C_B)/RC0
recovers the truth, while A / RC (the phantom's spill-in built in) misses it.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from scipy import ndimage

from concordose.calibration.records import CalibrationRecord
from concordose.calibration.recovery import contrast_recovery
from concordose.errors import ConfigurationError, OutOfRangeError
from concordose.phantoms.imaging import FWHM_PER_SIGMA, analytic_sphere_recovery
from concordose.quant.pvc import (
    NO_BACKGROUND,
    NOT_CORRECTED,
    STATUS_OK,
    ContrastRecoveryCurve,
    LocalBackground,
    background_shells,
    contrast_recovery_curve_from_record,
    correct_partial_volume_in_background,
    shell_statistics,
)

VOXEL_MM = 1.0
SHAPE = (72, 72, 72)
DIAMETER_MM = 20.0
FWHM_MM = 8.0
VOXEL_ML = VOXEL_MM**3 / 1000.0


def _sphere(centre_vox: tuple[float, float, float] = (36.0, 36.0, 36.0)) -> np.ndarray:
    z, y, x = np.indices(SHAPE, dtype=np.float64)
    distance = np.sqrt(
        (z - centre_vox[0]) ** 2 + (y - centre_vox[1]) ** 2 + (x - centre_vox[2]) ** 2
    )
    inside: np.ndarray = distance * VOXEL_MM <= DIAMETER_MM / 2.0
    return inside


def _image(sphere: np.ndarray, sphere_conc: float, background_conc: float) -> np.ndarray:
    truth = np.where(sphere, sphere_conc, background_conc)
    sigma = FWHM_MM / FWHM_PER_SIGMA / VOXEL_MM
    blurred: np.ndarray = ndimage.gaussian_filter(truth, sigma, mode="nearest", truncate=4.0)
    return blurred


@pytest.fixture(scope="module")
def sphere() -> np.ndarray:
    return _sphere()


@pytest.fixture(scope="module")
def rc0_phantom(sphere: np.ndarray) -> tuple[float, float]:
    """(RC as the NEMA analysis measures it, RC0) of the sphere at 4:1 over a warm background."""
    image = _image(sphere, sphere_conc=4.0, background_conc=1.0)
    rc = float(image[sphere].mean() / 4.0)
    return rc, float(contrast_recovery(np.array([rc]), 4.0)[0])


def test_contrast_recovery_removes_the_phantom_backgrounds_spill_in(
    sphere: np.ndarray, rc0_phantom: tuple[float, float]
) -> None:
    rc, rc0 = rc0_phantom
    cold = _image(sphere, sphere_conc=1.0, background_conc=0.0)
    assert rc0 == pytest.approx(float(cold[sphere].mean()), rel=1e-9)  # blur is linear
    assert rc0 == pytest.approx(analytic_sphere_recovery(DIAMETER_MM, FWHM_MM), abs=0.02)
    assert rc == pytest.approx(rc0 + (1.0 - rc0) / 4.0, rel=1e-9)
    assert rc - rc0 > 0.05  # the spill-in the plain RC holds


def _curve_through(volume_ml: float, rc0: float) -> ContrastRecoveryCurve:
    """b = 1 and a chosen so that RC0(volume) = rc0, with a small (a, b) covariance."""
    return ContrastRecoveryCurve(
        a_ml=volume_ml * (1.0 / rc0 - 1.0),
        b=1.0,
        covariance=((0.01, 0.0), (0.0, 0.0004)),
        volume_ml=(0.5, 30.0),
        source="analytic",
    )


def test_lesion_in_another_background_is_recovered(
    sphere: np.ndarray, rc0_phantom: tuple[float, float]
) -> None:
    rc, rc0 = rc0_phantom
    lesion_conc, background_conc = 10.0, 0.5
    image = _image(sphere, lesion_conc, background_conc)
    voi_ml = float(sphere.sum() * VOXEL_ML)
    true_mbq = lesion_conc * voi_ml
    measured_mbq = float(image[sphere].sum() * VOXEL_ML)
    masks = sphere[None]
    shells = background_shells(
        masks, (VOXEL_MM,) * 3, np.array([True]), gap_mm=2 * FWHM_MM, width_mm=5.0
    )
    # The shell: 16 < d ≤ 21 mm from the VOI, in mm from the grid spacing, never in the VOI.
    distance = ndimage.distance_transform_edt(~sphere, sampling=(VOXEL_MM,) * 3)
    assert shells[0].any()
    assert distance[shells[0]].min() > 16.0
    assert distance[shells[0]].max() <= 21.0
    mean, sd, n = shell_statistics(image, shells)
    assert mean[0] == pytest.approx(background_conc, rel=1e-3)
    curve = _curve_through(voi_ml, rc0)
    result = correct_partial_volume_in_background(
        np.array([[measured_mbq]]),
        np.array([[voi_ml]]),
        np.array([voi_ml]),
        ["lesion"],
        background=LocalBackground(mean[:, None], sd[:, None], n[:, None]),
        curve=curve,
    )
    assert result.status == (STATUS_OK,)
    assert result.activity_mbq[0, 0] == pytest.approx(true_mbq, rel=2e-3)
    # Uncorrected: spill-out lost; A / RC (phantom RC holding its 4:1 background's spill-in,
    # more than this 20:1 lesion gets) stays > 5 % off.
    assert measured_mbq / true_mbq - 1 < -0.15
    assert abs(measured_mbq / rc / true_mbq - 1) > 0.05
    # Uncertainty: first-order σ from RC0's covariance and the background SD.
    rc0_sd = float(curve.sd_at(np.array([voi_ml]))[0])
    expected_sd = np.hypot(
        (1 - rc0) / rc0 * voi_ml * sd[0],
        (measured_mbq - mean[0] * voi_ml) / rc0**2 * rc0_sd,
    )
    assert result.relative_sd[0, 0] * result.activity_mbq[0, 0] == pytest.approx(expected_sd)
    assert result.relative_sd[0, 0] > 0


def test_rc0_sd_matches_a_finite_difference_delta_method() -> None:
    curve = ContrastRecoveryCurve(
        a_ml=3.0, b=1.3, covariance=((0.04, 0.002), (0.002, 0.01)), source="t"
    )
    volume = np.array([5.0])
    step = 1e-6
    da = (
        ContrastRecoveryCurve(3.0 + step, 1.3, curve.covariance).at(volume) - curve.at(volume)
    ) / step
    db = (
        ContrastRecoveryCurve(3.0, 1.3 + step, curve.covariance).at(volume) - curve.at(volume)
    ) / step
    gradient = np.array([da[0], db[0]])
    expected = np.sqrt(gradient @ np.asarray(curve.covariance) @ gradient)
    assert curve.sd_at(volume)[0] == pytest.approx(expected, rel=1e-4)


def test_organs_outside_range_and_empty_shells_are_left_as_measured() -> None:
    curve = ContrastRecoveryCurve(a_ml=2.0, b=1.0, covariance=((0.0, 0.0), (0.0, 0.0)))
    activity = np.array([[100.0, 50.0], [5.0, 4.0], [0.1, 0.1], [3.0, 2.0]])
    background = LocalBackground(
        concentration_mbq_per_ml=np.array(
            [[np.nan, np.nan], [0.1, 0.1], [0.1, 0.1], [0.1, np.nan]]
        ),
        sd_mbq_per_ml=np.zeros((4, 2)),
        n_voxels=np.array([[0, 0], [10, 10], [10, 10], [10, 0]]),
    )
    result = correct_partial_volume_in_background(
        activity,
        np.array([[150.0] * 2, [4.0] * 2, [0.1] * 2, [4.0] * 2]),
        np.array([150.0, 4.0, 0.1, 4.0]),
        ["organ", "lesion", "lesion", "lesion"],
        background=background,
        curve=curve,
    )
    assert result.status[0] == NOT_CORRECTED
    assert result.status[1] == STATUS_OK
    assert "not extrapolated" in result.status[2]
    assert result.status[3].startswith(NO_BACKGROUND)
    for untouched in (0, 2, 3):
        np.testing.assert_array_equal(result.activity_mbq[untouched], activity[untouched])
        np.testing.assert_array_equal(result.relative_sd[untouched], 0.0)
    rc0 = 1 / (1 + 2.0 / 4.0)
    np.testing.assert_allclose(result.activity_mbq[1], (activity[1] - (1 - rc0) * 0.1 * 4.0) / rc0)


def test_shells_leave_out_other_lesions_and_refuse_bad_settings() -> None:
    first = _sphere((36.0, 36.0, 22.0))
    second = _sphere((36.0, 36.0, 50.0))
    masks = np.stack([first, second])
    shells = background_shells(masks, (1.0, 1.0, 1.0), np.array([True, True]), gap_mm=4.0)
    near_second = ndimage.distance_transform_edt(~second) <= 4.0
    assert not (shells[0] & near_second).any()
    assert not (shells[0] & masks.any(axis=0)).any()
    organ_only = background_shells(masks, (1.0, 1.0, 1.0), np.array([False, False]))
    assert not organ_only.any()
    with pytest.raises(ConfigurationError, match="width > 0 mm"):
        background_shells(masks, (1.0, 1.0, 1.0), np.array([True, True]), width_mm=0.0)


def test_records_without_an_rc0_curve_are_refused_for_background_aware_pvc() -> None:
    record = CalibrationRecord(
        record_id="old-record",
        calibration_factor_cps_per_mbq=9.1,
        recovery_a_ml=2.0,
        recovery_b=1.2,
        valid_from=date(2026, 1, 1),
    )
    with pytest.raises(ConfigurationError, match="re-run concordose calibrate"):
        contrast_recovery_curve_from_record(record)
    complete = record.model_copy(
        update={
            "contrast_recovery_a_ml": 3.0,
            "contrast_recovery_b": 1.1,
            "contrast_recovery_covariance": [[0.04, 0.0], [0.0, 0.01]],
        }
    )
    curve = contrast_recovery_curve_from_record(complete)
    assert curve.at(np.array([3.0]))[0] == pytest.approx(0.5)
    assert curve.source == "old-record"


def test_contrast_recovery_refuses_a_ratio_without_contrast() -> None:
    with pytest.raises(OutOfRangeError, match="ratio > 1"):
        contrast_recovery(np.array([0.5]), 1.0)
