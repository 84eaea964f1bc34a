"""Batched weighted least-squares fits of sums of exponentials, for thousands of curves at once.

Modules, each documenting its part:

* :mod:`~concordose.kinetics.fitting.model`: the models (sums of exponentials with or without
  uptake, bounds by parameter transform), the settings, the result, the model's values and its
  integral under the tail rule;
* :mod:`~concordose.kinetics.fitting.start_values`: start values from a grid over the rates;
* :mod:`~concordose.kinetics.fitting.linear_algebra`: batched normal equations, Cholesky
  solves and pseudo-inverses;
* :mod:`~concordose.kinetics.fitting.levenberg_marquardt`: the general engine (LM with
  projection bounds, damping update and convergence tests);
* :mod:`~concordose.kinetics.fitting.variable_projection`: the fast path, LM on the rates only;
* :mod:`~concordose.kinetics.fitting.engine`: :func:`fit_exponential` (multi-start, TIA and its
  uncertainty, AICc);
* :mod:`~concordose.kinetics.fitting.selection`: model selection, by AICc or by F-tests
  between nested models.

Imports run one way (model → start values, linear algebra → LM → variable projection →
engine; selection needs only the model).
"""

from concordose.kinetics.fitting.engine import (
    fit_exponential,
    point_weights,
    rate_floors,
    shared_fits,
    start_parameters,
)
from concordose.kinetics.fitting.model import (
    ALL_MODELS,
    BI,
    BI_UPTAKE,
    MONO,
    MONO_UPTAKE,
    TRI,
    TRI_UPTAKE,
    ExponentialFit,
    ExponentialModel,
    FitSettings,
    Solver,
    TailRule,
    WeightScheme,
    activity_mbq,
    half_life_h,
    model_of_parameters,
)
from concordose.kinetics.fitting.selection import (
    AICC_MARGIN,
    F_TEST_ALPHA,
    SelectionRule,
    is_nested,
    select_by_aicc,
    select_nested_by_f_test,
)

__all__ = [
    "AICC_MARGIN",
    "ALL_MODELS",
    "BI",
    "BI_UPTAKE",
    "F_TEST_ALPHA",
    "MONO",
    "MONO_UPTAKE",
    "TRI",
    "TRI_UPTAKE",
    "ExponentialFit",
    "ExponentialModel",
    "FitSettings",
    "SelectionRule",
    "Solver",
    "TailRule",
    "WeightScheme",
    "activity_mbq",
    "fit_exponential",
    "half_life_h",
    "is_nested",
    "model_of_parameters",
    "point_weights",
    "rate_floors",
    "select_by_aicc",
    "select_nested_by_f_test",
    "shared_fits",
    "start_parameters",
]
