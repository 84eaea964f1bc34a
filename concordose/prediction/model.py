"""The predictor of VOI absorbed dose per GBq from pre-therapy PET features (issue 20, item 3d).

Learner (scikit-learn; no hand-written learner): ridge regression (``Ridge``, α =
:data:`RIDGE_ALPHA`, standardised inputs) of ln(dose per GBq) on ln SUVmean, ln SUVmax,
ln SUVpeak, ln volume and the VOI class one-hot (an organ by name, a lesion by volume bin:
:func:`concordose.consortium.voi_classes.voi_classes`). Why logs: dose per GBq ∝ TIA / mass and
SUV ∝ uptake / volume, so the relation is multiplicative and its errors relative; a ridge keeps
the 4 correlated SUV terms stable on a few dozen VOIs.

Prediction interval (:data:`INTERVAL_LEVEL`, 90 %): cross-conformal on log residuals (the CV+
idea of Barber, Candès, Ramdas & Tibshirani, "Predictive inference with the jackknife+", Ann
Stat 2021;49:486–507, in its simplest symmetric form): the training sites' out-of-fold log
residuals (each training site left out in turn, :class:`~sklearn.model_selection.LeaveOneGroupOut`)
give q = the ⌈(n+1)(1−α)⌉/n empirical quantile of |r|, and the interval is
exp(ln ŷ ± q) around the model fitted on all training sites. Sites as the folds make q include
the between-site shift, which is what a new site meets. With one training site, folds are
5-fold splits of its VOIs (then q does not include any between-site shift).

Validation (:func:`leave_one_site_out`): each site is predicted by the model (and q) trained on
the other sites only. Metrics on dose per GBq (not logs): MAPE = mean |ŷ − y| / y × 100 %;
NRMSE = RMSE / mean(y) (normalised by the mean measured value); coverage = share of measured
values inside the interval. The baseline (:func:`population_baseline`) is the organ-level
population value: the mean dose per GBq of the VOI class across the training sites (a VOI class
absent from them has no baseline).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_percentage_error, root_mean_squared_error
from sklearn.model_selection import KFold, LeaveOneGroupOut
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

MODEL_NAME = "ridge_log_suv"
MODEL_VERSION = "1"
RIDGE_ALPHA = 1.0
"""Ridge penalty on the standardised inputs (a mild shrinkage; not tuned)."""
INTERVAL_LEVEL = 0.90
"""Nominal coverage of the prediction interval."""
NUMERIC_FEATURES = ("suv_mean", "suv_max", "suv_peak", "volume_ml")
"""The PET features (their logs enter the model) besides the VOI class."""
MIN_TRAINING_VOIS = 5
"""Fewer training VOIs than this: no model (too few for the 4 terms and the class)."""


@dataclass(frozen=True)
class FeatureTable:
    """VOIs with PET features (arrays of one length; SUVs and volume > 0).

    Attributes:
        site_id: site of each VOI (the grouping factor).
        voi_class: :func:`~concordose.consortium.voi_classes.voi_classes` of each VOI.
        numeric: (n, 4) array of :data:`NUMERIC_FEATURES`.
        dose_gy_per_gbq: measured dose per GBq (NaN where unknown: no therapy yet).
    """

    site_id: npt.NDArray[np.str_]
    voi_class: npt.NDArray[np.str_]
    numeric: npt.NDArray[np.float64]
    dose_gy_per_gbq: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        n = self.site_id.shape[0]
        if not (
            self.voi_class.shape == (n,)
            and self.numeric.shape == (n, len(NUMERIC_FEATURES))
            and self.dose_gy_per_gbq.shape == (n,)
        ):
            raise ValueError(
                f"feature table: expected {n} sites, classes, measured doses and {n}×"
                f"{len(NUMERIC_FEATURES)} features; found {self.voi_class.shape}, "
                f"{self.dose_gy_per_gbq.shape}, {self.numeric.shape}"
            )
        if np.any(~np.isfinite(self.numeric)) or np.any(self.numeric <= 0):
            raise ValueError(
                "feature table: SUVs and volumes must be finite and > 0 (their logs are taken)"
            )

    def subset(self, rows: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> FeatureTable:
        """The rows ``rows`` (mask or indices)."""
        return FeatureTable(
            site_id=self.site_id[rows],
            voi_class=self.voi_class[rows],
            numeric=self.numeric[rows],
            dose_gy_per_gbq=self.dose_gy_per_gbq[rows],
        )

    @property
    def measured(self) -> npt.NDArray[np.bool_]:
        """Rows with a measured dose > 0."""
        found: npt.NDArray[np.bool_] = np.isfinite(self.dose_gy_per_gbq) & (
            self.dose_gy_per_gbq > 0
        )
        return found


def _design(table: FeatureTable) -> npt.NDArray[np.object_]:
    columns: list[npt.NDArray[np.generic]] = [np.log(table.numeric[:, i]) for i in range(4)]
    columns.append(table.voi_class.astype(object))
    return np.column_stack(columns).astype(object)


def _new_learner() -> Pipeline:
    return Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [
                        ("log_numeric", StandardScaler(), [0, 1, 2, 3]),
                        ("voi_class", OneHotEncoder(handle_unknown="ignore"), [4]),
                    ]
                ),
            ),
            ("ridge", Ridge(alpha=RIDGE_ALPHA)),
        ]
    )


def conformal_quantile(abs_residuals: npt.NDArray[np.float64], level: float) -> float:
    """The ⌈(n+1)·level⌉-th smallest of ``abs_residuals`` (n of them); ∞ when that rank
    exceeds n (too few residuals for the level: an unbounded interval, stated honestly)."""
    n = abs_residuals.size
    rank = math.ceil((n + 1) * level)
    if n == 0 or rank > n:
        return math.inf
    return float(np.sort(abs_residuals)[rank - 1])


@dataclass(frozen=True)
class DosePredictor:
    """A fitted predictor with its conformal half-width (log scale).

    Attributes:
        learner: the fitted scikit-learn pipeline (log dose per GBq).
        log_half_width: q of the module docstring (∞ when too few residuals).
        training_sites: sites it was trained on, sorted.
        n_training_vois: VOIs it was trained on.
    """

    learner: Pipeline
    log_half_width: float
    training_sites: tuple[str, ...]
    n_training_vois: int

    def predict(
        self, table: FeatureTable
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(predicted, interval low, interval high) dose per GBq of each row."""
        log_prediction = np.asarray(self.learner.predict(_design(table)), dtype=np.float64)
        with np.errstate(over="ignore"):
            low = np.exp(log_prediction - self.log_half_width)
            high = np.exp(log_prediction + self.log_half_width)
        return np.exp(log_prediction), low, high


def _fit_learner(table: FeatureTable) -> Pipeline:
    learner = _new_learner()
    learner.fit(_design(table), np.log(table.dose_gy_per_gbq))
    return learner


def fit_predictor(table: FeatureTable, level: float = INTERVAL_LEVEL) -> DosePredictor | None:
    """Fit on the measured rows of ``table`` with its cross-conformal half-width (module
    docstring); ``None`` with fewer than :data:`MIN_TRAINING_VOIS` measured rows."""
    train = table.subset(table.measured)
    n = train.site_id.size
    if n < MIN_TRAINING_VOIS:
        return None
    sites = np.unique(train.site_id)
    design = _design(train)
    log_dose = np.log(train.dose_gy_per_gbq)
    residuals = np.empty(n)
    splits = (
        LeaveOneGroupOut().split(design, log_dose, groups=train.site_id)
        if sites.size >= 2
        else KFold(n_splits=min(5, n)).split(design)
    )
    for fit_rows, out_rows in splits:
        if fit_rows.size < MIN_TRAINING_VOIS:
            residuals[out_rows] = np.inf
            continue
        learner = _new_learner().fit(design[fit_rows], log_dose[fit_rows])
        residuals[out_rows] = log_dose[out_rows] - learner.predict(design[out_rows])
    return DosePredictor(
        learner=_fit_learner(train),
        log_half_width=conformal_quantile(np.abs(residuals), level),
        training_sites=tuple(str(s) for s in sites),
        n_training_vois=n,
    )


def population_baseline(
    training: FeatureTable, voi_class: Sequence[str] | npt.NDArray[np.str_]
) -> npt.NDArray[np.float64]:
    """Mean measured dose per GBq of each VOI class across ``training``'s measured rows, for
    each entry of ``voi_class`` (NaN for a class the training rows lack)."""
    measured = training.subset(training.measured)
    means = {
        str(c): float(measured.dose_gy_per_gbq[measured.voi_class == c].mean())
        for c in np.unique(measured.voi_class)
    }
    return np.array([means.get(str(c), math.nan) for c in voi_class], dtype=np.float64)


@dataclass(frozen=True)
class AgreementMetrics:
    """Prediction against measurement on n VOIs (module docstring).

    Attributes:
        n: VOIs compared (measured and predicted).
        mape_percent: mean absolute percentage error, %.
        nrmse: RMSE / mean measured (dimensionless).
        coverage: share inside the interval (NaN when no interval was given).
    """

    n: int
    mape_percent: float
    nrmse: float
    coverage: float


def agreement_metrics(
    measured: npt.NDArray[np.float64],
    predicted: npt.NDArray[np.float64],
    low: npt.NDArray[np.float64] | None = None,
    high: npt.NDArray[np.float64] | None = None,
) -> AgreementMetrics:
    """MAPE, NRMSE and interval coverage over the rows where both values are finite."""
    usable = np.isfinite(measured) & np.isfinite(predicted) & (measured > 0)
    n = int(usable.sum())
    if n == 0:
        return AgreementMetrics(0, math.nan, math.nan, math.nan)
    y, y_hat = measured[usable], predicted[usable]
    mape = float(mean_absolute_percentage_error(y, y_hat)) * 100.0
    nrmse = float(root_mean_squared_error(y, y_hat)) / float(np.mean(y))
    coverage = math.nan
    if low is not None and high is not None:
        coverage = float(np.mean((low[usable] <= y) & (y <= high[usable])))
    return AgreementMetrics(n, mape, nrmse, coverage)


@dataclass(frozen=True)
class SitePredictions:
    """Leave-one-site-out predictions of every row of one held-out site.

    Attributes:
        site_id: the held-out site.
        rows: indices of its rows in the full table.
        predicted, low, high: model prediction and interval (NaN when no model could be fitted).
        baseline: population baseline from the other sites.
        training_sites: the sites the model was trained on.
    """

    site_id: str
    rows: npt.NDArray[np.intp]
    predicted: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    baseline: npt.NDArray[np.float64]
    training_sites: tuple[str, ...]


def leave_one_site_out(table: FeatureTable, level: float = INTERVAL_LEVEL) -> list[SitePredictions]:
    """Every site's rows predicted by the model trained on the other sites' measured rows
    (:class:`~sklearn.model_selection.LeaveOneGroupOut` over sites), with the baseline from the
    same training sites. Sites whose rows have no measured dose are predicted too (by the model
    of all other sites). With one site there is no other site to train on: its rows get no
    prediction (NaN) and no baseline."""
    results = []
    indices = np.arange(table.site_id.size)
    if np.unique(table.site_id).size < 2:
        nan = np.full(indices.size, math.nan)
        return [
            SitePredictions(
                site_id=str(site),
                rows=indices[table.site_id == site],
                predicted=nan[table.site_id == site],
                low=nan[table.site_id == site],
                high=nan[table.site_id == site],
                baseline=nan[table.site_id == site],
                training_sites=(),
            )
            for site in np.unique(table.site_id)
        ]
    for train_rows, test_rows in LeaveOneGroupOut().split(indices, groups=table.site_id):
        training = table.subset(train_rows)
        held_out = table.subset(test_rows)
        predictor = fit_predictor(training, level)
        n = test_rows.size
        if predictor is None:
            predicted = low = high = np.full(n, math.nan)
            sites: tuple[str, ...] = ()
        else:
            predicted, low, high = predictor.predict(held_out)
            sites = predictor.training_sites
        results.append(
            SitePredictions(
                site_id=str(held_out.site_id[0]),
                rows=test_rows,
                predicted=predicted,
                low=low,
                high=high,
                baseline=population_baseline(training, held_out.voi_class),
                training_sites=sites,
            )
        )
    return results
