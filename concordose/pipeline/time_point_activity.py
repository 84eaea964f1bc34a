"""A time point's activity map in MBq per voxel: counts through the site's calibration factor,
or a vendor-quantified image (Units BQML) through its own Bq/mL (the gate has then checked the
vendor calibration against the site's phantom instead of applying a CF)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from concordose.calibration.records import CalibrationRecord
from concordose.dicom.nm import NMAcquisition, read_nm_bq_per_ml, read_nm_counts
from concordose.quant.activity import bq_per_ml_to_activity_mbq, counts_to_activity_mbq


def time_point_activity_mbq(
    acquisition: NMAcquisition, calibration: CalibrationRecord
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
    """(activity per voxel in MBq, reconstructed counts per voxel or ``None`` when the image
    holds no counts, i.e. a vendor-quantified Bq/mL image).

    Raises:
        StudyIncompleteError: counts without a known acquisition duration.
        UnreadableDicomError: pixel data missing or undecodable.
    """
    if acquisition.is_vendor_quantitative:
        activity = bq_per_ml_to_activity_mbq(
            read_nm_bq_per_ml(acquisition),
            voxel_volume_ml=acquisition.geometry.voxel_volume_ml,
        )
        return activity, None
    counts = np.asarray(read_nm_counts(acquisition), dtype=np.float64)
    activity = counts_to_activity_mbq(
        counts,
        calibration_factor_cps_per_mbq=calibration.calibration_factor_cps_per_mbq,
        acquisition_duration_s=acquisition.acquisition_duration_s,
        source=f"NM file {acquisition.path}",
    )
    return activity, counts
