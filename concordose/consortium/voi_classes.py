"""VOI classes of the cohort tables: each organ by name, lesions by volume bin.

The bins are those of issue 14 (item 4: lesions < 4, 4–20, > 20 mL); no paper is cited for them.
They separate lesions by how strongly partial-volume effects bias their activity at SPECT
resolution, which is where simplified and reference methods are expected to differ most.

Boundaries: a lesion of exactly 4 mL or exactly 20 mL falls in the middle bin
(``4 <= V <= 20``); below 4 mL is ``lesion_lt_4ml``, above 20 mL ``lesion_gt_20ml``. A lesion
whose volume is unknown (no published ``voi_timepoints`` row) is ``lesion_unknown_volume``.
This module is the one home of these numbers and labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from concordose.dicom.seg import VoiType


@dataclass(frozen=True)
class LesionVolumeBin:
    """A lesion volume bin: ``lower_ml <= V`` (or ``<``) and ``V <= upper_ml`` (or ``<``)."""

    label: str
    lower_ml: float
    upper_ml: float
    lower_included: bool
    upper_included: bool


LESION_VOLUME_BINS: tuple[LesionVolumeBin, ...] = (
    LesionVolumeBin("lesion_lt_4ml", 0.0, 4.0, lower_included=True, upper_included=False),
    LesionVolumeBin("lesion_4_20ml", 4.0, 20.0, lower_included=True, upper_included=True),
    LesionVolumeBin("lesion_gt_20ml", 20.0, np.inf, lower_included=False, upper_included=False),
)
"""Lesion volume bins in mL, in order (issue 14, item 4)."""

LESION_UNKNOWN_VOLUME = "lesion_unknown_volume"
"""Class of a lesion without a known volume."""


def voi_classes(
    voi_types: npt.ArrayLike, voi_labels: npt.ArrayLike, volume_ml: npt.ArrayLike
) -> npt.NDArray[np.str_]:
    """The VOI class of each VOI: an organ's label, a lesion's volume bin.

    Args:
        voi_types: ``organ`` or ``lesion`` per VOI.
        voi_labels: VOI labels as segmented (an organ's class).
        volume_ml: VOI volumes, mL (NaN when unknown; only lesions use it).

    Raises:
        ValueError: the arrays differ in length, or a VOI type is neither organ nor lesion.
    """
    types = np.asarray(voi_types, dtype=str)
    labels = np.asarray(voi_labels, dtype=object)
    volumes = np.asarray(volume_ml, dtype=np.float64)
    if not types.shape == labels.shape == volumes.shape:
        raise ValueError(
            f"VOI classes: expected one type, label and volume per VOI, found {types.size} "
            f"types, {labels.size} labels, {volumes.size} volumes"
        )
    known = {str(VoiType.ORGAN), str(VoiType.LESION)}
    unknown = sorted(set(types.tolist()) - known)
    if unknown:
        raise ValueError(f"VOI classes: expected VOI types {sorted(known)}, found {unknown}")
    lesion_class = np.full(types.shape, LESION_UNKNOWN_VOLUME, dtype=object)
    for volume_bin in LESION_VOLUME_BINS:
        above = (
            volumes >= volume_bin.lower_ml
            if volume_bin.lower_included
            else volumes > volume_bin.lower_ml
        )
        below = (
            volumes <= volume_bin.upper_ml
            if volume_bin.upper_included
            else volumes < volume_bin.upper_ml
        )
        lesion_class[above & below] = volume_bin.label
    classes = np.where(types == str(VoiType.ORGAN), labels, lesion_class)
    return np.asarray(classes, dtype=str)
