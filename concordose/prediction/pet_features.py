"""SUV features of a pre-therapy PET per VOI of the post-therapy segmentation (issue 20, item 3c).

The PET/CT is a session of its own (another day, another frame of reference), so its CT is
registered rigidly onto the CT the VOIs were drawn on with the time points' registration
(:func:`concordose.quant.registration.register_rigid`, mono-modal CT-to-CT; its transform's
convention and inverse as :class:`concordose.pipeline.alignment.TimePointAlignment` applies them),
and the VOI masks are carried onto the PET grid through it by shape-based interpolation
(:func:`concordose.quant.voi.resample_vois`), exactly as onto a later SPECT time point.

Per VOI (Wahl et al., "From RECIST to PERCIST", J Nucl Med 2009;50 Suppl 1:122S–150S):

* SUVmean: mean SUVbw over the VOI's PET voxels;
* SUVmax: the hottest voxel;
* SUVpeak: the highest mean SUV of a 1 mL sphere (1.2 cm diameter, PERCIST) centred on a VOI
  voxel. On a voxel grid the sphere is the voxels whose centres lie within its radius
  (:data:`PEAK_SPHERE_ML` → r = 6.20 mm; 19 voxels = 1.22 mL at 4 mm); the sphere may reach
  outside the VOI (PERCIST places it in the hottest part of the lesion, not within the VOI's
  outline). A VOI with no PET voxel has no features (``None``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from scipy import ndimage

from concordose.dicom.geometry import VolumeGeometry
from concordose.dicom.seg import VoiMask
from concordose.quant.registration import RigidRegistration, register_rigid
from concordose.quant.voi import resample_vois

PEAK_SPHERE_ML = 1.0
"""Volume of the SUVpeak sphere, mL (PERCIST: 1.2 cm diameter, ≈ 1 cm³; Wahl 2009)."""


@dataclass(frozen=True)
class PetVoiFeatures:
    """PET features of one VOI.

    Attributes:
        label, voi_type: the VOI as segmented (``voi_type``: organ or lesion).
        suv_mean, suv_max, suv_peak: SUVbw statistics (module docstring), g/mL.
        volume_ml: the VOI's volume on its segmentation grid (mask voxels × voxel volume), mL.
        n_pet_voxels: PET voxels in the VOI.
    """

    label: str
    voi_type: str
    suv_mean: float
    suv_max: float
    suv_peak: float
    volume_ml: float
    n_pet_voxels: int


def peak_sphere_kernel(
    spacing_mm_zyx: Sequence[float], volume_ml: float = PEAK_SPHERE_ML
) -> npt.NDArray[np.float64]:
    """Normalised kernel of the voxels whose centres lie within the sphere of ``volume_ml``
    (weights sum to 1), for a grid of ``spacing_mm_zyx`` (slice, row, column)."""
    radius_mm = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    half = [math.floor(radius_mm / s) for s in spacing_mm_zyx]
    axes = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing_mm_zyx, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    inside = (x**2 + y**2 + z**2) <= radius_mm**2
    kernel: npt.NDArray[np.float64] = inside.astype(np.float64) / float(inside.sum())
    return kernel


def voi_suv_features(
    suv: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    masks: npt.NDArray[np.bool_],
    spacing_mm_zyx: Sequence[float],
) -> list[tuple[float, float, float, int] | None]:
    """(SUVmean, SUVmax, SUVpeak, voxels) per mask of ``masks`` (VOIs × the SUV image's shape);
    ``None`` for a mask without voxels."""
    peak_map = ndimage.correlate(
        np.asarray(suv, dtype=np.float64), peak_sphere_kernel(spacing_mm_zyx), mode="constant"
    )
    values = np.asarray(suv, dtype=np.float64)
    results: list[tuple[float, float, float, int] | None] = []
    for mask in masks:
        n = int(np.count_nonzero(mask))
        if n == 0:
            results.append(None)
            continue
        results.append(
            (
                float(values[mask].mean()),
                float(values[mask].max()),
                float(peak_map[mask].max()),
                n,
            )
        )
    return results


def register_pet_ct(therapy_ct: sitk.Image, pet_ct: sitk.Image) -> RigidRegistration:
    """Rigid registration of the PET session's CT (moving) onto the CT the VOIs were drawn on
    (fixed): maps VOI-CT points to PET-CT points, the time points' convention."""
    return register_rigid(therapy_ct, pet_ct)


def pet_to_voi_transform(registration: RigidRegistration | None) -> sitk.Transform:
    """Maps PET points to VOI points (what mask resampling needs): the registration's inverse,
    or the identity when the PET shares the VOIs' frame (no registration)."""
    if registration is None:
        return sitk.Transform()
    inverse: sitk.Transform = registration.transform.GetInverse()
    return inverse


def _mask_volume_ml(voi: VoiMask) -> float:
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(voi.mask)))
    return voxels * float(np.prod(voi.mask.GetSpacing())) / 1000.0


def pet_voi_features(
    suv_image: sitk.Image,
    vois: Sequence[VoiMask],
    registration: RigidRegistration | None,
) -> list[PetVoiFeatures]:
    """Each VOI's PET features (module docstring); VOIs with no PET voxel are left out.

    Args:
        suv_image: the PET in SUVbw (:meth:`concordose.dicom.pt.PetSeries.suv_image`).
        vois: the post-therapy segmentation's VOIs (or a PET-only patient's, drawn on the PET's
            own CT: then ``registration`` is ``None``).
        registration: :func:`register_pet_ct`'s result, ``None`` in the VOIs' frame.
    """
    geometry = VolumeGeometry.from_sitk(suv_image)
    voi_set = resample_vois(vois, geometry, pet_to_voi_transform(registration))
    suv = sitk.GetArrayFromImage(suv_image)
    spacing = geometry.spacing_mm
    stats = voi_suv_features(suv, voi_set.masks, (spacing[2], spacing[1], spacing[0]))
    features = []
    for voi, label, voi_type, found in zip(
        vois, voi_set.labels, voi_set.voi_types, stats, strict=True
    ):
        if found is None:
            continue
        suv_mean, suv_max, suv_peak, n = found
        features.append(
            PetVoiFeatures(
                label=label,
                voi_type=str(voi_type),
                suv_mean=suv_mean,
                suv_max=suv_max,
                suv_peak=suv_peak,
                volume_ml=_mask_volume_ml(voi),
                n_pet_voxels=n,
            )
        )
    return features
