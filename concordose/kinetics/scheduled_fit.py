"""A kinetics method made of: a schedule (optional), an exponential model, fit settings.

Every fitted method in ``methods/`` is an instance of :class:`ScheduledFit`: the full-data fits
(``bi_exponential``, …) use every acquired time point; the simplified multi-time-point methods
(LUTADOSE 2TP, LUMEN 3TP, Hebert 4TP) first pick their scheduled points from what was acquired
(``kinetics.timepoints``: one rule for every schedule) and say which they used and which nominal
time each served. The reference (``spectacular_6tp``) and ``aicc_best_fit`` select their model
per curve instead (``kinetics.selected_fit``).

Row convention for the ``kinetics`` table: ``lambda_eff_per_h``/``teff_h`` are those of the
terminal (slowest) clearance term; ``a0_mbq`` is A(0) of the fitted curve (0 with uptake).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from concordose.kinetics.fitting import (
    ExponentialFit,
    ExponentialModel,
    FitSettings,
    fit_exponential,
)
from concordose.kinetics.models import KineticsBatch, check_curves, settings_hash
from concordose.kinetics.timepoints import NOMINAL_WINDOW_FRACTION, choose_time_points

FloatArray = npt.NDArray[np.float64]


def batch_from_fit(
    name: str,
    version: str,
    settings: dict[str, object],
    fit: ExponentialFit,
    used_h: tuple[float, ...] | None,
    *,
    nominal_h: tuple[float, ...] | None = None,
) -> KineticsBatch:
    """A :class:`KineticsBatch` carrying everything an :class:`ExponentialFit` knows."""
    named = fit.named_parameters()
    terminal = named["lambda1_per_h"]
    amplitude_sum = 0.0 if fit.model.uptake else fit.parameters[:, : fit.model.n_clearance].sum(1)
    a0 = np.where(fit.ok, amplitude_sum, np.nan)
    return KineticsBatch(
        method=name,
        method_version=version,
        parameters_hash=settings_hash(settings),
        tia_mbq_h=fit.tia_mbq_h,
        fit_parameters={
            **named,
            "a0_mbq": a0,
            "lambda_eff_per_h": terminal,
            "teff_h": math.log(2.0) / terminal,
        },
        status=fit.status,
        tia_sd_mbq_h=fit.tia_sd_mbq_h,
        time_points_used_h=used_h,
        time_points_nominal_h=nominal_h,
        models=tuple(fit.model.name for _ in fit.status),
        goodness={
            "reduced_chi_square": fit.reduced_chi_square,
            "r_squared": fit.r_squared,
            "aicc": fit.aicc,
        },
        covariance=fit.covariance,
        parameter_names=fit.model.parameter_names(),
    )


def failed_batch(
    name: str,
    version: str,
    settings: dict[str, object],
    n_curves: int,
    reason: str,
    *,
    scheduled: bool = True,
) -> KineticsBatch:
    """Every curve failed for the same reason (e.g. the schedule is not met): no point used,
    hence no nominal time served (empty) — or none to serve (None) for a method without a
    schedule (``scheduled=False``)."""
    nan = np.full(n_curves, np.nan)
    return KineticsBatch(
        method=name,
        method_version=version,
        parameters_hash=settings_hash(settings),
        tia_mbq_h=nan,
        fit_parameters={"a0_mbq": nan, "lambda_eff_per_h": nan, "teff_h": nan},
        status=tuple(reason for _ in range(n_curves)),
        tia_sd_mbq_h=nan,
        time_points_used_h=(),
        time_points_nominal_h=() if scheduled else None,
    )


@dataclass(frozen=True)
class ScheduledFit:
    """Fit ``model`` to the scheduled points (or all points when ``nominal_h`` is empty).

    Attributes:
        name, version: registry identity.
        model: the exponential model.
        nominal_h: the schedule (h), matched by ``kinetics.timepoints``; empty = all points.
        min_points: least number of acquired points when using all points.
        fit_settings: weights, tail rule, bounds.
        reference: citation of the schedule, for provenance.
    """

    name: str
    version: str
    model: ExponentialModel
    nominal_h: tuple[float, ...] = ()
    min_points: int = 0
    fit_settings: FitSettings = field(default_factory=FitSettings)
    reference: str = ""

    def settings(self) -> dict[str, object]:
        """Model, schedule and fit settings (hashed into provenance)."""
        return {
            "model": self.model.name,
            "nominal_h": list(self.nominal_h),
            "window_fraction": NOMINAL_WINDOW_FRACTION if self.nominal_h else None,
            "min_points": self.min_points,
            "fit": self.fit_settings.as_dict(),
            "reference": self.reference,
        }

    def fit(
        self,
        time_h: FloatArray,
        activity_mbq: FloatArray,
        *,
        voi_types: Sequence[str] | None = None,
        activity_sd_mbq: FloatArray | None = None,
    ) -> KineticsBatch:
        """Choose the points, fit every curve; ``voi_types`` is not used."""
        times, values = check_curves(time_h, activity_mbq)
        nominal_h: tuple[float, ...] | None = None
        if self.nominal_h:
            choice = choose_time_points(times, self.nominal_h)
            if not choice.matched:
                assert choice.problem is not None
                return failed_batch(
                    self.name, self.version, self.settings(), values.shape[0], choice.problem
                )
            index = np.array(choice.indices)
            order = np.argsort(times[index])  # the fit wants increasing times
            index = index[order]
            nominal_h = tuple(choice.nominal_h[i] for i in order.tolist())
        else:
            # A cycle with fewer points than the method or its model needs: the schedule, not a
            # curve, rules it out ("not applicable", as an unmatched schedule above).
            needed = max(self.min_points, self.model.n_parameters)
            if times.size < needed:
                return failed_batch(
                    self.name,
                    self.version,
                    self.settings(),
                    values.shape[0],
                    f"not applicable: needs ≥ {needed} acquired time points, has {times.size}",
                    scheduled=False,
                )
            index = np.arange(times.size)
        sd = None if activity_sd_mbq is None else np.asarray(activity_sd_mbq)[:, index]
        fit = fit_exponential(
            times[index],
            values[:, index],
            self.model,
            activity_sd_mbq=sd,
            settings=self.fit_settings,
        )
        return batch_from_fit(
            self.name,
            self.version,
            self.settings(),
            fit,
            tuple(float(t) for t in times[index]),
            nominal_h=nominal_h,
        )
