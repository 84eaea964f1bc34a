"""The ``realistic`` imaging mode: projections with attenuation, CDR, scatter, dead time and
Poisson noise, then the site's OSEM reconstruction.

Why not pytomography: it needs torch (a 555 MB wheel, CUDA) that this project does not install;
this lighter numpy/scipy implementation (the library's :mod:`concordose.reconstruction`) is
validated against analytic cases instead (``tests/unit/test_realistic_imaging.py``: attenuated
line integrals of a water cylinder, the CDR's FWHM at several distances, OSEM's concentration in
a uniform cylinder, sphere recovery, determinism).

Acquisition model, per view k (counts):

* **primary** pₖ = sensitivity × view time × Fₖ(activity): the attenuated (μ at 208 keV from the
  CT, :mod:`concordose.reconstruction.attenuation`), depth-blurred
  (:mod:`concordose.reconstruction.camera`) projection.
  The sensitivity is the site's calibration factor, so an unattenuated, scatter-free, dead-time
  free source reconstructs to the blur mode's counts (activity × CF × views × view time).
* **scatter** sₖ = SPR × G_scatter ⊛ pₖ: what reaches the photopeak window after Compton
  scattering, as a scatter-to-primary ratio ``SCATTER_TO_PRIMARY`` times the primary blurred by
  a broad Gaussian (``SCATTER_KERNEL_FWHM_MM``). Both are modelling choices of this generator, of
  the order of Monte Carlo photopeak scatter fractions for Lu-177 in a 20 % window (≈ 20–30 % of
  the window's counts); a real scatter distribution depends on depth and on the object, which
  this does not model.
* **scatter correction**: the reconstruction adds the site's scatter estimate (a TEW-like
  estimate) to its forward model, taken as (1 − ``SCATTER_RESIDUAL_FRACTION``) × sₖ (noiseless):
  the estimate misses 10 % of the scatter, which stays in the image as a broad background — the
  residual after triple-energy-window correction.
* **dead time** (paralysable,
  :data:`concordose.reconstruction.camera.DEAD_TIME_PARALYSABLE_S`): with nₖ = (Σ pₖ + Σ sₖ)/view
  time the true window rate of the head, every bin is scaled by exp(−nₖ τ). Not corrected in
  the reconstruction (as at sites without dead-time correction): the phantom calibration
  absorbs its small loss at calibration rates; an early patient time point at higher rates
  loses more.
* **noise**: Poisson per projection bin (``noise=False``: the expectation).

Reconstruction: OSEM with the site's iterations and subsets, attenuation correction from the same
μ map, the CDR in the system model when the site uses resolution recovery, the scatter estimate
as additive term, the site's Gaussian post-filter; the image × views is stored as counts (the
blur mode's convention: CF × acquisition time per MBq).

Not modelled: septal penetration and collimator scatter (208 keV tails), the 113 keV photopeak,
downscatter, object-dependent scatter, noise in the scatter estimate, decay during acquisition,
a body-contour orbit, motion. Projection and reconstruction share the SPECT grid and the μ map
(an "inverse crime" that flatters the reconstruction a little).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from concordose.phantoms.camera_model import camera_model
from concordose.phantoms.site_profiles import SiteProfile
from concordose.reconstruction.osem import osem
from concordose.reconstruction.projector import FWHM_PER_SIGMA, ProjectionGeometry, SpectProjector
from concordose.reconstruction.scatter import ScatterCorrection

SCATTER_TO_PRIMARY = 0.30
"""Photopeak-window scatter-to-primary ratio (modelling choice; module docstring)."""
SCATTER_KERNEL_FWHM_MM = 60.0
"""FWHM of the broad Gaussian that spreads scattered counts in the detector plane, mm."""
SCATTER_RESIDUAL_FRACTION = 0.10
"""Fraction of the scatter the site's correction leaves in the data (modelling choice)."""
GENERATOR_SCATTER = ScatterCorrection(
    SCATTER_TO_PRIMARY,
    residual_fraction=SCATTER_RESIDUAL_FRACTION,
    kernel_fwhm_mm=SCATTER_KERNEL_FWHM_MM,
)
"""The generator's scatter and every site's correction of it, in the library's model form
(:class:`concordose.reconstruction.scatter.ScatterCorrection`; the platform fits the ratio
on each site's phantom, ``calibration.scatter``)."""


@dataclass(frozen=True)
class RealisticSettings:
    """Knobs of the realistic mode (defaults: the site's own protocol).

    Attributes:
        max_views: use at most this many views (evenly spread; the view time grows so the
            acquisition time is kept): the documented fast setting for large grids. ``None``:
            the site's own views.
    """

    max_views: int | None = None


@dataclass(frozen=True)
class RealisticImage:
    """A reconstructed image and what the acquisition went through.

    Attributes:
        counts: reconstructed image, counts (float, not rounded), on the image grid.
        live_fraction: mean over views of the dead-time factor exp(−nτ).
        n_views: views simulated.
        total_projection_counts: counts in every view together (after dead time and noise).
    """

    counts: NDArray[np.float64]
    live_fraction: float
    n_views: int
    total_projection_counts: float


LOST_ACTIVITY_TOLERANCE = 1e-3
"""Largest fraction of the activity allowed outside the circular field of view or the orbit."""


def _check_inside_orbit(
    activity_mbq: NDArray[np.float64], *, voxel_mm: float, geometry: ProjectionGeometry
) -> None:
    """Refuse activity the projector would not see (outside the inscribed circle of the padded
    plane) or that would lie beyond the collimator face (outside the radius of rotation)."""
    _, ny, nx = activity_mbq.shape
    y, x = np.mgrid[0:ny, 0:nx]
    radius_mm = np.hypot((y - (ny - 1) / 2.0) * voxel_mm, (x - (nx - 1) / 2.0) * voxel_mm)
    reach_mm = min(geometry.side / 2.0 * voxel_mm, geometry.radius_of_rotation_mm)
    total = float(activity_mbq.sum())
    lost = float(activity_mbq[:, radius_mm > reach_mm].sum())
    if total > 0.0 and lost > LOST_ACTIVITY_TOLERANCE * total:
        raise ValueError(
            f"{lost / total:.1%} of the activity lies more than {reach_mm:.0f} mm from the "
            f"rotation axis (circular field of view or radius of rotation "
            f"{geometry.radius_of_rotation_mm:g} mm); the realistic projector would lose it"
        )


def realistic_image(
    activity_mbq: NDArray[np.float64],
    mu_per_mm: NDArray[np.float64],
    *,
    site: SiteProfile,
    voxel_mm: float,
    rng: np.random.Generator,
    noise: bool,
    settings: RealisticSettings = RealisticSettings(),
) -> RealisticImage:
    """Acquire and reconstruct ``activity_mbq`` (MBq per voxel, [z, y, x]) at ``site``.

    Args:
        activity_mbq: true activity per voxel at acquisition start.
        mu_per_mm: μ map at 208 keV on the same grid (/mm).
        site: camera, calibration, acquisition and reconstruction protocol.
        voxel_mm: isotropic voxel edge, mm.
        rng: draws the projections' Poisson noise.
        noise: Poisson noise in the projections, or their expectation.
        settings: fast settings.

    Raises:
        ValueError: shapes differ, fewer than one view asked for, activity outside the circular
            field of view or the orbit, or the site's collimator is not modelled.
    """
    if activity_mbq.shape != mu_per_mm.shape:
        raise ValueError(f"activity {activity_mbq.shape} and μ map {mu_per_mm.shape} differ")
    if settings.max_views is not None and settings.max_views < 1:
        raise ValueError(f"max_views must be ≥ 1 view, got {settings.max_views}")
    camera = camera_model(site)
    n_views = site.n_views if settings.max_views is None else min(site.n_views, settings.max_views)
    view_duration_s = site.acquisition_duration_s / n_views
    geometry = ProjectionGeometry(
        shape_zyx=(activity_mbq.shape[0], activity_mbq.shape[1], activity_mbq.shape[2]),
        voxel_mm=voxel_mm,
        n_views=n_views,
        radius_of_rotation_mm=camera.radius_of_rotation_mm,
    )
    _check_inside_orbit(activity_mbq, voxel_mm=voxel_mm, geometry=geometry)
    projector = SpectProjector(geometry, mu_per_mm=mu_per_mm, camera=camera)
    counts_per_mbq = site.calibration_factor_cps_per_mbq * view_duration_s
    # The FFT leaves rounding residue of ±1e-12 counts around zero: clip before Poisson.
    primary = np.clip(projector.forward(activity_mbq * counts_per_mbq), 0.0, None)
    scatter = GENERATOR_SCATTER.window_scatter(primary, voxel_mm)
    window = primary + scatter
    true_rate_cps = window.sum(axis=(1, 2)) / view_duration_s
    live = np.exp(-true_rate_cps * camera.dead_time_s)
    expected = window * live[:, None, None]
    measured = rng.poisson(expected).astype(np.float64) if noise else expected
    scatter_estimate = (1.0 - SCATTER_RESIDUAL_FRACTION) * scatter * live[:, None, None]
    recon = site.recon
    image = osem(
        measured,
        projector,
        iterations=recon.iterations,
        subsets=min(recon.subsets, n_views),
        resolution_modelling=recon.resolution_recovery,
        additive=scatter_estimate,
    )
    if recon.post_filter_fwhm_mm > 0.0:
        image = ndimage.gaussian_filter(
            image, sigma=recon.post_filter_fwhm_mm / FWHM_PER_SIGMA / voxel_mm, mode="nearest"
        )
    return RealisticImage(
        counts=image * n_views,
        live_fraction=float(live.mean()),
        n_views=n_views,
        total_projection_counts=float(measured.sum()),
    )
