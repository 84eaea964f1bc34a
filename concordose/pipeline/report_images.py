"""A cycle's image products for its report (:mod:`concordose.report.images`): the registered
activity maps of every time point and the VOIs on the first time point's SPECT grid, reduced to
coronal MIPs and projected outlines.

It reads the time points' images again (the quantification keeps VOI sums only) and reuses the
quantification's registrations, so the outlines sit where the activity was measured.
"""

from __future__ import annotations

from collections.abc import Sequence

from concordose.calibration.registry import CalibrationRecord
from concordose.dicom.seg import VoiMask
from concordose.dose.voxel_dosimetry import LesionDoseSlice
from concordose.pipeline.alignment import TimePointAlignment
from concordose.pipeline.assembly import CycleStudy
from concordose.pipeline.time_point_maps import registered_activity_maps
from concordose.quant.voi import resample_vois
from concordose.report.images import CycleImages, cycle_images

__all__ = ["cycle_report_images"]


def cycle_report_images(
    cycle: CycleStudy,
    calibration: CalibrationRecord,
    alignments: Sequence[TimePointAlignment],
    vois: Sequence[VoiMask],
    lesion_slices: Sequence[LesionDoseSlice] = (),
) -> CycleImages:
    """MIPs of every time point's activity with the VOIs' projected masks, and the voxel
    dosimetry's dose-map slice through each lesion.

    Args:
        cycle: the assembled cycle.
        calibration: the record the cycle was quantified with.
        alignments: the quantification's registrations (``CycleTimeActivity.alignments``).
        vois: the cycle's VOIs as read once by the preparation.
        lesion_slices: ``CycleVoxelDose.lesion_slices`` (none without voxel dosimetry).

    Raises:
        UnreadableDicomError, StudyIncompleteError: from the readers.
    """
    maps = registered_activity_maps(cycle, calibration, alignments)
    on_maps = resample_vois(vois, maps.geometry, alignments[0].mask_transform())
    sx, sy, sz = maps.geometry.spacing_mm
    return cycle_images(
        maps.time_h,
        maps.activity_mbq,
        (float(sz), float(sy), float(sx)),
        voi_masks=on_maps.masks,
        voi_labels=on_maps.labels,
        dose_slices=lesion_slices,
    )
