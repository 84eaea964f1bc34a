"""Per-VOI dose metrics, DVH, cycle and cumulative summaries, threshold flags."""

from __future__ import annotations

import math

import numpy as np
import pytest

from concordose.dicom.seg import VoiType
from concordose.dose.dose_rate import (
    hanscheid_dose_gy,
    madsen_dose_gy,
    single_time_point_dose_map_gy,
)
from concordose.dose.metrics import (
    DVH_POINTS,
    cumulative_dose,
    cycle_dose_summary,
    voi_dose_metrics,
)
from concordose.dose.models import VoxelDoseInput
from concordose.dose.registry import VOXEL_DOSE_METHODS
from concordose.dose.thresholds import THRESHOLDS, evaluate_thresholds
from concordose.errors import ConcordoseError


def test_voi_metrics_on_a_known_distribution() -> None:
    # VOI 1: doses 1..100 Gy, one voxel each; VOI 2: constant 7 Gy; 0 is background.
    dose = np.zeros((1, 10, 30))
    labels = np.zeros((1, 10, 30), dtype=np.int16)
    dose[0, :, :10] = np.arange(1.0, 101.0).reshape(10, 10)
    labels[0, :, :10] = 1
    dose[0, :, 10:15] = 7.0
    labels[0, :, 10:15] = 2
    metrics = voi_dose_metrics(dose, labels, {1: "lesion", 2: "organ"}, voxel_volume_ml=0.5)
    lesion, organ = metrics
    assert lesion.label == "lesion"
    assert lesion.mass_g == pytest.approx(50.0)
    assert lesion.mean_dose_gy == pytest.approx(50.5)
    assert lesion.median_dose_gy == pytest.approx(50.5)
    assert (lesion.min_dose_gy, lesion.max_dose_gy) == (1.0, 100.0)
    # hottest 2 % (2 voxels) receive at least 99 Gy; hottest 98 % at least 3 Gy
    assert (lesion.d2_gy, lesion.d50_gy, lesion.d98_gy) == (99.0, 51.0, 3.0)
    assert lesion.dvh_dose_gy.shape == (DVH_POINTS,)
    assert lesion.dvh_mass_fraction[0] == 1.0
    assert np.all(np.diff(lesion.dvh_mass_fraction) <= 0)
    assert lesion.dvh_mass_fraction[-1] == pytest.approx(0.01)
    assert organ.mean_dose_gy == organ.d98_gy == organ.d2_gy == 7.0


def test_voi_metrics_weight_by_mass() -> None:
    dose = np.array([[[10.0, 20.0]]])
    labels = np.ones((1, 1, 2), dtype=np.int8)
    density = np.array([[[1.0, 3.0]]])
    (metrics,) = voi_dose_metrics(dose, labels, {1: "v"}, 1.0, density)
    assert metrics.mass_g == pytest.approx(4.0)
    assert metrics.mean_dose_gy == pytest.approx(17.5)
    with pytest.raises(ConcordoseError, match="has no voxel"):
        voi_dose_metrics(dose, labels, {2: "missing"}, 1.0)


def _cycle(lesion_doses: list[float], kidney_gy: float) -> object:
    labels = ["kidney_left", "kidney_right", "liver", "spleen"] + [
        f"lesion_{i}" for i in range(len(lesion_doses))
    ]
    types = [VoiType.ORGAN] * 4 + [VoiType.LESION] * len(lesion_doses)
    doses = [kidney_gy, kidney_gy * 1.2, 1.0, 2.0, *lesion_doses]
    masses = [150.0, 150.0, 1800.0, 150.0] + [10.0 * (i + 1) for i in range(len(lesion_doses))]
    return cycle_dose_summary(labels, types, doses, masses)


def test_cycle_and_cumulative_summaries_and_flags() -> None:
    cycle_1 = cycle_dose_summary(
        ["kidney_left", "kidney_right", "liver", "spleen", "lesion_a", "lesion_b"],
        [VoiType.ORGAN] * 4 + [VoiType.LESION] * 2,
        [4.0, 5.0, 1.0, 2.0, 40.0, 10.0],
        [150.0, 150.0, 1800.0, 150.0, 10.0, 30.0],
    )
    assert cycle_1.gtd_gy == pytest.approx((40.0 * 10 + 10.0 * 30) / 40.0)
    assert cycle_1.min_lesion_dose_gy == 10.0
    assert cycle_1.mean_lesion_dose_gy == 25.0
    assert cycle_1.oar_dose_gy["kidneys"] == pytest.approx(4.5)
    assert math.isnan(cycle_1.oar_dose_gy["bone_marrow"])

    cycle_2 = cycle_dose_summary(
        ["kidney_left", "kidney_right", "lesion_a", "lesion_b"],
        [VoiType.ORGAN] * 2 + [VoiType.LESION] * 2,
        [6.0, 6.0, 30.0, 8.0],
        [150.0, 150.0, 10.0, 30.0],
    )
    total = cumulative_dose([cycle_1, cycle_2, cycle_2, cycle_2])
    assert total.lesion_dose_gy == {"lesion_a": 130.0, "lesion_b": 34.0}
    assert total.min_lesion_dose_gy == 34.0
    assert total.oar_dose_gy["kidneys"] == pytest.approx(22.5)

    flags = {flag.threshold.name: flag for flag in evaluate_thresholds(cycle_1, total)}
    assert len(flags) == len(THRESHOLDS)
    assert flags["LUMEN minimal lesion dose"].met is False  # 10 < 35
    assert flags["LUTADOSE GTD1"].met is True  # 17.5 ≥ 10.6
    assert flags["Hebert mean lesion dose"].met is False  # 82 < 91.36
    assert flags["Hebert minimal cumulative lesion dose"].met is False  # 34 < 52.52
    assert flags["kidney cumulative limit"].met is True  # 22.5 ≤ 23
    assert all("doi:" in flag.threshold.source for flag in flags.values())


def test_missing_lesion_makes_cumulative_unknown_and_flags_none() -> None:
    first = cycle_dose_summary(["l1"], [VoiType.LESION], [50.0], [5.0])
    second = cycle_dose_summary(["l2"], [VoiType.LESION], [60.0], [5.0])
    total = cumulative_dose([first, second])
    assert all(math.isnan(v) for v in total.lesion_dose_gy.values())
    flags = evaluate_thresholds(first, total)
    assert {f.threshold.name: f.met for f in flags}["kidney cumulative limit"] is None
    assert [f.threshold.scope for f in evaluate_thresholds(first)] == ["cycle 1", "cycle 1"]


def test_single_time_point_dose_rate_variants() -> None:
    # Mono-exponential dose rate with Teff = 72 h, scanned at t: true dose Ḋ(0)·Teff/ln2.
    teff, rate0 = 72.0, 0.5
    true_dose = rate0 * teff / math.log(2)
    for t in (teff, 2 * teff):  # Hänscheid is exact at Teff = t and Teff = t/2
        rate_t = rate0 * math.exp(-math.log(2) * t / teff)
        assert float(hanscheid_dose_gy(rate_t, t)) == pytest.approx(true_dose, rel=1e-12)
        assert float(madsen_dose_gy(rate_t, t, teff)) == pytest.approx(true_dose, rel=1e-12)
    t = teff / math.log(2)  # worst case of Hänscheid: +6.15 %
    rate_t = rate0 * math.exp(-math.log(2) * t / teff)
    assert float(hanscheid_dose_gy(rate_t, t)) / true_dose == pytest.approx(1.0615, abs=5e-4)
    with pytest.raises(ConcordoseError, match="positive"):
        hanscheid_dose_gy(1.0, 0.0)


def test_voxel_single_time_point_equals_dose_from_the_true_tia_map() -> None:
    # Mono-exponential voxels with Teff = 96 h scanned at 96 h: both variants are exact, so the
    # dose-rate route equals VSV of the true TIA map (the kernels are linear).
    teff_h = 96.0
    rng = np.random.default_rng(3)
    activity_0 = np.zeros((20, 20, 20))
    activity_0[5:15, 6:14, 7:13] = rng.uniform(0.5, 1.5, (10, 8, 6))
    activity_t = activity_0 * 0.5
    tia = activity_0 * teff_h / math.log(2)
    method = VOXEL_DOSE_METHODS.get("vsv_4.42mm")
    truth = method.compute_map(VoxelDoseInput(tia, (4.42,) * 3)).dose_gy
    for teff in (None, teff_h):
        dose = single_time_point_dose_map_gy(
            activity_t, (4.42,) * 3, teff_h, method, effective_half_life_h=teff
        )
        np.testing.assert_allclose(dose, truth, rtol=1e-9, atol=1e-12 * truth.max())
