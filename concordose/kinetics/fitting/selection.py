"""Model selection between fits of several models: by AICc, or by F-tests between nested models.

Two rules (:class:`SelectionRule`), each written where it is implemented:

* :func:`select_by_aicc`: AICc = N·ln(χ²/N) + 2K + 2K(K+1)/(N − K − 1) with K = p + 1 (the
  fitted parameters and the variance), as in Glatting et al., Med Phys 2007;34:4285-92; defined
  only when N > K + 1 (computed per curve by
  :func:`~concordose.kinetics.fitting.engine.fit_exponential`).
* :func:`select_nested_by_f_test`: the extra-sum-of-squares F-test of a richer model against the
  simpler model it contains, the other criterion Glatting et al. compare; valid whenever the
  richer model keeps one residual degree of freedom (N > p).

Why two. At five to seven points, with the variance estimated from the residuals (relative
weights, no activity standard deviations — as the flow fits today), AICc's small-sample term
decides: on six points a bi-exponential (p = 4, K = 5) has no AICc at all (N − K − 1 = 0), and
counting K = p instead still adds 40 against 12 for a mono-exponential. A reference selecting by
AICc on the SPECTacular schedule is then a mono-exponential for a kidney with a 10 h and a 60 h
component: −7.6 % (K = p + 1) or −5.6 % (K = p) in TIA at 3 % noise per point, against −0.2 %
by the F-test (mean of 300 noisy curves; ``test_reference_is_unbiased_on_noisy_kidney_curves``
checks the F-test's). The F statistic also estimates the variance from the richer model's
residuals, but its distribution accounts for how few degrees of freedom that estimate has.
:func:`select_by_aicc` stays the rule of ``aicc_best_fit`` (unchanged).
"""

from __future__ import annotations

from enum import StrEnum
from typing import cast

import numpy as np
import numpy.typing as npt
from scipy import stats

from concordose.kinetics.fitting.model import ExponentialFit, ExponentialModel

FloatArray = npt.NDArray[np.float64]


class SelectionRule(StrEnum):
    """How a per-curve model is chosen among fits of several models (module docstring)."""

    AICC = "aicc"
    NESTED_F_TEST = "nested_f_test"


F_TEST_ALPHA = 0.05
"""Significance level at which a richer nested model replaces a simpler one (the conventional
5 %: a richer model is taken only when a χ² reduction this large would arise by chance from the
simpler model's curve in fewer than 1 in 20 data sets)."""

EXACT_FIT_TOLERANCE = 1e-12
"""A fit with 1 − R² at or below this already reproduces the data to rounding (residuals ~1e-6
of the data's spread): no richer model is tested against it, since its χ² is rounding noise and
an F ratio of two rounding noises means nothing (noise-free test curves)."""


def is_nested(simple: ExponentialModel, rich: ExponentialModel) -> bool:
    """Whether ``rich`` contains ``simple`` as a special case: at least as many clearance terms
    (extra amplitudes → 0), and an uptake term whenever ``simple`` has one (the uptake rate → ∞
    removes it). E.g. mono ⊂ mono with uptake ⊂ bi with uptake, mono ⊂ bi ⊂ tri; mono with
    uptake ⊄ bi."""
    return (
        simple != rich
        and simple.n_clearance <= rich.n_clearance
        and (rich.uptake or not simple.uptake)
    )


def f_test_p_value(
    simple_chi_square: FloatArray,
    rich_chi_square: FloatArray,
    extra_parameters: int,
    rich_residual_dof: npt.NDArray[np.int64],
) -> FloatArray:
    """P-value of the extra-sum-of-squares F-test, per curve.

    F = ((χ²_simple − χ²_rich)/Δp) / (χ²_rich/(N − p_rich)), compared with F(Δp, N − p_rich).
    NaN where the richer model has no residual degree of freedom.
    """
    dof = np.asarray(rich_residual_dof)
    usable = dof >= 1
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ((simple_chi_square - rich_chi_square) / extra_parameters) / (
            rich_chi_square / np.where(usable, dof, 1)
        )
    ratio = np.where(rich_chi_square > 0, ratio, np.inf)
    p_value = cast(
        FloatArray, stats.f.sf(np.maximum(ratio, 0.0), extra_parameters, np.where(usable, dof, 1))
    )
    return np.where(usable, p_value, np.nan)


def select_nested_by_f_test(
    fits: list[ExponentialFit], alpha: float = F_TEST_ALPHA
) -> npt.NDArray[np.int64]:
    """Per curve, the index in ``fits`` of the selected model (−1 when no fit is ok).

    Rule (documented for reproducibility): start from the ok fit with the fewest parameters.
    Walking the fits by number of parameters upwards, a fit replaces the current choice when it
    is ok, contains the current model (:func:`is_nested`), keeps N − p ≥ 1 residual degrees of
    freedom, the current fit is not already exact (:data:`EXACT_FIT_TOLERANCE`), and the F-test
    of its χ² reduction has a p-value below ``alpha`` (:data:`F_TEST_ALPHA`).
    """
    order = sorted(range(len(fits)), key=lambda i: fits[i].model.n_parameters)
    n = fits[0].tia_mbq_h.shape[0]
    chosen = np.full(n, -1, dtype=np.int64)
    for index in order:  # the simplest ok fit first
        chosen = np.where((chosen < 0) & fits[index].ok, index, chosen)
    for index in order:
        rich = fits[index]
        for current in order:
            simple = fits[current]
            if not is_nested(simple.model, rich.model):
                continue
            extra = rich.model.n_parameters - simple.model.n_parameters
            p_value = f_test_p_value(
                simple.chi_square,
                rich.chi_square,
                extra,
                rich.n_used - rich.model.n_parameters,
            )
            with np.errstate(invalid="ignore"):
                inexact = ~(1.0 - simple.r_squared <= EXACT_FIT_TOLERANCE)
                significant = p_value < alpha
            replace = (chosen == current) & rich.ok & inexact & significant
            chosen = np.where(replace, index, chosen)
    return chosen


AICC_MARGIN = 2.0
"""A richer model replaces a simpler one only when its AICc is lower by more than this
(ΔAICc > 2: "substantial" support, Burnham & Anderson 2002, ch. 2.6)."""


def select_by_aicc(fits: list[ExponentialFit]) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Per curve, the index in ``fits`` of the selected model, and its Akaike weight.

    Rule (documented for reproducibility): candidates are the fits with status ``ok`` and a
    defined AICc (N > K + 1). Walking from the fewest parameters upwards, a model replaces the
    current choice when its AICc is lower by more than :data:`AICC_MARGIN`. When no candidate has
    a defined AICc the first fit that is ``ok`` is chosen; when none is ok the index is −1.
    The Akaike weight exp(−Δ/2)/Σexp(−Δ/2) of the chosen model among the defined candidates is
    returned for reporting (NaN when AICc is undefined).
    """
    order = sorted(range(len(fits)), key=lambda i: fits[i].model.n_parameters)
    n = fits[0].tia_mbq_h.shape[0]
    chosen = np.full(n, -1, dtype=np.int64)
    chosen_aicc = np.full(n, np.inf)
    for index in order:
        fit = fits[index]
        defined = fit.ok & np.isfinite(fit.aicc)
        replace = defined & ((chosen < 0) | (fit.aicc < chosen_aicc - AICC_MARGIN))
        replace &= (chosen < 0) | np.isfinite(chosen_aicc)
        chosen = np.where(replace, index, chosen)
        chosen_aicc = np.where(replace, fit.aicc, chosen_aicc)
    for index in order:  # no defined AICc: first ok fit with the fewest parameters
        unset = (chosen < 0) & fits[index].ok
        chosen = np.where(unset, index, chosen)
    aiccs = np.stack([np.where(f.ok, f.aicc, np.nan) for f in fits], axis=1)
    with np.errstate(invalid="ignore"):
        best = np.nanmin(np.where(np.isfinite(aiccs), aiccs, np.inf), axis=1)
        relative = np.exp(-0.5 * (aiccs - best[:, None]))
        relative = np.where(np.isfinite(relative), relative, 0.0)
        total = relative.sum(axis=1)
        safe_chosen = np.maximum(chosen, 0)
        weight = np.where(
            (chosen >= 0) & (total > 0),
            relative[np.arange(n), safe_chosen] / np.where(total > 0, total, 1.0),
            np.nan,
        )
    return chosen, weight
