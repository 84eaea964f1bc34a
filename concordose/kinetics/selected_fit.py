"""A kinetics method made of: candidate models, a selection rule, fit settings.

:class:`SelectedFit` fits every candidate sum of exponentials to every curve on every acquired
time point and keeps, per curve, the model its rule selects (``kinetics.fitting.selection``:
AICc, or F-tests between nested models). Two registry entries are instances: ``aicc_best_fit``
(``methods/aicc_best_fit.py``) and the reference ``spectacular_6tp``
(``methods/spectacular_6tp.py``). Each row says which model was chosen (``models``, published
as ``kinetics.model``); the row convention of ``scheduled_fit`` holds (terminal rate and
half-life, A(0) = 0 with uptake), and the chosen model's own parameters are added by name (NaN
for the names it does not have).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from concordose.kinetics.fitting import (
    ExponentialFit,
    ExponentialModel,
    FitSettings,
    SelectionRule,
    fit_exponential,
    select_by_aicc,
    select_nested_by_f_test,
)
from concordose.kinetics.models import STATUS_OK, KineticsBatch, check_curves, settings_hash
from concordose.kinetics.scheduled_fit import failed_batch

FloatArray = npt.NDArray[np.float64]

RULE_DESCRIPTIONS = {
    SelectionRule.AICC: "lowest AICc; richer model only if dAICc > 2",
    SelectionRule.NESTED_F_TEST: (
        "simplest model; a richer model containing the current one if its F-test p < 0.05"
    ),
}
"""The rule as recorded in a method's settings (hashed into provenance)."""


@dataclass(frozen=True)
class SelectedFit:
    """A kinetics method choosing, per curve, one of ``candidates`` by ``rule``.

    Attributes:
        name, version: registry identity.
        candidates: the models, in any order (the rules walk them by number of parameters).
        rule: how the model is chosen (``kinetics.fitting.selection``).
        min_points: least number of acquired time points; fewer → every curve fails, saying so.
        fit_settings: weights, tail rule, bounds (shared by every candidate).
        reference: citation of the method, for provenance.
    """

    name: str
    version: str
    candidates: tuple[ExponentialModel, ...]
    rule: SelectionRule = SelectionRule.AICC
    min_points: int = 0
    fit_settings: FitSettings = field(default_factory=FitSettings)
    reference: str = ""

    def settings(self) -> dict[str, object]:
        """Candidate models, selection rule, fit settings; ``min_points`` and ``reference`` only
        when set (so the hash of ``aicc_best_fit`` v1, which had neither, is unchanged)."""
        settings: dict[str, object] = {
            "candidates": [model.name for model in self.candidates],
            "rule": RULE_DESCRIPTIONS[self.rule],
            "fit": self.fit_settings.as_dict(),
        }
        if self.min_points:
            settings["min_points"] = self.min_points
        if self.reference:
            settings["reference"] = self.reference
        return settings

    def fitted_candidates(self, n_points: int) -> tuple[ExponentialModel, ...]:
        """The candidates worth fitting on ``n_points``: all for AICc (undefined ones are never
        selected, as in v1 of ``aicc_best_fit``); for the F-test those keeping a residual degree
        of freedom (N > p), or the simplest alone when none does."""
        if self.rule is SelectionRule.AICC:
            return self.candidates
        usable = tuple(model for model in self.candidates if n_points > model.n_parameters)
        return usable or (min(self.candidates, key=lambda model: model.n_parameters),)

    def fit(
        self,
        time_h: FloatArray,
        activity_mbq: FloatArray,
        *,
        voi_types: Sequence[str] | None = None,
        activity_sd_mbq: FloatArray | None = None,
    ) -> KineticsBatch:
        """Fit the candidates to every curve, keep each curve's selected model."""
        times, values = check_curves(time_h, activity_mbq)
        n = values.shape[0]
        if times.size < self.min_points:
            return failed_batch(
                self.name,
                self.version,
                self.settings(),
                n,
                f"not applicable: needs ≥ {self.min_points} acquired time points, has {times.size}",
                scheduled=False,
            )
        models = self.fitted_candidates(times.size)
        fits = [
            fit_exponential(
                times, values, model, activity_sd_mbq=activity_sd_mbq, settings=self.fit_settings
            )
            for model in models
        ]
        goodness: dict[str, FloatArray] = {}
        if self.rule is SelectionRule.AICC:
            chosen, goodness["akaike_weight"] = select_by_aicc(fits)
        else:
            chosen = select_nested_by_f_test(fits)
        status = [
            STATUS_OK
            if chosen[i] >= 0
            else "no candidate model fitted: " + "; ".join(fit.status[i] for fit in fits)
            for i in range(n)
        ]
        return KineticsBatch(
            method=self.name,
            method_version=self.version,
            parameters_hash=settings_hash(self.settings()),
            tia_mbq_h=_pick(fits, chosen, lambda fit: fit.tia_mbq_h),
            fit_parameters=_chosen_parameters(fits, chosen),
            status=tuple(status),
            tia_sd_mbq_h=_pick(fits, chosen, lambda fit: fit.tia_sd_mbq_h),
            time_points_used_h=tuple(float(t) for t in times),
            models=tuple(models[c].name if c >= 0 else "none" for c in chosen.tolist()),
            goodness={
                "reduced_chi_square": _pick(fits, chosen, lambda fit: fit.reduced_chi_square),
                "r_squared": _pick(fits, chosen, lambda fit: fit.r_squared),
                "aicc": _pick(fits, chosen, lambda fit: fit.aicc),
                **goodness,
            },
        )


def _pick(
    fits: list[ExponentialFit],
    chosen: npt.NDArray[np.int64],
    value: Callable[[ExponentialFit], FloatArray],
) -> FloatArray:
    """Per curve, ``value`` of the chosen fit (NaN where none was chosen)."""
    stacked = np.stack([value(fit) for fit in fits], axis=1)
    picked: FloatArray = np.where(
        chosen >= 0, stacked[np.arange(chosen.size), np.maximum(chosen, 0)], np.nan
    )
    return picked


def _chosen_parameters(
    fits: list[ExponentialFit], chosen: npt.NDArray[np.int64]
) -> dict[str, FloatArray]:
    """The chosen model's named parameters per curve, plus the ``scheduled_fit`` row convention."""
    nan = np.full(chosen.size, np.nan)

    def named(name: str) -> Callable[[ExponentialFit], FloatArray]:
        return lambda fit: fit.named_parameters().get(name, nan)

    def a0_mbq(fit: ExponentialFit) -> FloatArray:
        if fit.model.uptake:
            return np.zeros(chosen.size)
        amplitudes: FloatArray = fit.parameters[:, : fit.model.n_clearance].sum(1)
        return amplitudes

    names = sorted({name for fit in fits for name in fit.named_parameters()})
    terminal = _pick(fits, chosen, named("lambda1_per_h"))
    return {
        **{name: _pick(fits, chosen, named(name)) for name in names},
        "a0_mbq": _pick(fits, chosen, a0_mbq),
        "lambda_eff_per_h": terminal,
        "teff_h": math.log(2.0) / terminal,
    }
