"""Whole-body tumour dose (issue 20, item 4): total tumour volume and mean absorbed dose from a
voxel dose map thresholded at a dose, minus the organs of physiological uptake.

Violet et al. (J Nucl Med 2019;60:517-23) reported a *whole-body* tumour dose for
[177Lu]Lu-PSMA-617 from post-therapy SPECT/CT dose maps: every tumour deposit counted, not a
few index lesions, with normal organs of physiological uptake excluded; it correlated with PSA
response. Here the deposits are the voxels of a cycle's dose map at or above a threshold
(:data:`WHOLE_BODY_TUMOUR_THRESHOLD_GY`, 5 Gy, configurable per site protocol:
``voxel_dosimetry.whole_body_tumour_threshold_gy``), minus every organ VOI the cycle has
(kidneys, liver, spleen, salivary glands, bladder… whichever are segmented) dilated by a margin
(:data:`ORGAN_EXCLUSION_MARGIN_MM`, 10 mm: about the FWHM of a Lu-177 SPECT (site PSFs in
``calibration/psf.py``), so an organ's spill-out into its surroundings is not counted as
tumour; ``voxel_dosimetry.whole_body_tumour_margin_mm``).

Assumptions: the map is on the first SPECT grid at unit density (the dose maps' own grid, as
the voxel fits), so volume = voxels × voxel volume and mass-weighted = voxel-weighted; every
hot voxel outside the organs is tumour (a non-segmented organ of physiological uptake, or a
bladder not segmented, counts as tumour: segment it to exclude it); a lesion within the margin
of an organ is lost (``lesion_voi_recovered_ml`` shows how much of the segmented lesions the
threshold kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.ndimage import distance_transform_edt

WHOLE_BODY_TUMOUR_THRESHOLD_GY = 5.0
"""Default dose threshold of a tumour voxel, Gy (issue 20, after Violet et al. 2019)."""
ORGAN_EXCLUSION_MARGIN_MM = 10.0
"""Default margin organ VOIs are dilated by before exclusion, mm (module docstring)."""
WHOLE_BODY_TUMOUR_METHOD = "dose_threshold_minus_organs"
"""Name of the method (published with its threshold and margin)."""


@dataclass(frozen=True)
class WholeBodyTumourDose:
    """Whole-body tumour dose of one dose map.

    Attributes:
        threshold_gy: dose threshold applied, Gy.
        margin_mm: organ dilation margin, mm.
        excluded_organs: labels of the organ VOIs excluded.
        n_voxels: tumour voxels (≥ threshold, outside the dilated organs).
        volume_ml: their total volume, mL.
        mean_dose_gy: their mean dose, Gy (NaN when there is none).
        max_dose_gy: their highest dose, Gy (NaN when there is none).
        excluded_volume_ml: voxels ≥ threshold removed as organ or margin, mL.
        lesion_voi_volume_ml: volume of the cycle's lesion VOIs on the same grid, mL.
        lesion_voi_recovered_ml: tumour volume inside the lesion VOIs, mL.
    """

    threshold_gy: float
    margin_mm: float
    excluded_organs: tuple[str, ...]
    n_voxels: int
    volume_ml: float
    mean_dose_gy: float
    max_dose_gy: float
    excluded_volume_ml: float
    lesion_voi_volume_ml: float
    lesion_voi_recovered_ml: float


def dilated(
    mask: npt.NDArray[np.bool_], spacing_mm: tuple[float, float, float], margin_mm: float
) -> npt.NDArray[np.bool_]:
    """``mask`` grown by ``margin_mm`` (Euclidean distance in mm between voxel centres, with
    anisotropic ``spacing_mm`` in the array's axis order)."""
    if margin_mm <= 0 or not mask.any():
        return mask.copy()
    distance = distance_transform_edt(~mask, sampling=spacing_mm)
    grown: npt.NDArray[np.bool_] = np.asarray(distance <= margin_mm)
    return grown


def whole_body_tumour_dose(
    dose_gy: npt.NDArray[np.floating],
    spacing_mm: tuple[float, float, float],
    organ_masks: Sequence[npt.NDArray[np.bool_]],
    *,
    organ_labels: Sequence[str] = (),
    lesion_masks: Sequence[npt.NDArray[np.bool_]] = (),
    threshold_gy: float = WHOLE_BODY_TUMOUR_THRESHOLD_GY,
    margin_mm: float = ORGAN_EXCLUSION_MARGIN_MM,
) -> WholeBodyTumourDose:
    """Total tumour volume and mean dose of ``dose_gy`` (module docstring).

    Args:
        dose_gy: (z, y, x) absorbed dose per voxel, Gy (NaN voxels are not tumour).
        spacing_mm: voxel size in the array's axis order, mm.
        organ_masks: each organ VOI's mask on the same grid (excluded after dilation).
        organ_labels: their labels (recorded).
        lesion_masks: the lesion VOIs on the same grid (for the comparison columns only).
        threshold_gy: a tumour voxel's lowest dose, Gy.
        margin_mm: the organs' dilation, mm.
    """
    dose = np.asarray(dose_gy, dtype=np.float64)
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    hot = np.isfinite(dose) & (dose >= threshold_gy)
    excluded = np.zeros(dose.shape, dtype=bool)
    for mask in organ_masks:
        excluded |= mask
    excluded = dilated(excluded, spacing_mm, margin_mm)
    tumour = hot & ~excluded
    lesions = np.zeros(dose.shape, dtype=bool)
    for mask in lesion_masks:
        lesions |= mask
    n = int(tumour.sum())
    values = dose[tumour]
    return WholeBodyTumourDose(
        threshold_gy=threshold_gy,
        margin_mm=margin_mm,
        excluded_organs=tuple(organ_labels),
        n_voxels=n,
        volume_ml=n * voxel_ml,
        mean_dose_gy=float(values.mean()) if n else float("nan"),
        max_dose_gy=float(values.max()) if n else float("nan"),
        excluded_volume_ml=float((hot & excluded).sum()) * voxel_ml,
        lesion_voi_volume_ml=float(lesions.sum()) * voxel_ml,
        lesion_voi_recovered_ml=float((tumour & lesions).sum()) * voxel_ml,
    )
