"""Perturbation-based geometric transfer matrix: each region's spread through the site's OSEM.

Du Y, Tsui BMW, Frey EC. Partial volume effect compensation for quantitative brain SPECT
imaging. IEEE Trans Med Imaging 2005;24:969-76: OSEM is not linear in the activity,
so a region's spread function is taken as the change of the reconstruction when that region's
activity is perturbed, around an estimate of the whole distribution.

Why: with OSEM and resolution modelling stopped at clinical iterations, a region's image is not
its indicator blurred by one Gaussian — large hot objects come out sharper than the phantom
spheres' fit, small or faint ones wider, and the difference grows as the body clears (DESIGN.md,
"Organs over time"). A Gaussian GTM then mis-corrects (digital consortium, 240 h, noise-free,
true outlines: organs −5.6…+16.3 %, marrow −39.5…−17.9 %); the perturbation matrix reproduces
the reconstruction's behaviour for each object at each time point.

Method, per time point:

1. the Gaussian GTM (:func:`concordose.quant.gtm.gtm_correct`) gives every region's
   concentration T⁰_j (the VOIs' disjoint parts and the body background; a region it leaves
   unsolved, or solves negative, keeps its measured mean, floored at 0);
2. the baseline b = Σ_j T⁰_j 1_{R_j} is imaged through the site's reconstruction
   (:class:`concordose.reconstruction.ReconstructionModel`: projection with attenuation from
   the CT and the collimator's depth-dependent response, OSEM with the site's iterations,
   subsets and resolution modelling, its post-filter), and so is b + δ_j 1_{R_j} for each region
   j, with δ_j = :data:`PERTURBATION` × max(T⁰_j, the baseline's mean over its positive
   voxels): a faint region's perturbation kept above the projector's single-precision
   rounding (≈ 10⁻⁶ of the image), which would otherwise be its response;
3. region j's spread function is (image(b + δ_j 1_{R_j}) − image(b)) / δ_j, and Ω and the
   extent shares are computed from these images exactly as from the Gaussian's
   (:class:`PerturbationSpread` is a :class:`concordose.quant.gtm.SpreadModel`); the GTM is
   solved again with them;
4. the step is checked: the site's reconstruction of the solution must come closer to the
   measured region means than that of the Gaussian estimate did, else the Gaussian GTM stands
   (one more reconstruction). Solving Ω(b)·T = t is one Newton step from b (OSEM is
   homogeneous of degree 1 in the data, so Ω(b)·b is b's image exactly); far from b, at the
   extreme contrasts of a cleared body, OSEM is far from linear and the step can overshoot
   wildly (a 29-voxel lesion at 200:1 whose background's response in it is −7 per unit:
   +850 % before this check, digital consortium test preset).

Cost: one reconstruction per region, plus the baseline's and the check's (and, with a
calibrated scatter ratio's SD, one for its effect, :func:`scatter_activity_sd`), per time point
(a cycle of 10 VOIs and 6 time points: 78 OSEM reconstructions; ≈ 4 s each on the digital
consortium's ``harmonisation`` grid of 4.4 mm voxels, two cores).

What it assumes: the site's reconstruction as its protocol records it (``reconstruction:``,
:class:`concordose.reconstruction.SiteReconstruction`), with the photopeak window's scatter and
its correction inside OSEM as the site's calibration fitted them on its NEMA phantom
(:mod:`concordose.reconstruction.scatter`; scatter-free data where the record has no fit),
without dead time or a vendor's own resolution model (each is error the matrix carries); uniform
regions (as every GTM); a baseline near enough to the truth that the response around it is the
response around the truth. Measured (DESIGN.md, "Perturbation GTM"): a second pass, the
responses taken around the first pass's solution, moves organs by ≤ 0.7 %, the marrow by ≤ 1.2 %
and lesions ≥ 4 mL by ≤ 0.1 %, so one pass is made; lesions < 4 mL move by up to 39 %: their
response depends on their own contrast, and their published SD says so (``pipeline.quantify``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from concordose.quant.gtm import (
    DEFAULT_CONDITION_LIMIT,
    GtmCorrection,
    RegionWeights,
    gtm_correct,
    transfer_regions,
)
from concordose.quant.pvc import STATUS_OK
from concordose.quant.voi import CroppedMask
from concordose.reconstruction.protocol import ReconstructionModel

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

PERTURBATION = 0.05
"""A region's perturbation relative to its baseline concentration: small enough for the
response to be linear (5 %: the responses sum to the image within 1–2 %, DESIGN.md "Realistic
organs"), large enough to stay clear of OSEM's rounding."""


def _key(source: RegionWeights) -> tuple[object, ...]:
    digest = hashlib.blake2b(np.ascontiguousarray(source.weight).tobytes(), digest_size=16)
    return (tuple((int(s.start), int(s.stop)) for s in source.box), digest.hexdigest())


class PerturbationSpread:
    """Each source region's spread through the site's reconstruction, by perturbation around
    ``baseline`` (module docstring), as a :class:`concordose.quant.gtm.SpreadModel`.

    A region's response is reconstructed once, on first use, and kept (the GTM's Ω and the
    extent shares ask for the same regions).

    Args:
        model: the site's reconstruction on the image grid.
        baseline: the estimated concentration map the responses are taken around (MBq/mL).
        perturbation: δ_j relative to the region's baseline concentration.
    """

    def __init__(
        self,
        model: ReconstructionModel,
        baseline: FloatArray,
        *,
        perturbation: float = PERTURBATION,
    ) -> None:
        self.model = model
        self.baseline = np.asarray(baseline, dtype=np.float64)
        self.perturbation = perturbation
        self.base_image = model.image(self.baseline)
        positive = self.baseline[self.baseline > 0.0]
        self._floor = float(positive.mean()) if positive.size else 1.0
        self._responses: dict[tuple[object, ...], FloatArray] = {}

    @property
    def reconstructions(self) -> int:
        """Reconstructions made so far (the baseline's included)."""
        return 1 + len(self._responses)

    def response(self, source: RegionWeights) -> FloatArray:
        """The image's change per unit of ``source``'s concentration (full grid)."""
        key = _key(source)
        if key not in self._responses:
            inside = self.baseline[source.box][source.weight > 0.0]
            level = float(inside.mean()) if inside.size else 0.0
            delta = self.perturbation * max(level, self._floor)
            bumped = self.baseline.copy()
            bumped[source.box] += delta * source.weight
            self._responses[key] = (self.model.image(bumped) - self.base_image) / delta
        return self._responses[key]

    def __call__(
        self, sources: Sequence[RegionWeights], targets: Sequence[CroppedMask]
    ) -> FloatArray:
        """ω[i, j]: source j's response averaged over target i (NaN rows for empty targets)."""
        omega = np.full((len(targets), len(sources)), np.nan)
        present = [i for i, t in enumerate(targets) if t.mask.size and t.mask.any()]
        for j, source in enumerate(sources):
            if not source.weight.size or not source.weight.any():
                omega[present, j] = 0.0
                continue
            image = self.response(source)
            for i in present:
                omega[i, j] = float(image[targets[i].box][targets[i].mask].mean())
        return omega


@dataclass(frozen=True)
class PerturbationGtm:
    """One time point's perturbation GTM.

    Attributes:
        corrected: the correction published (the Gaussian GTM's where ``fallback`` is set).
        gaussian: the Gaussian GTM the responses were taken around.
        fallback: empty, or why the perturbation step was not taken.
        misfit_before: relative RMS difference between the measured region means and those of
            the site's reconstruction of the Gaussian estimate.
        misfit_after: the same for the perturbation GTM's solution (NaN when not solved).
        scatter_sd_mbq: each VOI's activity SD from the uncertainty of the calibrated
            scatter-to-primary ratio, MBq (:func:`scatter_activity_sd`); None where the step was
            not taken, the model has no scatter or its ratio no SD.
    """

    corrected: GtmCorrection
    gaussian: GtmCorrection
    fallback: str
    misfit_before: float
    misfit_after: float = float("nan")
    scatter_sd_mbq: FloatArray | None = None


def baseline_map(
    shape: tuple[int, int, int],
    regions: Sequence[CroppedMask],
    concentration_mbq_per_ml: FloatArray,
) -> FloatArray:
    """Σ_j T_j 1_{R_j} over the grid (regions disjoint, as :func:`transfer_regions` gives)."""
    baseline = np.zeros(shape, dtype=np.float64)
    for region, level in zip(regions, concentration_mbq_per_ml, strict=True):
        baseline[region.box][region.mask] = float(level)
    return baseline


def perturbation_gtm_correct(
    concentration_mbq_per_ml: FloatArray,
    vois: Sequence[CroppedMask],
    *,
    body: BoolArray,
    spacing_mm_zyx: tuple[float, float, float],
    fwhm_mm: float,
    model: ReconstructionModel,
    condition_limit: float = DEFAULT_CONDITION_LIMIT,
    extent_margin_mm: float | None = None,
    extent_vois: Sequence[bool] = (),
    scatter_to_primary_sd: float = 0.0,
) -> PerturbationGtm:
    """The perturbation-based GTM of every VOI (module docstring), the Gaussian GTM it started
    from, and whether its step was taken.

    Args:
        concentration_mbq_per_ml, vois, body, spacing_mm_zyx, condition_limit,
        extent_margin_mm, extent_vois: as :func:`concordose.quant.gtm.gtm_correct`.
        fwhm_mm: the Gaussian FWHM of the starting estimate (the site's large-object PSF).
        model: the site's reconstruction on this grid (μ from this time point's CT, the
            window's scatter from the site's calibration).
        scatter_to_primary_sd: the SD of ``model``'s scatter-to-primary ratio (the calibration
            record's); when > 0 and the step is taken, its effect on each VOI's activity
            (:func:`scatter_activity_sd`, one more reconstruction).

    Returns:
        :class:`PerturbationGtm`; its ``corrected`` is the Gaussian GTM itself where the step
        was rejected (``fallback`` says why).
    """
    image = np.asarray(concentration_mbq_per_ml, dtype=np.float64)
    solve_image = functools.partial(
        gtm_correct,
        vois=vois,
        body=body,
        spacing_mm_zyx=spacing_mm_zyx,
        fwhm_mm=fwhm_mm,
        condition_limit=condition_limit,
        extent_margin_mm=extent_margin_mm,
        extent_vois=extent_vois,
    )
    solve = functools.partial(solve_image, image)
    gaussian = solve()
    _, regions = transfer_regions(vois, body)
    measured = np.array([float(image[r.box][r.mask].mean()) for r in regions])
    solved = gaussian.region_concentration_mbq_per_ml
    start = (
        np.where(np.isfinite(solved) & (solved > 0.0), solved, np.clip(measured, 0.0, None))
        if solved.size == len(regions)
        else np.clip(measured, 0.0, None)
    )
    shape = (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]))
    spread = PerturbationSpread(model, baseline_map(shape, regions, start))
    corrected = solve(spread=spread)

    def misfit(predicted: FloatArray) -> float:
        means = np.array([float(predicted[r.box][r.mask].mean()) for r in regions])
        scale = max(float(np.linalg.norm(measured)), 1e-12)
        return float(np.linalg.norm(means - measured)) / scale

    before = misfit(spread.base_image)
    step = corrected.region_concentration_mbq_per_ml
    if step.size != len(regions) or not np.isfinite(step).all():
        reason = next((s for s in corrected.status if s != STATUS_OK), "no solution")
        return PerturbationGtm(
            gaussian, gaussian, f"perturbation GTM not solved ({reason}): Gaussian GTM", before
        )
    solution_image = model.image(baseline_map(shape, regions, np.clip(step, 0.0, None)))
    after = misfit(solution_image)
    if not after < before:
        return PerturbationGtm(
            gaussian,
            gaussian,
            f"perturbation GTM step rejected: the site's reconstruction of its solution misses "
            f"the measured region means by {after:.1%}, of the Gaussian GTM's by {before:.1%} "
            "(OSEM too far from linear between them): Gaussian GTM",
            before,
            after,
        )
    scatter_sd = None
    if model.scatter is not None and scatter_to_primary_sd > 0.0:
        scatter_sd = scatter_activity_sd(
            corrected,
            lambda shifted_image: solve_image(shifted_image, spread=spread),
            image=image,
            solution=baseline_map(shape, regions, np.clip(step, 0.0, None)),
            solution_image=solution_image,
            shifted_model=model.with_scatter(
                dataclasses.replace(
                    model.scatter,
                    scatter_to_primary=model.scatter.scatter_to_primary + scatter_to_primary_sd,
                )
            ),
        )
    return PerturbationGtm(corrected, gaussian, "", before, after, scatter_sd)


def scatter_activity_sd(
    corrected: GtmCorrection,
    solve_image: Callable[[FloatArray], GtmCorrection],
    *,
    image: FloatArray,
    solution: FloatArray,
    solution_image: FloatArray,
    shifted_model: ReconstructionModel,
) -> FloatArray:
    """Each VOI's activity SD (MBq) from the calibrated scatter-to-primary ratio's SD σ_k.

    First order, without a second perturbation matrix: with the ratio at k + σ_k the site's
    reconstruction of the solution changes by Δ = image_{k+σ}(T) − image_k(T); the solution T'
    at k + σ_k solves m(T'; k) ≈ t − Δm, i.e. the same GTM (same responses) applied to the
    measured image less Δ. The SD is |A(image − Δ) − A(image)| per VOI; NaN where the
    correction has no value, 0 where the shifted solve gives none.

    Args:
        corrected: the perturbation GTM's correction at k.
        solve_image: the same GTM (same VOIs, body, responses) of another image.
        image: the measured concentration image (MBq/mL).
        solution: the piecewise-uniform solution T on the grid (MBq/mL).
        solution_image: the site's reconstruction of ``solution`` at k.
        shifted_model: the site's reconstruction with the ratio at k + σ_k.
    """
    shifted = solve_image(image - (shifted_model.image(solution) - solution_image))
    difference = np.abs(shifted.activity_mbq - corrected.activity_mbq)
    known: FloatArray = np.where(np.isfinite(difference), difference, 0.0)
    sd: FloatArray = np.where(np.isfinite(corrected.activity_mbq), known, np.nan)
    return sd


def model_disagreement_sd(corrected: GtmCorrection, gaussian: GtmCorrection) -> FloatArray:
    """Each VOI's activity SD from the PSF model, MBq: half the difference between the
    perturbation GTM's activity and the Gaussian GTM's it started from.

    The Gaussian's FWHM derivative (``quant.gtm.gtm_fwhm_sensitivity``) does not describe a
    matrix taken through the reconstruction; what is in doubt is how far the site's
    reconstruction as modelled (no scatter, no dead time, the protocol's settings) is the one
    that formed the image, and the two models bracket that the way the two PSF fits bracket the
    Gaussian's (``quant.pvc.alternative_psf_fwhm``). A heuristic: large where the models
    disagree (lesions < 4 mL, the marrow), small where both hold (large organs). NaN where the
    correction was not applied; 0 where the Gaussian gave no value (the term unknown).
    """
    difference = 0.5 * np.abs(corrected.activity_mbq - gaussian.activity_mbq)
    known: FloatArray = np.where(np.isfinite(gaussian.activity_mbq), difference, 0.0)
    sd: FloatArray = np.where(np.isfinite(corrected.activity_mbq), known, np.nan)
    return sd
