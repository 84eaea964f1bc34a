"""A common delineation rule applied by the platform: the same object at every site.

Sites draw their VOIs by their own rules (a generous manual margin, a fixed 40 % threshold, CT
outlines eroded against spill-in), so the numbers a consortium compares refer to different
objects: on the digital consortium (realistic imaging, anatomy realism) milan's VOIs hold a
median 1.48× the true volume and grandrapids' 0.76×; no image-domain correction removes a
difference in what was drawn. This module re-delineates each **lesion** by one rule, inside a
search region around the site's VOI, so that every site measures the object the rule finds:

**Adaptive (iterative) threshold calibrated on the site's resolution.** Jentzen W, Freudenberg
L, Eising EG, Heinze M, Brandau W, Bockisch A. Segmentation of PET volumes by iterative image
thresholding. J Nucl Med 2007;48:108-114: the threshold that reproduces a sphere's true volume
depends on the sphere's volume and the scanner's resolution; Jentzen reads it from the site's
own sphere scans as a threshold-volume curve T(V) and iterates V → T(V) → V to the fixed point.
Here T(V) is the site's phantom resolution written analytically: the background-corrected
fraction of the peak at the surface of a uniform sphere of volume V blurred by the site's
effective Gaussian PSF (fitted to its NEMA spheres at calibration, ``calibration.psf``),

    f(R) = u(R) / u(0),   u(r) = ½[erf((R − r)/(√2 σ)) + erf((R + r)/(√2 σ))]
                                 − σ/(r √(2π)) · [exp(−(r − R)²/2σ²) − exp(−(r + R)²/2σ²)],

u the blurred sphere's profile (unit concentration, radius R = (3V/4π)^⅓, σ = FWHM/2.3548;
u(0) = erf(R/(√2 σ)) − √(2/π)(R/σ) exp(−R²/2σ²)). The level is background-corrected as in
Jentzen's source-to-background form: C_thr = C_B + f · (C_max − C_B), with C_B the median
concentration of a shell around the search region. f is ≈ 0.5 for objects much larger than the
FWHM, dips to ≈ 0.37 around R ≈ FWHM and rises to 1 for points, continuously (no cliff). The
fixed point f = f(R(V(f))) is found by bisection on f between 0.2 (too low: the region is too
large) and 1 (the peak voxel alone: too small); on voxels V(f) is a step function, and
bisection lands on a step where the sign changes, which converges where Jentzen's plain
iteration may oscillate for small objects.

The rule per lesion, on the first time point's SPECT (the highest counts, the image sites
threshold on):

* peak C_max: at the hottest voxel inside the site's VOI (where the operator clicked), its
  maximum between voxel centres (:func:`subvoxel_peak`);
* search region: the site's VOI grown by :data:`SEARCH_MARGIN_FWHM` × the FWHM, minus the other
  lesions' VOIs and the VOIs of organs that do not host the lesion (a neighbour's hotter voxels
  are not this lesion's; :data:`HOST_FRACTION`);
* background C_B: median concentration in the shell from the search region out by
  :data:`BACKGROUND_SHELL_FWHM` × the FWHM, lesions' VOIs (grown by one FWHM) left out: the
  liver around a hepatic lesion, soft tissue around a node;
* the lesion: the voxels ≥ C_thr connected (faces) to the peak, holes filled (a necrotic core
  is the lesion's), inside the search region.

What it assumes: the lesion is hotter than its surroundings at the first time point (else the
site's VOI is kept, its status saying why); the isotropic Gaussian describes the edge of the
reconstruction (OSEM with resolution recovery overshoots at edges and resolves small faint
objects worse than large hot ones: DESIGN.md, "Realistic organs"); the peak voxel is the
object's maximum (Poisson noise biases a single voxel's maximum up at low counts, hence a
smaller volume). The volume is voxel-counted on the SPECT grid (a 0.5 mL lesion is ~6 voxels of
4.4 mm: a voxel more or less is ±17 %).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage, special

from concordose.quant.voi import Box, bounding_box

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
"""FWHM of a Gaussian over its σ (≈ 2.3548)."""
SEARCH_MARGIN_FWHM = 1.0
"""The search region: the site's VOI grown by this many FWHM (a site's VOI may be a few mm
inside the lesion, as an eroded outline is, or a threshold's partial region)."""
BACKGROUND_SHELL_FWHM = 0.5
"""Width of the background shell outside the search region, in FWHM."""
BISECTION_STEPS = 40
"""Bisection steps on the threshold fraction (2⁻⁴⁰: far below a voxel's step)."""
FRACTION_LOW = 0.2
"""Lowest threshold fraction tried (below any sphere's f(R) for a Gaussian PSF, ≈ 0.4 at most
curvature)."""
NO_CONTRAST = "no contrast over the local background at the first time point"
"""Status of a lesion re-delineation left at the site's VOI because the peak is not above the
background."""
DELINEATED = "delineated"
"""Status of a lesion the rule re-delineated."""


def sphere_profile(radius_mm: float, r_mm: FloatArray, sigma_mm: float) -> FloatArray:
    """Concentration at distance ``r_mm`` from the centre of a uniform sphere (unit
    concentration, radius ``radius_mm``) blurred by an isotropic 3-D Gaussian of σ ``sigma_mm``
    (module docstring)."""
    r = np.asarray(r_mm, dtype=np.float64)
    s2 = math.sqrt(2.0) * sigma_mm
    inner = 0.5 * (special.erf((radius_mm - r) / s2) + special.erf((radius_mm + r) / s2))
    safe = np.where(r > 0, r, 1.0)
    shell = (
        sigma_mm
        / (safe * math.sqrt(2.0 * math.pi))
        * (
            np.exp(-((r - radius_mm) ** 2) / (2.0 * sigma_mm**2))
            - np.exp(-((r + radius_mm) ** 2) / (2.0 * sigma_mm**2))
        )
    )
    centre = special.erf(radius_mm / s2) - math.sqrt(2.0 / math.pi) * (
        radius_mm / sigma_mm
    ) * math.exp(-(radius_mm**2) / (2.0 * sigma_mm**2))
    result: FloatArray = np.where(r > 0, inner - shell, centre)
    return result


def threshold_fraction(volume_ml: float, fwhm_mm: float) -> float:
    """Background-corrected fraction of the peak at the surface of a uniform sphere of
    ``volume_ml`` blurred by a Gaussian of ``fwhm_mm``: the threshold that delineates the
    sphere's true volume (module docstring). 1 for a point, → 0.5 for large spheres."""
    if volume_ml <= 0:
        return 1.0
    radius_mm = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    sigma_mm = fwhm_mm / FWHM_PER_SIGMA
    profile = sphere_profile(radius_mm, np.array([0.0, radius_mm]), sigma_mm)
    return float(profile[1] / profile[0]) if profile[0] > 0 else 1.0


def subvoxel_peak(values: FloatArray, seed: tuple[int, int, int], background: float) -> float:
    """The object's maximum above ``background`` estimated between voxel centres: a Gaussian
    (parabola in log) through the hottest voxel and its two neighbours along each axis, the
    axes' rises multiplied (a separable peak). The hottest voxel's centre is up to half a voxel
    from the object's centre, so its value under-reads the maximum: for a 0.5 mL sphere on
    4 mm voxels at 15 mm FWHM by up to ~14 %, which lowers the level and grows the region
    (measured: 2.2× the true volume without, see ``tests/unit/test_quant_delineation.py``).
    An axis whose neighbours are not above the background, or whose log-parabola does not
    open downwards, adds nothing; the rise per axis is capped at half a voxel's shift."""
    centre = float(values[seed]) - background
    if not centre > 0:
        return float(values[seed])
    log_rise = 0.0
    for axis in range(3):
        before, after = list(seed), list(seed)
        before[axis] -= 1
        after[axis] += 1
        if before[axis] < 0 or after[axis] >= values.shape[axis]:
            continue
        low = float(values[tuple(before)]) - background
        high = float(values[tuple(after)]) - background
        if not (low > 0 and high > 0):
            continue
        l0, lm, lp = math.log(centre), math.log(low), math.log(high)
        slope, bend = 0.5 * (lp - lm), 0.5 * (lm + lp) - l0  # l(x) = l0 + slope·x + bend·x²
        if not bend < 0:
            continue
        shift = float(np.clip(-slope / (2.0 * bend), -0.5, 0.5))
        log_rise += slope * shift + bend * shift * shift
    return background + centre * math.exp(max(log_rise, 0.0))


@dataclass(frozen=True)
class LesionDelineation:
    """One lesion as the platform rule delineated it (first time point's grid).

    Attributes:
        mask: bool mask over the whole grid (the site's VOI when not re-delineated).
        status: :data:`DELINEATED` or why the site's VOI was kept.
        threshold_fraction: the background-corrected fraction of the peak used (NaN if kept).
        peak_mbq_per_ml, background_mbq_per_ml: C_max and C_B (NaN where not measured).
        site_volume_ml, volume_ml: the site's VOI and the delineated volume on the grid, mL.
    """

    mask: BoolArray
    status: str
    threshold_fraction: float
    peak_mbq_per_ml: float
    background_mbq_per_ml: float
    site_volume_ml: float
    volume_ml: float


def _grown_box(box: Box, reach: Sequence[int], shape: tuple[int, ...]) -> Box:
    parts = tuple(
        slice(max(int(s.start) - int(r), 0), min(int(s.stop) + int(r), int(n)))
        for s, r, n in zip(box, reach, shape, strict=True)
    )
    return (parts[0], parts[1], parts[2])


def _distance_mm(mask: BoolArray, spacing_mm_zyx: tuple[float, float, float]) -> FloatArray:
    """Distance of every voxel centre to the nearest voxel of ``mask``, mm (0 inside)."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    distance: FloatArray = ndimage.distance_transform_edt(~mask, sampling=spacing_mm_zyx)
    return distance


def delineate_lesion(
    concentration_mbq_per_ml: FloatArray,
    site_mask: BoolArray,
    other_lesions: BoolArray,
    *,
    spacing_mm_zyx: tuple[float, float, float],
    fwhm_mm: float,
) -> LesionDelineation:
    """Re-delineate one lesion by the platform rule (module docstring).

    Args:
        concentration_mbq_per_ml: the first time point's image (slices, rows, columns), MBq/mL.
        site_mask: the site's VOI of the lesion on that grid.
        other_lesions: the union of the other lesions' VOIs on that grid.
        spacing_mm_zyx: voxel size along (slices, rows, columns), mm.
        fwhm_mm: the site's effective Gaussian FWHM from its NEMA spheres, mm.
    """
    image = np.asarray(concentration_mbq_per_ml, dtype=np.float64)
    voxel_ml = float(np.prod(spacing_mm_zyx)) / 1000.0
    site_volume_ml = float(site_mask.sum()) * voxel_ml
    box = bounding_box(site_mask)

    def kept(
        reason: str, peak: float = math.nan, background: float = math.nan
    ) -> LesionDelineation:
        return LesionDelineation(
            site_mask, reason, math.nan, peak, background, site_volume_ml, site_volume_ml
        )

    if box is None:
        return kept("no voxel of the site's VOI on the grid")
    search_mm = SEARCH_MARGIN_FWHM * fwhm_mm
    shell_mm = BACKGROUND_SHELL_FWHM * fwhm_mm
    reach = [math.ceil((search_mm + shell_mm + fwhm_mm) / s) + 1 for s in spacing_mm_zyx]
    zone = _grown_box(box, reach, image.shape)
    values = image[zone]
    own = site_mask[zone]
    others = other_lesions[zone] & ~own
    distance = _distance_mm(own, spacing_mm_zyx)
    search = (distance <= search_mm) & ~others
    near_others = _distance_mm(others, spacing_mm_zyx) <= fwhm_mm
    shell = (distance > search_mm) & (distance <= search_mm + shell_mm) & ~near_others
    seed_flat = int(np.argmax(np.where(own, values, -np.inf)))
    seed = np.unravel_index(seed_flat, values.shape)
    background = float(np.median(values[shell])) if shell.any() else 0.0
    peak = subvoxel_peak(values, (int(seed[0]), int(seed[1]), int(seed[2])), background)
    if not peak > background:
        return kept(NO_CONTRAST, peak, background)

    def region(fraction: float) -> BoolArray:
        above = search & (values >= background + fraction * (peak - background))
        labels, _ = ndimage.label(above)
        component: BoolArray = labels == labels[seed]
        filled: BoolArray = ndimage.binary_fill_holes(component) & search
        return filled

    def excess(fraction: float) -> float:
        return fraction - threshold_fraction(float(region(fraction).sum()) * voxel_ml, fwhm_mm)

    low, high = FRACTION_LOW, 1.0
    if excess(low) >= 0:
        high = low
    else:
        for _ in range(BISECTION_STEPS):
            middle = 0.5 * (low + high)
            if excess(middle) < 0:
                low = middle
            else:
                high = middle
    chosen = region(high)
    mask = np.zeros(image.shape, dtype=bool)
    mask[zone] = chosen
    return LesionDelineation(
        mask=mask,
        status=DELINEATED,
        threshold_fraction=high,
        peak_mbq_per_ml=peak,
        background_mbq_per_ml=background,
        site_volume_ml=site_volume_ml,
        volume_ml=float(chosen.sum()) * voxel_ml,
    )


HOST_FRACTION = 0.5
"""An organ hosts a lesion (a hepatic lesion in the liver) when its VOI, holes filled, holds at
least this fraction of the lesion's VOI; other organs' voxels are no part of its search region
(a lesion next to a kidney must not grow into it)."""


def delineate_lesions(
    concentration_mbq_per_ml: FloatArray,
    masks: BoolArray,
    lesion: Sequence[bool],
    *,
    spacing_mm_zyx: tuple[float, float, float],
    fwhm_mm: float,
) -> tuple[LesionDelineation | None, ...]:
    """:func:`delineate_lesion` for every lesion of ``masks`` (n_voi, slices, rows, columns);
    None for organs (kept as the site drew them). A lesion's search region leaves out the other
    lesions' VOIs and the VOIs of organs that do not host it (:data:`HOST_FRACTION`)."""
    lesions = np.asarray(lesion, dtype=bool)
    filled = {
        k: np.asarray(ndimage.binary_fill_holes(masks[k]), dtype=bool)
        for k in np.flatnonzero(~lesions)
    }
    results: list[LesionDelineation | None] = []
    for index, mask in enumerate(masks):
        if not lesions[index]:
            results.append(None)
            continue
        others = np.zeros_like(mask)
        for other_index in np.flatnonzero(lesions):
            if other_index != index:
                others |= masks[other_index]
        size = float(mask.sum())
        for organ_index, organ in filled.items():
            if size and float((organ & mask).sum()) < HOST_FRACTION * size:
                others |= masks[organ_index]
        results.append(
            delineate_lesion(
                concentration_mbq_per_ml,
                mask,
                others,
                spacing_mm_zyx=spacing_mm_zyx,
                fwhm_mm=fwhm_mm,
            )
        )
    return tuple(results)


__all__ = [
    "BACKGROUND_SHELL_FWHM",
    "DELINEATED",
    "HOST_FRACTION",
    "NO_CONTRAST",
    "SEARCH_MARGIN_FWHM",
    "LesionDelineation",
    "delineate_lesion",
    "delineate_lesions",
    "sphere_profile",
    "threshold_fraction",
]
