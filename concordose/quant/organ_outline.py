"""A site-independent organ volume (hence the dose mass): the site's outline moved to the edge
the SPECT shows.

Each site draws its organ VOIs by its own rule (a manual margin of +3 mm at one, CT outlines
eroded by 2 mm against spill-in at another), so the volume — the mass the dose divides by — is
the site's, not the organ's: on the digital consortium a kidney's mass differs by site as much
as the margin times its surface (≈ 25 % for a 150 mL kidney between +3 and −2 mm). Under
``gtm_platform_voi`` the platform replaces it by a volume found by one rule whatever the site
drew: the site's outline (its shape, drawn on the CT, is kept) **moved inward or outward by a
uniform offset d**, d chosen so that the image the camera would form of the organ so outlined
best matches the SPECT around its surface:

    I(x) ≈ C_O · (h * 1_{M_d})(x) + C_B · (h * 1_{B_d})(x) + Σ_k C_k · (h * 1_{R_k})(x),

M_d = {x : s(x) ≤ d} the site's VOI offset by d (s the signed distance to its surface, mm,
negative inside), B_d the body outside M_d and the other VOIs, R_k the other VOIs near the
organ (a neighbouring organ, the lesions inside the liver), h the site's Gaussian PSF; the
concentrations C_O, C_B, C_k are fitted by linear least squares over a fixed band around the
site's surface (inside the body, the other VOIs' voxels left out), for every d in ±
:data:`OUTLINE_SEARCH_FWHM` × FWHM by :data:`OUTLINE_STEP_MM` (then refined to 0.1 mm), and d
is the one of least squared residual. M_d is taken with partial voxels (a voxel's fraction
inside, a linear ramp one voxel wide across the offset surface), so the fit and the volume
vary continuously with d rather than by whole voxel shells.

This is the GTM's forward model (Rousset et al. J Nucl Med 1998;39:904, module ``quant.gtm``)
with the organ's boundary a free parameter, i.e. a model-based (deconvolution-free) edge fit.
Where a threshold at half the contrast would put the edge inside a curved surface (at the true
surface of a 30 mm-radius sphere blurred by 12 mm the profile is at 0.43 of the contrast, not
0.5: module ``quant.delineation``), the forward model reproduces the blurred edge of the
organ's own shape, curvature included. Why an offset of the site's outline and not a free
segmentation: the CT outline is the organ's anatomical shape, which the SPECT at 10–15 mm
resolution cannot resolve; what differs between sites is mostly a margin, one number the whole
surface (thousands of voxels) measures, so noise averages out. Why not the mass of the extent
(the VOI grown by 2 FWHM that gives the organ's activity, ``quant.gtm.extent_activity``): it
holds the surrounding tissue by design, and restricting it to the body or to CT density does
not remove that; nor the site's VOI eroded or dilated by a fixed distance: that moves every
site's outline by the same amount and keeps the difference between their margins.

The volume is the site's (segmentation grid) plus what the offset adds or removes on the SPECT
grid (``volume = V_site + (Σ w_d − Σ w_0) · v``, w the partial-voxel fractions, v the voxel
volume); the mass takes unit density, as the pipeline's does.

What it assumes: the organ is uniform near its surface and hotter than its surroundings
(:data:`quant.gtm.EXTENT_MIN_CONTRAST` × the fitted background at least, else the site's volume
is kept: the marrow at 1.1–1.2× has no edge to fit); the site's outline is the organ's shape
up to a uniform margin (a VOI drawn off-shape keeps its shape error); the isotropic Gaussian
PSF (respiratory blur widens the edge along the body axis: the fitted offset then absorbs
part of it, the same at every site that sees the same motion); a minimum strictly inside the
search range (else the site's volume is kept, status saying so).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from concordose.quant.gtm import (
    EXTENT_MIN_CONTRAST,
    FWHM_PER_SIGMA,
    GAUSSIAN_TRUNCATE_SIGMA,
    body_outline,
)
from concordose.quant.voi import Box, bounding_box

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

OUTLINE_SEARCH_FWHM = 1.0
"""The offsets tried: ± this many FWHM of the PSF (a site's margin is a few mm; an FWHM is
10–20 mm for Lu-177 SPECT)."""
OUTLINE_STEP_MM = 1.0
"""Step of the offsets tried first, mm; the best is then refined over ± one step by
:data:`OUTLINE_REFINE_POINTS` points (0.1 mm)."""
OUTLINE_REFINE_POINTS = 21
"""Offsets tried around the best coarse one (± :data:`OUTLINE_STEP_MM`)."""
OUTLINE_BAND_FWHM = 1.5
"""The fit's band: voxels within the search range plus this many FWHM of the site's surface
(the blurred edge's extent)."""
FITTED = "fitted"
"""Status of an organ whose outline was moved to the SPECT's edge."""
FAINT = (
    f"organ under {EXTENT_MIN_CONTRAST:g}× its surroundings at the first time point: no edge to "
    "fit, the site's volume kept"
)
AT_LIMIT = "best offset at the search range's limit: the site's volume kept"
NO_VOXELS = "no voxel of the site's VOI on the SPECT grid: the site's volume kept"


@dataclass(frozen=True)
class OrganOutline:
    """One organ's platform volume (first time point's grid).

    Attributes:
        status: :data:`FITTED` or why the site's volume was kept.
        offset_mm: the offset of the site's outline that fits the SPECT, mm (+ outward; NaN
            where not fitted): −3 for a site that drew 3 mm outside the organ.
        site_volume_ml: the site's volume, mL.
        volume_ml: the platform's volume, mL (the site's where not fitted).
        organ_mbq_per_ml, background_mbq_per_ml: the fit's C_O and C_B at the chosen offset
            (NaN where no fit ran).
    """

    status: str
    offset_mm: float
    site_volume_ml: float
    volume_ml: float
    organ_mbq_per_ml: float
    background_mbq_per_ml: float


def _signed_distance_mm(mask: BoolArray, spacing_mm_zyx: tuple[float, float, float]) -> FloatArray:
    """Signed distance of each voxel centre to the mask's surface, mm (negative inside): the
    surface half the smallest voxel outside the boundary voxels' centres, so that {s ≤ 0} is
    the mask itself."""
    half = 0.5 * min(spacing_mm_zyx)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing_mm_zyx)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing_mm_zyx)
    signed: FloatArray = np.where(mask, half - inside, outside - half)
    return signed


def _grown_box(box: Box, reach: list[int], shape: tuple[int, ...]) -> Box:
    parts = tuple(
        slice(max(int(s.start) - r, 0), min(int(s.stop) + r, int(n)))
        for s, r, n in zip(box, reach, shape, strict=True)
    )
    return (parts[0], parts[1], parts[2])


def organ_outline(
    concentration_mbq_per_ml: FloatArray,
    site_mask: BoolArray,
    others: BoolArray,
    *,
    body: BoolArray,
    spacing_mm_zyx: tuple[float, float, float],
    fwhm_mm: float,
    site_volume_ml: float | None = None,
) -> OrganOutline:
    """The organ's platform volume: the site's outline offset to the SPECT's edge (module
    docstring).

    Args:
        concentration_mbq_per_ml: the first time point's image (slices, rows, columns), MBq/mL.
        site_mask: the site's VOI of the organ on that grid.
        others: the other VOIs on that grid (stack (n, slices, rows, columns)); each is a
            region of its own concentration in the model, its voxels no part of the fit.
        body: the body outline on that grid (``quant.gtm.body_outline``).
        spacing_mm_zyx: voxel size along (slices, rows, columns), mm.
        fwhm_mm: the site's effective Gaussian FWHM for large objects, mm.
        site_volume_ml: the site's volume on its segmentation grid (default: the voxel count of
            ``site_mask``).
    """
    image = np.asarray(concentration_mbq_per_ml, dtype=np.float64)
    voxel_ml = float(np.prod(spacing_mm_zyx)) / 1000.0
    site_ml = float(site_mask.sum()) * voxel_ml if site_volume_ml is None else site_volume_ml
    box = bounding_box(site_mask)

    def kept(reason: str, organ: float = math.nan, background: float = math.nan) -> OrganOutline:
        return OrganOutline(reason, math.nan, site_ml, site_ml, organ, background)

    if box is None:
        return kept(NO_VOXELS)
    search_mm = OUTLINE_SEARCH_FWHM * fwhm_mm
    band_mm = search_mm + OUTLINE_BAND_FWHM * fwhm_mm
    sigma_mm = fwhm_mm / FWHM_PER_SIGMA
    reach = [
        math.ceil((band_mm + GAUSSIAN_TRUNCATE_SIGMA * sigma_mm) / s) + 1 for s in spacing_mm_zyx
    ]
    zone = _grown_box(box, reach, image.shape)
    values = image[zone]
    own = np.asarray(site_mask[zone], dtype=bool)
    inside_body = np.asarray(body[zone], dtype=bool) | own
    neighbours = [
        other[zone] & ~own for other in np.asarray(others, dtype=bool) if (other[zone] & ~own).any()
    ]
    # the other VOIs' voxels inside the organ's outline (the liver's lesions) stay theirs
    inner_others = [other[zone] & own for other in np.asarray(others, dtype=bool)]
    occupied = np.zeros_like(own)
    for region in [*neighbours, *inner_others]:
        occupied |= region
    signed = _signed_distance_mm(own, spacing_mm_zyx)
    band = (np.abs(signed) <= band_mm) & inside_body & ~occupied
    sigma = [sigma_mm / s for s in spacing_mm_zyx]

    def blurred(region: BoolArray | FloatArray) -> FloatArray:
        result: FloatArray = ndimage.gaussian_filter(
            np.asarray(region, dtype=np.float64),
            sigma,
            mode="nearest",
            truncate=GAUSSIAN_TRUNCATE_SIGMA,
        )
        return result

    fixed = [blurred(region)[band] for region in [*neighbours, *inner_others] if region.any()]
    body_blurred = blurred(inside_body & ~occupied)
    measured = values[band]
    # a voxel's fraction inside M_d: a linear ramp one voxel wide across the offset surface
    # (continuous in d, so the fit and the volume are not stepped by whole voxel shells)
    ramp_mm = float(np.mean(spacing_mm_zyx))
    free = inside_body & ~occupied

    def weight(offset_mm: float) -> FloatArray:
        fraction: FloatArray = np.clip((offset_mm - signed) / ramp_mm + 0.5, 0.0, 1.0)
        return np.where(free, fraction, 0.0)

    def fit(offset_mm: float) -> tuple[float, FloatArray]:
        organ_blurred = blurred(weight(offset_mm))
        design = np.column_stack(
            [organ_blurred[band], (body_blurred - organ_blurred)[band], *fixed]
        )
        solution, *_ = np.linalg.lstsq(design, measured, rcond=None)
        return float(np.sum((design @ solution - measured) ** 2)), solution

    coarse = np.arange(-search_mm, search_mm + 0.5 * OUTLINE_STEP_MM, OUTLINE_STEP_MM)
    coarse_residuals = [fit(float(offset))[0] for offset in coarse]
    best = int(np.argmin(coarse_residuals))
    at_limit = best in (0, coarse.size - 1)
    fine = coarse[best] + np.linspace(-OUTLINE_STEP_MM, OUTLINE_STEP_MM, OUTLINE_REFINE_POINTS)
    fine = fine[np.abs(fine) <= search_mm]
    fits = [fit(float(offset)) for offset in fine]
    chosen = int(np.argmin([residual for residual, _ in fits]))
    offset_mm = float(fine[chosen])
    solution = fits[chosen][1]
    organ_level, background_level = float(solution[0]), float(solution[1])
    if not organ_level >= EXTENT_MIN_CONTRAST * max(background_level, 0.0) or not organ_level > 0:
        return kept(FAINT, organ_level, background_level)
    if at_limit:
        return kept(AT_LIMIT, organ_level, background_level)
    added_ml = (float(weight(offset_mm).sum()) - float(weight(0.0).sum())) * voxel_ml
    return OrganOutline(
        status=FITTED,
        offset_mm=offset_mm,
        site_volume_ml=site_ml,
        volume_ml=site_ml + added_ml,
        organ_mbq_per_ml=organ_level,
        background_mbq_per_ml=background_level,
    )


def platform_organ_outlines(
    concentration_mbq_per_ml: FloatArray,
    masks: BoolArray,
    lesion: Sequence[bool],
    *,
    spacing_mm_zyx: tuple[float, float, float],
    fwhm_mm: float,
    site_volumes_ml: Sequence[float] | FloatArray,
) -> tuple[OrganOutline | None, ...]:
    """:func:`organ_outline` of every organ of ``masks`` (n_voi, slices, rows, columns), the
    other VOIs (lesions as the platform drew them) its neighbours, the body from the SPECT
    (``quant.gtm.body_outline``); None for lesions."""
    image = np.asarray(concentration_mbq_per_ml, dtype=np.float64)
    body = body_outline(image)
    results: list[OrganOutline | None] = []
    for index, mask in enumerate(masks):
        if lesion[index]:
            results.append(None)
            continue
        others = np.delete(masks, index, axis=0)
        results.append(
            organ_outline(
                image,
                mask,
                others,
                body=body,
                spacing_mm_zyx=spacing_mm_zyx,
                fwhm_mm=fwhm_mm,
                site_volume_ml=float(site_volumes_ml[index]),
            )
        )
    return tuple(results)


__all__ = [
    "AT_LIMIT",
    "FAINT",
    "FITTED",
    "NO_VOXELS",
    "OUTLINE_BAND_FWHM",
    "OUTLINE_REFINE_POINTS",
    "OUTLINE_SEARCH_FWHM",
    "OUTLINE_STEP_MM",
    "OrganOutline",
    "organ_outline",
    "platform_organ_outlines",
]
