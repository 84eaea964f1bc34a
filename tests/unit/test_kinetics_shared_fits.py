"""Methods of one cycle share a fit of the same model on the same points (issue 14, item 8):
the reference's ``bi_exponential`` candidate and the ``bi_exponential`` method are fitted once,
with results identical to fitting each method alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from concordose.errors import ConfigurationError
from concordose.kinetics.fitting import engine
from concordose.kinetics.fitting.levenberg_marquardt import levenberg_marquardt
from concordose.kinetics.registry import KINETICS_METHODS, fit_methods

SIX_H = np.array([4.0, 24.0, 48.0, 96.0, 168.0, 240.0])
TYPES = ["organ", "organ", "lesion"]
NAMES = ["spectacular_6tp", "bi_exponential"]


def _curves() -> npt.NDArray[np.float64]:
    """Three noisy bi-exponential curves (MBq) on the SPECTacular schedule."""
    rng = np.random.default_rng(14)
    rates_per_h = np.log(2) / np.array([[8.0, 60.0], [10.0, 70.0], [12.0, 90.0]])
    fast = 300 * np.exp(-rates_per_h[:, :1] * SIX_H)
    slow = 700 * np.exp(-rates_per_h[:, 1:] * SIX_H)
    return np.asarray((fast + slow) * (1 + 0.02 * rng.standard_normal((3, SIX_H.size))))


def _count_solves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every Levenberg–Marquardt solve of the engine, counted."""
    calls: list[int] = []
    real: Callable[..., Any] = levenberg_marquardt

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "levenberg_marquardt", counted)
    return calls


def test_a_fit_two_methods_need_is_solved_once_with_the_same_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    curves = _curves()
    solves = _count_solves(monkeypatch)
    alone = [KINETICS_METHODS.get(name).fit(SIX_H, curves, voi_types=TYPES) for name in NAMES]
    solves_alone = len(solves)
    solves.clear()
    KINETICS_METHODS.get("bi_exponential").fit(SIX_H, curves, voi_types=TYPES)
    solves_bi = len(solves)
    assert solves_bi > 0
    solves.clear()
    together = fit_methods(NAMES, SIX_H, curves, voi_types=TYPES)
    assert len(solves) == solves_alone - solves_bi  # bi_exponential's starts not solved again
    for single, shared in zip(alone, together, strict=True):
        assert shared.method == single.method
        assert shared.status == single.status
        assert shared.models == single.models
        np.testing.assert_array_equal(shared.tia_mbq_h, single.tia_mbq_h)
        assert shared.tia_sd_mbq_h is not None
        assert single.tia_sd_mbq_h is not None
        np.testing.assert_array_equal(shared.tia_sd_mbq_h, single.tia_sd_mbq_h)
    # the two methods' results share no array (a copy per method)
    reference_bi = together[0].fit_parameters
    assert all(
        not np.shares_memory(array, other)
        for array in together[1].fit_parameters.values()
        for other in reference_bi.values()
    )
    assert not np.shares_memory(together[0].tia_mbq_h, together[1].tia_mbq_h)


def test_fits_are_shared_only_within_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    curves = _curves()
    solves = _count_solves(monkeypatch)
    fit_methods(["bi_exponential"], SIX_H, curves)
    first = len(solves)
    fit_methods(["bi_exponential"], SIX_H, curves)
    assert len(solves) == 2 * first  # the second run fits again: nothing kept between runs


def test_an_unknown_method_is_refused_before_any_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    solves = _count_solves(monkeypatch)
    with pytest.raises(ConfigurationError, match="unknown kinetics method 'nope'"):
        fit_methods(["bi_exponential", "nope"], SIX_H, _curves())
    assert solves == []
