"""Partial-volume correction with a recovery-coefficient curve."""

from __future__ import annotations

import math

import numpy as np
import pytest

from concordose.errors import ConfigurationError
from concordose.quant.pvc import NOT_CORRECTED, RecoveryCurve, correct_partial_volume

# NEMA IEC body phantom sphere volumes (mL, diameters 10–37 mm) with an illustrative RC curve.
CURVE = RecoveryCurve(
    volume_ml=(0.52, 1.15, 2.57, 5.58, 11.49, 26.52),
    recovery=(0.20, 0.32, 0.45, 0.60, 0.72, 0.83),
    source="test-phantom",
)


def test_rc_interpolates_in_log_volume_and_is_exact_at_measured_spheres() -> None:
    np.testing.assert_allclose(CURVE.at(np.array(CURVE.volume_ml)), CURVE.recovery)
    middle = math.sqrt(5.58 * 11.49)  # halfway in log volume
    assert CURVE.at(np.array([middle]))[0] == pytest.approx((0.60 + 0.72) / 2)
    assert np.isnan(CURVE.at(np.array([0.1, 100.0]))).all()


def test_lesions_are_corrected_organs_not_and_out_of_range_is_reported() -> None:
    activity = np.array([[10.0, 5.0], [6.0, 3.0], [1.0, 0.5]])
    result = correct_partial_volume(
        activity, np.array([150.0, 5.58, 0.2]), ["organ", "lesion", "lesion"], CURVE
    )
    np.testing.assert_allclose(result.activity_mbq[0], [10.0, 5.0])
    np.testing.assert_allclose(result.activity_mbq[1], [10.0, 5.0])
    assert result.status[:2] == (NOT_CORRECTED, "ok")
    assert "outside the RC curve's 0.52–26.52 mL" in result.status[2]
    assert np.isnan(result.activity_mbq[2]).all()


def test_invalid_curves_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="increasing"):
        RecoveryCurve(volume_ml=(2.0, 1.0), recovery=(0.5, 0.4))
    with pytest.raises(ConfigurationError, match=r"\(0, 1.2\]"):
        RecoveryCurve(volume_ml=(1.0, 2.0), recovery=(0.0, 0.4))
