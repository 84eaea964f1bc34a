"""The time-activity curve a published kinetics row implies, from its parameters alone.

A kinetics row publishes its fitted parameters (``fit_parameters_json``, units in the names) or,
for a simplified method, the mono-exponential it stands for (``a0_mbq``, ``lambda_eff_per_h``).
The curves are those of :mod:`concordose.kinetics.fitting.model`:

* without uptake: A(t) = Σₖ aₖ·exp(−λₖ·t)
* with uptake:    A(t) = Σₖ aₖ·exp(−λₖ·t) − (Σₖ aₖ)·exp(−λᵤ·t)

A row with neither (the trapezoid rule, Hänscheid's single-point formula: a TIA without a curve)
implies no curve.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["implied_activity_mbq"]

FloatArray = npt.NDArray[np.float64]

_AMPLITUDE = re.compile(r"^a(\d+)_mbq$")


def _exponential_sum(parameters: dict[str, float], time_h: FloatArray) -> FloatArray | None:
    amplitudes: dict[int, float] = {}
    for name, value in parameters.items():
        match = _AMPLITUDE.match(name)
        if match and int(match.group(1)) >= 1:
            amplitudes[int(match.group(1))] = float(value)
    rates = {k: parameters.get(f"lambda{k}_per_h") for k in amplitudes}
    if not amplitudes or any(rate is None for rate in rates.values()):
        return None
    values = np.zeros_like(time_h)
    for k, amplitude in amplitudes.items():
        values += amplitude * np.exp(-float(rates[k] or 0.0) * time_h)
    uptake = parameters.get("lambda_uptake_per_h")
    if uptake is not None:
        values -= sum(amplitudes.values()) * np.exp(-float(uptake) * time_h)
    return values


def implied_activity_mbq(row: dict[str, Any], time_h: FloatArray) -> FloatArray | None:
    """Activity (MBq) at ``time_h`` (h after injection) of the curve a ``kinetics`` row implies,
    or None when the row implies none (failed fit, or a method without a curve)."""
    if row.get("status") != "ok":
        return None
    raw = row.get("fit_parameters_json")
    if raw:
        parameters = {str(k): float(v) for k, v in json.loads(raw).items()}
        curve = _exponential_sum(parameters, time_h)
        if curve is not None:
            return curve
    a0, rate = row.get("a0_mbq"), row.get("lambda_eff_per_h")
    if a0 is None or rate is None:
        return None
    return float(a0) * np.exp(-float(rate) * time_h)
