"""Per-curve model selection by AICc among the fitted sums of exponentials.

Candidates: mono-exponential, mono-exponential with uptake, bi-exponential, bi-exponential with
uptake, fitted on every acquired time point. The rule is :func:`select_by_aicc`'s (lowest
AICc, a richer model only when ΔAICc > 2; models whose AICc is undefined for the number of
points are not candidates — with N points a model with p parameters needs N > p + 2). Each row
says which model was chosen (``models``) and its Akaike weight (``goodness["akaike_weight"]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from concordose.kinetics.fitting import (
    BI,
    BI_UPTAKE,
    MONO,
    MONO_UPTAKE,
    ExponentialModel,
    FitSettings,
    fit_exponential,
    select_by_aicc,
)
from concordose.kinetics.models import STATUS_OK, KineticsBatch, check_curves, settings_hash

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class AiccBestFit:
    """Registry entry ``aicc_best_fit``."""

    name: str = "aicc_best_fit"
    version: str = "1"
    candidates: tuple[ExponentialModel, ...] = (MONO, MONO_UPTAKE, BI, BI_UPTAKE)
    fit_settings: FitSettings = field(default_factory=FitSettings)

    def settings(self) -> dict[str, object]:
        """Candidate models, selection rule, fit settings."""
        return {
            "candidates": [model.name for model in self.candidates],
            "rule": "lowest AICc; richer model only if dAICc > 2",
            "fit": self.fit_settings.as_dict(),
        }

    def fit(
        self,
        time_h: FloatArray,
        activity_mbq: FloatArray,
        *,
        voi_types: Sequence[str] | None = None,
        activity_sd_mbq: FloatArray | None = None,
    ) -> KineticsBatch:
        """Fit every candidate to every curve, keep each curve's selected model."""
        times, values = check_curves(time_h, activity_mbq)
        n = values.shape[0]
        fits = [
            fit_exponential(
                times, values, model, activity_sd_mbq=activity_sd_mbq, settings=self.fit_settings
            )
            for model in self.candidates
        ]
        chosen, weight = select_by_aicc(fits)
        rows = np.arange(n)
        safe = np.maximum(chosen, 0)
        found = chosen >= 0

        def pick(arrays: list[FloatArray]) -> FloatArray:
            stacked = np.stack(arrays, axis=1)
            return np.where(found, stacked[rows, safe], np.nan)

        terminal = pick([fit.named_parameters()["lambda1_per_h"] for fit in fits])
        a0 = pick(
            [
                np.zeros(n)
                if fit.model.uptake
                else fit.parameters[:, : fit.model.n_clearance].sum(1)
                for fit in fits
            ]
        )
        status = []
        for i in range(n):
            if found[i]:
                status.append(STATUS_OK)
            else:
                reasons = "; ".join(fit.status[i] for fit in fits)
                status.append(f"no candidate model fitted: {reasons}")
        return KineticsBatch(
            method=self.name,
            method_version=self.version,
            parameters_hash=settings_hash(self.settings()),
            tia_mbq_h=pick([fit.tia_mbq_h for fit in fits]),
            fit_parameters={
                "a0_mbq": a0,
                "lambda_eff_per_h": terminal,
                "teff_h": math.log(2.0) / terminal,
            },
            status=tuple(status),
            tia_sd_mbq_h=pick([fit.tia_sd_mbq_h for fit in fits]),
            time_points_used_h=tuple(float(t) for t in times),
            models=tuple(self.candidates[c].name if c >= 0 else "none" for c in chosen.tolist()),
            goodness={
                "reduced_chi_square": pick([fit.reduced_chi_square for fit in fits]),
                "r_squared": pick([fit.r_squared for fit in fits]),
                "aicc": pick([fit.aicc for fit in fits]),
                "akaike_weight": weight,
            },
        )
