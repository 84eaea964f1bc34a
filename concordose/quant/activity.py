"""Counts to activity with a site's calibration factor.

A reconstructed SPECT voxel holds counts accumulated over the whole acquisition. With a
calibration factor CF (cps/MBq, measured on the same camera, collimator, window and
reconstruction) the activity present *during the acquisition* is

    A [MBq] = counts / (CF [cps/MBq] · T_acq [s])

No decay correction is applied: the result is the activity at acquisition time, which is what a
time-activity curve needs (the physical decay is part of the effective clearance).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from concordose.errors import StudyIncompleteError


def counts_to_activity_mbq(
    counts: npt.NDArray[np.float64],
    *,
    calibration_factor_cps_per_mbq: float,
    acquisition_duration_s: float | None,
    source: str = "image",
) -> npt.NDArray[np.float64]:
    """Activity per voxel in MBq from reconstructed counts.

    Args:
        counts: counts per voxel (any shape).
        calibration_factor_cps_per_mbq: the site's CF, > 0.
        acquisition_duration_s: total acquisition time T_acq (s), > 0.
        source: what the counts are, for error messages.

    Raises:
        StudyIncompleteError: acquisition duration missing or not positive.
    """
    if acquisition_duration_s is None or acquisition_duration_s <= 0:
        raise StudyIncompleteError(
            f"{source}: acquisition duration unknown (RotationInformationSequence "
            "ActualFrameDuration × NumberOfFramesInRotation); cannot convert counts to activity"
        )
    if calibration_factor_cps_per_mbq <= 0:
        raise ValueError(
            f"calibration factor must be > 0 cps/MBq, got {calibration_factor_cps_per_mbq}"
        )
    return counts / (calibration_factor_cps_per_mbq * acquisition_duration_s)
