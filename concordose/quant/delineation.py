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
Here T(V) is the site's phantom resolution written analytically, for a uniform sphere of volume
V blurred by the site's effective Gaussian PSF (fitted to its NEMA spheres at calibration,
``calibration.psf``), whose profile is

    u(r) = ½[erf((R − r)/(√2 σ)) + erf((R + r)/(√2 σ))]
           − σ/(r √(2π)) · [exp(−(r − R)²/2σ²) − exp(−(r + R)²/2σ²)]

(unit concentration, radius R = (3V/4π)^⅓, σ = FWHM/2.3548; u(0) = erf(R/(√2 σ)) −
√(2/π)(R/σ) exp(−R²/2σ²)). The level is background-corrected (Jentzen's source-to-background
form) and referenced to the **mean** of the delineated region rather than to its maximum (the
mean-referenced iterative threshold of Black QC et al., Int J Radiat Oncol Biol Phys
2004;60:1272-1282):

    C_thr = C_B + g(V) · (C_mean − C_B),   g(V) = u(R) / RC(R),   RC(R) = (3/R³) ∫₀ᴿ u r² dr,

C_mean the mean of the region the level delineates, C_B the median of a shell around the
search region. At the fixed point the region is the sphere: its mean is RC times the contrast
and the level is the profile at its surface. Why the mean and not the maximum: the maximum of
a noisy reconstruction is one voxel's noise above the lesion's level and OSEM's edge overshoot
raises it further (digital consortium, realistic imaging, milan P001 with true outlines: the
maximum-referenced rule gave 0.69× the volume of a 200 mL lesion and 0.31× of an 18.5 mL one);
the mean over the region averages both out, and g → ½ for large objects whatever the
(symmetric) edge response. g is continuous in V (no cliff): ½ for objects much larger than the
FWHM, rising towards 1 for points. The fixed point is found by bisection on the level between
the background and the seed voxel (near the background the ratio (C_thr − C_B)/(C_mean − C_B) is
under g, at the seed above it), which converges where Jentzen's plain iteration may oscillate
for small objects; on voxels the ratio is a step function and bisection lands on a step where
the sign changes.

**Beyond the phantoms' contrasts.** With the NEMA phantom scanned at two contrasts the
threshold is a surface g(V, K) (:class:`ThresholdSurface`), measured up to the contrast K the
phantom's spheres show (≈ 6–8 at 10:1) and followed as a line in ln K two spans beyond. Lesions
show far more (the digital consortium's at the first time point: K ≈ 8–80), and there the level
a lesion needs depends on what is inside it, which no sphere calibrates: a necrotic core lowers
the region's mean, not its edge, and raises the g the lesion needs (the same lobulated 25 mL
lesion at 30:1, milan's chain: 0.387 → 0.474). On the consortium (full preset,
``benchmarks/diagnose_lesion_threshold.py``) still lesions with a necrotic core need a g a
median 0.06 above the extrapolated surface and 0.01 below the surface held at the measured
contrasts (:meth:`ThresholdSurface.held`); those without one 0.03 above the extrapolated and
0.22 below the held (alone it draws them a median 0.35×). Neither is right for every lesion,
and held alone the rule draws uniform hot lesions small (milan's chain, 4–18.5 mL at 30:1:
0.40–0.60×) or finds only their central peak (the consortium's 5–12 mL lesions at milan and
montpellier: 0.05–0.18×).
So the platform delineates with the extrapolated surface (the lesion's volume) and brackets it
with the held one: the held region joins the ±SD pair of the volume (the delineation term of
the activity's SD, ``pipeline.quantify``), so that a lesion whose structure the phantom cannot
tell is published with that uncertainty; where one region is under
:data:`CENTRAL_PEAK_FRACTION` of the other (a central peak's fixed point, or a level that fills
the search region), the bracket is left out and the extrapolated region stands.

**Contrast dependence follows resolution modelling.** The fall of g with contrast is the
non-linearity of OSEM with resolution modelling (its edge overshoot grows with contrast);
without it the level a sphere needs does not follow contrast. On each site's own chain without
noise (``benchmarks/threshold_contrast_dependence.py``: a sphere alone in a warm cylinder at
4:1, 10:1, 20:1 and 40:1; 5.6–60 mL) the three chains with resolution modelling lower g by
0.05–0.22 from 4:1 to 40:1 (median per site 0.12–0.18), grandrapids' (OSEM 2i10s, no
resolution modelling, 6 mm post-filter) changes it by at most 0.035 (median +0.004); with
resolution modelling switched (11.49 mL sphere) they swap: grandrapids' chain with it lowers
g by 0.19, the other three without it change it by +0.01…+0.02 — the cause is resolution
modelling, not the iterations or the post-filter. Two noisy fills cannot tell the two apart:
their difference is within their scatter (full preset: grandrapids −0.04 ± 0.06 at 11.5 mL,
milan −0.07 ± 0.10), and a noisy slope followed two spans beyond them drew grandrapids'
lesions 1.1–1.9× (they need 0.58–0.68 at every contrast, the extrapolated surface gave
0.44–0.57). So where the site's protocol says its reconstruction does not model resolution
(``reconstruction.resolution_recovery: false``), the surface is independent of contrast
(:attr:`ThresholdSurface.contrast_dependent`): g(V) is the mean of the fills' curves, the
average of their noise, and there is no bracket (the full preset's kept run: grandrapids'
lesions ≥ 4 mL drawn 0.98–1.36×, median 1.13×, against 1.12–1.86×, median 1.37×); where the
protocol does not say, the line in ln K stands.

**No fixed point at the lesion's scale.** Where the surface asks more of a small lesion than
its image gives (lobulated, textured 1–6 mL lesions at K ≈ 9–30 need g 0.3–0.6), the lowest
crossing is the central peak's: a few voxels, 0.05–0.34× the lesion. Most such collapses were
the surface's, not the lesion's: one noisy sphere's point interpolated as measured, and a
slope in ln K read where only one scan had spheres (milan: g rising with K below 5.58 mL,
0.88 asked of a 3.7 mL lesion at K ≈ 22 that needs 0.53). The curve smoothed across the
spheres (:func:`inverse_radius_fit`) and the surface's slope read where both scans measured,
never rising with K (:meth:`ThresholdSurface.at`), leave one of the full preset's six (a
4.9 mL lesion at brussels whose noisy image gives 0.30 at its volume where the surface asks
0.47). Nothing in the image tells such a region from a small lesion drawn right (milan's
resolution recovery draws a 3.7 mL lesion's half-maximum region at 0.33× its volume, a 1.3 mL
one's at 0.96×), so the rule's region stands; where it is under :data:`CENTRAL_PEAK_FRACTION`
of the site's VOI, the site's VOI becomes the other end of its volume SD (hence of its
activity, concentration and dose SD) and the lesion carries :data:`CENTRAL_PEAK_ONLY`. Taking
the site's VOI instead was measured and not adopted (README, "No fixed point at the lesion's
scale").

**Several fixed points at the lesion's scale.** A small lesion blurred by a PSF as wide as
itself looks, at one level, like a larger lesion's image at its own fixed point, and the
threshold may cross the region's fraction more than once above the central peak's scale
(full preset, the kept run of 2026-12-07: 13 of 72 delineated first-cycle lesions, all but one
under 6 mL; milan's 1.27 mL lesion has stable fixed points at 2.46× and 0.95× its volume,
montpellier's 2.59 mL one at 2.34× and 1.23×, milan's 4.9 mL one at 1.15× and 0.39×). No
choice between them is right more often than the lowest level (the largest region) is: it
was the closest to the truth in 7 of the 13, one of the others in the rest. So the rule keeps the
lowest and publishes the others (the stable fixed points over :data:`CENTRAL_PEAK_FRACTION` of
it; :attr:`LesionDelineation.other_fixed_point_volumes_ml`) as ends of its volume SD: the
lesion is reported with the ambiguity the image holds, rather than one of its answers.

**Detectability.** A lesion whose seed voxel stands less than :data:`DETECTION_CNR` standard
deviations of the background shell above the background cannot be delineated from the image
(the Rose criterion: Rose A. J Opt Soc Am 1948;38:196-208; any threshold then follows the
noise): the site's VOI is kept and the status says so.

The rule per lesion, on the first time point's SPECT (the highest counts, the image sites
threshold on):

* seed: the hottest voxel inside the site's VOI (where the operator clicked);
* search region: the site's VOI grown by :data:`SEARCH_MARGIN_FWHM` × the FWHM, minus the other
  lesions' VOIs and the VOIs of organs that do not host the lesion (a neighbour's hotter voxels
  are not this lesion's; :data:`HOST_FRACTION`);
* background C_B and its SD: median and 1.4826 × median absolute deviation of the shell from
  the search region out by :data:`BACKGROUND_SHELL_FWHM` × the FWHM, the excluded VOIs (grown
  by one FWHM) left out: the liver around a hepatic lesion, soft tissue around a node;
* the lesion: the voxels ≥ C_thr connected (faces) to the seed, holes filled (a necrotic core
  is the lesion's), inside the search region.

What it assumes: the lesion is hotter than its surroundings at the first time point and
detectable (else the site's VOI is kept, its status saying why); the isotropic Gaussian with
the spheres' FWHM describes small objects' blur (OSEM resolves small faint objects worse than
large hot ones: DESIGN.md, "Realistic organs"); a uniform lesion (texture and a necrotic core
lower the mean, hence the level: the region grows slightly). The volume is voxel-counted on the
SPECT grid (a 0.5 mL lesion is ~6 voxels of 4.4 mm: a voxel more or less is ±17 %).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
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
"""Bisection steps on the level (2⁻⁴⁰ of the contrast: far below a voxel's step)."""
LEVEL_SCAN_STEPS = 100
"""Levels scanned from the background up to the seed before the bisection (1 % of the
contrast apart), so that the bisection brackets the **lowest** level where the region's
fraction reaches g: the largest of the fixed points. A lesion reconstructed with resolution
modelling has a central peak (up to ~2× its concentration at high contrast) and a second,
spurious fixed point there: a few voxels around the seed, whose fraction is near 1 and whose
g is that of a tiny object. Bisecting from [background, seed] landed on it (milan, noise-free,
g through the 4:1 scan's points as measured: 10 mL at 8:1 0.08× against 0.32× scanned,
18.5 mL at 30:1 0.05× against 0.20×; ``tests/unit/test_quant_delineation_contrast.py``).
For the lesion's own region the scan goes on above it, to where the region falls under
:data:`CENTRAL_PEAK_FRACTION` of the lowest's: every crossing from under g to over it is a
stable fixed point, and those at the lesion's scale join its volume SD (module
docstring, "Several fixed points at the lesion's scale"); two fixed points closer than a
step are seen as one."""
DETECTION_CNR = 5.0
"""Rose criterion (module docstring): the seed must stand this many background SDs above the
background for the lesion to be delineated from the image."""
MAD_TO_SD = 1.4826
"""SD of a normal distribution over its median absolute deviation."""
RADIAL_SAMPLES = 256
"""Points of the radial integral of RC(R) (midpoint rule)."""
NO_CONTRAST = "no contrast over the local background at the first time point"
UNDETECTABLE = (
    f"peak below {DETECTION_CNR:g} SD of the local background's noise at the first time point"
)
"""Status of a lesion re-delineation left at the site's VOI because the peak is not above the
background."""
DELINEATED = "delineated"
"""Status of a lesion the rule re-delineated."""
CENTRAL_PEAK_ONLY = (
    "delineated at its central peak only (no fixed point of the threshold at the lesion's"
    " scale; under 1/3 of the site's VOI): its volume SD spans to the site's VOI"
)
"""What a lesion the rule found only the central peak of carries
(:attr:`LesionDelineation.central_peak_only`, :data:`CENTRAL_PEAK_FRACTION`)."""
SEVERAL_FIXED_POINTS = (
    "delineated at the lowest of several fixed points of the threshold at the lesion's scale"
    " (the image does not tell which is the lesion): its volume SD spans them"
)
"""What a lesion whose threshold has other stable fixed points at its scale carries
(:attr:`LesionDelineation.other_fixed_point_volumes_ml`; module docstring, "Several fixed
points at the lesion's scale")."""


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
    """g(V): the background-corrected level at the surface of a uniform sphere of ``volume_ml``
    blurred by a Gaussian of ``fwhm_mm``, over the mean inside the sphere (module docstring):
    the mean-referenced threshold that delineates the sphere's true volume. → ½ for large
    spheres, → 1 for points."""
    if volume_ml <= 0:
        return 1.0
    radius_mm = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    sigma_mm = fwhm_mm / FWHM_PER_SIGMA
    r = (np.arange(RADIAL_SAMPLES) + 0.5) / RADIAL_SAMPLES * radius_mm
    inside = sphere_profile(radius_mm, r, sigma_mm)
    mean = float(3.0 * np.sum(inside * r**2) * (radius_mm / RADIAL_SAMPLES) / radius_mm**3)
    surface = float(sphere_profile(radius_mm, np.array([radius_mm]), sigma_mm)[0])
    return min(surface / mean, 1.0) if mean > 0 else 1.0


def inverse_radius_fit(
    volumes_ml: Sequence[float] | FloatArray, values: Sequence[float] | FloatArray
) -> Callable[[float], float]:
    """The least-squares fit of value = a + b·(V/1 mL)^(−⅓) through the points (``volumes_ml``,
    ``values``), as a function of V in mL (the line through two points; a single point's value
    everywhere).

    The form is the Gaussian model's large-object behaviour, ½ + c/R (:func:`threshold_fraction`;
    a sphere's contrast recovery goes as 1 − c/R too), and a smooth curve through a site's
    spheres: each point is one sphere's level on one noisy, voxelised reconstruction, and
    interpolating the points would make one noisy sphere set g at its volume for every lesion
    (milan, full preset: the 10:1 scan's 5.58 mL sphere at g = 0.722 where the noise-free chain
    gives 0.601; the fit through its five spheres gives 0.633)."""
    x = np.asarray(volumes_ml, dtype=np.float64) ** (-1.0 / 3.0)
    y = np.asarray(values, dtype=np.float64)
    if x.size == 1:
        only = float(y[0])
        return lambda volume_ml: only
    design = np.column_stack([np.ones(x.size), x])
    coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
    intercept, slope = float(coefficients[0]), float(coefficients[1])
    return lambda volume_ml: intercept + slope * volume_ml ** (-1.0 / 3.0)


@dataclass(frozen=True)
class ThresholdCurve:
    """The site's threshold-volume curve g(V), measured on its NEMA spheres (Jentzen's T(V)).

    Attributes:
        volumes_ml: the spheres' true volumes, increasing, mL.
        fractions: per sphere, the mean-referenced background-corrected level that delineates
            its true volume on the site's own reconstruction (:func:`sphere_threshold_point`).

    Between spheres g is the least-squares fit g = a + b·(V/1 mL)^(−⅓) through the points
    (:func:`inverse_radius_fit`: one noisy sphere does not set g at its volume); below the
    smallest sphere it keeps the fit's value there; above the largest it tends to ½ as 1/R (the
    surface's curvature, the Gaussian model's large-object behaviour): g(V) = ½ + (g_max −
    ½)·(R_max / R), g_max the fit at the largest sphere, continuous there (no cliff).
    """

    volumes_ml: tuple[float, ...]
    fractions: tuple[float, ...]
    contrasts: tuple[float, ...] | None = None
    """Per sphere, the measured contrast K = C_mean / C_B of the region that delineates it
    (:func:`sphere_threshold_point`); None where not recorded (a curve from a record of before
    the contrast-dependent threshold)."""

    @functools.cached_property
    def _fraction_fit(self) -> Callable[[float], float]:
        return inverse_radius_fit(self.volumes_ml, self.fractions)

    @functools.cached_property
    def _log_contrast_fit(self) -> Callable[[float], float] | None:
        if self.contrasts is None:
            return None
        contrasts = np.maximum(np.asarray(self.contrasts, dtype=np.float64), 1e-9)
        return inverse_radius_fit(self.volumes_ml, np.log(contrasts))

    def _clamped(self, volume_ml: float) -> float:
        return min(max(volume_ml, self.volumes_ml[0]), self.volumes_ml[-1])

    def contrast_at(self, volume_ml: float) -> float:
        """The phantom's measured contrast K at ``volume_ml``: ln K smoothed across the spheres
        by the curve's form (:func:`inverse_radius_fit`), the end spheres' fitted value beyond
        them (NaN without contrasts)."""
        fit = self._log_contrast_fit
        return math.nan if fit is None else math.exp(fit(self._clamped(volume_ml)))

    def at(self, volume_ml: float) -> float:
        """g at ``volume_ml``: the least-squares fit of g = a + b·(V/1 mL)^(−⅓) through the
        spheres' points (:func:`inverse_radius_fit`) between the smallest and the largest
        sphere, the fit's value at the smallest below, the 1/R tail towards ½ above."""
        largest = self.volumes_ml[-1]
        if volume_ml > largest:
            radius_ratio = (largest / volume_ml) ** (1.0 / 3.0)
            return float(0.5 + (self._fraction_fit(largest) - 0.5) * radius_ratio)
        return self._fraction_fit(self._clamped(volume_ml))

    def residual_sd(self, volume_ml: float) -> float:
        """SD of g at ``volume_ml`` from the measured points' scatter (NaN with fewer than
        three points: no residual degree of freedom).

        The curve is the least-squares fit g = a + b·(V/1 mL)^(−⅓) through the points
        (:meth:`at`); s² = Σ r² / (n − 2) of the residuals r, and the SD is that of a new point
        at V: s·√(1 + x₀ᵀ(XᵀX)⁻¹x₀), x₀ = (1, V^(−⅓)), V clamped to the spheres' range (no
        extrapolation of the spread). Each point is one sphere's level on one noisy, voxelised
        reconstruction, and the g a lesion needs scatters about the curve as a sphere's does
        (a new point, not the fit's own error). What it does not hold: the curve's
        dependence on contrast (each site scans one sphere-to-background ratio; DESIGN.md,
        "Platform delineation"), so it is a lower bound of g's uncertainty for a lesion far
        from the phantom's contrast.
        """
        volumes = np.asarray(self.volumes_ml, dtype=np.float64)
        fractions = np.asarray(self.fractions, dtype=np.float64)
        if volumes.size < 3:
            return math.nan
        design = np.column_stack([np.ones(volumes.size), volumes ** (-1.0 / 3.0)])
        residuals = fractions - np.array([self._fraction_fit(float(v)) for v in volumes])
        scale = math.sqrt(float(np.sum(residuals**2)) / (volumes.size - 2))
        clamped = min(max(volume_ml, float(volumes.min())), float(volumes.max()))
        point = np.array([1.0, clamped ** (-1.0 / 3.0)])
        leverage = float(point @ np.linalg.inv(design.T @ design) @ point)
        return scale * math.sqrt(1.0 + leverage)


def gaussian_threshold(fwhm_mm: float) -> Callable[[float], float]:
    """g(V) of the Gaussian model (:func:`threshold_fraction`) for a site without a measured
    :class:`ThresholdCurve`."""
    return lambda volume_ml: threshold_fraction(volume_ml, fwhm_mm)


CONTRAST_EXTRAPOLATION_SPANS = 2.0
"""How far :class:`ThresholdSurface` extrapolates beyond the phantoms' contrasts, in units of
the measured span ln K₂ − ln K₁ (a modelling choice: on realistic OSEM with resolution
modelling the line through 4:1 and 10:1 predicts the g 4–18.5 mL spheres at 30:1 need, about
one span beyond, within 0.06 (milan, noise-free: 4 mL 0.50 against 0.56, 10 mL 0.44 against
0.42, 18.5 mL 0.42 against 0.38; ``tests/unit/test_quant_delineation_contrast.py``). Beyond it
g keeps the value at the limit."""


CENTRAL_PEAK_FRACTION = 1.0 / 3.0
"""A rule's region under this fraction of the site's VOI is taken for the central peak's fixed
point (``LEVEL_SCAN_STEPS``: the threshold has no fixed point at the lesion's scale, and the
lowest crossing is the peak's): it is published, with the site's VOI as the other end of its
volume SD (:data:`CENTRAL_PEAK_ONLY`; module docstring, "No fixed point at the lesion's
scale").

Of a lesion's region and its bracket's (:func:`delineate_lesion`), one under this fraction
of the other is not a bracket: one of the two levels found the central peak's fixed point
or filled the search region (full preset: a 1.35 mL lesion drawn 0.70× by the extrapolated
surface, 9.1× by the held one). Measured on milan's chain (noise-free, warm cylinder, 4:1 and
10:1 NEMA surface, lesions at 30:1; ``tests/unit/test_quant_delineation_contrast.py``): held /
extrapolated volume 0.44–0.72 where both regions are the lesion (4–18.5 mL), 0.05–0.07 where
the bracket found the central peak (one fill's curve as the bracket); on the realistic digital
consortium the held level finds the central peak of 5–12 mL lesions at milan and montpellier
(0.06–0.18 of the extrapolated region; ``benchmarks/diagnose_lesion_threshold.py``, full
preset)."""


MIN_LOG_CONTRAST_SPAN = math.log(1.5)
"""Scans whose measured contrasts differ by less than a factor 1.5 at a volume give no slope
(the line through two nearly equal contrasts would follow their noise): g is then their mean."""


@dataclass(frozen=True)
class ThresholdSurface:
    """g(V, K): the site's threshold as a function of volume and contrast, from NEMA scans at
    two or more sphere-to-background ratios (each a :class:`ThresholdCurve` with contrasts).

    Why: the background-corrected threshold that reproduces a sphere's volume would not depend
    on contrast if the image were the object blurred by a fixed PSF, but OSEM is non-linear:
    hot objects converge faster, and resolution modelling gives them an edge overshoot (a
    central peak up to ~2× the true concentration), so on the same reconstruction the level
    falls as contrast rises (milan, 11.5 mL sphere, noise-free: g = 0.56 at 4:1, 0.48 at 10:1,
    0.40 at 30:1). The threshold's dependence on the source-to-background ratio is what
    Daisne JF et al. (Radiother Oncol 2003;69:247-250) and Black QC et al. (Int J Radiat Oncol
    Biol Phys 2004;60:1272-1282) calibrate on phantoms at several contrasts, and NEMA NU 2 and
    the EARL accreditation fill the same phantom at 4:1 and 10:1.

    The form: at each volume, each scan's curve gives (ln K_k(V), g_k(V)) (K the mean of the
    delineating region over the background, as measured on the site's image, so that a lesion
    is placed on the surface by the same observable); g is the least-squares line in ln K
    through them (the two points with two scans), and K is clamped to
    :data:`CONTRAST_EXTRAPOLATION_SPANS` spans beyond the measured ones. Where the scans did not
    all measure spheres (below the smallest sphere a scan detected: the 4:1 fill's small spheres
    often are not) the slope is the one at the smallest volume every scan measured, through the
    scans that did measure that far down, and the slope is never positive (:meth:`at`). The
    line in ln K is our empirical choice: on the realistic chain (milan, spheres 2.6–26.5 mL,
    4:1–30:1) g is closer to linear in ln K than in 1/K, whose slope doubles between 10:1 and
    30:1. Without resolution modelling g does not follow contrast
    (:attr:`contrast_dependent`; module docstring, "Contrast dependence follows resolution
    modelling").
    With one scan (or scans of one contrast) there is no surface: the record keeps its curve.
    """

    curves: tuple[ThresholdCurve, ...]
    extrapolation_spans: float = CONTRAST_EXTRAPOLATION_SPANS
    """How far beyond the measured contrasts the line is followed, in spans (0: g held at the
    measured contrasts' limits, :meth:`held`)."""
    contrast_dependent: bool = True
    """False where the site's reconstruction does not model resolution: g does not follow
    contrast (module docstring, "Contrast dependence follows resolution modelling") and
    :meth:`at` is the mean of the curves at the volume, at any contrast."""

    def held(self) -> ThresholdSurface:
        """The same surface held at the measured contrasts' limits (no extrapolation): the
        platform's bracket of a lesion's volume (module docstring, "Beyond the phantoms'
        contrasts")."""
        return dataclasses.replace(self, extrapolation_spans=0.0)

    def at(self, volume_ml: float, contrast: float) -> float:
        """g at ``volume_ml`` and measured contrast ``contrast`` (= C_mean / C_B), in [0, 1].

        The slope in ln K is read where every scan measured spheres (``volume_ml``, raised to
        the smallest volume every scan measured; above their largest spheres every curve has
        its 1/R tail, so the slope fades with them) and is never positive (g does not rise
        with contrast: Daisne et al. 2003; on milan's noise-free chain it falls at every
        volume). The line passes through the scans that measured a sphere at ``volume_ml``
        (below the common range: the scans reaching that far down; the others would be held
        at a larger sphere's value and contrast, and the line through them would take a slope
        no sphere measured: milan's record, g rising with K below 5.58 mL)."""
        lows = [c.volumes_ml[0] for c in self.curves]
        highs = [c.volumes_ml[-1] for c in self.curves]
        common_low, common_high = max(lows), min(highs)
        slope_volume = max(volume_ml, min(common_low, common_high))
        slope_log_k = np.array(
            [math.log(max(c.contrast_at(slope_volume), 1e-9)) for c in self.curves]
        )
        slope_fractions = np.array([c.at(slope_volume) for c in self.curves])
        span = float(np.ptp(slope_log_k))
        covered = min(max(volume_ml, min(lows)), max(highs))
        anchors = [
            c for c in self.curves if c.volumes_ml[0] <= covered <= c.volumes_ml[-1]
        ] or list(self.curves)
        log_k = np.array([math.log(max(c.contrast_at(volume_ml), 1e-9)) for c in anchors])
        fractions = np.array([c.at(volume_ml) for c in anchors])
        if not self.contrast_dependent or not span >= MIN_LOG_CONTRAST_SPAN:
            return float(np.clip(fractions.mean(), 0.0, 1.0))
        slope = min(float(np.polyfit(slope_log_k, slope_fractions, 1)[0]), 0.0)
        reach = self.extrapolation_spans * span
        low, high = float(log_k.min()) - reach, float(log_k.max()) + reach
        log_contrast = math.log(contrast) if 0 < contrast < math.inf else high
        log_contrast = min(max(log_contrast, low), high)
        value = fractions.mean() + slope * (log_contrast - log_k.mean())
        return float(np.clip(value, 0.0, 1.0))


def threshold_surface(
    curves: Sequence[ThresholdCurve], *, contrast_dependent: bool = True
) -> ThresholdSurface | None:
    """The :class:`ThresholdSurface` of ``curves``, or None when fewer than two carry contrasts
    (one scan's curve, or records of before: today's curve applies). ``contrast_dependent``:
    False where the site's reconstruction does not model resolution
    (:attr:`ThresholdSurface.contrast_dependent`)."""
    usable = tuple(c for c in curves if c.contrasts is not None)
    if len(usable) < 2:
        return None
    return ThresholdSurface(usable, contrast_dependent=contrast_dependent)


@dataclass(frozen=True)
class LesionDelineation:
    """One lesion as the platform rule delineated it (first time point's grid).

    Attributes:
        mask: bool mask over the whole grid (the site's VOI when not re-delineated).
        status: :data:`DELINEATED` or why the site's VOI was kept.
        threshold_fraction: g(V) at the delineated volume (NaN if kept).
        peak_mbq_per_ml, background_mbq_per_ml: the seed voxel's concentration and C_B (NaN
            where not measured).
        background_sd_mbq_per_ml: SD of the background shell (robust; NaN where not measured).
        site_volume_ml, volume_ml: the site's VOI and the delineated volume on the grid, mL.
        threshold_fraction_sd: SD of g at the delineated volume
            (:meth:`ThresholdCurve.residual_sd`; NaN without a measured curve of ≥ 3 points).
        volume_sd_ml: the delineated volume's SD: half the difference between the volumes of
            ``larger_mask`` and ``smaller_mask`` (NaN where neither was measured).
        smaller_mask, larger_mask: the smallest and the largest of the regions the rule finds
            with g + SD and g − SD, with the bracketing threshold and at its other stable fixed
            points (``other_fixed_point_volumes_ml``), and of the site's VOI where
            ``central_peak_only`` (None where none was measured): the delineation term of the
            activity's SD is propagated through them (``pipeline.quantify``).
        bracket_volume_ml: the volume the bracketing threshold finds (``bracket_threshold`` of
            :func:`delineate_lesion`; NaN without one).
        central_peak_only: the rule's region is under :data:`CENTRAL_PEAK_FRACTION` of the
            site's VOI (:data:`CENTRAL_PEAK_ONLY`): the site's VOI is then one end of the ±SD
            pair.
        other_fixed_point_volumes_ml: the volumes of the threshold's other stable fixed
            points, smaller than the rule's region and over :data:`CENTRAL_PEAK_FRACTION` of
            it (module docstring, "Several fixed points at the lesion's scale"), mL: they
            join the ±SD pair.
    """

    mask: BoolArray
    status: str
    threshold_fraction: float
    peak_mbq_per_ml: float
    background_mbq_per_ml: float
    background_sd_mbq_per_ml: float
    site_volume_ml: float
    volume_ml: float
    threshold_fraction_sd: float = math.nan
    volume_sd_ml: float = math.nan
    smaller_mask: BoolArray | None = None
    larger_mask: BoolArray | None = None
    bracket_volume_ml: float = math.nan
    central_peak_only: bool = False
    other_fixed_point_volumes_ml: tuple[float, ...] = ()

    @property
    def volume_relative_sd(self) -> float:
        """``volume_sd_ml`` / ``volume_ml`` (NaN where not measured)."""
        return self.volume_sd_ml / self.volume_ml if self.volume_ml > 0 else math.nan


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


@dataclass(frozen=True)
class _Zone:
    """One lesion's neighbourhood on the grid: the search region, the background shell, the
    seed and the background's level and noise (module docstring)."""

    box: Box
    values: FloatArray
    search: BoolArray
    seed: tuple[int, int, int]
    peak: float
    background: float
    background_sd: float

    def region(self, level: float) -> BoolArray:
        """The voxels ≥ ``level`` connected to the seed, holes filled, inside the search."""
        labels, _ = ndimage.label(self.search & (self.values >= level))
        component: BoolArray = labels == labels[self.seed]
        filled: BoolArray = ndimage.binary_fill_holes(component) & self.search
        return filled

    def fraction(self, region: BoolArray, level: float) -> float:
        """(level − C_B) / (C_mean − C_B) of ``region`` (NaN when its mean is not above C_B)."""
        mean = float(self.values[region].mean())
        if not mean > self.background:
            return math.nan
        return (level - self.background) / (mean - self.background)


def _zone(
    image: FloatArray,
    site_mask: BoolArray,
    excluded: BoolArray,
    box: Box,
    *,
    spacing_mm_zyx: tuple[float, float, float],
    fwhm_mm: float,
) -> _Zone:
    search_mm = SEARCH_MARGIN_FWHM * fwhm_mm
    shell_mm = BACKGROUND_SHELL_FWHM * fwhm_mm
    reach = [math.ceil((search_mm + shell_mm + fwhm_mm) / s) + 1 for s in spacing_mm_zyx]
    zone = _grown_box(box, reach, image.shape)
    values = image[zone]
    own = site_mask[zone]
    others = excluded[zone] & ~own
    distance = _distance_mm(own, spacing_mm_zyx)
    near_others = _distance_mm(others, spacing_mm_zyx) <= fwhm_mm
    shell = (distance > search_mm) & (distance <= search_mm + shell_mm) & ~near_others
    seed_flat = int(np.argmax(np.where(own, values, -np.inf)))
    seed = np.unravel_index(seed_flat, values.shape)
    ring = values[shell]
    background = float(np.median(ring)) if ring.size else 0.0
    return _Zone(
        box=zone,
        values=values,
        search=(distance <= search_mm) & ~others,
        seed=(int(seed[0]), int(seed[1]), int(seed[2])),
        peak=float(values[seed]),
        background=background,
        background_sd=(
            MAD_TO_SD * float(np.median(np.abs(ring - background))) if ring.size else math.nan
        ),
    )


def delineate_lesion(
    concentration_mbq_per_ml: FloatArray,
    site_mask: BoolArray,
    other_lesions: BoolArray,
    *,
    spacing_mm_zyx: tuple[float, float, float],
    fwhm_mm: float,
    threshold: Callable[[float], float] | None = None,
    threshold_sd: Callable[[float], float] | None = None,
    contrast_threshold: Callable[[float, float], float] | None = None,
    bracket_threshold: Callable[[float, float], float] | None = None,
) -> LesionDelineation:
    """Re-delineate one lesion by the platform rule (module docstring).

    Args:
        concentration_mbq_per_ml: the first time point's image (slices, rows, columns), MBq/mL.
        site_mask: the site's VOI of the lesion on that grid.
        other_lesions: what the lesion may not grow into: the other lesions' VOIs (and organs
            that do not host it) on that grid.
        spacing_mm_zyx: voxel size along (slices, rows, columns), mm.
        fwhm_mm: the site's effective Gaussian FWHM from its NEMA spheres, mm (sets the search
            region and the background shell).
        threshold: g(V), the site's measured curve (:meth:`ThresholdCurve.at`); the Gaussian
            model of ``fwhm_mm`` (:func:`threshold_fraction`) when None.
        threshold_sd: SD of g at a volume (:meth:`ThresholdCurve.residual_sd`); with it, the
            rule is run again with g ± SD (the whole curve shifted) and the two regions give
            the volume's SD (``volume_sd_ml``, ``smaller_mask``, ``larger_mask``). None: not
            measured (the Gaussian model has no residuals).
        contrast_threshold: g(V, K), the site's contrast-dependent threshold
            (:meth:`ThresholdSurface.at`, K = C_mean / C_B of the region); when given it
            replaces ``threshold`` at the fixed point (V, K and the level found together).
        bracket_threshold: a second g(V, K) (the platform's: the surface held at the phantoms'
            measured contrasts, :meth:`ThresholdSurface.held`); with ``contrast_threshold`` its
            region brackets the lesion's: it joins the ±SD pair (``smaller_mask`` /
            ``larger_mask``, ``volume_sd_ml``) unless one of the two regions is under
            :data:`CENTRAL_PEAK_FRACTION` of the other (module docstring, "Beyond the phantoms'
            contrasts"). The lesion is always ``contrast_threshold``'s region.
    """
    image = np.asarray(concentration_mbq_per_ml, dtype=np.float64)
    voxel_ml = float(np.prod(spacing_mm_zyx)) / 1000.0
    site_volume_ml = float(site_mask.sum()) * voxel_ml
    g = threshold or gaussian_threshold(fwhm_mm)
    box = bounding_box(site_mask)

    def level_fraction(
        inside: BoolArray, surface: Callable[[float, float], float] | None = contrast_threshold
    ) -> float:
        """g of ``inside``: ``surface`` at its volume and contrast, else the curve."""
        volume = float(inside.sum()) * voxel_ml
        if surface is None:
            return g(volume)
        mean = float(zone.values[inside].mean()) if inside.any() else math.nan
        contrast = mean / zone.background if zone.background > 0 else math.inf
        return surface(volume, contrast)

    def kept(reason: str, zone: _Zone | None = None) -> LesionDelineation:
        return LesionDelineation(
            site_mask,
            reason,
            math.nan,
            math.nan if zone is None else zone.peak,
            math.nan if zone is None else zone.background,
            math.nan if zone is None else zone.background_sd,
            site_volume_ml,
            site_volume_ml,
        )

    if box is None:
        return kept("no voxel of the site's VOI on the grid")
    zone = _zone(
        image, site_mask, other_lesions, box, spacing_mm_zyx=spacing_mm_zyx, fwhm_mm=fwhm_mm
    )
    if not zone.peak > zone.background:
        return kept(NO_CONTRAST, zone)
    if np.isfinite(zone.background_sd) and (
        zone.peak - zone.background < DETECTION_CNR * zone.background_sd
    ):
        return kept(UNDETECTABLE, zone)

    def fixed_points(
        shift: float,
        surface: Callable[[float, float], float] | None = contrast_threshold,
        *,
        every: bool = False,
    ) -> list[BoolArray]:
        """The regions at the stable fixed points of the curve (``surface``) shifted by
        ``shift``, from the lowest level up: the lowest only unless ``every``, and then those
        up to where the region falls under :data:`CENTRAL_PEAK_FRACTION` of the lowest's (the
        regions shrink as the level rises: above that, the central peak's scale, which
        :func:`delineate_lesion` leaves out)."""

        def excess(level: float, inside: BoolArray | None = None) -> float:
            inside = zone.region(level) if inside is None else inside
            ratio = zone.fraction(inside, level)
            if not np.isfinite(ratio):
                return -1.0
            return ratio - min(max(level_fraction(inside, surface) + shift, 0.0), 1.0)

        def bisected(low: float, high: float) -> BoolArray:
            for _ in range(BISECTION_STEPS):
                middle = 0.5 * (low + high)
                if excess(middle) < 0:
                    low = middle
                else:
                    high = middle
            return zone.region(high)

        # Scan up from the background for the crossings from under g to over it (the stable
        # fixed points of V -> g -> V), and bisect each bracket.
        regions: list[BoolArray] = []
        low, under, low_voxels, peak_scale_voxels = zone.background, True, math.inf, 0.0
        for level in np.linspace(zone.background, zone.peak, LEVEL_SCAN_STEPS + 1)[1:]:
            if low_voxels < peak_scale_voxels:
                break  # every fixed point above is smaller still
            inside = zone.region(float(level))
            over = excess(float(level), inside) >= 0
            if over and under:
                regions.append(bisected(low, float(level)))
                if not every:
                    break
                peak_scale_voxels = CENTRAL_PEAK_FRACTION * float(regions[0].sum())
            low, under, low_voxels = float(level), not over, float(inside.sum())
        return regions or [zone.region(zone.peak)]

    def fixed_point(
        shift: float, surface: Callable[[float, float], float] | None = contrast_threshold
    ) -> BoolArray:
        """The region at the lowest stable fixed point (:data:`LEVEL_SCAN_STEPS`)."""
        return fixed_points(shift, surface)[0]

    def on_grid(region: BoolArray) -> BoolArray:
        whole = np.zeros(image.shape, dtype=bool)
        whole[zone.box] = region
        return whole

    chosen, *higher = fixed_points(0.0, every=True)
    volume_ml = float(chosen.sum()) * voxel_ml
    central_peak_only = volume_ml < CENTRAL_PEAK_FRACTION * site_volume_ml
    # the other stable fixed points at the lesion's scale (not its central peak's): the image
    # does not tell which of them is the lesion, and they join the ±SD pair
    alternatives = [
        region
        for region in higher
        if CENTRAL_PEAK_FRACTION * float(chosen.sum()) <= float(region.sum()) < chosen.sum()
    ]
    other: BoolArray | None = None
    bracket_volume_ml = math.nan
    if contrast_threshold is not None and bracket_threshold is not None:
        other = fixed_point(0.0, bracket_threshold)
        bracket_volume_ml = float(other.sum()) * voxel_ml
        low, high = sorted((float(other.sum()), float(chosen.sum())))
        if low < CENTRAL_PEAK_FRACTION * high:
            other = None  # one level found the central peak or filled the search: no bracket
    fraction_sd = threshold_sd(volume_ml) if threshold_sd is not None else math.nan
    bracket: list[BoolArray] = []
    if np.isfinite(fraction_sd) and fraction_sd > 0:
        bracket += [fixed_point(fraction_sd), fixed_point(-fraction_sd)]
    if other is not None and int(other.sum()) != int(chosen.sum()):
        bracket.append(other)
    bracket += alternatives
    if central_peak_only:
        bracket.append(site_mask[zone.box])  # the site's VOI is the other end of the SD
    smaller = larger = None
    volume_sd_ml = math.nan
    if bracket:
        bracket.append(chosen)
        smaller = min(bracket, key=lambda region: int(region.sum()))
        larger = max(bracket, key=lambda region: int(region.sum()))
        volume_sd_ml = 0.5 * (float(larger.sum()) - float(smaller.sum())) * voxel_ml
    return LesionDelineation(
        mask=on_grid(chosen),
        status=DELINEATED,
        threshold_fraction=level_fraction(chosen),
        peak_mbq_per_ml=zone.peak,
        background_mbq_per_ml=zone.background,
        background_sd_mbq_per_ml=zone.background_sd,
        site_volume_ml=site_volume_ml,
        volume_ml=volume_ml,
        threshold_fraction_sd=fraction_sd,
        volume_sd_ml=volume_sd_ml,
        smaller_mask=None if smaller is None else on_grid(smaller),
        larger_mask=None if larger is None else on_grid(larger),
        bracket_volume_ml=bracket_volume_ml,
        central_peak_only=central_peak_only,
        other_fixed_point_volumes_ml=tuple(float(r.sum()) * voxel_ml for r in alternatives),
    )


def sphere_threshold_point(
    concentration_mbq_per_ml: FloatArray,
    sphere_mask: BoolArray,
    excluded: BoolArray,
    true_volume_ml: float,
    *,
    spacing_mm_zyx: tuple[float, float, float],
    fwhm_mm: float,
) -> tuple[float, float] | None:
    """The mean-referenced, background-corrected level that delineates a phantom sphere's
    ``true_volume_ml`` on the site's own image (one point of Jentzen's T(V)); None when the
    sphere is not detectable (the rule would keep the site's VOI), holds no voxel, or no level
    reproduces its volume within 50 % (a sphere of a few coarse voxels). Returns (g, K): the
    level's fraction and the region's measured contrast K = C_mean / C_B (inf over a
    background ≤ 0), the coordinates of :class:`ThresholdSurface`.

    The level is lowered by bisection until the region around the sphere's hottest voxel
    reaches the true volume (the region grows as the level falls); g is read off that region.
    """
    image = np.asarray(concentration_mbq_per_ml, dtype=np.float64)
    voxel_ml = float(np.prod(spacing_mm_zyx)) / 1000.0
    box = bounding_box(sphere_mask)
    if box is None:
        return None
    zone = _zone(image, sphere_mask, excluded, box, spacing_mm_zyx=spacing_mm_zyx, fwhm_mm=fwhm_mm)
    if not zone.peak > zone.background or (
        np.isfinite(zone.background_sd)
        and zone.peak - zone.background < DETECTION_CNR * zone.background_sd
    ):
        return None
    low, high = zone.background, zone.peak
    for _ in range(BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if float(zone.region(middle).sum()) * voxel_ml >= true_volume_ml:
            low = middle
        else:
            high = middle
    # the two neighbouring steps: take the level whose volume is nearer the truth
    below, above = zone.region(low), zone.region(high)
    use_low = abs(float(below.sum()) * voxel_ml - true_volume_ml) <= abs(
        float(above.sum()) * voxel_ml - true_volume_ml
    )
    level, region = (low, below) if use_low else (high, above)
    fraction = zone.fraction(region, level)
    volume_ml = float(region.sum()) * voxel_ml
    # No level reproduces the volume (a sphere of a few coarse voxels, or one the search
    # region cannot hold): no point of the curve rather than a wrong one.
    if not (0.0 < fraction < 1.0) or abs(volume_ml - true_volume_ml) > 0.5 * true_volume_ml:
        return None
    mean = float(zone.values[region].mean())
    return fraction, (mean / zone.background if zone.background > 0 else math.inf)


def measure_threshold_curve(
    concentration_mbq_per_ml: FloatArray,
    sphere_masks: Sequence[BoolArray],
    true_volumes_ml: Sequence[float],
    *,
    spacing_mm_zyx: tuple[float, float, float],
    fwhm_mm: float,
) -> ThresholdCurve | None:
    """The site's :class:`ThresholdCurve` from its NEMA spheres (each sphere's
    :func:`sphere_threshold_point`, the other spheres excluded from its search region); None when
    fewer than two spheres are detectable."""
    points: list[tuple[float, float, float]] = []
    for index, (mask, volume) in enumerate(zip(sphere_masks, true_volumes_ml, strict=True)):
        others = np.zeros_like(mask)
        for other_index, other in enumerate(sphere_masks):
            if other_index != index:
                others |= other
        point = sphere_threshold_point(
            concentration_mbq_per_ml,
            mask,
            others,
            float(volume),
            spacing_mm_zyx=spacing_mm_zyx,
            fwhm_mm=fwhm_mm,
        )
        if point is not None:
            points.append((float(volume), float(point[0]), float(point[1])))
    if len(points) < 2:
        return None
    points.sort()
    contrasts = tuple(k for _, _, k in points)
    return ThresholdCurve(
        volumes_ml=tuple(v for v, _, _ in points),
        fractions=tuple(f for _, f, _ in points),
        contrasts=contrasts if all(math.isfinite(k) for k in contrasts) else None,
    )


HOST_FRACTION = 0.5
"""An organ hosts a lesion (a hepatic lesion in the liver) when its VOI, holes filled, holds at
least this fraction of the lesion's VOI; other organs' voxels are no part of its search region
(a lesion next to a kidney must not grow into it)."""


def search_exclusions(masks: BoolArray, lesion: Sequence[bool]) -> tuple[BoolArray | None, ...]:
    """Per VOI of ``masks`` (n_voi, slices, rows, columns), what its lesion's search region leaves
    out: the other lesions' VOIs and the VOIs of organs that do not host it
    (:data:`HOST_FRACTION`, the organ's VOI with its holes filled); None for organs."""
    lesions = np.asarray(lesion, dtype=bool)
    filled = {
        k: np.asarray(ndimage.binary_fill_holes(masks[k]), dtype=bool)
        for k in np.flatnonzero(~lesions)
    }
    result: list[BoolArray | None] = []
    for index, mask in enumerate(masks):
        if not lesions[index]:
            result.append(None)
            continue
        others = np.zeros_like(mask)
        for other_index in np.flatnonzero(lesions):
            if other_index != index:
                others |= masks[other_index]
        size = float(mask.sum())
        for organ_index, organ in filled.items():
            if size and float((organ & mask).sum()) < HOST_FRACTION * size:
                others |= masks[organ_index]
        result.append(others)
    return tuple(result)


def delineate_lesions(
    concentration_mbq_per_ml: FloatArray,
    masks: BoolArray,
    lesion: Sequence[bool],
    *,
    spacing_mm_zyx: tuple[float, float, float],
    fwhm_mm: float,
    threshold: Callable[[float], float] | None = None,
    threshold_sd: Callable[[float], float] | None = None,
    contrast_threshold: Callable[[float, float], float] | None = None,
    bracket_threshold: Callable[[float, float], float] | None = None,
) -> tuple[LesionDelineation | None, ...]:
    """:func:`delineate_lesion` for every lesion of ``masks`` (n_voi, slices, rows, columns);
    None for organs (kept as the site drew them). A lesion's search region leaves out the other
    lesions' VOIs and the VOIs of organs that do not host it (:data:`HOST_FRACTION`).
    ``threshold``: the site's g(V) (:meth:`ThresholdCurve.at`; the Gaussian model of
    ``fwhm_mm`` when None); ``threshold_sd``: its SD (:meth:`ThresholdCurve.residual_sd`);
    ``contrast_threshold``: the site's g(V, K) (:meth:`ThresholdSurface.at`), used instead of
    ``threshold`` when given; ``bracket_threshold``: the same held at the phantoms' contrasts
    (:func:`delineate_lesion`)."""
    results: list[LesionDelineation | None] = []
    for mask, others in zip(masks, search_exclusions(masks, lesion), strict=True):
        if others is None:
            results.append(None)
            continue
        results.append(
            delineate_lesion(
                concentration_mbq_per_ml,
                mask,
                others,
                spacing_mm_zyx=spacing_mm_zyx,
                fwhm_mm=fwhm_mm,
                threshold=threshold,
                threshold_sd=threshold_sd,
                contrast_threshold=contrast_threshold,
                bracket_threshold=bracket_threshold,
            )
        )
    return tuple(results)


__all__ = [
    "BACKGROUND_SHELL_FWHM",
    "CENTRAL_PEAK_FRACTION",
    "CENTRAL_PEAK_ONLY",
    "CONTRAST_EXTRAPOLATION_SPANS",
    "DELINEATED",
    "DETECTION_CNR",
    "HOST_FRACTION",
    "MIN_LOG_CONTRAST_SPAN",
    "NO_CONTRAST",
    "SEARCH_MARGIN_FWHM",
    "SEVERAL_FIXED_POINTS",
    "UNDETECTABLE",
    "LesionDelineation",
    "ThresholdCurve",
    "ThresholdSurface",
    "delineate_lesion",
    "delineate_lesions",
    "gaussian_threshold",
    "inverse_radius_fit",
    "measure_threshold_curve",
    "search_exclusions",
    "sphere_profile",
    "sphere_threshold_point",
    "threshold_fraction",
    "threshold_surface",
]
