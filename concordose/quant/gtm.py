"""Geometric transfer matrix (GTM) partial-volume correction of every VOI, organs and lesions.

Rousset OG, Ma Y, Evans AC. Correction for partial volume effects in PET: principle and
validation. J Nucl Med 1998;39:904-911.

Model. The reconstructed image is the true activity distribution blurred by the camera's
point-spread function h, here an isotropic 3-D Gaussian of FWHM ``fwhm_mm`` (the site's
effective reconstructed resolution for large, high-contrast objects, fitted on its NEMA phantom
at calibration, :mod:`concordose.calibration.psf`, chosen by ``quant.pvc.chosen_psf_fwhm``).
The true distribution is taken as uniform over each of n disjoint regions R_j: the VOIs, each
minus the smaller VOIs that overlap it (a lesion inside the liver is its own region, the liver
keeps the rest), and a background region, the body outline minus every VOI. The mean measured
concentration t_i over region i is then

    t_i = Σ_j ω_ij · T_j,    ω_ij = (1/N_i) Σ_{x ∈ R_i} (h * 1_{R_j})(x),

ω_ij being region j's spread function (its indicator blurred by h) averaged over region i: the
fraction of j's concentration seen in i. Solving Ω T = t (least squares, after checking Ω's
condition number) gives each region's true mean concentration T_j, corrected for its own
spill-out (ω_jj < 1) and for spill-in from every neighbour (ω_ij, i ≠ j), the background
included. A VOI's corrected activity is Σ_j T_j · (voxels of R_j in the VOI) · voxel volume.

No cliff: Ω is a continuous function of the regions' shapes and of the FWHM, so the correction
varies continuously with a VOI's size and tends to none (ω_ii → 1, ω_ij → 0) for VOIs much
larger than the FWHM.

What it corrects: resolution loss of regions of any size and shape that are uniform inside,
their mutual spill-over (a lesion's spill-in into the liver around it and the liver's into the
lesion), the background's spill-in. What it does not: activity non-uniform within a region (a
necrotic core, a gradient along an organ), errors of the VOI boundaries themselves (the masks
are taken as the true boundaries: delineation error and misregistration pass through, amplified
for small VOIs), a PSF other than the fitted isotropic Gaussian (depth-dependent collimator
resolution, the object-dependent and non-linear resolution of OSEM with resolution recovery —
small or faint VOIs, e.g. lesions < 4 mL or the marrow, behave as a wider PSF than the
large-object one used, and are under-corrected —, Gibbs overshoot), non-uniform background,
and activity outside the SPECT field of view.

Body outline (the background region's extent): taken from the SPECT itself
(:func:`body_outline`), not from the CT: the CT is on another grid and in another frame until
registered, and quantification reads no CT pixels; the SPECT's body is where the spill-in comes
from anyway. Voxels outside the outline hold no activity and are no region.

Memory: each region's spread function is computed over its bounding box grown by the Gaussian's
reach (4 σ, :data:`GAUSSIAN_TRUNCATE_SIGMA`), one region at a time; only the background, which
spans the body, is blurred over the whole grid (one float64 grid, as large as the SPECT itself).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from concordose.errors import ConfigurationError
from concordose.quant.pvc import STATUS_OK
from concordose.quant.voi import EMPTY_BOX, Box, CroppedMask, bounding_box

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
"""FWHM of a Gaussian over its σ (≈ 2.3548)."""
GAUSSIAN_TRUNCATE_SIGMA = 4.0
"""Kernel radius in σ (scipy's default): the kernel's tail beyond it is < 3·10⁻⁵ of its peak."""
DEFAULT_CONDITION_LIMIT = 1.0e3
"""Largest condition number of Ω accepted: noise in the measured means is amplified by up to
this factor; a larger one means two regions the PSF cannot tell apart (e.g. a VOI of a voxel or
two next to another), and the system is refused rather than solved."""
BODY_SMOOTHING_VOXELS = 1.0
"""σ (voxels) of the Gaussian smoothing the SPECT before the body outline is thresholded
(suppresses Poisson noise of a low-count background)."""
BODY_THRESHOLD_OF_MEDIAN = 0.5
"""Body outline threshold as a fraction of the median of the smoothed image over its voxels
above 0.1 % of the maximum: those are mostly the body's own background, so half of it is the
half-maximum edge of the blurred body (measured on the digital consortium's patients at
4–240 h: the outline holds 91–100 % of the true body's voxel count)."""
NO_VOXELS = "no voxel of the VOI on the SPECT grid"


def sigma_voxels(fwhm_mm: float, spacing_mm_zyx: tuple[float, float, float]) -> FloatArray:
    """The Gaussian's σ along (slices, rows, columns), in voxels, for an isotropic ``fwhm_mm``.

    Raises:
        ConfigurationError: FWHM not > 0 mm, or a spacing not > 0 mm.
    """
    if not fwhm_mm > 0 or min(spacing_mm_zyx) <= 0:
        raise ConfigurationError(
            f"GTM PSF: expected FWHM > 0 mm and voxel spacing > 0 mm, found {fwhm_mm} mm and "
            f"{spacing_mm_zyx} mm"
        )
    result: FloatArray = fwhm_mm / FWHM_PER_SIGMA / np.asarray(spacing_mm_zyx, dtype=np.float64)
    return result


@dataclass(frozen=True)
class RegionWeights:
    """A source region over a box of the grid: the fraction of each voxel it fills.

    Attributes:
        box: (slices, rows, columns) index ranges of the grid that ``weight`` covers.
        weight: float array of the box's shape, in [0, 1] (1 for a voxelised mask; fractional
            for a region known at sub-voxel precision, e.g. a phantom sphere).
    """

    box: Box
    weight: FloatArray

    @classmethod
    def from_mask(cls, mask: CroppedMask) -> RegionWeights:
        """The voxels of ``mask`` with weight 1."""
        return cls(mask.box, mask.mask.astype(np.float64))


def _grown(box: Box, reach: npt.NDArray[np.int64], shape: tuple[int, ...]) -> Box:
    grown = tuple(
        slice(max(int(s.start) - int(r), 0), min(int(s.stop) + int(r), int(n)))
        for s, r, n in zip(box, reach, shape, strict=True)
    )
    return (grown[0], grown[1], grown[2])


def _intersection(a: Box, b: Box) -> Box | None:
    parts = tuple(
        slice(max(int(x.start), int(y.start)), min(int(x.stop), int(y.stop)))
        for x, y in zip(a, b, strict=True)
    )
    if any(p.stop <= p.start for p in parts):
        return None
    return (parts[0], parts[1], parts[2])


def _relative(inner: Box, outer: Box) -> tuple[slice, slice, slice]:
    parts = tuple(
        slice(int(i.start) - int(o.start), int(i.stop) - int(o.start))
        for i, o in zip(inner, outer, strict=True)
    )
    return (parts[0], parts[1], parts[2])


def _joint(boxes: Sequence[Box]) -> Box:
    parts = tuple(
        slice(min(int(b[a].start) for b in boxes), max(int(b[a].stop) for b in boxes))
        for a in range(3)
    )
    return (parts[0], parts[1], parts[2])


def spread_matrix(
    sources: Sequence[RegionWeights],
    targets: Sequence[CroppedMask],
    grid_shape: tuple[int, int, int],
    sigma_zyx_voxels: FloatArray,
) -> FloatArray:
    """ω[i, j]: source j blurred by the Gaussian, averaged over target i (n_targets, n_sources).

    Each source is blurred over its box grown by the kernel's reach, cut to the targets' joint
    box grown by the reach (values inside the targets are then exact). Edges are extended with
    the nearest value (``mode="nearest"``), which only matters at the grid's own edges: a region
    cut by the field of view continues beyond it, as the body does. Targets with no voxel give
    NaN rows.
    """
    sigma = np.asarray(sigma_zyx_voxels, dtype=np.float64)
    reach = np.asarray([int(GAUSSIAN_TRUNCATE_SIGMA * s + 0.5) + 1 for s in sigma], dtype=np.int64)
    omega = np.zeros((len(targets), len(sources)), dtype=np.float64)
    sizes = np.array([float(t.mask.sum()) for t in targets])
    present = [i for i, t in enumerate(targets) if t.mask.size and sizes[i] > 0]
    omega[[i for i in range(len(targets)) if i not in present]] = np.nan
    if not present:
        return omega
    target_zone = _grown(_joint([targets[i].box for i in present]), reach, grid_shape)
    for j, source in enumerate(sources):
        if not source.weight.size or not source.weight.any():
            continue
        zone = _intersection(_grown(source.box, reach, grid_shape), target_zone)
        if zone is None:
            continue
        canvas = np.zeros(tuple(s.stop - s.start for s in zone), dtype=np.float64)
        inside = _intersection(source.box, zone)
        if inside is None:
            continue
        canvas[_relative(inside, zone)] = source.weight[_relative(inside, source.box)]
        blurred = ndimage.gaussian_filter(
            canvas, sigma=sigma, mode="nearest", truncate=GAUSSIAN_TRUNCATE_SIGMA
        )
        for i in present:
            common = _intersection(targets[i].box, zone)
            if common is None:
                continue
            mask = targets[i].mask[_relative(common, targets[i].box)]
            omega[i, j] = float(blurred[_relative(common, zone)][mask].sum()) / sizes[i]
    return omega


class SpreadModel(Protocol):
    """How the image spreads each source region: ω[i, j], source j's image per unit of its
    concentration, averaged over target i (n_targets, n_sources), NaN rows for empty targets —
    :func:`spread_matrix`'s contract. The GTM's Ω and the extent shares use one model."""

    def __call__(
        self, sources: Sequence[RegionWeights], targets: Sequence[CroppedMask]
    ) -> FloatArray: ...


@dataclass(frozen=True)
class GaussianSpread:
    """The isotropic Gaussian PSF as a :class:`SpreadModel` (:func:`spread_matrix`)."""

    grid_shape: tuple[int, int, int]
    sigma_zyx_voxels: FloatArray

    def __call__(
        self, sources: Sequence[RegionWeights], targets: Sequence[CroppedMask]
    ) -> FloatArray:
        return spread_matrix(sources, targets, self.grid_shape, self.sigma_zyx_voxels)


def body_outline(concentration: FloatArray) -> BoolArray:
    """The body on the SPECT grid, from the SPECT itself (see the module docstring).

    The image smoothed by :data:`BODY_SMOOTHING_VOXELS`, thresholded at
    :data:`BODY_THRESHOLD_OF_MEDIAN` of the median of its voxels above 0.1 % of its maximum,
    holes filled (cold organs, a cold lung insert). Assumes a warm body background, as every
    post-therapy Lu-177 SPECT has in its first days; an image with no positive voxel gives an
    empty outline.
    """
    smoothed = ndimage.gaussian_filter(
        np.asarray(concentration, dtype=np.float64), BODY_SMOOTHING_VOXELS, mode="nearest"
    )
    peak = float(smoothed.max()) if smoothed.size else 0.0
    if not peak > 0:
        return np.zeros(smoothed.shape, dtype=bool)
    level = float(np.median(smoothed[smoothed > 1e-3 * peak]))
    filled: BoolArray = ndimage.binary_fill_holes(smoothed > BODY_THRESHOLD_OF_MEDIAN * level)
    return filled


def disjoint_regions(vois: Sequence[CroppedMask]) -> tuple[CroppedMask, ...]:
    """Each VOI minus every smaller VOI overlapping it (fewer voxels wins; ties: the later one
    in order keeps the voxel, so each voxel lies in exactly one region)."""
    sizes = [int(v.mask.sum()) if v.mask.size else 0 for v in vois]
    regions = []
    for k, voi in enumerate(vois):
        if not sizes[k]:
            regions.append(voi)
            continue
        own = voi.mask.copy()
        for m, other in enumerate(vois):
            if (
                m == k
                or not sizes[m]
                or not (sizes[m] < sizes[k] or (sizes[m] == sizes[k] and m > k))
            ):
                continue
            common = _intersection(voi.box, other.box)
            if common is None:
                continue
            own[_relative(common, voi.box)] &= ~other.mask[_relative(common, other.box)]
        regions.append(CroppedMask(voi.box, own))
    return tuple(regions)


def transfer_regions(
    vois: Sequence[CroppedMask], body: BoolArray
) -> tuple[list[int], list[CroppedMask]]:
    """The GTM's regions: which VOIs keep voxels as disjoint regions (their indices) and every
    region over the grid — those VOIs' disjoint parts (:func:`disjoint_regions`), then the
    background (the body less every VOI; left out when empty)."""
    disjoint = disjoint_regions(vois)
    kept = [k for k, r in enumerate(disjoint) if r.mask.size and r.mask.any()]
    regions = [disjoint[k] for k in kept]
    shape = body.shape
    whole: Box = (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    background = np.asarray(body, dtype=bool).copy()
    for region in regions:
        background[region.box] &= ~region.mask
    if background.any():
        regions.append(CroppedMask(whole, background))
    return kept, regions


def _overlap_counts(vois: Sequence[CroppedMask], regions: Sequence[CroppedMask]) -> FloatArray:
    counts = np.zeros((len(vois), len(regions)), dtype=np.float64)
    for v, voi in enumerate(vois):
        for k, region in enumerate(regions):
            if not voi.mask.size or not region.mask.size:
                continue
            common = _intersection(voi.box, region.box)
            if common is None:
                continue
            counts[v, k] = float(
                np.count_nonzero(
                    voi.mask[_relative(common, voi.box)]
                    & region.mask[_relative(common, region.box)]
                )
            )
    return counts


@dataclass(frozen=True)
class GtmCorrection:
    """GTM-corrected VOIs at one time point (all per VOI unless noted).

    Attributes:
        activity_mbq: corrected activity (NaN where ``status`` is not ``ok``).
        concentration_mbq_per_ml: corrected mean concentration (activity / VOI volume).
        measured_concentration_mbq_per_ml: the mean concentration as measured in the VOI.
        background_mbq_per_ml: the background region's corrected concentration (scalar).
        transfer_matrix: Ω over the regions that hold voxels, background last.
        condition_number: 2-norm condition number of Ω.
        status: ``ok`` or why the VOI was not corrected.
        fallback: per VOI, empty, or why its activity is the GTM's T·V on the site's VOI
            although the extent activity was asked for (:data:`EXTENT_FALLBACK`); empty tuple
            when no extent was asked for. A fallen-back VOI is corrected (status ``ok``).
        self_recovery: per VOI, ω_ii of its own region (the fraction of its true concentration
            the model says its mean keeps: its recovery with spill-in removed), NaN for a VOI
            with no region; empty when Ω was not built. The recovery-model term of the SD
            divides by it (``quant.recovery_model``).
        region_concentration_mbq_per_ml: the solved concentration T_j of every region of
            :func:`transfer_regions` (background last), empty when Ω was not solved.
    """

    activity_mbq: FloatArray
    concentration_mbq_per_ml: FloatArray
    measured_concentration_mbq_per_ml: FloatArray
    background_mbq_per_ml: float
    transfer_matrix: FloatArray
    condition_number: float
    status: tuple[str, ...]
    fallback: tuple[str, ...] = ()
    self_recovery: FloatArray = field(default_factory=lambda: np.zeros(0))
    region_concentration_mbq_per_ml: FloatArray = field(default_factory=lambda: np.zeros(0))


def gtm_correct(
    concentration_mbq_per_ml: FloatArray,
    vois: Sequence[CroppedMask],
    *,
    body: BoolArray,
    spacing_mm_zyx: tuple[float, float, float],
    fwhm_mm: float,
    condition_limit: float = DEFAULT_CONDITION_LIMIT,
    extent_margin_mm: float | None = None,
    extent_vois: Sequence[bool] = (),
    spread: SpreadModel | None = None,
) -> GtmCorrection:
    """Correct every VOI's mean concentration and activity for partial volume (GTM).

    Args:
        concentration_mbq_per_ml: (slices, rows, columns) reconstructed image, MBq/mL.
        vois: each VOI's mask over its own box of that grid (may overlap, see
            :func:`disjoint_regions`).
        body: bool mask of the body on the grid (:func:`body_outline`); what of it lies in no
            VOI is the background region (VOI voxels outside it are regions all the same).
        spacing_mm_zyx: voxel size along (slices, rows, columns), mm.
        fwhm_mm: the site's effective isotropic Gaussian FWHM, mm (the PSF, unless ``spread``
            is given; then only named in statuses).
        condition_limit: largest condition number of Ω solved (:data:`DEFAULT_CONDITION_LIMIT`).
        extent_margin_mm, extent_vois: with a margin, the VOIs flagged in ``extent_vois`` (and
            at least :data:`EXTENT_MIN_CONTRAST` times the background's concentration) get
            their activity by :func:`extent_activity` (the total in the VOI grown by the margin,
            less every other region's share there) instead of T·V: robust to where the site
            drew the boundary (DESIGN.md, "Platform delineation"). Where a VOI's extent
            activity is not > 0 (the subtraction of its neighbours' and the background's
            shares exceeds the total: a faint late time point, a kidney whose neighbours' GTM
            values are over-estimated) the VOI falls back, at this time point only, to the
            GTM's T·V on the site's VOI (the ``gtm`` model's value), and ``fallback`` says so
            (:data:`EXTENT_FALLBACK`); the caller keeps the other time points' extent values.
        spread: how the image spreads a region (:class:`SpreadModel`), for Ω and the extent
            shares alike; default the Gaussian of ``fwhm_mm`` (:class:`GaussianSpread`); the
            perturbation-based GTM passes the site's reconstruction
            (``quant.perturbation_gtm``).

    Returns every VOI NaN with a status saying why when Ω is singular or ill-conditioned (the
    caller leaves them as measured); a VOI with no voxel on the grid gets NaN and
    :data:`NO_VOXELS`; a VOI whose corrected activity is negative gets NaN and a status saying
    so (left as measured).
    """
    image = np.asarray(concentration_mbq_per_ml, dtype=np.float64)
    shape = (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]))
    if body.shape != image.shape:
        raise ConfigurationError(
            f"GTM: body mask shape {body.shape} differs from the image's {image.shape}"
        )
    voxel_ml = float(np.prod(spacing_mm_zyx)) / 1000.0
    spread_of = (
        spread
        if spread is not None
        else GaussianSpread(shape, sigma_voxels(fwhm_mm, spacing_mm_zyx))
    )
    kept, all_regions = transfer_regions(vois, body)
    regions = all_regions[: len(kept)]
    n_voi = len(vois)
    measured = np.array(
        [
            float(image[v.box][v.mask].mean()) if v.mask.size and v.mask.any() else np.nan
            for v in vois
        ]
    )
    empty_status = tuple(STATUS_OK if v.mask.size and v.mask.any() else NO_VOXELS for v in vois)
    nan = np.full(n_voi, np.nan)
    if not regions:
        return GtmCorrection(nan, nan, measured, np.nan, np.zeros((0, 0)), np.nan, empty_status)
    omega = spread_of([RegionWeights.from_mask(r) for r in all_regions], all_regions)
    regional_mean = np.array([float(image[r.box][r.mask].mean()) for r in all_regions])
    self_recovery = np.array(
        [float(omega[kept.index(v), kept.index(v)]) if v in kept else np.nan for v in range(n_voi)]
    )
    condition = float(np.linalg.cond(omega))
    if not np.isfinite(condition) or condition > condition_limit:
        reason = (
            f"GTM transfer matrix ill-conditioned (condition number {condition:.3g}, limit "
            f"{condition_limit:g}, FWHM {fwhm_mm:.3g} mm, {len(all_regions)} regions); "
            "left as measured"
        )
        return GtmCorrection(
            nan,
            nan,
            measured,
            np.nan,
            omega,
            condition,
            tuple(s if s != STATUS_OK else reason for s in empty_status),
            self_recovery=self_recovery,
        )
    true_mean, *_ = np.linalg.lstsq(omega, regional_mean, rcond=None)
    region_true = true_mean[: len(regions)]
    counts = _overlap_counts(vois, regions)
    voi_voxels = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        activity = np.where(voi_voxels > 0, counts @ region_true * voxel_ml, np.nan)
        concentration = activity / (voi_voxels * voxel_ml)
    background_mbq_per_ml = float(true_mean[-1]) if len(all_regions) > len(regions) else np.nan
    fallback = [""] * n_voi
    if extent_margin_mm is not None and any(extent_vois):
        background_now = float(true_mean[-1]) if len(all_regions) > len(regions) else 0.0
        flagged = [
            v
            for v, flag in enumerate(extent_vois)
            if flag
            and v in kept
            and true_mean[kept.index(v)] >= EXTENT_MIN_CONTRAST * background_now
        ]
        totals = extent_activity(
            image,
            [vois[v] for v in flagged],
            [kept.index(v) for v in flagged],
            all_regions,
            true_mean,
            body=np.asarray(body, dtype=bool),
            spacing_mm_zyx=spacing_mm_zyx,
            spread=spread_of,
            margin_mm=extent_margin_mm,
            background_index=len(regions) if len(all_regions) > len(regions) else None,
        )
        for v, total in zip(flagged, totals, strict=True):
            if not (np.isfinite(total) and total > 0.0):
                fallback[v] = (
                    f"{EXTENT_FALLBACK} ({total:.3g} MBq over the VOI grown by "
                    f"{extent_margin_mm:.3g} mm; T·V {activity[v]:.3g} MBq used)"
                )
                continue
            activity[v] = total
            concentration[v] = total / (voi_voxels[v] * voxel_ml)
    # A negative activity is no activity the object can hold: the model (uniform regions, the
    # fitted Gaussian PSF, the masks as the objects) does not describe that VOI (e.g. a thin or
    # moving VOI whose neighbours' spill-in it over-subtracts). Left as measured, as an
    # ill-conditioned system is, rather than published as an impossible value.
    negative = np.isfinite(activity) & (activity < 0.0)
    status = tuple(
        (
            f"GTM gave a negative activity ({activity[i]:.3g} MBq, measured mean "
            f"{measured[i]:.3g} MBq/mL, FWHM {fwhm_mm:.3g} mm): the model does not fit this "
            "VOI; left as measured"
        )
        if negative[i]
        else empty_status[i]
        for i in range(n_voi)
    )
    activity = np.where(negative, np.nan, activity)
    concentration = np.where(negative, np.nan, concentration)
    return GtmCorrection(
        activity_mbq=activity,
        concentration_mbq_per_ml=concentration,
        measured_concentration_mbq_per_ml=measured,
        background_mbq_per_ml=background_mbq_per_ml,
        transfer_matrix=omega,
        condition_number=condition,
        status=status,
        fallback=tuple(fallback) if extent_margin_mm is not None and any(extent_vois) else (),
        self_recovery=self_recovery,
        region_concentration_mbq_per_ml=np.asarray(true_mean, dtype=np.float64),
    )


def grown_mask(
    voi: CroppedMask,
    margin_mm: float,
    spacing_mm_zyx: tuple[float, float, float],
    shape: tuple[int, int, int],
) -> CroppedMask:
    """``voi`` grown by ``margin_mm`` (voxel centres within the margin of a VOI voxel's centre),
    over its box grown to hold it (clipped to the grid)."""
    reach = np.asarray([math.ceil(margin_mm / s) + 1 for s in spacing_mm_zyx], np.int64)
    box = _grown(voi.box, reach, shape)
    inside = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
    inside[_relative(voi.box, box)] = voi.mask
    distance = ndimage.distance_transform_edt(~inside, sampling=spacing_mm_zyx)
    return CroppedMask(box, np.asarray(distance <= margin_mm))


EXTENT_MIN_CONTRAST = 2.0
"""An organ gets its extent activity only when its GTM concentration is at least this many
times the background's: the rule's residual error is ≈ (T_B / T_object) × the drawn volume's
relative error, and the extent adds T_B-weighted volume around the VOI, so a faint organ keeps
the GTM's T·V. Digital consortium, realistic imaging, patient 1 at 4 h: kidneys 8-10× the
background, liver 2.6-3.2×, spleen 2.5-2.7×, bone marrow 1.1-1.2× (milan's marrow with its
+3 mm margin: +26 % by T·V, +102 % by its extent)."""
EXTENT_FALLBACK = "extent activity not > 0, GTM T·V on the site's VOI at this time point"
"""Start of :attr:`GtmCorrection.fallback` for a VOI whose extent activity was not positive at
a time point (:func:`gtm_correct`)."""
EXTENT_BACKGROUND_SHELL = 0.25
"""The outer part of an extent (this fraction of its margin, next to its edge) where the local
background is measured: far enough from the VOI that its own spill-out is negligible."""
EXTENT_ENCLOSED_FRACTION = 0.5
"""Another VOI this much inside a VOI's grown extent (by voxel count) is taken into the extent
whole (a lesion inside the liver, which the site's liver outline leaves as a hole): its
activity there is then its GTM total whatever its distribution, not the uniform model's share
of a part of it (a necrotic or hot core the extent would cut)."""


def _painted(masks: Sequence[CroppedMask], box: Box) -> BoolArray:
    """The union of ``masks`` over ``box`` (what of them lies in it)."""
    out = np.zeros(tuple(int(s.stop) - int(s.start) for s in box), dtype=bool)
    for mask in masks:
        common = _intersection(mask.box, box)
        if common is not None and mask.mask.size:
            out[_relative(common, box)] |= mask.mask[_relative(common, mask.box)]
    return out


def _fraction_inside(region: CroppedMask, outer: CroppedMask) -> float:
    """The fraction of ``region``'s voxels that lie in ``outer``."""
    inside = _painted([outer], region.box) & region.mask
    return float(np.count_nonzero(inside)) / float(np.count_nonzero(region.mask))


def extent_activity(
    image: FloatArray,
    vois: Sequence[CroppedMask],
    own_region: Sequence[int],
    regions: Sequence[CroppedMask],
    true_mean: FloatArray,
    *,
    body: BoolArray,
    spacing_mm_zyx: tuple[float, float, float],
    spread: SpreadModel,
    margin_mm: float,
    background_index: int | None,
) -> FloatArray:
    """Each VOI's activity as the total in its extent less every other region's share, MBq.

    The extent E is the VOI grown by ``margin_mm`` (within the body; ~2 FWHM holds the VOI's own
    spill-out whatever the PSF's shape), with every other VOI at least
    :data:`EXTENT_ENCLOSED_FRACTION` inside it taken in whole (a lesion inside the liver), and

        A = v · (Σ_{x∈E} I(x) − Σ_{j ≠ own, B} T_j · s_Ej − T_B,local · s_EB),
        s_Ej = Σ_{x∈E} (h * 1_{R_j})(x),

    v the voxel volume, T_j the GTM's true concentration of region j (``true_mean``; the
    background region B at ``background_index``, None when the body holds no background) and
    h the PSF (``spread``: the Gaussian, or the site's reconstruction by perturbation). The
    background is measured locally, in the outer part of E (:data:`EXTENT_BACKGROUND_SHELL` of the
    margin, less every other VOI's voxels): T_B,local = (Σ_shell I − Σ_{j ≠ B} T_j s_shell,j) /
    s_shell,B (the GTM's global T_B where the shell holds no background; zero where the estimate is
    negative, which is the known shares' error, not a concentration), since the global one is biased
    by a misdrawn boundary (a tight VOI leaves the object's rim in B). Why the other VOIs are kept
    out of the shell and an enclosed one taken in whole: a site's liver outline leaves a hole where
    it drew the lesion, the liver grown by 2 FWHM reaches into the lesion's core, and the uniform
    model of a non-uniform lesion is wrong there by far more than the background's concentration
    (one site, 240 h: a shell estimate of −0.12 MBq/mL against a body background of 0.0025), which
    put +107 % on that site's liver TIA (digital consortium, realistic imaging,
    ``gtm_platform_voi``); a lesion wholly in E is taken off by its GTM total, whatever its
    distribution. The VOI's own region is not modelled: its activity is what is left in E, wherever
    its boundary was drawn. What is left: the background the object displaces is known only through
    the drawn volume, so the error is ≈ (T_B / T_object) × the drawn volume's relative error (a
    tight VOI low, a generous one high; ~1 % for a 4 mm margin on a 60 mm sphere at 15:1; an organ's
    hole drawn larger than the lesion in it is such a volume); the other regions' T_j enter as the
    GTM gives them (a lesion inside the liver is taken off by its own GTM value).
    """
    shape = (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]))
    extents, shells = [], []
    for voi, own in zip(vois, own_region, strict=True):
        neighbours = [
            region
            for j, region in enumerate(regions)
            if j not in (own, background_index) and region.mask.size and region.mask.any()
        ]
        grown = grown_mask(voi, margin_mm, spacing_mm_zyx, shape)
        enclosed = [r for r in neighbours if _fraction_inside(r, grown) >= EXTENT_ENCLOSED_FRACTION]
        box = _joint([grown.box, *(r.box for r in enclosed)])
        extent_mask = (_painted([grown], box) | _painted(enclosed, box)) & body[box]
        inner = grown_mask(voi, (1.0 - EXTENT_BACKGROUND_SHELL) * margin_mm, spacing_mm_zyx, shape)
        extents.append(CroppedMask(box, extent_mask))
        shells.append(
            CroppedMask(box, extent_mask & ~_painted([inner], box) & ~_painted(neighbours, box))
        )
    targets = [*extents, *shells]
    share = (
        spread([RegionWeights.from_mask(r) for r in regions], targets)
        * np.array([float(t.mask.sum()) for t in targets])[:, None]
    )
    share = np.nan_to_num(share)
    voxel_ml = float(np.prod(spacing_mm_zyx)) / 1000.0
    result = np.empty(len(vois), dtype=np.float64)
    for k, (extent, own) in enumerate(zip(extents, own_region, strict=True)):
        others = np.array([j for j in range(len(regions)) if j not in (own, background_index)])
        total = float(image[extent.box][extent.mask].sum())
        subtracted = float(share[k, others] @ true_mean[others]) if others.size else 0.0
        if background_index is None:
            result[k] = voxel_ml * (total - subtracted)
            continue
        background = background_index
        shell = shells[k]
        in_shell = share[len(vois) + k]
        local = float(true_mean[background])
        if in_shell[background] > 0.5 and shell.mask.any():
            known = [j for j in range(len(regions)) if j != background]
            local = (
                float(image[shell.box][shell.mask].sum())
                - float(in_shell[known] @ true_mean[known])
            ) / float(in_shell[background])
        # below zero is the error of the known shares (PSF model, noise), not a concentration
        local = max(local, 0.0)
        result[k] = voxel_ml * (total - subtracted - local * float(share[k, background]))
    return result


def gtm_fwhm_sensitivity(
    concentration_mbq_per_ml: FloatArray,
    vois: Sequence[CroppedMask],
    *,
    body: BoolArray,
    spacing_mm_zyx: tuple[float, float, float],
    fwhm_mm: float,
    fwhm_sd_mm: float,
    condition_limit: float = DEFAULT_CONDITION_LIMIT,
    alternative_fwhm_mm: float | None = None,
    extent_margin_mm: float | None = None,
    extent_vois: Sequence[bool] = (),
) -> tuple[GtmCorrection, FloatArray]:
    """:func:`gtm_correct` and each VOI's activity SD from the PSF's uncertainty, MBq.

    σ_A = |∂A/∂FWHM| · σ_FWHM, the derivative by central difference with a step of 2 % of the
    FWHM (first-order propagation, Gear et al. EJNMMI 2018;45:2456-74); 0 when ``fwhm_sd_mm``
    is 0, NaN where the correction was not applied. With ``alternative_fwhm_mm`` (the site's
    other phantom fit, ``quant.pvc.alternative_psf_fwhm``) a PSF-model term is added in
    quadrature, half the difference between the activities the two FWHMs give: OSEM's
    resolution depends on the object, and the two fits bracket it for most VOIs (large hot
    objects near the large-object fit, small or faint ones near the spheres'; DESIGN.md,
    "Realistic organs"), so a VOI whose activity depends on which applies carries that doubt.
    """

    def corrected(fwhm: float) -> GtmCorrection:
        return gtm_correct(
            concentration_mbq_per_ml,
            vois,
            body=body,
            spacing_mm_zyx=spacing_mm_zyx,
            fwhm_mm=fwhm,
            condition_limit=condition_limit,
            extent_margin_mm=extent_margin_mm,
            extent_vois=extent_vois,
        )

    central = corrected(fwhm_mm)
    sd: FloatArray = np.where(np.isfinite(central.activity_mbq), 0.0, np.nan)
    if fwhm_sd_mm > 0:
        step_mm = 0.02 * fwhm_mm
        wider, narrower = corrected(fwhm_mm + step_mm), corrected(fwhm_mm - step_mm)
        derivative = (wider.activity_mbq - narrower.activity_mbq) / (2.0 * step_mm)
        sd = np.abs(derivative) * fwhm_sd_mm
    if alternative_fwhm_mm is not None and alternative_fwhm_mm != fwhm_mm:
        other = corrected(alternative_fwhm_mm).activity_mbq
        # Where the other FWHM gives no solution (refused, negative) the term is unknown:
        # the FWHM term stands alone.
        model = np.where(np.isfinite(other), 0.5 * (other - central.activity_mbq), 0.0)
        sd = np.hypot(sd, model)
    return central, sd


def voi_crops(masks: BoolArray) -> tuple[CroppedMask, ...]:
    """Full-grid VOI masks (n_voi, slices, rows, columns) as crops over their bounding boxes
    (an empty mask gets an empty crop)."""
    crops = []
    for mask in masks:
        box = bounding_box(mask)
        if box is None:
            crops.append(CroppedMask(EMPTY_BOX, np.zeros((0, 0, 0), dtype=bool)))
        else:
            crops.append(CroppedMask(box, mask[box].copy()))
    return tuple(crops)
