"""Respiratory blur of abdominal activity: the time-averaged position of a breathing trace.

A SPECT acquisition lasts 20–30 min over hundreds of breaths, so the activity of organs that move
with the diaphragm is imaged at its time-averaged position; the CT of a SPECT/CT (a breath-hold
or short helical snapshot) and the VOIs drawn on it are not. This module blurs the activity of
the liver, spleen, kidneys and the lesions inside the liver along the cranio-caudal axis (z)
before image formation; the label maps, the CT and the SEG stay un-blurred, as clinically.

Breathing trace (Lujan et al., Med Phys 1999;26:715-720, the cos^{2n} model with n = 2, also
used by Seppenwoolde et al., IJROBP 2002;53:822-834): z(t) = z₀ − b·cos⁴(πt/τ), where z₀ is
the end-exhale position (the anatomy as drawn and as the CT shows it; the trace spends most of
each period near it) and b the peak-to-peak amplitude; inhale moves the organs caudally (−z).
Over a whole number of periods the displacement has mean −3b/8 and variance 17b²/128
(⟨cos⁴⟩ = 3/8, ⟨cos⁸⟩ = 35/128).

Amplitudes: the diaphragm's and liver's cranio-caudal excursion in quiet breathing is of the
order of 10–25 mm (the order of the organ-motion compilation of AAPM TG-76, Keall et al., Med
Phys 2006;33:3874-3900; not re-checked here against its table); we take
:data:`DIAPHRAGM_AMPLITUDE_MM` = 16 mm for the liver (it follows the diaphragm), 0.8 of it for the
spleen, and 0.65 of it for the kidneys (mean kidney/diaphragm tracking factors 0.6–0.7, Song et
al., J Magn Reson Imaging 2011;33:143-148). A modelling choice within the published ranges, the
same for every patient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from concordose.phantoms.anatomy import Anatomy, Ellipsoid, VoiType
from concordose.phantoms.lesion_shapes import IrregularLesion

DIAPHRAGM_AMPLITUDE_MM = 16.0
"""Peak-to-peak cranio-caudal excursion of the diaphragm in quiet breathing, mm (module doc)."""
TRACKING_FACTOR_BY_ORGAN: Mapping[str, float] = {
    "liver": 1.0,
    "spleen": 0.8,
    "kidney_left": 0.65,
    "kidney_right": 0.65,
}
"""Organ excursion / diaphragm excursion (module docstring); lesions inside the liver move
with it. Organs not listed (marrow proxy, body remainder) and extra-hepatic lesions are static."""
TRACE_SAMPLES = 4096
"""Samples of one breathing period (midpoints): exact moments up to cos⁸ and far beyond."""


def cos4_displacements_mm(
    amplitude_mm: float, *, n_samples: int = TRACE_SAMPLES
) -> NDArray[np.float64]:
    """Displacements z(t) − z₀ = −b·cos⁴(πt/τ) at ``n_samples`` equally spaced times over one
    period τ (midpoints), mm: their histogram is the time-averaged position distribution."""
    phase = math.pi * (np.arange(n_samples) + 0.5) / n_samples
    displacements: NDArray[np.float64] = -amplitude_mm * np.cos(phase) ** 4
    return displacements


def displacement_kernel(
    amplitude_mm: float, voxel_mm: float, *, n_samples: int = TRACE_SAMPLES
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Integer slice offsets and weights (sum 1) of the time-averaged displacement along z.

    Each sampled displacement d (mm) is split between the two slices around d/voxel_mm, linearly
    (weight 1 − f on ⌊d/voxel⌋, f on the next), so the kernel's mean is exactly the trace's mean
    displacement (−3b/8); its variance is the trace's 17b²/128 plus the splitting's mean f(1 − f)
    voxel² (≤ voxel²/4).

    Raises:
        ValueError: when the amplitude is negative or the voxel not positive.
    """
    if amplitude_mm < 0.0 or voxel_mm <= 0.0:
        raise ValueError(
            f"need amplitude_mm >= 0 and voxel_mm > 0; got {amplitude_mm} and {voxel_mm}"
        )
    shifts = cos4_displacements_mm(amplitude_mm, n_samples=n_samples) / voxel_mm
    lower = np.floor(shifts).astype(np.int64)
    fraction = shifts - lower
    first = int(lower.min())
    weights = np.bincount(lower - first, weights=1.0 - fraction, minlength=1)
    upper = np.bincount(lower + 1 - first, weights=fraction)
    size = max(weights.size, upper.size)
    total = np.zeros(size)
    total[: weights.size] += weights
    total[: upper.size] += upper
    total /= n_samples
    offsets = np.arange(size, dtype=np.int64) + first
    keep = total > 0.0
    return offsets[keep], total[keep]


def shift_along_z(image: NDArray[np.float64], offset_slices: int) -> NDArray[np.float64]:
    """``image`` ([z, y, x]) moved by ``offset_slices`` along z; what would leave the grid piles
    up in the edge slice (like the ``nearest`` edge mode of the resolution blur), so the total
    is kept exactly."""
    n_slices = image.shape[0]
    offset = max(-(n_slices - 1), min(n_slices - 1, offset_slices))
    moved = np.zeros_like(image)
    if offset >= 0:
        moved[offset:] = image[: n_slices - offset]
        moved[n_slices - 1] += image[n_slices - offset :].sum(axis=0)
    else:
        moved[: n_slices + offset] = image[-offset:]
        moved[0] += image[:-offset].sum(axis=0)
    return moved


def motion_averaged_activity(
    activity_mbq: NDArray[np.float64],
    labels: NDArray[np.uint8],
    amplitude_by_value_mm: Mapping[int, float],
    *,
    voxel_mm_z: float,
) -> NDArray[np.float64]:
    """The activity map as a free-breathing acquisition sees it (module docstring).

    Args:
        activity_mbq: true activity per voxel at end-exhale, MBq, indexed [z, y, x] (+z cranial).
        labels: label map of the same grid (not changed).
        amplitude_by_value_mm: label-map value → peak-to-peak amplitude b, mm; the activity of
            voxels with other values stays where it is.
        voxel_mm_z: slice spacing, mm.

    Returns:
        a new map: each moving region's activity convolved along z with its
        :func:`displacement_kernel`. The total (and each region's total) is kept: activity
        pushed past the first slice stays in it.
    """
    result = activity_mbq.copy()
    by_amplitude: dict[float, list[int]] = {}
    for value, amplitude_mm in amplitude_by_value_mm.items():
        if amplitude_mm > 0.0:
            by_amplitude.setdefault(amplitude_mm, []).append(value)
    for amplitude_mm, values in sorted(by_amplitude.items()):
        moving = np.where(np.isin(labels, values), activity_mbq, 0.0)
        result -= moving
        offsets, weights = displacement_kernel(amplitude_mm, voxel_mm_z)
        for offset, weight in zip(offsets, weights, strict=True):
            result += weight * shift_along_z(moving, int(offset))
    return result


def respiratory_amplitudes_mm(
    anatomy: Anatomy, *, diaphragm_amplitude_mm: float = DIAPHRAGM_AMPLITUDE_MM
) -> dict[str, float]:
    """Peak-to-peak amplitude per moving VOI label, mm: organs by
    :data:`TRACKING_FACTOR_BY_ORGAN`, lesions whose centre lies in the liver with the liver
    (the placement keeps hepatic lesions wholly inside it and the others clear of it)."""
    amplitudes: dict[str, float] = {}
    liver = next((v for v in anatomy.vois if v.label == "liver"), None)
    for voi in anatomy.vois:
        if voi.label in TRACKING_FACTOR_BY_ORGAN:
            amplitudes[voi.label] = TRACKING_FACTOR_BY_ORGAN[voi.label] * diaphragm_amplitude_mm
        elif (
            voi.voi_type is VoiType.LESION
            and liver is not None
            and isinstance(voi.shape, Ellipsoid | IrregularLesion)
        ):
            centre = np.asarray(voi.shape.centre_mm, dtype=np.float64)
            if bool(liver.shape.contains(centre[:1], centre[1:2], centre[2:])[0]):
                amplitudes[voi.label] = TRACKING_FACTOR_BY_ORGAN["liver"] * diaphragm_amplitude_mm
    return amplitudes


__all__ = [
    "DIAPHRAGM_AMPLITUDE_MM",
    "TRACKING_FACTOR_BY_ORGAN",
    "cos4_displacements_mm",
    "displacement_kernel",
    "motion_averaged_activity",
    "respiratory_amplitudes_mm",
    "shift_along_z",
]
