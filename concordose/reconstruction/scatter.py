"""The photopeak window's scatter and a site's correction of it inside OSEM, as the platform
models them.

A site's Lu-177 photopeak window holds scatter as well as primary photons; the site corrects it
with an estimate (TEW, a scatter window, a Monte Carlo model) added to OSEM's forward model.
That additive term changes the image beyond removing the scatter: at clinical iterations OSEM
fills cold and faint regions more slowly when a broad additive background sits in the
denominator of its update, so a cold region keeps more of its surroundings' activity than the
same reconstruction of scatter-free data. It shows where no activity is: the NEMA IEC phantom's
cold lung insert. Digital consortium, milan, noise-free, lung core over background: 0.220 with
no scatter in the model, 0.257 with the window's scatter exactly corrected, 0.257 with ten per
cent of it left (DESIGN.md, "Scatter in the system model"). So it is the amount of scatter the
site corrects, not what its correction leaves, that the lung insert measures.

Model (per view, in the detector plane): the window's scatter is s = k · G_w ⊛ p, with p the
primary projection (attenuated, through the collimator response), G_w a normalised 2-D Gaussian
of FWHM w and k the scatter-to-primary ratio; the site's data are p + s and its reconstruction
adds (1 − f) · s to the forward model, f the share its estimate misses. The model stays
homogeneous of degree 1 in the activity (what the perturbation GTM relies on). k is fitted per
site on its NEMA phantom (:func:`concordose.calibration.scatter.fit_scatter_to_primary`);
w and f are assumptions (:data:`SCATTER_KERNEL_FWHM_MM`; f = 0, an exact correction — the lung
insert barely sees f). One kernel for every view and depth, independent of the object, is the
model's simplification: a real scatter distribution depends on both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from concordose.reconstruction.projector import FWHM_PER_SIGMA

FloatArray = NDArray[np.float64]

SCATTER_KERNEL_FWHM_MM = 60.0
"""FWHM w of the scatter's spread in the detector plane, mm (an assumption: several cm, the
order of a Lu-177 photopeak-window scatter kernel in water; the digital consortium uses the
same, ``phantoms/acquisition.py``, so there the kernel's shape is not tested, only k's fit)."""


@dataclass(frozen=True)
class ScatterCorrection:
    """The photopeak window's scatter and the site's correction of it inside OSEM.

    Attributes:
        scatter_to_primary: k, the window's scatter counts per primary count (≥ 0).
        residual_fraction: f, the share of the scatter the site's estimate misses (0: exact;
            negative: it over-subtracts), in (−1, 1).
        kernel_fwhm_mm: w, FWHM of the scatter's spread in the detector plane, mm.
    """

    scatter_to_primary: float
    residual_fraction: float = 0.0
    kernel_fwhm_mm: float = SCATTER_KERNEL_FWHM_MM

    def __post_init__(self) -> None:
        if not self.scatter_to_primary >= 0.0:
            raise ValueError(
                f"scatter-to-primary ratio: expected ≥ 0, found {self.scatter_to_primary}"
            )
        if not -1.0 < self.residual_fraction < 1.0:
            raise ValueError(
                f"scatter residual fraction: expected in (−1, 1), found {self.residual_fraction}"
            )
        if not self.kernel_fwhm_mm > 0.0:
            raise ValueError(f"scatter kernel FWHM: expected > 0 mm, found {self.kernel_fwhm_mm}")

    def window_scatter(self, primary: FloatArray, voxel_mm: float) -> FloatArray:
        """The window's scatter s for ``primary`` projections ([view, row, column], bins of
        ``voxel_mm``): the site's data are ``primary + s``, its estimate
        ``(1 − residual_fraction) · s``."""
        sigma_bins = self.kernel_fwhm_mm / FWHM_PER_SIGMA / voxel_mm
        spread: FloatArray = self.scatter_to_primary * ndimage.gaussian_filter(
            primary, sigma=(0.0, sigma_bins, sigma_bins), mode="constant", truncate=4.0
        )
        return spread


__all__ = ["SCATTER_KERNEL_FWHM_MM", "ScatterCorrection"]
