"""A patient's region doses over cycles: cumulative sum, its uncertainty and the next cycle's
forecast dose per GBq.

A *region* is an organ at risk as :func:`concordose.dose.metrics.oar_name` groups VOIs (the
two kidneys together, mass-weighted) or one lesion (matched by label across cycles).

* Cumulative dose: the sum over the patient's published cycles; its SD the root sum of squares
  of the cycles' SDs (cycles measured independently). A cycle without a dose for the region
  makes the sum unknown (NaN), not smaller, as :func:`concordose.dose.metrics.cumulative_dose`.
* Forecast dose per GBq of the next cycle (Gy/GBq):

  - organs: the mean of the cycles' doses per injected GBq (organ uptake varies from cycle to
    cycle without a trend); its variance the measurement variance of that mean plus, with two
    or more cycles, the sample variance between cycles (a new cycle varies as the earlier
    ones did);
  - lesions: the last cycle's dose per GBq times the measured decline per cycle
    r = (k_last / k_first)^(1/(c_last − c_first)) when two or more cycles are published
    (tumour uptake falls from cycle to cycle: Hebert et al. 2024, LUTADOSE, LUMEN; seed
    review); one cycle: the last dose per GBq itself. Its SD: the last cycle's relative SD.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RegionCycleDose:
    """One region's dose in one cycle.

    Attributes:
        cycle_number: 1-based treatment cycle (``patient_summary.cycle_number``).
        injected_activity_gbq: activity given in that cycle, GBq.
        dose_gy, dose_sd_gy: mean absorbed dose and its standard uncertainty, Gy (NaN unknown).
        teff_h: the region's effective half-life in that cycle, h (NaN unknown).
        kinetics_method: how the TIA was obtained (a registry name, or the single-point
            emulation's name).
        single_point: whether the dose came from one time point with an earlier half-life.
    """

    cycle_number: int
    injected_activity_gbq: float
    dose_gy: float
    dose_sd_gy: float
    teff_h: float
    kinetics_method: str
    single_point: bool = False

    @property
    def dose_per_gbq_gy(self) -> float:
        """Dose per injected GBq, Gy/GBq (NaN without an activity)."""
        if not (math.isfinite(self.injected_activity_gbq) and self.injected_activity_gbq > 0):
            return math.nan
        return self.dose_gy / self.injected_activity_gbq


@dataclass(frozen=True)
class Forecast:
    """The next cycle's dose per GBq (Gy/GBq), its SD and the decline ratio used (NaN: none)."""

    dose_per_gbq_gy: float
    dose_per_gbq_sd_gy: float
    decline_ratio: float


def cumulative_dose_gy(cycles: Sequence[RegionCycleDose]) -> tuple[float, float]:
    """Sum of the cycles' doses (Gy) and its SD (root sum of squares; module docstring)."""
    doses = np.array([c.dose_gy for c in cycles], dtype=np.float64)
    sds = np.array([c.dose_sd_gy for c in cycles], dtype=np.float64)
    return float(doses.sum()), float(np.sqrt(np.sum(sds**2)))


def forecast_dose_per_gbq(cycles: Sequence[RegionCycleDose], *, lesion: bool) -> Forecast:
    """The next cycle's dose per GBq from ``cycles`` (ordered by cycle number; module
    docstring); NaN where no cycle has a finite dose per GBq."""
    usable = [c for c in cycles if math.isfinite(c.dose_per_gbq_gy)]
    if not usable:
        return Forecast(math.nan, math.nan, math.nan)
    per_gbq = np.array([c.dose_per_gbq_gy for c in usable])
    sd_per_gbq = np.array([c.dose_sd_gy / c.injected_activity_gbq for c in usable])
    if not lesion:
        n = per_gbq.size
        variance = float(np.sum(sd_per_gbq**2)) / n**2
        if n >= 2:
            variance += float(np.var(per_gbq, ddof=1))
        return Forecast(float(per_gbq.mean()), math.sqrt(variance), math.nan)
    last = usable[-1]
    relative_sd = last.dose_sd_gy / last.dose_gy if last.dose_gy > 0 else math.nan
    ratio = math.nan
    forecast = float(per_gbq[-1])
    span = usable[-1].cycle_number - usable[0].cycle_number
    if len(usable) >= 2 and span > 0 and per_gbq[0] > 0 and per_gbq[-1] > 0:
        ratio = float((per_gbq[-1] / per_gbq[0]) ** (1.0 / span))
        forecast *= ratio
    return Forecast(forecast, forecast * relative_sd, ratio)
