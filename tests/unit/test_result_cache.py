"""The cache of expensive pure results: registrations and voxel fits are reused on a re-run with
the same inputs and recomputed when an input changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from concordose.kinetics.fitting import MONO
from concordose.pipeline.alignment import align_time_points
from concordose.pipeline.result_cache import ResultCache
from concordose.pipeline.voxel_dosimetry import cached_voxel_fitter
from tests.conftest import shifted_patient


def test_a_re_run_reuses_every_registration(tmp_path: Path) -> None:
    cycle, _truth, _sites = shifted_patient(tmp_path / "consortium", "test")
    cache = ResultCache(tmp_path / "cache")
    first = align_time_points(cycle, cache)
    registered = sum(a.registration is not None for a in first)
    assert registered >= 1  # the patient moves between time points
    assert (cache.hits, cache.misses) == (0, registered)
    again = align_time_points(cycle, cache)
    assert (cache.hits, cache.misses) == (registered, registered)
    for before, after in zip(first, again, strict=True):
        if before.registration is None:
            assert after.registration is None
            continue
        assert after.registration is not None
        assert after.registration.transform.GetParameters() == pytest.approx(
            before.registration.transform.GetParameters(), abs=0.0
        )
    # A rewritten CT series is a different input: registered again.
    moved = next(p for p, a in zip(cycle.time_points, first, strict=True) if a.registration)
    moved.ct_files[0].touch()
    align_time_points(cycle, cache)
    assert cache.misses == registered + 1


def test_voxel_fits_are_cached_on_their_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    time_h = np.array([4.0, 24.0, 96.0])
    maps = (
        10.0
        * np.exp(-0.01 * time_h)[:, None, None, None]
        * rng.uniform(0.5, 1.5, size=(1, 4, 5, 6))
    )
    body = np.ones((4, 5, 6), dtype=bool)
    cache = ResultCache(tmp_path / "cache")
    fit = cached_voxel_fitter(cache)
    first = fit(time_h, maps, body, MONO)
    second = fit(time_h, maps, body, MONO)
    assert (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first.tia_mbq_h, second.tia_mbq_h)
    fit(time_h, maps * 1.01, body, MONO)
    assert cache.misses == 2


def test_an_unreadable_entry_is_recomputed(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    key = cache.key("x")
    assert cache.get_or_compute("kind", key, lambda: 1) == 1
    (tmp_path / "cache" / "kind" / f"{key}.pickle").write_bytes(b"not a pickle")
    assert cache.get_or_compute("kind", key, lambda: 2) == 2
    assert cache.get_or_compute("kind", key, lambda: 3) == 2
