"""Single time point with a population effective half-life, Madsen et al. Med Phys 2018.

Madsen MT, Menda Y, O'Dorisio TM, O'Dorisio MS, "Technical Note: Single time point dose estimate
for exponential clearance", Med Phys 2018;45:2318-24: with a population T_eff (λ = ln2/T_eff) and
one measurement A(t), the mono-exponential curve through that point gives
TIA = A(t)·exp(λt)/λ. The population T_eff is configured per VOI type; the defaults below are
NOT published population values: they are the mid-ranges of this project's synthetic-patient
priors (kidney 40-60 h → organs 50 h, lesions 70-120 h → 95 h; ``phantoms/kinetics.py``) and
must be replaced by a site's or consortium's population values (``teff_by_voi_type_h``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from concordose.kinetics.models import STATUS_OK, KineticsBatch, check_curves, settings_hash
from concordose.kinetics.scheduled_fit import failed_batch
from concordose.kinetics.timepoints import NOMINAL_WINDOW_FRACTION, choose_time_points

FloatArray = npt.NDArray[np.float64]

DEFAULT_POPULATION_TEFF_H: Mapping[str, float] = {"organ": 50.0, "lesion": 95.0}
"""Placeholders (see the module docstring), keyed by VOI type."""


@dataclass(frozen=True)
class MadsenStp:
    """Registry entry ``madsen_stp``: the point serving ``nominal_h``, T_eff per VOI type."""

    name: str = "madsen_stp"
    version: str = "2"  # 2: point chosen by kinetics.timepoints (±40 % window)
    nominal_h: float = 72.0
    teff_by_voi_type_h: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_POPULATION_TEFF_H)
    )

    def settings(self) -> dict[str, object]:
        """Schedule and population half-lives."""
        return {
            "nominal_h": self.nominal_h,
            "window_fraction": NOMINAL_WINDOW_FRACTION,
            "teff_by_voi_type_h": dict(sorted(self.teff_by_voi_type_h.items())),
        }

    def fit(
        self,
        time_h: FloatArray,
        activity_mbq: FloatArray,
        *,
        voi_types: Sequence[str] | None = None,
        activity_sd_mbq: FloatArray | None = None,
    ) -> KineticsBatch:
        """TIA = A(t)·e^{λt}/λ with the population λ of each curve's VOI type."""
        times, values = check_curves(time_h, activity_mbq)
        n = values.shape[0]
        choice = choose_time_points(times, (self.nominal_h,))
        if not choice.matched:
            assert choice.problem is not None
            return failed_batch(self.name, self.version, self.settings(), n, choice.problem)
        if voi_types is None:
            return failed_batch(
                self.name,
                self.version,
                self.settings(),
                n,
                "needs the VOI type of each curve (voi_types) to pick a population T_eff",
            )
        index = choice.indices[0]
        t_h = float(times[index])
        teff_h = np.array(
            [self.teff_by_voi_type_h.get(str(kind), np.nan) for kind in voi_types], dtype=float
        )
        lambda_per_h = math.log(2.0) / teff_h
        factor_h = np.exp(lambda_per_h * t_h) / lambda_per_h
        activity = values[:, index]
        ok = np.isfinite(activity) & (activity > 0) & np.isfinite(teff_h)
        sd = (
            np.full(n, np.nan)
            if activity_sd_mbq is None
            else np.asarray(activity_sd_mbq)[:, index] * factor_h
        )
        status = []
        for i in range(n):
            if ok[i]:
                status.append(STATUS_OK)
            elif not np.isfinite(teff_h[i]):
                known = ", ".join(sorted(self.teff_by_voi_type_h))
                status.append(f"no population T_eff for VOI type {voi_types[i]!r} (known: {known})")
            else:
                status.append(f"activity at {t_h:.1f} h is not > 0")
        a0 = activity * np.exp(lambda_per_h * t_h)
        return KineticsBatch(
            method=self.name,
            method_version=self.version,
            parameters_hash=settings_hash(self.settings()),
            tia_mbq_h=np.where(ok, activity * factor_h, np.nan),
            fit_parameters={
                "a0_mbq": np.where(ok, a0, np.nan),
                "lambda_eff_per_h": np.where(ok, lambda_per_h, np.nan),
                "teff_h": np.where(ok, teff_h, np.nan),
            },
            status=tuple(status),
            tia_sd_mbq_h=np.where(ok, sd, np.nan),
            time_points_used_h=choice.used_h,
            time_points_nominal_h=choice.nominal_h,
        )
