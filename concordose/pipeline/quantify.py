"""Quantification of one treatment cycle: activity in every VOI at every time point.

Assumptions (skeleton; later work adds registration, PVC and CT density):
* VOIs are drawn on a CT in the frame of reference of the SPECTs and need no registration;
* masks are carried onto each time point's own SPECT grid by shape-based interpolation
  (:mod:`concordose.quant.voi`), their distance maps computed once per cycle;
* VOI volume is measured on the segmentation's own (finer) grid; mass assumes unit density
  (1.0 g/mL), as the sphere model does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from concordose.calibration.registry import CalibrationRecord
from concordose.dicom.geometry import VolumeGeometry
from concordose.dicom.nm import NMAcquisition
from concordose.dicom.seg import VoiMask, VoiType
from concordose.dicom.vois import read_voi_masks
from concordose.errors import ConfigurationError
from concordose.kinetics.uncertainty import correlated_relative_sd
from concordose.pipeline.alignment import TimePointAlignment, align_time_points
from concordose.pipeline.assembly import CycleStudy
from concordose.pipeline.result_cache import ResultCache
from concordose.pipeline.time_point_activity import time_point_activity_mbq
from concordose.quant.delineation import (
    DELINEATED,
    LesionDelineation,
    ThresholdCurve,
    ThresholdSurface,
    delineate_lesions,
    threshold_surface,
)
from concordose.quant.gtm import body_outline, gtm_correct, gtm_fwhm_sensitivity, voi_crops
from concordose.quant.organ_outline import FITTED, OrganOutline, platform_organ_outlines
from concordose.quant.perturbation_gtm import model_disagreement_sd, perturbation_gtm_correct
from concordose.quant.pvc import (
    BACKGROUND_MODEL,
    DEFAULT_BACKGROUND_GAP_MM,
    DEFAULT_BACKGROUND_WIDTH_MM,
    GTM_MODEL,
    GTM_PLATFORM_MODEL,
    NO_CORRECTION,
    NOT_CORRECTED,
    PERTURBATION_GTM_MODEL,
    PHANTOM_CHOICE,
    RECOVERY_ONLY_MODEL,
    STATUS_OK,
    LocalBackground,
    alternative_psf_fwhm,
    background_shells,
    contrast_recovery_curve_from_record,
    correct_partial_volume,
    correct_partial_volume_in_background,
    partial_volume_unavailable,
    psf_from_record,
    recovery_curve_from_record,
    shell_statistics,
)
from concordose.quant.recovery_model import RecoveryModelError
from concordose.quant.voi import (
    MASK_RESAMPLING,
    VoiShape,
    bounding_box,
    resample_vois,
    voi_shape,
    voi_shapes,
    voi_totals,
)
from concordose.reconstruction.attenuation_map import attenuation_map_mu_per_mm
from concordose.reconstruction.protocol import ReconstructionModel, SiteReconstruction
from concordose.reconstruction.scatter import ScatterCorrection

UNIT_DENSITY_G_PER_ML = 1.0

QUANTIFICATION_METHOD = "cf_voi_sum"
"""Name of this quantification path (published with every VOI time point)."""
QUANTIFICATION_SETTINGS: dict[str, object] = {
    "method": QUANTIFICATION_METHOD,
    "mask_resampling": MASK_RESAMPLING,
    "density_g_per_ml": UNIT_DENSITY_G_PER_ML,
}
"""Its settings, hashed into the rows' ``method_parameters_hash``."""


@dataclass(frozen=True)
class CycleTimeActivity:
    """Time-activity curves of every VOI of one cycle.

    Attributes:
        labels, voi_types: per VOI.
        volume_ml, mass_g: per VOI (segmentation grid; unit density).
        time_h: hours after injection, per time point (increasing).
        activity_mbq: (n_voi, n_time_points) activity at acquisition time, not decay corrected.
        sop_instance_uids: the NM instance of each time point.
        calibration_record_id: the calibration applied.
        counts: (n_voi, n_time_points) reconstructed counts in each VOI (Poisson part of the
            activity's uncertainty), or None when not recorded.
        calibration_relative_sd: relative standard uncertainty of the calibration factor from
            the site's record, or None when the record does not state one.
        alignments: per time point, its registration to the VOIs' CT (None where it shares
            their frame of reference).
        recovery_coefficient: (n_voi,) the recovery coefficient ``activity_mbq`` was divided
            by when partial-volume correction was asked for (1.0 for organs, NaN for a lesion
            whose volume lies outside the RC curve's measured range: left uncorrected); None
            when no correction was asked for.
        partial_volume_status: per VOI, what the correction did (``ok``, organ not corrected,
            or why a lesion was not); empty when no correction was asked for.
        partial_volume_model: ``rc_curve`` (A / RC) or ``rc0_local_background`` (background
            aware); empty when no correction was asked for.
        partial_volume_relative_sd: (n_voi, n_time_points) relative SD the background-aware
            correction adds to each activity (RC0 covariance and background SD; 0 where nothing
            was corrected), or None.
        partial_volume_background_mbq_per_ml: (n_voi, n_time_points) local background used
            (NaN for organs), or None.
        partial_volume_shell_mm: (gap, width) of the background shells, or None.
        partial_volume_background_sd_mbq_per_ml: (n_voi, n_time_points) SD of the background
            shell's voxels (NaN for organs), or None.
        partial_volume_psf_fwhm_mm: (FWHM, its SD) in mm of the PSF the GTM correction used,
            or None (other models, or no correction).
        site_volume_ml: (n_voi,) the volume of each VOI as the site drew it (segmentation
            grid) where ``volume_ml`` is the platform's (``gtm_platform_voi``: re-delineated
            lesions, on the first time point's SPECT grid); None otherwise (``volume_ml`` is
            then the site's).
        delineations: per VOI, how the platform re-delineated it (None for organs), with
            ``gtm_platform_voi``; empty otherwise.
        partial_volume_fallback: per VOI, with ``gtm_platform_voi``, the time points at which
            an organ's extent activity was not > 0 and its GTM T·V on the site's VOI was used
            instead (``quant.gtm.EXTENT_FALLBACK``; the VOI's other time points keep the
            extent), "" where none; empty otherwise. Published as a warning finding
            (``results.cycle_summary.with_partial_volume_findings``).
        organ_outlines: per VOI, with ``gtm_platform_voi``, how the platform found the organ's
            volume (``quant.organ_outline``: the site's outline offset to the SPECT's edge;
            None for lesions); ``volume_ml`` and ``mass_g`` are then the platform's and
            ``site_volume_ml`` the site's; empty otherwise.
        delineation_activity_relative_sd, delineation_concentration_relative_sd: (n_voi,)
            with ``gtm_platform_voi``, each re-delineated lesion's relative SD of its first
            time point's activity and concentration from the delineation's volume uncertainty
            (:func:`delineation_relative_sd`; 0 elsewhere); None otherwise. The concentration's
            is added in quadrature to ``partial_volume_relative_sd`` at every time point
            (DESIGN.md, "Platform delineation": the dose divides by the delineated mass).
        recovery_model_relative_sd: (n_voi, n_time_points) with a GTM model and a record
            holding the NEMA spheres' recovery-model residuals, each GTM-corrected lesion's
            recovery-model term s(V)/ω_ii (:mod:`concordose.quant.recovery_model`; NaN for
            organs), already added in quadrature to ``partial_volume_relative_sd``; for a
            lesion the GTM left as measured (refused at some time point) instead the loss its
            value still holds, 1/RC(V) − 1 (:func:`uncorrected_loss_relative_sd`), which is
            then its whole ``partial_volume_relative_sd``; None otherwise (no such term).
    """

    labels: tuple[str, ...]
    voi_types: tuple[VoiType, ...]
    volume_ml: npt.NDArray[np.float64]
    mass_g: npt.NDArray[np.float64]
    time_h: npt.NDArray[np.float64]
    activity_mbq: npt.NDArray[np.float64]
    sop_instance_uids: tuple[str, ...]
    calibration_record_id: str
    counts: npt.NDArray[np.float64] | None = None
    calibration_relative_sd: float | None = None
    alignments: tuple[TimePointAlignment, ...] = ()
    recovery_coefficient: npt.NDArray[np.float64] | None = None
    partial_volume_status: tuple[str, ...] = ()
    partial_volume_model: str = ""
    partial_volume_relative_sd: npt.NDArray[np.float64] | None = None
    partial_volume_background_mbq_per_ml: npt.NDArray[np.float64] | None = None
    partial_volume_shell_mm: tuple[float, float] | None = None
    partial_volume_background_sd_mbq_per_ml: npt.NDArray[np.float64] | None = None
    partial_volume_psf_fwhm_mm: tuple[float, float] | None = None
    site_volume_ml: npt.NDArray[np.float64] | None = None
    delineations: tuple[LesionDelineation | None, ...] = ()
    partial_volume_fallback: tuple[str, ...] = ()
    organ_outlines: tuple[OrganOutline | None, ...] = ()
    delineation_activity_relative_sd: npt.NDArray[np.float64] | None = None
    delineation_concentration_relative_sd: npt.NDArray[np.float64] | None = None
    recovery_model_relative_sd: npt.NDArray[np.float64] | None = None

    @property
    def partial_volume_tia_relative_sd(self) -> npt.NDArray[np.float64]:
        """(n_voi,) relative SD the partial-volume correction adds to each VOI's TIA: the same
        PSF and masks correct every time point, so its error is correlated across them
        (``kinetics.uncertainty.correlated_relative_sd``); 0 without a correction."""
        if self.partial_volume_relative_sd is None:
            return np.zeros(len(self.labels))
        return correlated_relative_sd(self.activity_mbq, self.partial_volume_relative_sd)


MODELS = (
    RECOVERY_ONLY_MODEL,
    BACKGROUND_MODEL,
    GTM_MODEL,
    GTM_PLATFORM_MODEL,
    PERTURBATION_GTM_MODEL,
)
"""Partial-volume models :func:`quantify_cycle` applies (names from ``quant.pvc``)."""


EXTENT_MARGIN_FWHM = 2.0
"""An organ's extent under ``gtm_platform_voi``: its VOI grown by this many FWHM of the site's
NEMA-sphere PSF (a Gaussian edge is at 10⁻⁴ of its step 2 FWHM outside; OSEM's broader
response to faint objects still falls within it)."""


def threshold_curve(record: CalibrationRecord) -> Callable[[float], float] | None:
    """The record's measured threshold-volume curve g(V) (``quant.delineation``), or None
    (a record calibrated before it was measured: the Gaussian model of its sphere FWHM)."""
    volumes, fractions = (
        record.delineation_threshold_volumes_ml,
        record.delineation_threshold_fractions,
    )
    if not volumes or not fractions:
        return None
    return ThresholdCurve(tuple(volumes), tuple(fractions)).at


def record_threshold_surface(
    record: CalibrationRecord, reconstruction: SiteReconstruction | None = None
) -> ThresholdSurface | None:
    """The record's contrast-dependent threshold (``quant.delineation.ThresholdSurface``, from
    its NEMA scans at two or more contrasts), or None (one contrast, or an older record:
    :func:`threshold_curve` applies).

    ``reconstruction``: the site protocol's; where it does not model resolution
    (``resolution_recovery: false``) g does not follow contrast and the surface is the mean of
    the scans' curves (``ThresholdSurface.contrast_dependent``; ``quant.delineation``, "Contrast
    dependence follows resolution modelling"). Without it (a protocol that does not say) the
    surface follows contrast."""
    if not record.delineation_threshold_scans:
        return None
    return threshold_surface(
        [
            ThresholdCurve(tuple(scan.volumes_ml), tuple(scan.fractions), tuple(scan.contrasts))
            for scan in record.delineation_threshold_scans
        ],
        contrast_dependent=reconstruction is None or reconstruction.resolution_recovery,
    )


def contrast_threshold(
    record: CalibrationRecord, reconstruction: SiteReconstruction | None = None
) -> Callable[[float, float], float] | None:
    """g(V, K) of :func:`record_threshold_surface` (followed beyond the phantoms' contrasts:
    what the platform delineates with), or None without one."""
    surface = record_threshold_surface(record, reconstruction)
    return None if surface is None else surface.at


def held_contrast_threshold(
    record: CalibrationRecord, reconstruction: SiteReconstruction | None = None
) -> Callable[[float, float], float] | None:
    """g(V, K) of :func:`record_threshold_surface` held at the phantoms' measured contrasts
    (``ThresholdSurface.held``: the lesion's bracket, ``quant.delineation.delineate_lesion``),
    or None without one, or where the surface does not follow contrast (held, it is the same:
    there is nothing to bracket)."""
    surface = record_threshold_surface(record, reconstruction)
    if surface is None or not surface.contrast_dependent:
        return None
    return surface.held().at


def recovery_model_error(record: CalibrationRecord) -> RecoveryModelError | None:
    """The record's recovery-model residuals per NEMA sphere (``quant.recovery_model``), or
    None (a record calibrated before they were stored: no recovery-model term, as a record
    without a PSF has no PSF term)."""
    volumes, residuals = record.recovery_model_volumes_ml, record.recovery_model_residuals
    if not volumes or not residuals:
        return None
    return RecoveryModelError(tuple(volumes), tuple(residuals))


def uncorrected_loss_relative_sd(
    record: CalibrationRecord, volume_ml: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64] | None:
    """Per VOI of ``volume_ml``, the relative SD of a lesion the GTM left as measured: the
    partial-volume loss its value still holds, 1/RC(V) − 1, RC the record's NEMA-sphere curve
    (``quant.pvc.FittedRecoveryCurve.extrapolated``: by its form outside the spheres' range, →
    ∞ as V → 0). None when the record has no RC curve."""
    if record.recovery_a_ml is None or record.recovery_b is None:
        return None
    recovery = recovery_curve_from_record(record).extrapolated(np.maximum(volume_ml, 1e-9))
    result: npt.NDArray[np.float64] = 1.0 / recovery - 1.0
    return result


def threshold_curve_sd(record: CalibrationRecord) -> Callable[[float], float] | None:
    """SD of the record's measured g(V) from its points' residuals
    (``quant.delineation.ThresholdCurve.residual_sd``), or None (no measured curve)."""
    volumes, fractions = (
        record.delineation_threshold_volumes_ml,
        record.delineation_threshold_fractions,
    )
    if not volumes or not fractions:
        return None
    return ThresholdCurve(tuple(volumes), tuple(fractions)).residual_sd


def delineation_relative_sd(
    activity_mbq: npt.NDArray[np.float64],
    smaller_mbq: npt.NDArray[np.float64],
    larger_mbq: npt.NDArray[np.float64],
    delineations: Sequence[LesionDelineation | None],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per VOI, the relative SD of the first time point's activity and of its concentration
    (activity / delineated volume) from the delineation's volume uncertainty: half the
    difference between their values with the lesion delineated as the smallest and the largest
    of its regions at g + SD, at g − SD, by the threshold held at the phantoms' contrasts, at
    the threshold's other stable fixed points at its scale and, where the rule found only its
    central peak, the site's VOI
    (``LesionDelineation.smaller_mask`` / ``larger_mask``; first-order propagation, the two
    regions as a ±1 SD pair), over the central value. 0 where the lesion was not re-delineated
    or its curve has no residual SD (organs, a site with the Gaussian model, a lesion kept as
    the site drew it); 0 as well where a GTM of either pair gave no activity (NaN)."""
    n = len(delineations)
    activity_sd, concentration_sd = np.zeros(n), np.zeros(n)
    for k, delineation in enumerate(delineations):
        if (
            delineation is None
            or delineation.smaller_mask is None
            or delineation.larger_mask is None
            or not activity_mbq[k] > 0
        ):
            continue
        voxel_ml = delineation.volume_ml / max(float(delineation.mask.sum()), 1.0)
        small_ml = float(delineation.smaller_mask.sum()) * voxel_ml
        large_ml = float(delineation.larger_mask.sum()) * voxel_ml
        if not (small_ml > 0 and np.isfinite(smaller_mbq[k]) and np.isfinite(larger_mbq[k])):
            continue
        activity_sd[k] = 0.5 * abs(larger_mbq[k] - smaller_mbq[k]) / activity_mbq[k]
        central = activity_mbq[k] / delineation.volume_ml
        concentration_sd[k] = (
            0.5 * abs(larger_mbq[k] / large_ml - smaller_mbq[k] / small_ml) / central
        )
    return activity_sd, concentration_sd


def _first_frame_transform(
    alignment: TimePointAlignment, to_first: sitk.Transform | None
) -> sitk.Transform:
    """Maps this time point's SPECT points to the first time point's (where the platform's
    VOIs are drawn): through the VOIs' CT, then on to the first time point."""
    if to_first is None:
        return alignment.mask_transform()
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(to_first)  # applied last: CT → first time point
    composite.AddTransform(alignment.mask_transform())  # applied first: this SPECT → CT
    return composite


def _platform_shape(
    delineation: LesionDelineation, label: str, voi_type: VoiType, geometry: VolumeGeometry
) -> VoiShape:
    """A re-delineated lesion (on the first time point's grid) as a shape any grid can take."""
    box = bounding_box(delineation.mask)
    if box is None:
        raise ValueError(f"VOI {label!r}: a delineated lesion has voxels")
    sub = geometry.cropped(box)
    image = sitk.GetImageFromArray(delineation.mask[box].astype(np.uint8))
    image.SetOrigin(sub.origin_mm)
    image.SetSpacing(sub.spacing_mm)
    image.SetDirection(sub.direction)
    return voi_shape(VoiMask(label=label, segment_number=0, voi_type=voi_type, mask=image))


def quantify_cycle(
    cycle: CycleStudy,
    calibration: CalibrationRecord,
    on_time_point: Callable[[int], None] | None = None,
    *,
    partial_volume_correction: bool = False,
    partial_volume_model: str = RECOVERY_ONLY_MODEL,
    background_gap_mm: float = DEFAULT_BACKGROUND_GAP_MM,
    background_width_mm: float = DEFAULT_BACKGROUND_WIDTH_MM,
    vois: Sequence[VoiMask] | None = None,
    cache: ResultCache | None = None,
    reconstruction: SiteReconstruction | None = None,
) -> CycleTimeActivity:
    """Activity per VOI and time point for ``cycle`` with the site's ``calibration``.

    ``vois`` are the cycle's VOIs as the pipeline read them once (read from the SEG when
    omitted); ``cache`` keeps the time points' registrations for a re-run.

    With ``partial_volume_correction`` (off by default), each lesion's activities are divided
    by RC(V) of the site's recovery curve from ``calibration`` at the lesion's segmented volume
    (``quant.pvc``); organs are left as measured, and a lesion outside the curve's measured
    volume range is left uncorrected with a status saying so (never extrapolated). The counts
    stay as measured (they carry the Poisson part of the uncertainty).

    ``partial_volume_model="rc0_local_background"`` applies the background-aware correction
    instead (``quant.pvc.correct_partial_volume_in_background``): at each time point each
    lesion's local background is the mean concentration in a shell ``background_gap_mm`` to
    ``background_gap_mm + background_width_mm`` from its VOI on that time point's grid (other
    lesions left out), and C_L = (C_meas − (1 − RC0)·C_B)/RC0 with the record's RC0 curve.

    ``partial_volume_model="gtm"`` corrects every VOI, organs and lesions, by the geometric
    transfer matrix (``quant.gtm``) at each time point on its own grid, with the record's PSF
    and a background region from the SPECT's body outline. A VOI is corrected only when it is
    at every time point (else left as measured, its status saying why); the PSF's SD enters
    ``partial_volume_relative_sd`` (∂A/∂FWHM · σ_FWHM, central difference).

    ``partial_volume_model="gtm_platform_voi"`` runs the same GTM on VOIs the platform defines
    by one rule whatever the site drew: each lesion re-delineated on the first time point by
    ``quant.delineation`` (the site-calibrated iterative threshold, with the record's NEMA-sphere
    FWHM) inside a search region around the site's VOI, carried to every time point through
    the registrations, its volume (hence mass) the delineated one (``site_volume_ml`` keeps
    the site's); each organ's activity the total in its VOI grown by
    :data:`EXTENT_MARGIN_FWHM` × that FWHM less every other region's GTM share
    (``quant.gtm.extent_activity``; at a time point where that is not > 0, the GTM's T·V on
    the site's VOI, listed in ``partial_volume_fallback``), its volume (hence mass) the site's
    outline offset to the edge the first time point's SPECT shows
    (``quant.organ_outline``, with the GTM's PSF; the site's for a faint organ). The lesion
    threshold follows contrast unless ``reconstruction`` (the protocol's) says the site does not
    model resolution (:func:`record_threshold_surface`).

    ``partial_volume_model="perturbation_gtm"`` is ``gtm_platform_voi`` with every region's
    spread taken through the site's own reconstruction (``reconstruction``, the protocol's) by
    perturbation (``quant.perturbation_gtm``: one OSEM reconstruction per region and time
    point, the attenuation from that time point's CT, ``reconstruction.attenuation_map``, the
    photopeak window's scatter and its correction as the calibration record fitted them on the
    site's NEMA phantom, ``CalibrationRecord.scatter_correction``), around the Gaussian GTM's
    estimate; the PSF-model term of ``partial_volume_relative_sd`` is half
    the difference between the two (the Gaussian's FWHM derivative does not apply), in
    quadrature with the calibrated scatter-to-primary ratio's SD carried to each VOI
    (``quant.perturbation_gtm.scatter_activity_sd``: one more OSEM per time point). A time
    point without a CT, whose grid the projector cannot model (anisotropic voxels), or whose
    perturbation step the site's reconstruction does not bear out
    (``quant.perturbation_gtm.PerturbationGtm.fallback``) gets the Gaussian GTM, listed in
    ``partial_volume_fallback``. Memory: the projector keeps every view's attenuation factors
    (views × SPECT voxels × 4 bytes: 377 MB for 60 views of 128 × 128 × 96) while a time point
    is corrected.

    Raises:
        UnreadableDicomError, StudyIncompleteError: from the readers, naming the file at fault.
        ConfigurationError: correction asked for but the record carries no recovery curve (or
            no RC0 curve for the background-aware model), an unknown model, or
            ``perturbation_gtm`` without ``reconstruction``.
    """
    if partial_volume_model not in MODELS:
        raise ConfigurationError(
            f"partial_volume_model {partial_volume_model!r}: expected one of {', '.join(MODELS)}"
        )
    background_aware = partial_volume_correction and partial_volume_model == BACKGROUND_MODEL
    transfer_matrix = partial_volume_correction and partial_volume_model in (
        GTM_MODEL,
        GTM_PLATFORM_MODEL,
        PERTURBATION_GTM_MODEL,
    )
    perturbation = partial_volume_correction and partial_volume_model == PERTURBATION_GTM_MODEL
    if perturbation and reconstruction is None:
        raise ConfigurationError(
            "partial_volume_model perturbation_gtm: expected the site's reconstruction "
            "(protocol key reconstruction:), found none"
        )
    platform = partial_volume_correction and partial_volume_model in (
        GTM_PLATFORM_MODEL,
        PERTURBATION_GTM_MODEL,
    )
    # the threshold's model is the spheres' own fit (module quant.delineation), which the
    # record holds whenever it holds a PSF at all
    sphere_fwhm_mm = calibration.psf_fwhm_mm if platform else None
    psf = psf_from_record(calibration) if transfer_matrix else None
    psf_alternative = alternative_psf_fwhm(calibration) if transfer_matrix else None
    model_error = recovery_model_error(calibration) if transfer_matrix else None
    curve = (
        recovery_curve_from_record(calibration)
        if partial_volume_correction and partial_volume_model == RECOVERY_ONLY_MODEL
        else None
    )
    contrast_curve = contrast_recovery_curve_from_record(calibration) if background_aware else None
    if vois is None:
        vois = read_voi_masks(cycle.segmentation, cycle.segmentation_ct_files)
    volume_ml = np.array(
        [
            float(np.count_nonzero(sitk.GetArrayViewFromImage(voi.mask)))
            * float(np.prod(voi.mask.GetSpacing()))
            / 1000.0
            for voi in vois
        ]
    )
    activity = np.empty((len(vois), len(cycle.time_points)), dtype=np.float64)
    voi_counts = np.empty_like(activity)
    voi_ml = np.empty_like(activity)
    background_mean = np.full_like(activity, np.nan)
    background_sd = np.full_like(activity, np.nan)
    background_n = np.zeros(activity.shape, dtype=np.int64)
    gtm_mbq = np.full_like(activity, np.nan)
    gtm_sd_mbq = np.full_like(activity, np.nan)
    model_relative_sd = np.full_like(activity, np.nan)
    gtm_status: list[list[str]] = [[] for _ in vois]
    gtm_fallback: list[list[str]] = [[] for _ in vois]
    delineation_activity_sd: npt.NDArray[np.float64] | None = None
    delineation_concentration_sd: npt.NDArray[np.float64] | None = None
    lesion = np.array([voi.voi_type == "lesion" for voi in vois], dtype=bool)
    shapes = voi_shapes(vois)
    alignments = align_time_points(cycle, cache)
    delineations: tuple[LesionDelineation | None, ...] = ()
    organ_outlines: tuple[OrganOutline | None, ...] = ()
    platform_shapes: dict[int, VoiShape] = {}
    first = alignments[0].registration if alignments else None
    to_first = first.transform if first is not None else None
    site_volume_ml = None
    for index, point in enumerate(cycle.time_points):
        acquisition = point.acquisition
        activity_map, counts = time_point_activity_mbq(acquisition, calibration)
        voi_set = resample_vois(shapes, acquisition.geometry, alignments[index].mask_transform())
        if sphere_fwhm_mm is not None and index == 0:
            spacing = acquisition.geometry.spacing_mm[::-1]
            delineations = delineate_lesions(
                activity_map / acquisition.geometry.voxel_volume_ml,
                voi_set.masks,
                [bool(flag) for flag in lesion],
                spacing_mm_zyx=(spacing[0], spacing[1], spacing[2]),
                fwhm_mm=sphere_fwhm_mm,
                threshold=threshold_curve(calibration),
                threshold_sd=threshold_curve_sd(calibration),
                contrast_threshold=contrast_threshold(calibration, reconstruction),
                bracket_threshold=held_contrast_threshold(calibration, reconstruction),
            )
            platform_shapes = {
                k: _platform_shape(d, vois[k].label, vois[k].voi_type, acquisition.geometry)
                for k, d in enumerate(delineations)
                if d is not None and d.status == DELINEATED
            }
            site_volume_ml = volume_ml.copy()
            for k, delineated in enumerate(delineations):
                if k in platform_shapes and delineated is not None:
                    volume_ml[k] = delineated.volume_ml
        if platform_shapes:
            moved = resample_vois(
                list(platform_shapes.values()),
                acquisition.geometry,
                _first_frame_transform(alignments[index], to_first),
            )
            masks = voi_set.masks.copy()
            masks[list(platform_shapes)] = moved.masks
            voi_set = replace(voi_set, masks=masks)
        if platform and psf is not None and index == 0:
            spacing = acquisition.geometry.spacing_mm[::-1]
            organ_outlines = platform_organ_outlines(
                activity_map / acquisition.geometry.voxel_volume_ml,
                voi_set.masks,
                [bool(flag) for flag in lesion],
                spacing_mm_zyx=(spacing[0], spacing[1], spacing[2]),
                fwhm_mm=psf[0],
                site_volumes_ml=volume_ml,
            )
            for k, outline in enumerate(organ_outlines):
                if outline is not None and outline.status == FITTED:
                    volume_ml[k] = outline.volume_ml
        activity[:, index] = voi_totals(activity_map, voi_set.masks)
        voi_counts[:, index] = (
            np.nan if counts is None else voi_totals(counts, voi_set.masks)
        )  # a vendor Bq/mL image holds no counts: no Poisson part to publish
        voi_ml[:, index] = voi_set.volumes_ml
        if contrast_curve is not None:
            spacing_zyx = acquisition.geometry.spacing_mm[::-1]
            shells = background_shells(
                voi_set.masks,
                (spacing_zyx[0], spacing_zyx[1], spacing_zyx[2]),
                lesion,
                gap_mm=background_gap_mm,
                width_mm=background_width_mm,
            )
            (
                background_mean[:, index],
                background_sd[:, index],
                background_n[:, index],
            ) = shell_statistics(activity_map / acquisition.geometry.voxel_volume_ml, shells)
        if psf is not None:
            spacing = acquisition.geometry.spacing_mm[::-1]
            concentration = activity_map / acquisition.geometry.voxel_volume_ml
            extent_margin_mm = (
                None if sphere_fwhm_mm is None else EXTENT_MARGIN_FWHM * sphere_fwhm_mm
            )
            extent_vois = tuple(not flag for flag in lesion) if platform else ()
            perturbed = None
            if perturbation and reconstruction is not None:
                model, why_not = reconstruction_model_for(
                    point.ct_files,
                    acquisition,
                    reconstruction,
                    scatter=calibration.scatter_correction(),
                )
                if model is not None:
                    perturbed = perturbation_gtm_correct(
                        concentration,
                        voi_crops(voi_set.masks),
                        body=body_outline(concentration),
                        spacing_mm_zyx=(spacing[0], spacing[1], spacing[2]),
                        fwhm_mm=psf[0],
                        model=model,
                        extent_margin_mm=extent_margin_mm,
                        extent_vois=extent_vois,
                        scatter_to_primary_sd=calibration.scatter_to_primary_sd or 0.0,
                    )
                    why_not = perturbed.fallback
                if why_not:
                    for voi_index in range(len(vois)):
                        gtm_fallback[voi_index].append(f"time point {index}: {why_not}")
            if perturbed is not None and not perturbed.fallback:
                corrected_now, gaussian_now = perturbed.corrected, perturbed.gaussian
                sd_now = model_disagreement_sd(corrected_now, gaussian_now)
                if perturbed.scatter_sd_mbq is not None:  # the calibrated ratio's SD
                    sd_now = np.hypot(sd_now, perturbed.scatter_sd_mbq)
            else:
                # the Gaussian GTM, with its own SD terms, wherever the perturbation GTM was not
                # taken (not asked for, no CT, its step rejected)
                corrected_now, sd_now = gtm_fwhm_sensitivity(
                    concentration,
                    voi_crops(voi_set.masks),
                    body=body_outline(concentration),
                    spacing_mm_zyx=(spacing[0], spacing[1], spacing[2]),
                    fwhm_mm=psf[0],
                    fwhm_sd_mm=psf[1],
                    alternative_fwhm_mm=psf_alternative,
                    extent_margin_mm=extent_margin_mm,
                    extent_vois=extent_vois,
                )
                gaussian_now = corrected_now
            gtm_mbq[:, index], gtm_sd_mbq[:, index] = corrected_now.activity_mbq, sd_now
            if model_error is not None:
                # lesions only: the spheres are evidence for lesion-like objects, not organs
                model_relative_sd[:, index] = np.where(
                    lesion & np.isfinite(corrected_now.activity_mbq),
                    model_error.relative_sd(volume_ml, corrected_now.self_recovery),
                    np.nan,
                )
            if index == 0 and any(
                d is not None and d.smaller_mask is not None for d in delineations
            ):
                # the delineation term: every re-delineated lesion as its smaller region, then
                # as its larger (one GTM each; lesions far apart, so each sees its own change)
                shifted = []
                for side in ("smaller_mask", "larger_mask"):
                    masks = voi_set.masks.copy()
                    for k, d in enumerate(delineations):
                        if d is not None and getattr(d, side) is not None:
                            masks[k] = getattr(d, side)
                    shifted.append(
                        gtm_correct(
                            concentration,
                            voi_crops(masks),
                            body=body_outline(concentration),
                            spacing_mm_zyx=(spacing[0], spacing[1], spacing[2]),
                            fwhm_mm=psf[0],
                            extent_margin_mm=EXTENT_MARGIN_FWHM * (sphere_fwhm_mm or psf[0]),
                            extent_vois=tuple(not flag for flag in lesion),
                        ).activity_mbq
                    )
                # (Gaussian GTMs all three: a relative change under one model)
                delineation_activity_sd, delineation_concentration_sd = delineation_relative_sd(
                    gaussian_now.activity_mbq, shifted[0], shifted[1], delineations
                )
            for voi_index, status in enumerate(corrected_now.status):
                if status != STATUS_OK:
                    gtm_status[voi_index].append(f"time point {index}: {status}")
            for voi_index, note in enumerate(corrected_now.fallback):
                if note:
                    gtm_fallback[voi_index].append(f"time point {index}: {note}")
        if on_time_point is not None:
            on_time_point(index)
    voi_types = tuple(voi.voi_type for voi in vois)
    recovery = None
    pvc_status: tuple[str, ...] = ()
    if curve is not None:
        corrected = correct_partial_volume(activity, volume_ml, voi_types, curve)
        applied = np.isfinite(corrected.recovery)
        activity = np.where(applied[:, None], corrected.activity_mbq, activity)
        recovery, pvc_status = corrected.recovery, corrected.status
    pvc_relative_sd = None
    pvc_background = None
    pvc_background_sd = None
    if contrast_curve is not None:
        aware = correct_partial_volume_in_background(
            activity,
            voi_ml,
            volume_ml,
            voi_types,
            background=LocalBackground(background_mean, background_sd, background_n),
            curve=contrast_curve,
        )
        activity, recovery, pvc_status = aware.activity_mbq, aware.recovery, aware.status
        pvc_relative_sd, pvc_background = aware.relative_sd, aware.background_mbq_per_ml
        pvc_background_sd = np.where(lesion[:, None], background_sd, np.nan)
    if psf is not None:
        applied = np.array([not reasons for reasons in gtm_status], dtype=bool)
        with np.errstate(invalid="ignore", divide="ignore"):
            relative = np.abs(gtm_sd_mbq / gtm_mbq)
        activity = np.where(applied[:, None], gtm_mbq, activity)
        pvc_relative_sd = np.where(applied[:, None], relative, 0.0)
        if delineation_concentration_sd is not None:
            # the same delineated region at every time point: a fully correlated term
            pvc_relative_sd = np.where(
                applied[:, None],
                np.hypot(pvc_relative_sd, delineation_concentration_sd[:, None]),
                pvc_relative_sd,
            )
        if model_error is not None:
            # the same PSF model and VOI at every time point: correlated, like the PSF term
            with_model = applied[:, None] & np.isfinite(model_relative_sd)
            pvc_relative_sd = np.where(
                with_model, np.hypot(pvc_relative_sd, model_relative_sd), pvc_relative_sd
            )
            left_as_measured = uncorrected_loss_relative_sd(calibration, volume_ml)
            if left_as_measured is not None:
                left = lesion & ~applied
                model_relative_sd[left] = left_as_measured[left, None]
                pvc_relative_sd = np.where(left[:, None], model_relative_sd, pvc_relative_sd)
        pvc_status = tuple(
            STATUS_OK if not reasons else "; ".join(reasons) for reasons in gtm_status
        )
    return CycleTimeActivity(
        labels=tuple(voi.label for voi in vois),
        voi_types=voi_types,
        volume_ml=volume_ml,
        mass_g=volume_ml * UNIT_DENSITY_G_PER_ML,
        time_h=np.array([point.time_h for point in cycle.time_points], dtype=np.float64),
        activity_mbq=activity,
        sop_instance_uids=tuple(p.acquisition.sop_instance_uid for p in cycle.time_points),
        calibration_record_id=calibration.record_id,
        counts=None if np.isnan(voi_counts).any() else voi_counts,
        calibration_relative_sd=(
            calibration.vendor_quantification_bias_sd_relative
            if any(p.acquisition.is_vendor_quantitative for p in cycle.time_points)
            else calibration.calibration_factor_relative_uncertainty
        ),
        alignments=tuple(alignments),
        recovery_coefficient=recovery,
        partial_volume_status=pvc_status,
        partial_volume_model=partial_volume_model if partial_volume_correction else "",
        partial_volume_relative_sd=pvc_relative_sd,
        partial_volume_background_mbq_per_ml=pvc_background,
        partial_volume_shell_mm=(
            (background_gap_mm, background_width_mm) if contrast_curve is not None else None
        ),
        partial_volume_background_sd_mbq_per_ml=pvc_background_sd,
        partial_volume_psf_fwhm_mm=psf,
        site_volume_ml=site_volume_ml,
        delineations=delineations,
        organ_outlines=organ_outlines,
        delineation_activity_relative_sd=delineation_activity_sd,
        delineation_concentration_relative_sd=delineation_concentration_sd,
        recovery_model_relative_sd=model_relative_sd if model_error is not None else None,
        partial_volume_fallback=(
            tuple("; ".join(notes) for notes in gtm_fallback) if platform else ()
        ),
    )


def reconstruction_model_for(
    ct_files: Sequence[Path],
    acquisition: NMAcquisition,
    reconstruction: SiteReconstruction,
    *,
    scatter: ScatterCorrection | None = None,
) -> tuple[ReconstructionModel | None, str]:
    """The site's reconstruction on a time point's grid, with μ from its CT and the window's
    scatter fitted at calibration (``scatter``; None: scatter-free data); or None and why the
    perturbation GTM cannot run there (the Gaussian GTM is used instead)."""
    if not ct_files:
        return None, "no CT in the SPECT's frame of reference: Gaussian GTM at this time point"
    geometry = acquisition.geometry
    spacing = geometry.spacing_mm[::-1]
    try:
        return (
            ReconstructionModel(
                reconstruction,
                attenuation_map_mu_per_mm(ct_files, geometry),
                (spacing[0], spacing[1], spacing[2]),
                scatter=scatter,
            ),
            "",
        )
    except ValueError as exc:
        return None, f"{exc}: Gaussian GTM at this time point"


def quantify_cycle_per_protocol(
    cycle: CycleStudy,
    calibration: CalibrationRecord,
    *,
    partial_volume_correction: bool,
    partial_volume_model: str = BACKGROUND_MODEL,
    background_gap_mm: float = DEFAULT_BACKGROUND_GAP_MM,
    background_width_mm: float = DEFAULT_BACKGROUND_WIDTH_MM,
    vois: Sequence[VoiMask] | None = None,
    cache: ResultCache | None = None,
    reconstruction: SiteReconstruction | None = None,
) -> CycleTimeActivity:
    """:func:`quantify_cycle` as a site protocol asks, never refusing a cycle for its record.

    When the correction is asked for but ``calibration`` lacks the model's curve (e.g. a record
    calibrated before RC0 was derived), the cycle is quantified uncorrected and every lesion's
    ``partial_volume_status`` says why (the record and the missing fields); organs say
    ``not corrected (organ)``. ``partial_volume_model`` then still names the model asked for,
    and ``recovery_coefficient`` is None (nothing was divided).

    ``partial_volume_model="phantom_choice"`` applies the model the record chose on the site's
    NEMA spheres (``partial_volume_model_chosen``; ``none``: uncorrected, each VOI's status
    saying so), which is then the published model. ``reconstruction`` is the site protocol's
    (``perturbation_gtm`` needs it).

    Raises:
        ConfigurationError: unknown ``partial_volume_model``.
        UnreadableDicomError, StudyIncompleteError: from the readers.
    """
    if partial_volume_correction and partial_volume_model == PHANTOM_CHOICE:
        chosen = calibration.partial_volume_model_chosen
        if chosen == NO_CORRECTION:
            plain = quantify_cycle(cycle, calibration, vois=vois, cache=cache)
            return replace(
                plain,
                partial_volume_model=NO_CORRECTION,
                partial_volume_status=(
                    f"not corrected: calibration record {calibration.record_id!r} found no "
                    "model better than none on the site's NEMA spheres",
                )
                * len(plain.labels),
            )
        if chosen is not None:
            partial_volume_model = chosen
    reason = (
        partial_volume_unavailable(calibration, partial_volume_model)
        if partial_volume_correction
        else None
    )
    if reason is None:
        return quantify_cycle(
            cycle,
            calibration,
            partial_volume_correction=partial_volume_correction,
            partial_volume_model=partial_volume_model,
            background_gap_mm=background_gap_mm,
            background_width_mm=background_width_mm,
            vois=vois,
            cache=cache,
            reconstruction=reconstruction,
        )
    plain = quantify_cycle(cycle, calibration, vois=vois, cache=cache)
    # the GTM (or a model not known without the record's choice) would have corrected organs
    every_voi = partial_volume_model in (
        GTM_MODEL,
        GTM_PLATFORM_MODEL,
        PERTURBATION_GTM_MODEL,
        PHANTOM_CHOICE,
    )
    return replace(
        plain,
        partial_volume_model=partial_volume_model,
        partial_volume_status=tuple(
            f"not corrected: {reason}" if kind == "lesion" or every_voi else NOT_CORRECTED
            for kind in plain.voi_types
        ),
    )
