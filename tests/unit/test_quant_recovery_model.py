"""The recovery-model term of lesions' SD (``quant.recovery_model``), on analytic residuals."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import ndimage

from concordose.calibration.records import CalibrationRecord
from concordose.errors import OutOfRangeError
from concordose.pipeline.quantify import recovery_model_error
from concordose.quant.gtm import FWHM_PER_SIGMA, gtm_correct, voi_crops
from concordose.quant.recovery_model import RecoveryModelError, recovery_residuals

NEMA_VOLUMES_ML = (0.52, 1.15, 2.57, 5.58, 11.49, 26.52)
"""NEMA IEC body phantom spheres (10-37 mm inner diameter)."""
ERRORS = np.array([-0.40, -0.25, -0.12, -0.06, -0.03, -0.01])
"""A typical pattern: the Gaussian model over-recovers small spheres, the corrected activity
falls short (the model's error grows as the sphere shrinks)."""
OMEGA = np.array([0.12, 0.22, 0.36, 0.52, 0.66, 0.79])


def _model() -> RecoveryModelError:
    model = RecoveryModelError.from_phantom(NEMA_VOLUMES_ML, ERRORS, OMEGA)
    assert model is not None
    return model


def test_residuals_are_each_spheres_error_in_recovery_units() -> None:
    """r_i = e_i · ω_ii: what the record stores comes from the phantom's GTM errors."""
    model = _model()
    np.testing.assert_allclose(model.residuals, ERRORS * OMEGA, rtol=1e-12)
    assert model.volumes_ml == NEMA_VOLUMES_ML
    # at a sphere, s(V)/ω_ii gives about that sphere's own error (its neighbours weigh in)
    smallest = float(model.relative_sd(NEMA_VOLUMES_ML[0], OMEGA[0]))
    assert smallest == pytest.approx(abs(ERRORS[0]), rel=0.35)


def test_uncorrected_spheres_are_left_out_and_two_are_needed() -> None:
    errors = ERRORS.copy()
    errors[[0, 2]] = np.nan
    model = RecoveryModelError.from_phantom(NEMA_VOLUMES_ML, errors, OMEGA)
    assert model is not None
    assert len(model.volumes_ml) == 4
    assert NEMA_VOLUMES_ML[0] not in model.volumes_ml
    only_one = np.full(6, np.nan)
    only_one[3] = 0.1
    assert RecoveryModelError.from_phantom(NEMA_VOLUMES_ML, only_one, OMEGA) is None
    with pytest.raises(OutOfRangeError, match="≥ 2 spheres"):
        RecoveryModelError((1.0,), (0.1,))


def test_term_is_zero_when_the_model_is_exact() -> None:
    exact = RecoveryModelError.from_phantom(NEMA_VOLUMES_ML, np.zeros(6), OMEGA)
    assert exact is not None
    volumes = np.geomspace(0.1, 1000.0, 50)
    np.testing.assert_array_equal(exact.relative_sd(volumes, np.full(50, 0.3)), 0.0)


def test_term_is_continuous_in_volume() -> None:
    """No step at a sphere's volume nor at the ends of the measured range: between volumes
    0.2 % apart the term moves by < 1 %."""
    model = _model()
    volumes = np.geomspace(0.05, 2000.0, 20000)
    spread = model.residual_sd(volumes)
    assert np.all(spread > 0)
    assert np.max(np.abs(np.diff(spread)) / spread[:-1]) < 0.01
    for sphere in NEMA_VOLUMES_ML:  # either side of each sphere
        below, above = model.residual_sd(np.array([sphere * 0.9999, sphere * 1.0001]))
        assert above == pytest.approx(below, rel=1e-3)


def test_term_follows_the_spheres_error_with_volume_and_falls_above_them() -> None:
    model = _model()
    s = model.residual_sd(np.array([0.5, 5.0, 26.52, 212.16]))
    assert s[0] > s[1] > s[2] > s[3] > 0
    # above the largest sphere: ∝ V^(-1/3) (8× the volume, half the spread)
    assert s[3] == pytest.approx(s[2] / 2.0, rel=1e-9)
    # below the smallest: the smallest spheres' spread, no invention
    np.testing.assert_allclose(model.residual_sd(np.array([0.1, 0.3])), model.residual_sd(0.52)[0])


def test_term_grows_with_the_correction_factor() -> None:
    """Relative SD = s(V)/ω_ii: halving ω_ii (a correction twice as large) doubles it; a VOI
    whose ω_ii is not > 0 gets no number."""
    model = _model()
    at = model.relative_sd(np.array([2.0, 2.0, 2.0]), np.array([0.4, 0.2, 0.0]))
    assert at[1] == pytest.approx(2.0 * at[0], rel=1e-12)
    assert np.isnan(at[2])


def test_recovery_residuals_multiplies_error_by_recovery() -> None:
    np.testing.assert_allclose(
        recovery_residuals(np.array([0.1, np.nan]), np.array([0.5, 0.5])), [0.05, np.nan]
    )


def _record(**fields: object) -> CalibrationRecord:
    return CalibrationRecord.model_validate(
        {
            "record_id": "r1",
            "calibration_factor_cps_per_mbq": 10.0,
            "valid_from": date(2026, 1, 1),
            **fields,
        }
    )


def test_records_without_residuals_have_no_term_and_mismatched_ones_are_refused() -> None:
    assert recovery_model_error(_record()) is None
    with_residuals = _record(
        recovery_model_volumes_ml=list(NEMA_VOLUMES_ML),
        recovery_model_residuals=[float(r) for r in ERRORS * OMEGA],
    )
    model = recovery_model_error(with_residuals)
    assert model is not None
    assert float(model.relative_sd(1.0, 0.2)) > 0
    with pytest.raises(ValidationError, match="one residual per volume"):
        _record(recovery_model_volumes_ml=[1.0, 2.0], recovery_model_residuals=[0.1])
    with pytest.raises(ValidationError, match="both or neither"):
        _record(recovery_model_volumes_ml=[1.0, 2.0])


@pytest.mark.parametrize(
    ("volumes_ml", "residuals"),
    [([1.0], [0.1]), ([1.0, -2.0], [0.1, 0.2]), ([1.0, 2.0], [0.1, float("nan")])],
)
def test_a_record_the_lesion_sd_could_not_be_built_from_is_refused_when_read(
    volumes_ml: list[float], residuals: list[float]
) -> None:
    """A hand-edited record with one sphere, a volume ≤ 0 or a NaN residual is refused where
    it is read (expected/found), not later by each cycle's lesion SD."""
    with pytest.raises(ValidationError, match="expected ≥ 2 spheres"):
        _record(recovery_model_volumes_ml=volumes_ml, recovery_model_residuals=residuals)


def test_gtm_reports_each_vois_own_recovery() -> None:
    """ω_ii of a VOI is the mean of its own blurred indicator over itself: smaller for a
    smaller VOI (a larger correction), and what the term divides by."""
    spacing = (4.0, 4.0, 4.0)
    shape = (40, 40, 40)
    body = np.zeros(shape, dtype=bool)
    body[4:36, 4:36, 4:36] = True
    small = np.zeros(shape, dtype=bool)
    small[10:13, 10:13, 10:13] = True
    large = np.zeros(shape, dtype=bool)
    large[20:30, 20:30, 20:30] = True
    image = np.where(body, 1.0, 0.0) + 4.0 * small + 4.0 * large
    sigma = 12.0 / FWHM_PER_SIGMA / np.asarray(spacing)
    image = ndimage.gaussian_filter(image, sigma)
    corrected = gtm_correct(
        image,
        voi_crops(np.stack([small, large])),
        body=body,
        spacing_mm_zyx=spacing,
        fwhm_mm=12.0,
    )
    expected = [
        float(ndimage.gaussian_filter(mask.astype(float), sigma, truncate=4.0)[mask].mean())
        for mask in (small, large)
    ]
    np.testing.assert_allclose(corrected.self_recovery, expected, rtol=0.02)
    assert corrected.self_recovery[0] < corrected.self_recovery[1] < 1.0
