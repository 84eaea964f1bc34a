"""Issue 20 item 3d: the dose-per-GBq predictor, its conformal interval and leave-one-site-out
validation, on synthetic feature tables whose true relation is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from concordose.prediction.model import (
    FeatureTable,
    agreement_metrics,
    conformal_quantile,
    fit_predictor,
    leave_one_site_out,
    population_baseline,
)

CLASS_EFFECT = {"kidney_left": 0.0, "liver": -1.0, "spleen": -0.3, "lesion_4_20ml": 0.8}
SLOPE = 0.9  # true d ln(dose/GBq) / d ln SUVmean


def synthetic(
    *,
    sigma: float,
    n_per_site: int = 40,
    sites: tuple[str, ...] = ("a", "b", "c", "d"),
    seed: int = 3,
) -> FeatureTable:
    """ln(dose/GBq) = −1 + SLOPE·ln SUVmean + class effect + N(0, sigma²)."""
    rng = np.random.default_rng(seed)
    n = n_per_site * len(sites)
    site = np.repeat(np.array(sites), n_per_site)
    classes = np.array(list(CLASS_EFFECT))[rng.integers(0, len(CLASS_EFFECT), n)]
    suv_mean = np.exp(rng.normal(1.5, 0.6, n))
    volume = np.exp(rng.normal(3.0, 1.0, n))
    numeric = np.column_stack(
        [suv_mean, suv_mean * np.exp(rng.normal(0.4, 0.1, n)), suv_mean * 1.2, volume]
    )
    log_dose = (
        -1.0
        + SLOPE * np.log(suv_mean)
        + np.array([CLASS_EFFECT[c] for c in classes])
        + rng.normal(0.0, sigma, n)
    )
    return FeatureTable(site, classes, numeric, np.exp(log_dose))


def test_conformal_quantile_rank_and_too_few_residuals() -> None:
    residuals = np.arange(1.0, 20.0)  # 19 values: rank ⌈20 × 0.9⌉ = 18
    assert conformal_quantile(residuals, 0.9) == 18.0
    assert conformal_quantile(np.array([1.0, 2.0]), 0.9) == math.inf


def test_agreement_metrics_by_hand() -> None:
    measured = np.array([1.0, 2.0, 4.0, math.nan])
    predicted = np.array([1.5, 2.0, 3.0, 1.0])
    metrics = agreement_metrics(measured, predicted, predicted * 0.9, predicted * 1.1)
    assert metrics.n == 3
    assert metrics.mape_percent == pytest.approx((50 + 0 + 25) / 3)
    assert metrics.nrmse == pytest.approx(math.sqrt((0.25 + 0 + 1) / 3) / (7 / 3))
    assert metrics.coverage == pytest.approx(1 / 3)


def test_without_noise_the_model_recovers_the_relation() -> None:
    table = synthetic(sigma=0.0)
    for site in leave_one_site_out(table):
        measured = table.dose_gy_per_gbq[site.rows]
        assert agreement_metrics(measured, site.predicted).mape_percent < 5.0


def test_leave_one_site_out_beats_the_population_baseline_and_covers() -> None:
    sigma = 0.2
    table = synthetic(sigma=sigma)
    predictions = leave_one_site_out(table)
    assert [p.site_id for p in predictions] == ["a", "b", "c", "d"]
    rows = np.concatenate([p.rows for p in predictions])
    predicted = np.concatenate([p.predicted for p in predictions])
    low = np.concatenate([p.low for p in predictions])
    high = np.concatenate([p.high for p in predictions])
    baseline = np.concatenate([p.baseline for p in predictions])
    measured = table.dose_gy_per_gbq[rows]
    model = agreement_metrics(measured, predicted, low, high)
    population = agreement_metrics(measured, baseline)
    # |exp(ε) − 1| with ε ~ N(0, 0.2²) has mean ≈ 16 %: the model reaches the noise floor …
    assert model.mape_percent < 20.0
    # … and the baseline, blind to SUV (SD of ln SUV 0.6 × slope 0.9), does much worse.
    assert population.mape_percent > 2 * model.mape_percent
    assert 0.8 <= model.coverage <= 0.98
    for site in predictions:  # each site's model never saw it
        assert site.site_id not in site.training_sites
        assert len(site.training_sites) == 3


def test_the_baseline_is_the_training_sites_class_mean() -> None:
    table = synthetic(sigma=0.2)
    training = table.subset(table.site_id != "a")
    liver = training.voi_class == "liver"
    expected = training.dose_gy_per_gbq[liver].mean()
    assert population_baseline(training, np.array(["liver", "thyroid"]))[0] == pytest.approx(
        expected
    )
    assert math.isnan(population_baseline(training, np.array(["thyroid"]))[0])


def test_rows_without_a_measured_dose_are_predicted_not_trained_on() -> None:
    table = synthetic(sigma=0.1)
    dose = table.dose_gy_per_gbq.copy()
    dose[:10] = math.nan  # site a's first VOIs: PET, no therapy yet
    unmeasured = FeatureTable(table.site_id, table.voi_class, table.numeric, dose)
    predictor = fit_predictor(unmeasured)
    assert predictor is not None
    assert predictor.n_training_vois == table.site_id.size - 10
    predicted, low, high = predictor.predict(unmeasured.subset(np.arange(10)))
    assert np.all((low < predicted) & (predicted < high))
    truth = table.dose_gy_per_gbq[:10]
    assert agreement_metrics(truth, predicted).mape_percent < 15.0


def test_too_few_training_vois_give_no_model() -> None:
    table = synthetic(sigma=0.1, n_per_site=2, sites=("a", "b"))
    assert fit_predictor(table) is None


def test_one_site_alone_cannot_be_validated_across_sites() -> None:
    table = synthetic(sigma=0.1, sites=("a",))
    (only,) = leave_one_site_out(table)
    assert only.site_id == "a"
    assert only.training_sites == ()
    assert np.isnan(only.predicted).all()
    assert np.isnan(only.baseline).all()
    # … while the model of that site alone still predicts its untreated patients
    assert fit_predictor(table) is not None
