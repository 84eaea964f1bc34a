"""Single time point with the patient's own half-life (kinetics.prior_half_life)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from concordose.kinetics.prior_half_life import (
    HEBERT_STP_24H,
    mean_decay_constant_per_h,
    single_point_tia_mbq_h,
)


def test_a_mono_exponential_curve_is_integrated_exactly_from_any_one_point() -> None:
    a0_mbq, teff_h = 500.0, 70.0
    decay_per_h = math.log(2.0) / teff_h
    times_h = np.array([4.0, 24.0, 96.0])
    activity_mbq = a0_mbq * np.exp(-decay_per_h * times_h)
    tia = single_point_tia_mbq_h(activity_mbq, times_h, decay_per_h)
    np.testing.assert_allclose(tia, a0_mbq / decay_per_h, rtol=1e-12)


def test_unusable_inputs_give_nan_not_an_error() -> None:
    tia = single_point_tia_mbq_h([10.0, np.nan, 10.0, 10.0], 24.0, [0.01, 0.01, np.nan, -0.01])
    assert np.isfinite(tia[0])
    assert np.isnan(tia[1:]).all()


def test_decay_constants_are_averaged_over_finite_positive_half_lives() -> None:
    expected = (math.log(2.0) / 60.0 + math.log(2.0) / 80.0) / 2.0
    assert mean_decay_constant_per_h([60.0, 80.0, np.nan, 0.0]) == pytest.approx(expected)
    assert math.isnan(mean_decay_constant_per_h([np.nan]))


def test_the_hebert_schedule_is_24_h_from_cycle_3_after_hebert_4tp() -> None:
    assert (HEBERT_STP_24H.nominal_h, HEBERT_STP_24H.from_cycle) == (24.0, 3)
    assert HEBERT_STP_24H.full_schedule_method == "hebert_4tp"
