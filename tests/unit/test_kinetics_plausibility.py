"""A fit holding more activity at injection than was injected is refused, not published as ok
(``kinetics.plausibility``; a noisy marrow curve's ``bi_exponential`` fit put 57 GBq in the VOI
at injection for 7.4 GBq injected and failed the whole cycle's validation)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from concordose.kinetics.models import STATUS_OK, KineticsBatch
from concordose.kinetics.plausibility import INJECTED_ACTIVITY_MARGIN, refuse_beyond_injected
from concordose.kinetics.registry import fit_methods

SIX_H = np.array([4.0, 24.0, 48.0, 96.0, 168.0, 240.0])


def _batch() -> KineticsBatch:
    """Four curves: plausible, beyond the injected activity, already failed, with uptake."""
    return KineticsBatch(
        method="bi_exponential",
        method_version="1",
        parameters_hash="h",
        tia_mbq_h=np.array([1.0e5, 2.3e4, math.nan, 4.0e4]),
        fit_parameters={
            "a0_mbq": np.array([900.0, 57_321.0, math.nan, 0.0]),
            "teff_h": np.array([70.0, 84.0, math.nan, 60.0]),
        },
        status=(STATUS_OK, STATUS_OK, "needs every time point finite and ≥ 0", STATUS_OK),
        tia_sd_mbq_h=np.array([5.0e3, 9.0e3, math.nan, 2.0e3]),
        covariance=np.ones((4, 2, 2)),
        parameter_names=("a0_mbq", "teff_h"),
    )


def test_only_the_curve_beyond_the_injected_activity_is_refused_and_says_why() -> None:
    batch = _batch()
    checked = refuse_beyond_injected(batch, 7400.0)
    assert checked.status[0] == STATUS_OK
    assert checked.status[1].startswith("refused: the fit puts 57321 MBq in the VOI at injection")
    assert "7400 MBq injected" in checked.status[1]
    assert checked.status[2] == batch.status[2]  # an earlier failure keeps its own reason
    assert checked.status[3] == STATUS_OK  # uptake: A(0) = 0
    for values in (checked.tia_mbq_h, checked.tia_sd_mbq_h, *checked.fit_parameters.values()):
        assert values is not None
        assert math.isnan(values[1])
    assert checked.tia_mbq_h[[0, 3]].tolist() == [1.0e5, 4.0e4]
    assert checked.covariance is not None
    assert np.isnan(checked.covariance[1]).all()
    assert np.isfinite(checked.covariance[[0, 3]]).all()
    assert batch.tia_mbq_h[1] == 2.3e4  # the input is not modified


def test_the_margin_is_the_accepted_dose_calibrator_bias() -> None:
    a0_mbq = 57_321.0
    just_inside = a0_mbq / (1.0 + INJECTED_ACTIVITY_MARGIN) * 1.0001
    assert refuse_beyond_injected(_batch(), just_inside).status[1] == STATUS_OK
    assert refuse_beyond_injected(_batch(), just_inside * 0.999).status[1] != STATUS_OK


@pytest.mark.parametrize("injected_activity_mbq", [None, math.nan, 0.0, -7400.0])
def test_without_a_usable_injected_activity_nothing_is_refused(
    injected_activity_mbq: float | None,
) -> None:
    batch = _batch()
    assert refuse_beyond_injected(batch, injected_activity_mbq) is batch


def _curves() -> npt.NDArray[np.float64]:
    """Two bi-exponential curves holding 1,000 MBq at injection, on the SPECTacular schedule."""
    rates_per_h = np.log(2) / np.array([[8.0, 60.0], [12.0, 90.0]])
    return np.asarray(
        300 * np.exp(-rates_per_h[:, :1] * SIX_H) + 700 * np.exp(-rates_per_h[:, 1:] * SIX_H)
    )


def test_every_method_of_a_cycle_is_checked_against_its_injected_activity() -> None:
    curves = _curves()
    (plausible,) = fit_methods(["bi_exponential"], SIX_H, curves, injected_activity_mbq=7400.0)
    assert plausible.status == (STATUS_OK, STATUS_OK)
    assert plausible.fit_parameters["a0_mbq"] == pytest.approx([1000.0, 1000.0], rel=1e-3)
    # Had only 500 MBq been injected, curves holding 1,000 MBq at injection are impossible.
    (impossible,) = fit_methods(["bi_exponential"], SIX_H, curves, injected_activity_mbq=500.0)
    assert all(status.startswith("refused") for status in impossible.status)
    assert np.isnan(impossible.tia_mbq_h).all()
