"""Image formation of a simulated SPECT: activity map → site resolution → counts → Poisson noise.

Two modes (:class:`ImagingMode`, chosen by the generator's ``imaging`` setting): ``blur`` (the
default, fast, described here) and ``realistic`` (projection with attenuation, depth-dependent
collimator response, scatter, dead time and Poisson noise per projection bin, then the site's
OSEM; :mod:`phantoms.acquisition`). :func:`image_counts` forms a stored image in either.

In ``blur`` mode the reconstructed image is the true activity map convolved with an isotropic 3-D
Gaussian whose FWHM is the site's effective (post-reconstruction) resolution, scaled by the site's
calibration factor and acquisition time. What is not simulated: projection, attenuation, scatter,
dead time and reconstruction noise texture; the Poisson noise is applied voxel-wise to the expected
reconstructed counts (a simplification: real OSEM noise is spatially correlated).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.special import erf

from concordose.phantoms.acquisition import RealisticSettings, realistic_image
from concordose.phantoms.site_profiles import SiteProfile
from concordose.reconstruction.attenuation import mu_per_mm_from_hu


class ImagingMode(StrEnum):
    """How a SPECT image is formed from the activity map.

    ``blur``: truth ⊛ Gaussian of the site's effective FWHM × CF × time, Poisson per voxel (fast).
    ``realistic``: projections (attenuation, CDR, scatter, dead time, Poisson) and OSEM.
    """

    BLUR = "blur"
    REALISTIC = "realistic"


FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
"""FWHM of a Gaussian in units of its standard deviation (≈ 2.3548)."""


def region_activity_map(
    labels: NDArray[np.uint8], activity_by_value: dict[int, float]
) -> tuple[NDArray[np.float64], dict[int, int]]:
    """Activity per voxel (MBq) from a label map: each region's activity spread evenly over the
    voxels carrying its value, so every region's total is exact on any grid.

    Returns:
        the activity map and each region's voxel count.

    Raises:
        ValueError: when a region with activity holds no voxel of ``labels``.
    """
    counts_by_value = np.bincount(labels.ravel(), minlength=256)
    per_voxel = np.zeros(256)
    for value, activity_mbq in activity_by_value.items():
        n = int(counts_by_value[value])
        if n == 0:
            raise ValueError(f"region with label value {value} holds no SPECT voxel centre")
        per_voxel[value] = activity_mbq / n
    activity: NDArray[np.float64] = per_voxel[labels]
    return activity, {v: int(counts_by_value[v]) for v in activity_by_value}


def gaussian_blur(
    image: NDArray[np.float64], *, fwhm_mm: float, voxel_mm_zyx: tuple[float, float, float]
) -> NDArray[np.float64]:
    """Convolve ``image`` (indexed [z, y, x]) with an isotropic Gaussian of ``fwhm_mm``.

    Edges are extended with the nearest value (``mode="nearest"``): the body continues beyond the
    axial field of view, so activity outside it spills in as much as inside activity spills out,
    and the total is kept to within the edge slices' share. ``fwhm_mm`` 0 returns a copy.

    Raises:
        ValueError: when ``fwhm_mm`` is negative or a voxel size is not positive.
    """
    if fwhm_mm < 0.0 or min(voxel_mm_zyx) <= 0.0:
        raise ValueError(
            f"blur needs fwhm_mm >= 0 and positive voxel sizes; got {fwhm_mm} mm, {voxel_mm_zyx}"
        )
    if fwhm_mm == 0.0:
        return image.astype(np.float64, copy=True)
    sigma_voxels = [fwhm_mm / FWHM_PER_SIGMA / size for size in voxel_mm_zyx]
    blurred: NDArray[np.float64] = ndimage.gaussian_filter(
        image.astype(np.float64), sigma=sigma_voxels, mode="nearest", truncate=4.0
    )
    return blurred


def expected_counts(
    activity_mbq: NDArray[np.float64],
    *,
    calibration_factor_cps_per_mbq: float,
    acquisition_duration_s: float,
    fwhm_mm: float,
    voxel_mm_zyx: tuple[float, float, float],
) -> NDArray[np.float64]:
    """Noiseless reconstructed counts per voxel: blur(activity) × CF × acquisition time.

    Args:
        activity_mbq: true activity per voxel at acquisition time, MBq (not decay corrected).
        calibration_factor_cps_per_mbq: counts per second per MBq in the reconstruction.
        acquisition_duration_s: total acquisition time (views × time per view), s.
        fwhm_mm: effective reconstructed resolution; 0 for none.
        voxel_mm_zyx: voxel size along (z, y, x), mm.
    """
    blurred = gaussian_blur(activity_mbq, fwhm_mm=fwhm_mm, voxel_mm_zyx=voxel_mm_zyx)
    counts: NDArray[np.float64] = blurred * (
        calibration_factor_cps_per_mbq * acquisition_duration_s
    )
    return counts


MAX_STORED_COUNTS = 65535
"""Largest count a uint16 NM pixel holds."""


def stored_counts(
    expected: NDArray[np.float64], rng: np.random.Generator, *, noise: bool, where: str
) -> NDArray[np.uint16]:
    """The counts the camera stores: Poisson-sampled, or the rounded expectation (no noise)."""
    if noise:
        return poisson_counts(expected, rng, where=where)
    rounded: NDArray[np.uint16] = np.rint(expected).astype(np.uint16)
    return rounded


def poisson_counts(
    expected: NDArray[np.float64], rng: np.random.Generator, *, where: str
) -> NDArray[np.uint16]:
    """Poisson-sample ``expected`` counts into a uint16 image.

    Raises:
        ValueError: when a voxel exceeds what uint16 stores (``where`` names the image).
    """
    counts = rng.poisson(np.clip(expected, 0.0, None))
    if counts.size and int(counts.max()) > MAX_STORED_COUNTS:
        raise ValueError(
            f"{where}: a SPECT voxel holds {int(counts.max())} counts, more than uint16 stores "
            f"({MAX_STORED_COUNTS}); use a larger voxel, lower activity or shorter acquisition"
        )
    return counts.astype(np.uint16)


def analytic_sphere_recovery(diameter_mm: float, fwhm_mm: float, *, n_radii: int = 2001) -> float:
    """Mean over a uniform sphere of its own Gaussian-blurred image, relative to the true value.

    Uses the closed-form profile of a sphere (radius R) convolved with an isotropic Gaussian (σ)
    at distance r from its centre,
    f(r) = ½[erf((R−r)/(σ√2)) + erf((R+r)/(σ√2))] − σ/(r√(2π))·[e^{−(R−r)²/2σ²} − e^{−(R+r)²/2σ²}],
    averaged over the sphere's volume, (3/R³)∫₀ᴿ f(r) r² dr (trapezoid rule on ``n_radii`` points).
    This is the recovery coefficient of a hot sphere in a cold background with no voxelisation.
    """

    if fwhm_mm == 0.0:
        return 1.0
    radius_mm = diameter_mm / 2.0
    sigma_mm = fwhm_mm / FWHM_PER_SIGMA
    r = np.linspace(1e-9, radius_mm, n_radii)
    root2 = math.sqrt(2.0) * sigma_mm
    profile = 0.5 * (erf((radius_mm - r) / root2) + erf((radius_mm + r) / root2)) - (
        sigma_mm / (r * math.sqrt(2.0 * math.pi))
    ) * (
        np.exp(-((radius_mm - r) ** 2) / (2 * sigma_mm**2))
        - np.exp(-((radius_mm + r) ** 2) / (2 * sigma_mm**2))
    )
    return float(3.0 / radius_mm**3 * np.trapezoid(profile * r**2, r))


@dataclass(frozen=True)
class FormedImage:
    """A stored SPECT image and how it was formed.

    Attributes:
        counts: what the NM file stores (uint16).
        image: the float image before rounding: in ``blur`` mode the noiseless expectation,
            in ``realistic`` mode the reconstruction (noisy when ``noise`` is on).
        dead_time_live_fraction: mean live fraction exp(−nτ) over views (``realistic``), or
            ``None`` (``blur``: no dead time).
    """

    counts: NDArray[np.uint16]
    image: NDArray[np.float64]
    dead_time_live_fraction: float | None


def image_counts(
    activity_mbq: NDArray[np.float64],
    *,
    mode: ImagingMode,
    site: SiteProfile,
    voxel_mm_zyx: tuple[float, float, float],
    blur_fwhm_mm: float,
    hu_on_grid: Callable[[], NDArray[np.float64]],
    rng: np.random.Generator,
    noise: bool,
    where: str,
    realistic: RealisticSettings | None = None,
) -> FormedImage:
    """The stored image of ``activity_mbq`` (MBq per voxel, [z, y, x]) at ``site``.

    ``blur``: :func:`expected_counts` with ``blur_fwhm_mm``, then :func:`stored_counts` (the
    random draws are exactly those of the earlier generator, so its files are unchanged).
    ``realistic``: the μ map from the CT's HU on the SPECT grid (``hu_on_grid()``, called in
    this mode only, e.g. :func:`phantoms.attenuation.ct_hu_on_grid`), then
    :func:`phantoms.acquisition.realistic_image`; the reconstruction is rounded to counts
    (negative values cannot occur with OSEM).

    Raises:
        ValueError: counts over the uint16 range (``where`` names the image), or a label without HU.
    """
    if mode is ImagingMode.BLUR:
        expected = expected_counts(
            activity_mbq,
            calibration_factor_cps_per_mbq=site.calibration_factor_cps_per_mbq,
            acquisition_duration_s=site.acquisition_duration_s,
            fwhm_mm=blur_fwhm_mm,
            voxel_mm_zyx=voxel_mm_zyx,
        )
        return FormedImage(
            counts=stored_counts(expected, rng, noise=noise, where=where),
            image=expected,
            dead_time_live_fraction=None,
        )
    if len(set(voxel_mm_zyx)) != 1:
        raise ValueError(f"{where}: realistic imaging needs isotropic voxels, got {voxel_mm_zyx}")
    result = realistic_image(
        activity_mbq,
        mu_per_mm_from_hu(hu_on_grid()),
        site=site,
        voxel_mm=voxel_mm_zyx[0],
        rng=rng,
        noise=noise,
        settings=realistic or RealisticSettings(),
    )
    rounded = np.rint(np.clip(result.counts, 0.0, None))
    if rounded.size and float(rounded.max()) > MAX_STORED_COUNTS:
        raise ValueError(
            f"{where}: a reconstructed SPECT voxel holds {int(rounded.max())} counts, more than "
            f"uint16 stores ({MAX_STORED_COUNTS})"
        )
    return FormedImage(
        counts=rounded.astype(np.uint16),
        image=result.counts,
        dead_time_live_fraction=result.live_fraction,
    )
