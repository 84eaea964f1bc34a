"""Calibration factor from a uniform-cylinder phantom scan.

CF [cps/MBq] = C / (T · Ā), with C the reconstructed counts of the whole phantom, T the total
acquisition time (s) and Ā the mean activity in the field of view during the acquisition (MBq):
the dose-calibrator activity A_ref at its reference time, decayed to the scan start, then
averaged over the acquisition, Ā = A_start · (1 − e^{−λT}) / (λT).

Relative uncertainty (EANM, Gear et al. 2018, counting and activity terms added in quadrature):
u(CF)/CF = sqrt(1/C + u(A)²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from concordose.nuclides import LU177, Nuclide

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class CalibrationFactorResult:
    """A measured calibration factor.

    Attributes:
        cf_cps_per_mbq: counts per second per MBq.
        relative_uncertainty: standard uncertainty of CF over CF.
        mean_activity_mbq: activity in the field of view averaged over the acquisition.
    """

    cf_cps_per_mbq: float
    relative_uncertainty: float
    mean_activity_mbq: float


def mean_activity_during_scan_mbq(
    *,
    activity_mbq: float,
    activity_reference: datetime,
    scan_start: datetime,
    acquisition_duration_s: float,
    nuclide: Nuclide = LU177,
) -> float:
    """Dose-calibrator activity decayed to the scan start, then averaged over the acquisition."""
    decay_per_s = nuclide.decay_constant_per_h / SECONDS_PER_HOUR
    elapsed_s = (scan_start - activity_reference).total_seconds()
    at_start_mbq = activity_mbq * math.exp(-decay_per_s * elapsed_s)
    decay_during_scan = decay_per_s * acquisition_duration_s
    averaging = (
        -math.expm1(-decay_during_scan) / decay_during_scan if decay_during_scan > 0 else 1.0
    )
    return at_start_mbq * averaging


def calibration_factor(
    *,
    total_counts: float,
    acquisition_duration_s: float,
    activity_mbq: float,
    activity_reference: datetime,
    scan_start: datetime,
    activity_relative_uncertainty: float,
    nuclide: Nuclide = LU177,
) -> CalibrationFactorResult:
    """CF with its uncertainty; see the module docstring.

    Raises:
        ValueError: non-positive counts, duration or activity.
    """
    if total_counts <= 0 or acquisition_duration_s <= 0 or activity_mbq <= 0:
        raise ValueError(
            "counts, acquisition duration and activity must be > 0, got "
            f"{total_counts}, {acquisition_duration_s} s, {activity_mbq} MBq"
        )
    mean_activity = mean_activity_during_scan_mbq(
        activity_mbq=activity_mbq,
        activity_reference=activity_reference,
        scan_start=scan_start,
        acquisition_duration_s=acquisition_duration_s,
        nuclide=nuclide,
    )
    return CalibrationFactorResult(
        cf_cps_per_mbq=total_counts / (acquisition_duration_s * mean_activity),
        relative_uncertainty=math.sqrt(1.0 / total_counts + activity_relative_uncertainty**2),
        mean_activity_mbq=mean_activity,
    )
