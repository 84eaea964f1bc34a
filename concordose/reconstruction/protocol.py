"""A site's SPECT acquisition and reconstruction, as its protocol records them, and the
noise-free image the platform models through them.

The perturbation-based GTM (:mod:`concordose.quant.perturbation_gtm`) needs to know how a site
forms its images: the camera (collimator, radius of rotation), the orbit's views and the OSEM
(iterations, subsets, resolution modelling, post-filter). A site records them once in its
protocol (``reconstruction:`` in ``schemas/protocols/<site>.yaml``, :class:`SiteReconstruction`);
they are the numbers of the site's clinical reconstruction, as on its camera's protocol sheet.

What :class:`ReconstructionModel` models: attenuation (μ at 208 keV from the CT), the
depth-dependent collimator-detector response, a circular orbit, OSEM with the site's settings,
its Gaussian post-filter; optionally the photopeak window's scatter and the site's correction
of it inside OSEM, its amount calibrated on the site's NEMA phantom
(:class:`concordose.reconstruction.scatter.ScatterCorrection`). What it does not: dead time,
septal penetration, a body-contour orbit, a vendor's own resolution model, a depth- or
object-dependent scatter — where a site's reconstruction differs in these,
the transfer matrix carries that difference as error.
"""

from __future__ import annotations

import copy
import math

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from concordose.reconstruction.camera import (
    COLLIMATORS,
    DEAD_TIME_PARALYSABLE_S,
    INTRINSIC_FWHM_208KEV_MM,
    CameraModel,
    CollimatorName,
)
from concordose.reconstruction.osem import osem
from concordose.reconstruction.projector import FWHM_PER_SIGMA, ProjectionGeometry, SpectProjector
from concordose.reconstruction.scatter import ScatterCorrection

FloatArray = NDArray[np.float64]

ISOTROPY_TOLERANCE = 1e-3
"""Largest relative difference between voxel edges for a grid to count as isotropic (the
projector's detector bins are the voxel's edge)."""


class SiteReconstruction(BaseModel):
    """A site's SPECT acquisition and OSEM reconstruction (``reconstruction:`` protocol key).

    Attributes:
        collimator: the collimator's hole geometry, a key of
            :data:`concordose.reconstruction.camera.COLLIMATORS` (``ge_megp``: GE MEGP;
            ``siemens_me``: Siemens ME, sold as "MELP" and labelled "MEGP" by some sites).
        radius_of_rotation_mm: circular orbit, rotation axis to collimator face, mm.
        n_views: views over 360° (both heads together).
        iterations: OSEM iterations.
        subsets: OSEM subsets (≤ ``n_views``).
        resolution_recovery: whether the reconstruction models the collimator-detector response.
        post_filter_fwhm_mm: FWHM of the Gaussian post-filter, mm (0: none).
        intrinsic_fwhm_mm: the camera's intrinsic resolution at 208 keV, mm (default: 3.8 mm at
            140 keV for a 3/8" crystal scaled by E^−½, :mod:`concordose.reconstruction.camera`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    collimator: CollimatorName
    radius_of_rotation_mm: float = Field(gt=0)
    n_views: int = Field(ge=2)
    iterations: int = Field(ge=1)
    subsets: int = Field(ge=1)
    resolution_recovery: bool
    post_filter_fwhm_mm: float = Field(default=0.0, ge=0)
    intrinsic_fwhm_mm: float = Field(default=INTRINSIC_FWHM_208KEV_MM, gt=0)

    def camera(self) -> CameraModel:
        """The camera these settings describe (dead time: the library's τ; it is not modelled
        in :class:`ReconstructionModel`)."""
        return CameraModel(
            collimator=COLLIMATORS[self.collimator],
            intrinsic_fwhm_mm=self.intrinsic_fwhm_mm,
            radius_of_rotation_mm=self.radius_of_rotation_mm,
            dead_time_s=DEAD_TIME_PARALYSABLE_S,
        )


def isotropic_voxel_mm(spacing_mm_zyx: tuple[float, float, float]) -> float:
    """The edge of an isotropic voxel, mm.

    Raises:
        ValueError: the voxel is not isotropic (within :data:`ISOTROPY_TOLERANCE`).
    """
    edge = float(spacing_mm_zyx[2])
    if any(not math.isclose(float(s), edge, rel_tol=ISOTROPY_TOLERANCE) for s in spacing_mm_zyx):
        raise ValueError(
            f"the projector needs isotropic voxels; found spacing (z, y, x) {spacing_mm_zyx} mm"
        )
    return edge


class ReconstructionModel:
    """Noise-free images of activity maps through one site's acquisition and OSEM, on one grid.

    The projector (per view: rotation, attenuation, CDR) is built once, so every image after
    the first costs one OSEM. The image is linear in scale (OSEM without an additive term is
    scale-equivariant, also with an additive scatter estimate proportional to the data): feed
    concentrations, get the concentrations the site's image would show.

    Args:
        reconstruction: the site's settings.
        mu_per_mm: μ at 208 keV on the image grid, /mm ([z, y, x]).
        spacing_mm_zyx: the grid's voxel size (must be isotropic).
        scatter: the window's scatter and the site's correction of it (from its calibration
            record), or None: scatter-free data.

    Raises:
        ValueError: anisotropic voxels.
    """

    def __init__(
        self,
        reconstruction: SiteReconstruction,
        mu_per_mm: FloatArray,
        spacing_mm_zyx: tuple[float, float, float],
        *,
        scatter: ScatterCorrection | None = None,
    ) -> None:
        self.reconstruction = reconstruction
        self.scatter = scatter
        self.voxel_mm = isotropic_voxel_mm(spacing_mm_zyx)
        shape = (int(mu_per_mm.shape[0]), int(mu_per_mm.shape[1]), int(mu_per_mm.shape[2]))
        geometry = ProjectionGeometry(
            shape_zyx=shape,
            voxel_mm=self.voxel_mm,
            n_views=reconstruction.n_views,
            radius_of_rotation_mm=reconstruction.radius_of_rotation_mm,
        )
        self.projector = SpectProjector(
            geometry, mu_per_mm=mu_per_mm, camera=reconstruction.camera()
        )

    def with_scatter(self, scatter: ScatterCorrection | None) -> ReconstructionModel:
        """The same reconstruction on the same grid (the projector shared, not rebuilt) with
        another scatter model, e.g. the calibrated ratio one SD higher."""
        other = copy.copy(self)
        other.scatter = scatter
        return other

    def image(self, concentration: FloatArray) -> FloatArray:
        """The site's noise-free reconstruction of ``concentration`` (same units, same grid)."""
        # the FFT leaves rounding residue of ±1e-12 around zero: clip before OSEM's ratios
        primary = np.clip(self.projector.forward(concentration), 0.0, None)
        if self.scatter is None:
            return self.reconstruct(primary)
        scatter = self.scatter.window_scatter(primary, self.voxel_mm)
        return self.reconstruct(
            primary + scatter, additive=(1.0 - self.scatter.residual_fraction) * scatter
        )

    def reconstruct(
        self, projections: FloatArray, *, additive: FloatArray | None = None
    ) -> FloatArray:
        """The site's OSEM of ``projections`` (this grid's views), with ``additive`` expected
        counts in its forward model (e.g. a scatter estimate), then its post-filter."""
        settings = self.reconstruction
        image = osem(
            projections,
            self.projector,
            iterations=settings.iterations,
            subsets=min(settings.subsets, settings.n_views),
            resolution_modelling=settings.resolution_recovery,
            additive=additive,
        )
        if settings.post_filter_fwhm_mm > 0.0:
            image = ndimage.gaussian_filter(
                image,
                sigma=settings.post_filter_fwhm_mm / FWHM_PER_SIGMA / self.voxel_mm,
                mode="nearest",
            )
        return image
