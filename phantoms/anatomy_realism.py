"""Anatomy realism of the digital consortium (issue 15, item 3): the switch and what it does.

``Realism(anatomy_realism=True)`` (:class:`phantoms.consortium.Realism`; off by default, so
existing files stay byte for byte the same; the ``realistic`` imaging mode turns it on) makes
three changes, each in its own module:

1. lesions are irregular (lobulated) and heterogeneous (:mod:`phantoms.lesion_shapes`), drawn
   per patient from a seed stream of their own (:func:`phantoms.virtual_patient.
   draw_virtual_patient`), site-independent;
2. the activity of the liver, spleen, kidneys and hepatic lesions is blurred cranio-caudally by
   free breathing (:mod:`phantoms.respiratory_motion`) before image formation; the CT, label
   maps and SEG are not;
3. each site's SEG carries the VOIs its own segmentation rule gives
   (:mod:`phantoms.segmentation_rules`, ``SiteProfile.segmentation``).

The truth is unchanged in meaning: each region's true activity (the exact sum of the activity
map over its voxels before motion and resolution) and its true volume on the site's SPECT grid.

:func:`realistic_activity_map` is the one step the image formation calls (items 1 and 2).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from concordose.phantoms.anatomy import Anatomy
from concordose.phantoms.grid import VoxelGrid
from concordose.phantoms.lesion_shapes import IrregularLesion, heterogeneous_lesion_activity
from concordose.phantoms.respiratory_motion import (
    motion_averaged_activity,
    respiratory_amplitudes_mm,
)


def realistic_activity_map(
    activity_mbq: NDArray[np.float64],
    labels: NDArray[np.uint8],
    anatomy: Anatomy,
    grid: VoxelGrid,
    *,
    respiratory_motion: bool = True,
) -> NDArray[np.float64]:
    """The activity the camera sees: lesion uptake made heterogeneous, then motion-averaged.

    Args:
        activity_mbq: activity per voxel at acquisition time, MBq, uniform per region
            (:func:`phantoms.imaging.region_activity_map` of ``labels``).
        labels: the label map ``activity_mbq`` was made from.
        anatomy: the patient's anatomy (irregular lesions carry their uptake pattern).
        grid: the grid ``labels`` was sampled on (patient frame, shifts included).
        respiratory_motion: whether to apply the breathing blur (tests isolate the lesions).

    Returns:
        a new map with every region's total unchanged (to ≤ 1e-12 relative).
    """
    lesions = {
        voi.value: voi.shape for voi in anatomy.vois if isinstance(voi.shape, IrregularLesion)
    }
    result = heterogeneous_lesion_activity(
        activity_mbq, labels, lesions, grid.axis_coordinates_mm()
    )
    if respiratory_motion:
        amplitudes = respiratory_amplitudes_mm(anatomy)
        result = motion_averaged_activity(
            result,
            labels,
            {voi.value: amplitudes[voi.label] for voi in anatomy.vois if voi.label in amplitudes},
            voxel_mm_z=grid.spacing_mm_zyx[0],
        )
    return result


__all__ = ["realistic_activity_map"]
