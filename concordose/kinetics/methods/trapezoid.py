"""Non-parametric TIA: trapezoids between the points plus the physical-decay tail.

TIA = ∫₀^{t₁} (head) + Σ trapezoids between measured points + A(t_last)/λ_phys.
The head assumes activity rising linearly from 0 at injection to the first point (``head="zero"``,
right for curves with an uptake phase) or constant at the first point's value
(``head="constant"``). The tail assumes no biological clearance after the last point (physical
decay only), an upper bound for the tail. TIA is linear in the activities, so its variance is
exactly Σ cᵢ²σᵢ² when the activities' standard deviations are given (independent points).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from concordose.kinetics.models import STATUS_OK, KineticsBatch, check_curves, settings_hash
from concordose.nuclides import LU177

FloatArray = npt.NDArray[np.float64]


def trapezoid_coefficients(time_h: FloatArray, head: str, physical_rate_per_h: float) -> FloatArray:
    """Weights cᵢ (h) with TIA = Σ cᵢ·Aᵢ."""
    times = np.asarray(time_h, dtype=np.float64)
    coefficients = np.zeros_like(times)
    widths = np.diff(times)
    coefficients[:-1] += widths / 2.0
    coefficients[1:] += widths / 2.0
    coefficients[0] += times[0] / 2.0 if head == "zero" else times[0]
    coefficients[-1] += 1.0 / physical_rate_per_h
    return coefficients


@dataclass(frozen=True)
class Trapezoid:
    """Registry entry ``trapezoid``."""

    name: str = "trapezoid"
    version: str = "1"
    head: str = "zero"

    def settings(self) -> dict[str, object]:
        """Head and tail rules."""
        return {"head": self.head, "tail": "physical", "nuclide": LU177.name}

    def fit(
        self,
        time_h: FloatArray,
        activity_mbq: FloatArray,
        *,
        voi_types: Sequence[str] | None = None,
        activity_sd_mbq: FloatArray | None = None,
    ) -> KineticsBatch:
        """Integrate every curve; a curve with a missing or negative point fails."""
        if self.head not in {"zero", "constant"}:
            raise ValueError(f"trapezoid head must be 'zero' or 'constant', got {self.head!r}")
        times, values = check_curves(time_h, activity_mbq)
        coefficients = trapezoid_coefficients(times, self.head, LU177.decay_constant_per_h)
        ok = np.all(np.isfinite(values) & (values >= 0), axis=1)
        tia = np.where(ok, np.where(ok[:, None], values, 0.0) @ coefficients, np.nan)
        if activity_sd_mbq is None:
            sd = np.full(tia.shape, np.nan)
        else:
            sd = np.sqrt((np.asarray(activity_sd_mbq) ** 2) @ coefficients**2)
        nan = np.full(tia.shape, np.nan)
        tail_share = np.where(ok, values[:, -1] / LU177.decay_constant_per_h / tia, np.nan)
        return KineticsBatch(
            method=self.name,
            method_version=self.version,
            parameters_hash=settings_hash(self.settings()),
            tia_mbq_h=tia,
            fit_parameters={
                "a0_mbq": nan,
                "lambda_eff_per_h": nan,
                "teff_h": nan,
                "tail_fraction": tail_share,
            },
            status=tuple(
                STATUS_OK if good else "needs every time point finite and ≥ 0" for good in ok
            ),
            tia_sd_mbq_h=np.where(ok, sd, np.nan),
            time_points_used_h=tuple(float(t) for t in times),
        )
