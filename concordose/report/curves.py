"""The time-activity curve a published kinetics row implies, from its parameters alone.

A kinetics row publishes its fitted parameters (``fit_parameters_json``, units in the names) or,
for a simplified method, the mono-exponential it stands for (``a0_mbq``, ``lambda_eff_per_h``).
The curves are evaluated by the fit's own model (:func:`concordose.kinetics.fitting.activity_mbq`).

A single-time-point row with neither (Hänscheid's formula TIA = A(t)·2t/ln 2) implies the
mono-exponential through its measured point A(t) whose integral is its TIA: A(t)·e^{λt}/λ = TIA,
the root with λ < 1/t (for Hänscheid's formula exactly λ = ln 2/t, Teff = t). A row with
several points and no parameters (the trapezoid rule) implies no curve.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import brentq

from concordose.kinetics import fitting

__all__ = ["implied_activity_mbq"]

FloatArray = npt.NDArray[np.float64]


def single_point_rate_per_h(point_h: float, activity_mbq: float, tia_mbq_h: float) -> float | None:
    """λ (1/h) of the mono-exponential through (``point_h``, ``activity_mbq``) with integral
    ``tia_mbq_h``: the root of ln A + λt − ln λ − ln TIA below 1/t (None when there is none:
    TIA < e·A·t, or a non-positive input)."""
    if min(point_h, activity_mbq, tia_mbq_h) <= 0:
        return None

    def excess(rate: float) -> float:
        return float(np.log(activity_mbq) + rate * point_h - np.log(rate) - np.log(tia_mbq_h))

    upper = 1.0 / point_h
    lower = upper * 1e-9
    if excess(upper) > 0 or excess(lower) < 0:
        return None
    return float(brentq(excess, lower, upper, xtol=1e-14 * upper))


def implied_activity_mbq(
    row: dict[str, Any],
    time_h: FloatArray,
    measured_mbq: dict[float, float] | None = None,
) -> FloatArray | None:
    """Activity (MBq) at ``time_h`` (h after injection) of the curve a ``kinetics`` row implies,
    or None when the row implies none (failed fit, or a method without a curve).
    ``measured_mbq``: the VOI's measured activity by acquisition time (h), for a single-point
    row without parameters."""
    if row.get("status") != "ok":
        return None
    raw = row.get("fit_parameters_json")
    if raw:
        parameters = {str(k): float(v) for k, v in json.loads(raw).items()}
        model = fitting.model_of_parameters(parameters)
        if model is not None:
            return fitting.activity_mbq(model, parameters, time_h)
    a0, rate = row.get("a0_mbq"), row.get("lambda_eff_per_h")
    if a0 is not None and rate is not None:
        return float(a0) * np.exp(-float(rate) * time_h)
    used = row.get("time_points_used_h") or []
    tia = row.get("tia_mbq_h")
    if len(used) != 1 or tia is None or measured_mbq is None:
        return None
    point_h = float(used[0])
    activity = measured_mbq.get(point_h)
    single = None if activity is None else single_point_rate_per_h(point_h, activity, float(tia))
    if single is None or activity is None:
        return None
    return activity * np.exp(-single * (time_h - point_h))
