"""Typed results and the contract of a kinetics method.

Method contract (what every entry of the registry implements):

* in: ``time_h`` — shape (n_points,), hours after injection, strictly increasing;
  ``activity_mbq`` — shape (n_curves, n_points), activity at each time point in MBq (not decay
  corrected);
* out: a :class:`KineticsBatch` with one TIA per curve in MBq·h (∫₀^∞ A dt), the fitted
  parameters as arrays, and a status per curve: ``"ok"`` or a reason why the curve failed
  (then its TIA is NaN). A method never raises for one bad curve.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

STATUS_OK = "ok"


@dataclass(frozen=True)
class KineticsBatch:
    """Results of one method over a batch of curves.

    Attributes:
        method: registry name, e.g. ``"mono_exponential"``.
        method_version: bumped when the method's numbers change.
        parameters_hash: hash of the method's settings (provenance).
        tia_mbq_h: time-integrated activity per curve, MBq·h (NaN when the fit failed).
        fit_parameters: named parameter arrays, units in the names.
        status: ``"ok"`` or the reason of failure, per curve.
    """

    method: str
    method_version: str
    parameters_hash: str
    tia_mbq_h: npt.NDArray[np.float64]
    fit_parameters: dict[str, npt.NDArray[np.float64]]
    status: tuple[str, ...]

    @property
    def ok(self) -> npt.NDArray[np.bool_]:
        """Boolean mask of curves that fitted."""
        return np.array([s == STATUS_OK for s in self.status], dtype=bool)


class KineticsMethod(Protocol):
    """A named TIA method (see the module docstring for the contract)."""

    name: str
    version: str

    def settings(self) -> dict[str, object]:
        """The method's parameters, JSON-serialisable (hashed into provenance)."""
        ...

    def fit(
        self, time_h: npt.NDArray[np.float64], activity_mbq: npt.NDArray[np.float64]
    ) -> KineticsBatch:
        """Fit every curve; see the module contract."""
        ...


def settings_hash(settings: dict[str, object]) -> str:
    """Stable short hash of a method's settings."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def check_curves(
    time_h: npt.NDArray[np.float64], activity_mbq: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Validate shapes and times of a batch; returns float64 arrays (n_curves, n_points).

    Raises:
        ValueError: shapes disagree or times are not strictly increasing and finite.
    """
    times = np.asarray(time_h, dtype=np.float64)
    values = np.atleast_2d(np.asarray(activity_mbq, dtype=np.float64))
    if times.ndim != 1 or values.shape[1] != times.shape[0]:
        raise ValueError(
            f"time_h has shape {times.shape} but activity_mbq has shape {values.shape}; "
            "expected (n_points,) and (n_curves, n_points)"
        )
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise ValueError(f"time points must be finite and strictly increasing, got {times}")
    return times, values
