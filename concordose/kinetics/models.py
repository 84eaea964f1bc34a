"""Typed results and the contract of a kinetics method.

Method contract (what every entry of the registry implements):

* in: ``time_h`` — shape (n_points,), hours after injection, strictly increasing;
  ``activity_mbq`` — shape (n_curves, n_points), activity at each time point in MBq (not decay
  corrected);
* out: a :class:`KineticsBatch` with one TIA per curve in MBq·h (∫₀^∞ A dt), the fitted
  parameters as arrays, and a status per curve: ``"ok"`` or a reason why the curve failed
  (then its TIA is NaN). A method never raises for one bad curve.
* optional keywords every method accepts (and may ignore): ``voi_types`` — one VOI type per
  curve (``"organ"``/``"lesion"``), for methods with population parameters per VOI type;
  ``activity_sd_mbq`` — (n_curves, n_points) standard deviations of the activities in MBq
  (counting and calibration, see ``kinetics.uncertainty``), used as fit weights when given.
* optional outputs: the TIA standard deviation, the time points the method used, per-curve
  model names, goodness-of-fit arrays and parameter covariances (see :class:`KineticsBatch`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
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
        tia_sd_mbq_h: standard deviation of each TIA (MBq·h), NaN when not estimable; None when
            the method does not estimate uncertainty.
        time_points_used_h: the acquired time points the method used (h), None for all.
        time_points_nominal_h: for a method on a schedule, the nominal time (h) each used point
            served, same order as ``time_points_used_h`` (``kinetics.timepoints``); None for a
            method without a schedule.
        models: fitted model per curve (e.g. ``"bi_exponential_uptake"``), None if not a fit.
        goodness: goodness-of-fit arrays by name (``reduced_chi_square``, ``r_squared``,
            ``aicc``), per curve.
        covariance: (n_curves, p, p) covariance of the parameters named ``parameter_names``.
        parameter_names: order of the covariance's rows.
    """

    method: str
    method_version: str
    parameters_hash: str
    tia_mbq_h: npt.NDArray[np.float64]
    fit_parameters: dict[str, npt.NDArray[np.float64]]
    status: tuple[str, ...]
    tia_sd_mbq_h: npt.NDArray[np.float64] | None = None
    time_points_used_h: tuple[float, ...] | None = None
    time_points_nominal_h: tuple[float, ...] | None = None
    models: tuple[str, ...] | None = None
    goodness: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    covariance: npt.NDArray[np.float64] | None = None
    parameter_names: tuple[str, ...] = ()

    @property
    def time_point_offsets_h(self) -> tuple[float, ...] | None:
        """Distance of each used point from the nominal time it served, acquired − nominal (h);
        None without a schedule."""
        if self.time_points_nominal_h is None or self.time_points_used_h is None:
            return None
        return tuple(
            used - nominal
            for used, nominal in zip(
                self.time_points_used_h, self.time_points_nominal_h, strict=True
            )
        )

    @property
    def ok(self) -> npt.NDArray[np.bool_]:
        """Boolean mask of curves that fitted."""
        return np.array([s == STATUS_OK for s in self.status], dtype=bool)


class KineticsMethod(Protocol):
    """A named TIA method (see the module docstring for the contract)."""

    @property
    def name(self) -> str:
        """Registry name."""
        ...

    @property
    def version(self) -> str:
        """Bumped when the method's numbers change."""
        ...

    def settings(self) -> dict[str, object]:
        """The method's parameters, JSON-serialisable (hashed into provenance)."""
        ...

    def fit(
        self,
        time_h: npt.NDArray[np.float64],
        activity_mbq: npt.NDArray[np.float64],
        *,
        voi_types: Sequence[str] | None = None,
        activity_sd_mbq: npt.NDArray[np.float64] | None = None,
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
