"""A time point's attenuation map on its SPECT grid: the CT's HU resampled, μ at 208 keV.

The SPECT and the CT of one time point share a frame of reference (the pipeline groups the CT
slices by it, ``pipeline.assembly``), so the CT is resampled onto the SPECT grid with the
identity: linear interpolation of the HU at each SPECT voxel centre (air, −1000 HU, outside
the CT's field of view), then the bilinear HU → μ model
(:func:`concordose.reconstruction.mu_per_mm_from_hu`). Point sampling, not a voxel average: a
SPECT voxel of 4–5 mm over a CT of 1–3 mm sees the CT's noise (≈ 5–10 HU, < 1 % of μ) and at a
bone edge the value at its centre; the perturbation GTM's responses change little with either.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from concordose.dicom.ct import read_ct_series
from concordose.dicom.geometry import VolumeGeometry
from concordose.reconstruction.attenuation import mu_per_mm_from_hu

AIR_HU = -1000.0
"""HU given to SPECT voxels outside the CT's field of view."""


def attenuation_map_mu_per_mm(
    ct_files: Sequence[Path], geometry: VolumeGeometry
) -> npt.NDArray[np.float64]:
    """μ at 208 keV (/mm) on ``geometry`` (slices, rows, columns) from the CT slices ``ct_files``
    in the same frame of reference.

    Raises:
        StudyIncompleteError, UnreadableDicomError: from :func:`read_ct_series`.
    """
    ct = read_ct_series(ct_files)
    reference = geometry.to_sitk(np.zeros(geometry.shape, dtype=np.float32))
    hu = sitk.Resample(
        ct,
        reference,
        sitk.Transform(),
        sitk.sitkLinear,
        AIR_HU,
        sitk.sitkFloat32,
    )
    return mu_per_mm_from_hu(sitk.GetArrayViewFromImage(hu))
