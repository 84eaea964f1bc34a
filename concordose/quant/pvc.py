"""Partial-volume correction of lesion activities with a site's recovery-coefficient curve.

A lesion of volume V imaged at the SPECT resolution shows only a fraction RC(V) of its activity
inside its VOI; the site measures RC on phantom spheres (e.g. the NEMA IEC body phantom's six
spheres, 0.5–26.5 mL) and the corrected activity is A / RC(V). LUMEN, LUTADOSE and Hebert et al.
all applied such phantom-derived recovery coefficients (seed review, Table 1).

RC between measured volumes is interpolated linearly in log(volume) (RC curves are smooth in
log V); outside the measured range nothing is extrapolated: the VOI gets NaN and a status
saying so. Organs are not corrected (their volumes lie far above the range where RC departs
from 1). The RC curve's own uncertainty enters the activity's uncertainty through
``kinetics.uncertainty.activity_sd_mbq(recovery_relative_sd=...)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from concordose.calibration.records import CalibrationRecord
from concordose.errors import ConfigurationError

FloatArray = npt.NDArray[np.float64]
STATUS_OK = "ok"
NOT_CORRECTED = "not corrected (organ)"


@dataclass(frozen=True)
class RecoveryCurve:
    """Measured recovery coefficients of one camera set-up.

    Attributes:
        volume_ml: sphere volumes (mL), strictly increasing.
        recovery: RC at each volume, in (0, 1.2] (slightly above 1 happens with Gibbs
            overshoot of resolution-modelled reconstructions).
        source: where the curve comes from (phantom scan id), for provenance.
    """

    volume_ml: tuple[float, ...]
    recovery: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        volumes = np.asarray(self.volume_ml, dtype=np.float64)
        rc = np.asarray(self.recovery, dtype=np.float64)
        if volumes.size < 2 or volumes.shape != rc.shape:
            raise ConfigurationError(
                f"RC curve {self.source!r}: needs ≥ 2 (volume, RC) pairs of equal length, "
                f"got {volumes.size} volumes and {rc.size} coefficients"
            )
        if np.any(volumes <= 0) or np.any(np.diff(volumes) <= 0):
            raise ConfigurationError(
                f"RC curve {self.source!r}: volumes must be > 0 mL and increasing, got {volumes}"
            )
        if np.any(rc <= 0) or np.any(rc > 1.2):
            raise ConfigurationError(
                f"RC curve {self.source!r}: coefficients must lie in (0, 1.2], got {rc}"
            )

    def at(self, volume_ml: FloatArray) -> FloatArray:
        """RC at each volume (log-volume interpolation); NaN outside the measured range."""
        volumes = np.asarray(volume_ml, dtype=np.float64)
        log_measured = np.log(np.asarray(self.volume_ml))
        inside = (volumes >= self.volume_ml[0]) & (volumes <= self.volume_ml[-1])
        safe = np.where(inside, volumes, self.volume_ml[0])
        values = np.interp(np.log(safe), log_measured, np.asarray(self.recovery))
        result: FloatArray = np.where(inside, values, np.nan)
        return result


NEMA_IEC_SPHERE_DIAMETERS_MM = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
"""Inner diameters of the NEMA IEC body phantom's spheres (NEMA NU 2-2018 §7.2; IEC 61675-1)."""
NEMA_IEC_VOLUME_RANGE_ML = (
    math.pi / 6.0 * NEMA_IEC_SPHERE_DIAMETERS_MM[0] ** 3 / 1000.0,
    math.pi / 6.0 * NEMA_IEC_SPHERE_DIAMETERS_MM[-1] ** 3 / 1000.0,
)
"""Volumes spanned by those spheres: 0.52–26.5 mL, where a site's fitted RC curve is measured."""


@dataclass(frozen=True)
class FittedRecoveryCurve:
    """A site's fitted recovery curve RC(V) = 1 / (1 + (a/V)^b), V in mL.

    Valid only over the sphere volumes it was fitted to (``volume_ml``: smallest and largest);
    outside them :meth:`at` gives NaN, as :class:`RecoveryCurve` does, rather than extrapolate.

    Attributes:
        a_ml: volume at which RC = 0.5, mL.
        b: steepness (dimensionless).
        volume_ml: (smallest, largest) measured sphere volume, mL.
        source: where the curve comes from (calibration record id), for provenance.
    """

    a_ml: float
    b: float
    volume_ml: tuple[float, float] = NEMA_IEC_VOLUME_RANGE_ML
    source: str = ""

    def __post_init__(self) -> None:
        if not (self.a_ml > 0 and self.b > 0):
            raise ConfigurationError(
                f"RC curve {self.source!r}: a and b must be > 0, got a = {self.a_ml} mL, "
                f"b = {self.b}"
            )
        if not 0 < self.volume_ml[0] < self.volume_ml[1]:
            raise ConfigurationError(
                f"RC curve {self.source!r}: volume range must be increasing and > 0 mL, got "
                f"{self.volume_ml}"
            )

    def at(self, volume_ml: FloatArray) -> FloatArray:
        """RC at each volume; NaN outside the measured range."""
        volumes = np.asarray(volume_ml, dtype=np.float64)
        inside = (volumes >= self.volume_ml[0]) & (volumes <= self.volume_ml[1])
        safe = np.where(inside, volumes, self.volume_ml[0])
        result: FloatArray = np.where(inside, self.extrapolated(safe), np.nan)
        return result

    def extrapolated(self, volume_ml: FloatArray) -> FloatArray:
        """RC by the fitted form at each volume > 0, inside the measured range or not (→ 0 as
        V → 0, → 1 for large V): for bounding an error, never for correcting a value."""
        volumes = np.asarray(volume_ml, dtype=np.float64)
        result: FloatArray = 1.0 / (1.0 + (self.a_ml / volumes) ** self.b)
        return result


def recovery_curve_from_record(
    record: CalibrationRecord,
    volume_range_ml: tuple[float, float] = NEMA_IEC_VOLUME_RANGE_ML,
) -> FittedRecoveryCurve:
    """The RC curve a calibration record carries (fitted on the NEMA IEC spheres by default).

    Raises:
        ConfigurationError: the record has no recovery curve (no NEMA phantom calibration).
    """
    if record.recovery_a_ml is None or record.recovery_b is None:
        raise ConfigurationError(
            f"calibration record {record.record_id!r} carries no recovery curve "
            "(recovery_a_ml, recovery_b); partial-volume correction needs the site's NEMA IEC "
            "phantom calibration (concordose calibrate)"
        )
    return FittedRecoveryCurve(
        a_ml=record.recovery_a_ml,
        b=record.recovery_b,
        volume_ml=volume_range_ml,
        source=record.record_id,
    )


@dataclass(frozen=True)
class PartialVolumeCorrection:
    """Corrected activities (n_voi, n_time_points), the RC used per VOI and a status per VOI."""

    activity_mbq: FloatArray
    recovery: FloatArray
    status: tuple[str, ...]


def correct_partial_volume(
    activity_mbq: FloatArray,
    volume_ml: FloatArray,
    voi_types: Sequence[str],
    curve: RecoveryCurve | FittedRecoveryCurve,
) -> PartialVolumeCorrection:
    """Divide each lesion's activities by RC(volume); organs unchanged (RC = 1).

    Args:
        activity_mbq: (n_voi, n_time_points) activities as measured in the VOIs.
        volume_ml: (n_voi,) VOI volumes (the anatomical volume, e.g. from CT).
        voi_types: ``"organ"`` or ``"lesion"`` per VOI.
        curve: the site's recovery curve for the reconstruction used (measured points or
            the fitted curve of its calibration record).

    Lesions outside the curve's measured volume range get RC = NaN, NaN activities and a
    status saying why (nothing is extrapolated).
    """
    activity = np.atleast_2d(np.asarray(activity_mbq, dtype=np.float64))
    volumes = np.asarray(volume_ml, dtype=np.float64)
    lesion = np.array([str(kind) == "lesion" for kind in voi_types])
    rc = np.where(lesion, curve.at(volumes), 1.0)
    status = []
    low, high = curve.volume_ml[0], curve.volume_ml[-1]
    for index, is_lesion in enumerate(lesion):
        if not is_lesion:
            status.append(NOT_CORRECTED)
        elif np.isfinite(rc[index]):
            status.append(STATUS_OK)
        else:
            status.append(
                f"lesion volume {volumes[index]:.3g} mL outside the RC curve's "
                f"{low:g}–{high:g} mL ({curve.source or 'site curve'}); not extrapolated"
            )
    return PartialVolumeCorrection(
        activity_mbq=activity / rc[:, None],
        recovery=rc,
        status=tuple(status),
    )


# --- Background-aware correction (two-compartment spill-in/spill-out model) -------------------
#
# A lesion of true concentration C_L in a locally uniform background C_B, blurred by the camera,
# shows in its VOI the mean concentration
#     C_meas = RC0(V)·C_L + (1 − RC0(V))·C_B,
# where RC0(V) is the fraction of the lesion's own signal kept in its VOI (spill-out) and the
# same geometry lets (1 − RC0) of the surrounding background in (spill-in). Hence
#     C_L = (C_meas − (1 − RC0)·C_B) / RC0 = C_B + (C_meas − C_B) / RC0,
# the recovery correction of a structure in a warm background (Germano et al., J Nucl Med
# 1992;33:613-620; Brix et al., Nuklearmedizin 2002;41:184-190, as implemented in TPCCLIB
# ``rcPeakPET``: A0 = Abkg + (Aexp − Abkg)/RC; the two-compartment tumour/background transfer
# model of Soret, Bacharach & Buvat, J Nucl Med 2007;48:932-945). RC0 is what a NEMA phantom
# gives after removing its own background's spill-in: RC0 = (C_meas − C_B)/(C_sphere − C_B),
# the NEMA NU 2 hot-sphere contrast recovery with a known background
# (``calibration.recovery.contrast_recovery``). The plain NEMA RC = RC0 + (1 − RC0)/ratio
# holds the phantom's own spill-in and over-corrects lesions in other backgrounds.

BACKGROUND_MODEL = "rc0_local_background"
"""Name of the background-aware correction (published in the quantification settings)."""
RECOVERY_ONLY_MODEL = "rc_curve"
"""Name of the plain A / RC(V) correction."""
GTM_MODEL = "gtm"
"""Name of the geometric transfer matrix correction of every VOI (:mod:`concordose.quant.gtm`)."""
GTM_PLATFORM_MODEL = "gtm_platform_voi"
"""Name of the GTM on VOIs the platform defines by one rule at every site: lesions re-delineated
by the site-calibrated iterative threshold (:mod:`concordose.quant.delineation`), organs'
activity as the total in their VOI grown by two FWHM less the other regions' share
(``quant.gtm.extent_activity``) — the same object whatever margin the site drew."""
PERTURBATION_GTM_MODEL = "perturbation_gtm"
"""Name of :data:`GTM_PLATFORM_MODEL` with each region's spread taken through the site's own
reconstruction by perturbation (:mod:`concordose.quant.perturbation_gtm`) instead of the fitted
Gaussian: needs the site protocol's ``reconstruction:`` and each time point's CT."""
PHANTOM_CHOICE = "phantom_choice"
"""Protocol value meaning: the model the site's calibration record chose on its NEMA spheres
(``CalibrationRecord.partial_volume_model_chosen``, ``none`` included)."""
NO_CORRECTION = "none"
"""What a record's ``partial_volume_model_chosen`` says when no model beat no correction."""
DEFAULT_BACKGROUND_GAP_MM = 10.0
"""Distance (mm) from the lesion VOI at which its background shell starts: about one FWHM of
the consortium's reconstructions (7.8-15 mm), so the lesion's own spill-out into the shell is
small (a Gaussian edge has fallen to ~6 % of the contrast one FWHM outside)."""
DEFAULT_BACKGROUND_WIDTH_MM = 10.0
"""Thickness (mm) of the background shell."""
NO_BACKGROUND = "no background voxels around the lesion"


@dataclass(frozen=True)
class ContrastRecoveryCurve:
    """A site's background-independent recovery RC0(V) = 1 / (1 + (a/V)^b), V in mL.

    Fitted to the NEMA spheres' contrast recovery (C_meas − C_B)/(C_sphere − C_B) with the
    phantom's known background; valid over the fitted sphere volumes only (NaN outside).

    Attributes:
        a_ml, b: curve parameters (a: volume at RC0 = 0.5, mL).
        covariance: 2×2 covariance of (a_ml, b) from the fit.
        volume_ml: (smallest, largest) measured sphere volume, mL.
        source: calibration record id, for provenance.
    """

    a_ml: float
    b: float
    covariance: tuple[tuple[float, float], tuple[float, float]]
    volume_ml: tuple[float, float] = NEMA_IEC_VOLUME_RANGE_ML
    source: str = ""

    def __post_init__(self) -> None:
        FittedRecoveryCurve(self.a_ml, self.b, self.volume_ml, self.source)  # same checks
        matrix = np.asarray(self.covariance, dtype=np.float64)
        if matrix.shape != (2, 2) or not np.all(np.isfinite(matrix)):
            raise ConfigurationError(
                f"contrast recovery curve {self.source!r}: covariance must be a finite 2×2 "
                f"matrix of (a, b), got {self.covariance}"
            )

    def at(self, volume_ml: FloatArray) -> FloatArray:
        """RC0 at each volume; NaN outside the measured range."""
        return FittedRecoveryCurve(self.a_ml, self.b, self.volume_ml, self.source).at(volume_ml)

    def sd_at(self, volume_ml: FloatArray) -> FloatArray:
        """Standard deviation of RC0 at each volume from the (a, b) covariance (delta method).

        With u = (a/V)^b and RC0 = 1/(1+u): ∂RC0/∂a = −RC0²·u·b/a, ∂RC0/∂b = −RC0²·u·ln(a/V).
        """
        volumes = np.asarray(volume_ml, dtype=np.float64)
        rc0 = self.at(volumes)
        safe = np.where(np.isfinite(rc0), volumes, self.volume_ml[0])
        u = (self.a_ml / safe) ** self.b
        gradient = np.stack(
            [-(rc0**2) * u * self.b / self.a_ml, -(rc0**2) * u * np.log(self.a_ml / safe)]
        )
        matrix = np.asarray(self.covariance, dtype=np.float64)
        variance = np.einsum("iv,ij,jv->v", gradient, matrix, gradient)
        result: FloatArray = np.sqrt(np.clip(variance, 0.0, None))
        return result


def contrast_recovery_curve_from_record(
    record: CalibrationRecord,
    volume_range_ml: tuple[float, float] = NEMA_IEC_VOLUME_RANGE_ML,
) -> ContrastRecoveryCurve:
    """The background-independent RC0 curve a calibration record carries.

    Raises:
        ConfigurationError: the record has none (calibrated before it was derived: re-run
            ``concordose calibrate`` on the site's NEMA scan).
    """
    if (
        record.contrast_recovery_a_ml is None
        or record.contrast_recovery_b is None
        or record.contrast_recovery_covariance is None
    ):
        raise ConfigurationError(
            f"calibration record {record.record_id!r} carries no background-independent "
            "recovery curve (contrast_recovery_a_ml, contrast_recovery_b, "
            "contrast_recovery_covariance); background-aware partial-volume correction needs "
            "it: re-run concordose calibrate on the site's NEMA IEC phantom scan"
        )
    (a_a, a_b), (b_a, b_b) = record.contrast_recovery_covariance
    return ContrastRecoveryCurve(
        a_ml=record.contrast_recovery_a_ml,
        b=record.contrast_recovery_b,
        covariance=((a_a, a_b), (b_a, b_b)),
        volume_ml=volume_range_ml,
        source=record.record_id,
    )


def background_shells(
    masks: npt.NDArray[np.bool_],
    spacing_mm_zyx: tuple[float, float, float],
    lesion: npt.NDArray[np.bool_],
    *,
    gap_mm: float = DEFAULT_BACKGROUND_GAP_MM,
    width_mm: float = DEFAULT_BACKGROUND_WIDTH_MM,
) -> npt.NDArray[np.bool_]:
    """Each lesion's background shell: voxels gap < d ≤ gap + width mm from its VOI.

    Distances are Euclidean between voxel centres in mm (``spacing_mm_zyx`` of the grid, so
    anisotropic voxels are handled). Voxels within ``gap_mm`` of any other lesion VOI are left
    out (another lesion's signal is not background); organ voxels stay in (a hepatic lesion's
    background is the liver). Non-lesion VOIs get an empty shell. Each distance map is computed
    on the lesion's bounding box grown by gap + width only.

    Args:
        masks: (n_voi, slices, rows, columns) VOI masks on the image grid.
        spacing_mm_zyx: voxel size along (slices, rows, columns), mm.
        lesion: (n_voi,) which VOIs are lesions.
    """
    if gap_mm < 0 or width_mm <= 0:
        raise ConfigurationError(
            f"background shell needs gap ≥ 0 mm and width > 0 mm, got {gap_mm}, {width_mm}"
        )
    spacing = np.asarray(spacing_mm_zyx, dtype=np.float64)
    reach = np.ceil((gap_mm + width_mm) / spacing).astype(int) + 1
    shells = np.zeros_like(masks, dtype=bool)
    lesion_masks = masks[np.asarray(lesion, dtype=bool)]
    lesion_indices = np.flatnonzero(lesion)
    for position, index in enumerate(lesion_indices):
        own = masks[index]
        if not own.any():
            continue
        where = np.argwhere(own)
        low = np.maximum(where.min(axis=0) - reach, 0)
        high = np.minimum(where.max(axis=0) + reach + 1, own.shape)
        box = tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high, strict=True))
        distance = ndimage.distance_transform_edt(~own[box], sampling=spacing)
        shell = (distance > gap_mm) & (distance <= gap_mm + width_mm)
        others = np.delete(lesion_masks, position, axis=0)[(slice(None), *box)].any(axis=0)
        if others.any():
            near_other = ndimage.distance_transform_edt(~others, sampling=spacing) <= gap_mm
            shell &= ~near_other
        shells[index][box] = shell
    return shells


@dataclass(frozen=True)
class LocalBackground:
    """Background concentration around each VOI, per time point.

    Attributes:
        concentration_mbq_per_ml: (n_voi, n_time_points) mean over the shell (NaN: empty shell).
        sd_mbq_per_ml: same shape, standard deviation of the shell's voxels (the background's
            heterogeneity: how far the spill-in source may differ from the shell mean).
        n_voxels: same shape, shell voxel counts.
    """

    concentration_mbq_per_ml: FloatArray
    sd_mbq_per_ml: FloatArray
    n_voxels: npt.NDArray[np.int64]


def shell_statistics(
    concentration_mbq_per_ml: FloatArray, shells: npt.NDArray[np.bool_]
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """Mean, SD and voxel count of ``concentration_mbq_per_ml`` in each shell (vectorised)."""
    flat = shells.reshape(shells.shape[0], -1).astype(np.float64)
    values = np.asarray(concentration_mbq_per_ml, dtype=np.float64).reshape(-1)
    n = flat.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (flat @ values) / n
        second = (flat @ values**2) / n
    sd = np.sqrt(np.clip(second - mean**2, 0.0, None))
    return mean, sd, n.astype(np.int64)


@dataclass(frozen=True)
class BackgroundAwareCorrection:
    """Corrected activities and what went into them (all (n_voi, n_time_points) unless noted).

    Attributes:
        activity_mbq: corrected activity (organs and uncorrected lesions: as measured, with a
            status saying why).
        recovery: (n_voi,) RC0 used (1.0 organs, NaN lesion outside the curve's range).
        relative_sd: relative SD of the corrected activity from RC0's covariance and the
            background's SD (0 where nothing was corrected); the counting and calibration
            parts are added downstream (``kinetics.uncertainty.activity_sd_mbq``).
        background_mbq_per_ml: the local background used (NaN for organs).
        status: (n_voi,) what was done.
    """

    activity_mbq: FloatArray
    recovery: FloatArray
    relative_sd: FloatArray
    background_mbq_per_ml: FloatArray
    status: tuple[str, ...]


def correct_partial_volume_in_background(
    activity_mbq: FloatArray,
    voi_volume_ml: FloatArray,
    volume_ml: FloatArray,
    voi_types: Sequence[str],
    *,
    background: LocalBackground,
    curve: ContrastRecoveryCurve,
) -> BackgroundAwareCorrection:
    """Background-aware PVC: A_L = (A_meas − (1 − RC0)·C_B·V_voi) / RC0 per lesion and point.

    This is C_L = (C_meas − (1 − RC0)·C_B)/RC0 times the VOI's own volume on the image grid,
    with C_meas = A_meas / V_voi. Uncertainty (first order, independent parts):
    σ_A² = ((1 − RC0)/RC0 · V_voi · σ_B)² + ((A_meas − C_B·V_voi)/RC0² · σ_RC0)².

    Args:
        activity_mbq: (n_voi, n_time_points) activity measured in each VOI.
        voi_volume_ml: (n_voi, n_time_points) each VOI's volume on that time point's grid.
        volume_ml: (n_voi,) anatomical (segmented) volume, at which RC0 is read.
        voi_types: ``"organ"`` or ``"lesion"`` per VOI.
        background: local background per VOI and time point (:func:`background_shells`,
            :func:`shell_statistics`).
        curve: the site's RC0 curve.
    """
    activity = np.atleast_2d(np.asarray(activity_mbq, dtype=np.float64))
    voi_ml = np.atleast_2d(np.asarray(voi_volume_ml, dtype=np.float64))
    volumes = np.asarray(volume_ml, dtype=np.float64)
    lesion = np.array([str(kind) == "lesion" for kind in voi_types])
    rc0 = np.where(lesion, curve.at(volumes), 1.0)
    rc0_sd = np.where(lesion, curve.sd_at(volumes), 0.0)
    c_b = np.asarray(background.concentration_mbq_per_ml, dtype=np.float64)
    sd_b = np.asarray(background.sd_mbq_per_ml, dtype=np.float64)
    usable = lesion[:, None] & np.isfinite(rc0)[:, None] & np.isfinite(c_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        spill_in = (1.0 - rc0[:, None]) * c_b * voi_ml
        corrected = (activity - spill_in) / rc0[:, None]
        sd = np.sqrt(
            ((1.0 - rc0[:, None]) / rc0[:, None] * voi_ml * sd_b) ** 2
            + ((activity - c_b * voi_ml) / rc0[:, None] ** 2 * rc0_sd[:, None]) ** 2
        )
        relative = np.abs(sd / corrected)
    status = []
    low, high = curve.volume_ml
    for index, is_lesion in enumerate(lesion):
        if not is_lesion:
            status.append(NOT_CORRECTED)
        elif not np.isfinite(rc0[index]):
            status.append(
                f"lesion volume {volumes[index]:.3g} mL outside the RC0 curve's "
                f"{low:g}–{high:g} mL ({curve.source or 'site curve'}); not extrapolated"
            )
        elif not usable[index].all():
            status.append(NO_BACKGROUND + "; left as measured")
        else:
            status.append(STATUS_OK)
    applied = np.array([s == STATUS_OK for s in status])
    return BackgroundAwareCorrection(
        activity_mbq=np.where(applied[:, None], corrected, activity),
        recovery=rc0,
        relative_sd=np.where(applied[:, None], relative, 0.0),
        background_mbq_per_ml=np.where(lesion[:, None], c_b, np.nan),
        status=tuple(status),
    )


def chosen_psf_fwhm(
    sphere_fwhm_mm: float,
    sphere_fwhm_sd_mm: float,
    large_object_fwhm_mm: float | None,
    large_object_fwhm_sd_mm: float | None,
) -> tuple[float, float]:
    """The FWHM (and its SD), mm, the GTM uses from a site's two phantom fits: the smaller of
    the NEMA spheres' fit and the large-object fit across the phantom body's surface
    (``concordose.calibration.psf``), the spheres' when there is no large-object fit.

    Why the smaller: both estimate the resolution of the large, high-contrast objects GTM
    corrects (organs, hot lesions), and each can only be biased wide. The spheres' fit is wide
    under OSEM, whose resolution is object-dependent: the 4-10:1 spheres converge more slowly
    than a high-contrast object (digital consortium, realistic imaging: sphere fits 11.5-19.8 mm
    against an edge fit of 9.6-13.2 mm and patient organs behaving as 9-15 mm). The edge fit is
    wide by sub-voxel misplacement of a voxel-centre body outline (blur imaging, 8.8 mm voxels:
    +0.3-0.4 mm over the true Gaussian, whose spheres' fit is within 0.2 mm).
    """
    if large_object_fwhm_mm is None or large_object_fwhm_mm >= sphere_fwhm_mm:
        return sphere_fwhm_mm, sphere_fwhm_sd_mm
    return large_object_fwhm_mm, large_object_fwhm_sd_mm or 0.0


def psf_from_record(record: CalibrationRecord) -> tuple[float, float]:
    """The record's effective Gaussian PSF for the GTM: (FWHM, its SD), mm (SD 0 when not
    stated): :func:`chosen_psf_fwhm` of its two fits.

    Raises:
        ConfigurationError: the record has no fitted PSF (calibrated before it was fitted:
            re-run ``concordose calibrate`` on the site's NEMA scan).
    """
    if record.psf_fwhm_mm is None:
        raise ConfigurationError(
            f"calibration record {record.record_id!r} carries no point-spread function "
            "(psf_fwhm_mm); GTM partial-volume correction needs it: re-run concordose "
            "calibrate on the site's NEMA IEC phantom scan"
        )
    return chosen_psf_fwhm(
        record.psf_fwhm_mm,
        record.psf_fwhm_sd_mm or 0.0,
        record.psf_large_object_fwhm_mm,
        record.psf_large_object_fwhm_sd_mm,
    )


def alternative_psf_fwhm(record: CalibrationRecord) -> float | None:
    """The record's other phantom fit, mm: the one :func:`psf_from_record` did not choose
    (``None`` when the record has only one), whose difference is the GTM's PSF-model term
    (``quant.gtm.gtm_fwhm_sensitivity``)."""
    if record.psf_fwhm_mm is None or record.psf_large_object_fwhm_mm is None:
        return None
    chosen, _ = psf_from_record(record)
    return record.psf_fwhm_mm if chosen != record.psf_fwhm_mm else record.psf_large_object_fwhm_mm


def partial_volume_unavailable(record: CalibrationRecord, model: str) -> str | None:
    """Why ``record`` cannot drive the ``model`` correction (None when it can).

    ``model`` is :data:`BACKGROUND_MODEL` (needs the RC0 curve), :data:`RECOVERY_ONLY_MODEL`
    (needs the RC curve), :data:`GTM_MODEL`, :data:`GTM_PLATFORM_MODEL` or
    :data:`PERTURBATION_GTM_MODEL` (need the PSF: the latter starts from the Gaussian GTM) or
    :data:`PHANTOM_CHOICE` (needs the record's chosen model, then what that model needs); the
    reason is the error the reader gives, naming the record and the missing fields.

    Raises:
        ConfigurationError: ``model`` is neither.
    """
    readers: dict[str, Callable[[CalibrationRecord], object]] = {
        BACKGROUND_MODEL: contrast_recovery_curve_from_record,
        RECOVERY_ONLY_MODEL: recovery_curve_from_record,
        GTM_MODEL: psf_from_record,
        GTM_PLATFORM_MODEL: psf_from_record,
        PERTURBATION_GTM_MODEL: psf_from_record,
    }
    if model == PHANTOM_CHOICE:
        if record.partial_volume_model_chosen is None:
            return (
                f"calibration record {record.record_id!r} carries no partial_volume_model_chosen "
                "(the protocol asks for the model the site's phantom favours): re-run "
                "concordose calibrate on the site's NEMA IEC phantom scan"
            )
        if record.partial_volume_model_chosen == NO_CORRECTION:
            return None
        model = record.partial_volume_model_chosen
    if model not in readers:
        raise ConfigurationError(
            f"partial-volume model {model!r}: expected one of {', '.join(readers)}"
        )
    try:
        readers[model](record)
    except ConfigurationError as exc:
        return str(exc)
    return None
