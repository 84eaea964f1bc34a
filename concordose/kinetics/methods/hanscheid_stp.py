"""Single time point, Hänscheid et al. J Nucl Med 2018;59:75-81.

TIA ≈ A(t)·2t/ln 2, from one measurement at t ≈ 4 days. For a mono-exponential curve with
effective half-life T_eff, the true TIA is A(t)·T_eff/ln2·2^x with x = t/T_eff, so the ratio
approximation/truth is 2x/2^x: exact at x = 1 and x = 2, at most +6.15 % (2/(e·ln2) at
x = 1/ln2, i.e. T_eff = t·ln2), and within −10 % … +6.2 % for 0.75 ≤ x ≤ 2.5 (Hänscheid 2018).
The method needs no population parameter; it assumes instantaneous uptake and mono-exponential
clearance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from concordose.kinetics.models import STATUS_OK, KineticsBatch, check_curves, settings_hash
from concordose.kinetics.scheduled_fit import failed_batch
from concordose.kinetics.timepoints import NOMINAL_WINDOW_FRACTION, choose_time_points

FloatArray = npt.NDArray[np.float64]


def hanscheid_factor_h(time_h: float) -> float:
    """TIA / A(t) of the approximation, in h: 2t / ln 2."""
    return 2.0 * time_h / math.log(2.0)


def hanscheid_relative_error(time_h: FloatArray, teff_h: FloatArray) -> FloatArray:
    """(approximation / truth) − 1 for a mono-exponential curve: 2x/2^x − 1, x = t/T_eff."""
    x = np.asarray(time_h, dtype=np.float64) / np.asarray(teff_h, dtype=np.float64)
    ratio: FloatArray = 2.0 * x / np.power(2.0, x) - 1.0
    return ratio


@dataclass(frozen=True)
class HanscheidStp:
    """Registry entry ``hanscheid_stp``: the point serving ``nominal_h`` (``timepoints``)."""

    name: str = "hanscheid_stp"
    version: str = "2"  # 2: point chosen by kinetics.timepoints (±40 % window)
    nominal_h: float = 96.0  # "about 4 days" (Hänscheid 2018)

    def settings(self) -> dict[str, object]:
        """Schedule of the single point."""
        return {"nominal_h": self.nominal_h, "window_fraction": NOMINAL_WINDOW_FRACTION}

    def fit(
        self,
        time_h: FloatArray,
        activity_mbq: FloatArray,
        *,
        voi_types: Sequence[str] | None = None,
        activity_sd_mbq: FloatArray | None = None,
    ) -> KineticsBatch:
        """TIA = A(t)·2t/ln2 per curve; sd scales the same way when ``activity_sd_mbq`` given."""
        times, values = check_curves(time_h, activity_mbq)
        choice = choose_time_points(times, (self.nominal_h,))
        if not choice.matched:
            assert choice.problem is not None
            return failed_batch(
                self.name, self.version, self.settings(), values.shape[0], choice.problem
            )
        index = choice.indices[0]
        factor_h = hanscheid_factor_h(float(times[index]))
        activity = values[:, index]
        ok = np.isfinite(activity) & (activity > 0)
        sd = (
            np.full(activity.shape, np.nan)
            if activity_sd_mbq is None
            else np.asarray(activity_sd_mbq)[:, index] * factor_h
        )
        nan = np.full(activity.shape, np.nan)
        return KineticsBatch(
            method=self.name,
            method_version=self.version,
            parameters_hash=settings_hash(self.settings()),
            tia_mbq_h=np.where(ok, activity * factor_h, np.nan),
            fit_parameters={"a0_mbq": nan, "lambda_eff_per_h": nan, "teff_h": nan},
            status=tuple(
                STATUS_OK if good else f"activity at {times[index]:.1f} h is not > 0" for good in ok
            ),
            tia_sd_mbq_h=np.where(ok, sd, np.nan),
            time_points_used_h=choice.used_h,
            time_points_nominal_h=choice.nominal_h,
        )
