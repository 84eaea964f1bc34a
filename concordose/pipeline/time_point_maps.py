"""Activity maps of every time point of a cycle on one grid: the input of voxel kinetics.

The reference grid is the first time point's SPECT grid. Each time point's activity map (counts
→ MBq with the site's calibration) is resampled onto it through that time point's registration
(:func:`concordose.pipeline.alignment.align_time_points`): a reference voxel centre ``p`` (first
SPECT, in the VOIs' frame once the first time point's own alignment is applied) is mapped to the
first CT, then by the time point's rigid registration (first CT → its own CT, whose frame its
SPECT shares) into its SPECT, where the activity is read.

Resampling (SimpleITK ``Resample``, linear): the *concentration* (MBq/mL = activity / voxel
volume) is interpolated, then multiplied by the reference voxel volume, so that grids of
different voxel sizes compose. Linear interpolation smooths slightly and does not conserve the
total exactly; the map is then scaled so that its total equals the source map's total
(activity-conserving normalisation). That assumes the activity lies inside both fields of view
(true for a whole-body-centred SPECT shifted by a few mm); the factor applied is recorded per
time point (``conservation_factor``), and a factor far from 1 flags activity moved out of the
reference field of view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from concordose.calibration.registry import CalibrationRecord
from concordose.dicom.geometry import VolumeGeometry
from concordose.pipeline.alignment import TimePointAlignment, align_time_points
from concordose.pipeline.assembly import CycleStudy
from concordose.pipeline.time_point_activity import time_point_activity_mbq

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TimePointMaps:
    """Activity maps of one cycle, registered onto the first time point's SPECT grid.

    Attributes:
        time_h: (t,) hours after injection.
        activity_mbq: (t, slices, rows, columns) activity per voxel at acquisition time, MBq
            (not decay corrected), on ``geometry``.
        geometry: the reference grid (first time point's SPECT).
        conservation_factor: (t,) total of the source map / total after interpolation, the
            factor applied (1 for the first time point, which is not resampled).
        alignments: the registrations used, per time point.
    """

    time_h: FloatArray
    activity_mbq: FloatArray
    geometry: VolumeGeometry
    conservation_factor: FloatArray
    alignments: tuple[TimePointAlignment, ...]


def _to_reference_transform(
    reference: TimePointAlignment, point: TimePointAlignment
) -> sitk.Transform | None:
    """Maps reference-SPECT points to ``point``'s SPECT points (None: identity)."""
    if reference.registration is None and point.registration is None:
        return None
    composite = sitk.CompositeTransform(3)
    # ITK applies a composite's transforms last-added first: reference SPECT → first CT, then
    # first CT → this time point's CT (= its SPECT's frame).
    if point.registration is not None:
        composite.AddTransform(point.registration.transform)
    if reference.registration is not None:
        composite.AddTransform(reference.mask_transform())
    return composite


def resample_activity(
    activity_mbq: FloatArray,
    source: VolumeGeometry,
    reference: VolumeGeometry,
    transform: sitk.Transform | None,
) -> tuple[FloatArray, float]:
    """``activity_mbq`` on ``source`` resampled onto ``reference`` through ``transform``
    (reference points → source points); returns the map and the conservation factor applied.

    Raises:
        ValueError: the source map's shape does not match its geometry.
    """
    concentration = source.to_sitk(activity_mbq / source.voxel_volume_ml)
    grid = reference.to_sitk(np.zeros(reference.shape, dtype=np.uint8))
    resampled = sitk.Resample(
        concentration,
        grid,
        transform or sitk.Transform(),
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat64,
    )
    moved: FloatArray = sitk.GetArrayFromImage(resampled) * reference.voxel_volume_ml
    source_total = float(activity_mbq.sum())
    moved_total = float(moved.sum())
    factor = source_total / moved_total if moved_total > 0 else 1.0
    moved *= factor
    return moved, factor


def registered_activity_maps(
    cycle: CycleStudy,
    calibration: CalibrationRecord,
    alignments: Sequence[TimePointAlignment] | None = None,
) -> TimePointMaps:
    """Every time point's activity map on the first time point's SPECT grid.

    Args:
        cycle: the cycle (time points ordered by time).
        calibration: the site's calibration record.
        alignments: per time point (default: :func:`align_time_points` of ``cycle``, which
            registers each CT outside the VOIs' frame of reference).

    Raises:
        UnreadableDicomError, StudyIncompleteError: from the readers and the alignment.
    """
    aligned = tuple(alignments) if alignments is not None else tuple(align_time_points(cycle))
    if len(aligned) != len(cycle.time_points):
        raise ValueError(
            f"{len(aligned)} alignments for {len(cycle.time_points)} time points of "
            f"{cycle.patient_id}; expected one per time point"
        )
    reference = cycle.time_points[0].acquisition.geometry
    maps = np.empty((len(cycle.time_points), *reference.shape), dtype=np.float64)
    factors = np.ones(len(cycle.time_points))
    for index, point in enumerate(cycle.time_points):
        acquisition = point.acquisition
        activity, _counts = time_point_activity_mbq(acquisition, calibration)
        transform = _to_reference_transform(aligned[0], aligned[index])
        if index == 0 or (transform is None and acquisition.geometry == reference):
            maps[index] = activity
            continue
        maps[index], factors[index] = resample_activity(
            activity, acquisition.geometry, reference, transform
        )
    return TimePointMaps(
        time_h=np.array([p.time_h for p in cycle.time_points], dtype=np.float64),
        activity_mbq=maps,
        geometry=reference,
        conservation_factor=factors,
        alignments=aligned,
    )
