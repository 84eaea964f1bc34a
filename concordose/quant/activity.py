"""Counts to activity with a site's calibration factor.

A reconstructed SPECT voxel holds counts accumulated over the whole acquisition. With a
calibration factor CF (cps/MBq, measured on the same camera, collimator, window and
reconstruction) the activity present *during the acquisition* is

    A [MBq] = counts / (CF [cps/MBq] · T_acq [s])

No decay correction is applied: the result is the activity at acquisition time, which is what a
time-activity curve needs (the physical decay is part of the effective clearance).

A vendor-quantified SPECT (Units BQML) already holds Bq/mL, from the vendor's own calibration:
A [MBq] = C [Bq/mL] · V_voxel [mL] · 10⁻⁶, no CF (:func:`bq_per_ml_to_activity_mbq`).
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


MBQ_PER_BQ = 1e-6
"""MBq in one Bq (the one home of this conversion)."""


def bq_per_ml_to_activity_mbq(
    concentration_bq_per_ml: npt.NDArray[np.float64], *, voxel_volume_ml: float
) -> npt.NDArray[np.float64]:
    """Activity per voxel in MBq from a vendor-quantified image in Bq/mL (no CF applied).

    Args:
        concentration_bq_per_ml: activity concentration per voxel (any shape).
        voxel_volume_ml: volume of one voxel, mL (> 0).
    """
    if voxel_volume_ml <= 0:
        raise ValueError(f"voxel volume must be > 0 mL, got {voxel_volume_ml}")
    return concentration_bq_per_ml * (voxel_volume_ml * MBQ_PER_BQ)
