"""Phantom analysis: a site's calibration factor and recovery curve from its phantom scans.

* Uniform cylinder → CF: all reconstructed counts in the field of view over the acquisition
  time and the sheet's activity decayed to (and averaged over) the scan
  (:mod:`.uniform_cylinder`).
* NEMA IEC body phantom → RC per sphere and the RC(V) curve (:mod:`.recovery`). The phantom is
  located in the image (it lies wherever the physicist put it): the image is cross-correlated
  with a template of the phantom's known geometry (``phantoms.phantom_geometry``), the integer
  peak refined by a parabola through its neighbours on each axis. Sphere VOIs are then every voxel
  whose centre lies in a sphere of the true size; RC = mean concentration there / true sphere
  concentration at scan start (no background subtraction, the definition the phantom truth uses).
  The background-independent RC0 = (C_meas − C_B)/(C_S − C_B) uses the sheet's background
  concentration decayed to scan start, and is fitted with the same curve form.
* NEMA IEC body phantom → the effective Gaussian PSF (FWHM ± SD) and the leave-one-out
  comparison of the partial-volume models on the spheres (:mod:`.psf`).

The sheet's activities are readings of the site's dose calibrator and carry its bias. Without a
traceability measurement (``calibrator`` ``None``) the CF carries it too (CF/(1 + bias)), and so
does every image-derived activity (× (1 + bias)); RC does not (measured and true concentrations
both scale). With one (:mod:`.traceability`), every sheet activity is first divided by (1 + bias)
— in the cylinder's CF and in the NEMA spheres' and background's true concentrations alike, so
RC stays a ratio of like with like — and the bias's uncertainty joins the activity's in u(CF).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.signal import fftconvolve

from concordose.calibration.phantom_geometry import nema_iec_phantom
from concordose.calibration.psf import (
    PartialVolumeEvidence,
    PsfFit,
    fit_edge_fwhm,
    fit_psf_fwhm,
    nema_phantom_model,
    partial_volume_evidence,
)
from concordose.calibration.recovery import (
    RecoveryCurve,
    contrast_recovery,
    fit_recovery_curve,
    sphere_recovery,
)
from concordose.calibration.scatter import ScatterFit, fit_scatter_to_primary
from concordose.calibration.sheet import CylinderSheet, NemaSheet
from concordose.calibration.traceability import DoseCalibratorBias
from concordose.calibration.uniform_cylinder import CalibrationFactorResult, calibration_factor
from concordose.dicom.geometry import VolumeGeometry, voxel_centres_mm
from concordose.dicom.nm import NMAcquisition, read_nm_counts, read_nm_header
from concordose.errors import ConfigurationError, StudyIncompleteError
from concordose.quant.delineation import ThresholdCurve, measure_threshold_curve
from concordose.quant.pvc import (
    BACKGROUND_MODEL,
    GTM_MODEL,
    RECOVERY_ONLY_MODEL,
    chosen_psf_fwhm,
)
from concordose.quant.recovery_model import RecoveryModelError
from concordose.quant.voi import CroppedMask
from concordose.reconstruction.attenuation_map import attenuation_map_mu_per_mm
from concordose.reconstruction.protocol import SiteReconstruction


@dataclass(frozen=True)
class CylinderAnalysis:
    """CF of a uniform-cylinder scan and the scan it came from."""

    calibration: CalibrationFactorResult
    acquisition: NMAcquisition


@dataclass(frozen=True)
class NemaAnalysis:
    """Recovery of each NEMA sphere, the fitted curve and where the phantom was found.

    Attributes:
        volumes_ml: true sphere volumes (sheet), mL.
        recovery: measured RC per sphere.
        curve: fitted RC(V).
        offset_mm: position of the phantom's body centre found in the image (patient mm).
        contrast_recovery: background-independent RC0 per sphere (None if not derived).
        contrast_curve: RC0(V) fitted with the same form (None if not derived).
        sphere_to_background_ratio: true C_S/C_B at scan start from the sheet's activities.
        psf: the effective isotropic Gaussian PSF fitted to the spheres (``calibration.psf``).
        large_object_psf: the Gaussian fitted across the phantom body's surface
            (``calibration.psf.fit_edge_fwhm``), the PSF the GTM uses (None if not derived).
        partial_volume_evidence: leave-one-out errors of each PVC model on the spheres and the
            model they favour.
        threshold_curve: the site's threshold-volume curve for the platform's lesion
            delineation, measured on these spheres (``quant.delineation``; None when fewer
            than two spheres are detectable).
        recovery_model_error: each sphere's GTM residual in recovery units
            (``quant.recovery_model``; None when fewer than two spheres were corrected).
        scatter: the photopeak window's scatter-to-primary ratio, fitted on the lung insert
            through the site's reconstruction (``calibration.scatter``; None when no
            reconstruction was given).
    """

    volumes_ml: npt.NDArray[np.float64]
    recovery: npt.NDArray[np.float64]
    curve: RecoveryCurve
    offset_mm: tuple[float, float, float]
    acquisition: NMAcquisition
    contrast_recovery: npt.NDArray[np.float64] | None = None
    contrast_curve: RecoveryCurve | None = None
    sphere_to_background_ratio: float | None = None
    psf: PsfFit | None = None
    partial_volume_evidence: PartialVolumeEvidence | None = None
    large_object_psf: PsfFit | None = None
    threshold_curve: ThresholdCurve | None = None
    recovery_model_error: RecoveryModelError | None = None
    scatter: ScatterFit | None = None


def _scan(
    sheet: CylinderSheet | NemaSheet, sheet_dir: Path
) -> tuple[NMAcquisition, npt.NDArray[np.float64]]:
    acquisition = read_nm_header(sheet_dir / sheet.scan.nm_file)
    duration = acquisition.acquisition_duration_s
    if duration is not None and abs(duration / sheet.scan.acquisition_duration_s - 1) > 0.01:
        raise StudyIncompleteError(
            f"{acquisition.path}: acquisition lasted {duration:g} s by its header but "
            f"{sheet.scan.acquisition_duration_s:g} s on the sheet"
        )
    return acquisition, read_nm_counts(acquisition)


def _true_mbq(reading_mbq: float, calibrator: DoseCalibratorBias | None) -> float:
    return reading_mbq if calibrator is None else calibrator.true_activity_mbq(reading_mbq)


def analyse_cylinder(
    sheet: CylinderSheet, sheet_dir: Path, calibrator: DoseCalibratorBias | None = None
) -> CylinderAnalysis:
    """Calibration factor from a uniform-cylinder scan and its sheet.

    ``calibrator``: the site calibrator's measured bias; the sheet's activity is corrected for
    it and u(CF)² gains the correction's relative variance (module docstring).
    """
    acquisition, counts = _scan(sheet, sheet_dir)
    fill = sheet.fill
    activity_sd = fill.activity_relative_uncertainty
    if calibrator is not None:
        activity_sd = math.hypot(activity_sd, calibrator.correction_relative_sd)
    result = calibration_factor(
        total_counts=float(counts.sum()),
        acquisition_duration_s=sheet.scan.acquisition_duration_s,
        activity_mbq=_true_mbq(fill.net_activity_mbq, calibrator),
        activity_reference=fill.reference_datetime,
        scan_start=sheet.scan.acquisition_start,
        activity_relative_uncertainty=activity_sd,
    )
    return CylinderAnalysis(result, acquisition)


def _nema_template(
    geometry: VolumeGeometry, centre_mm: tuple[float, float, float], ratio: float
) -> npt.NDArray[np.float64]:
    x, y, z = voxel_centres_mm(geometry)
    phantom = nema_iec_phantom(centre_mm)
    template = np.where(phantom.body.contains(x, y, z), 1.0, 0.0)
    template[phantom.lung_insert.contains(x, y, z)] = 0.0
    for sphere in phantom.spheres:
        template[sphere.contains(x, y, z)] = ratio
    return template


def _subvoxel_peak(correlation: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    peak = np.array(np.unravel_index(int(np.argmax(correlation)), correlation.shape), dtype=float)
    refined = peak.copy()
    for axis in range(3):
        index = [int(v) for v in peak]
        if 0 < index[axis] < correlation.shape[axis] - 1:
            before, after = index.copy(), index.copy()
            before[axis] -= 1
            after[axis] += 1
            low, mid, high = (
                correlation[tuple(before)],
                correlation[tuple(index)],
                correlation[tuple(after)],
            )
            curvature = low - 2 * mid + high
            if curvature < 0:
                refined[axis] += 0.5 * (low - high) / curvature
    return refined


def locate_nema(
    concentration: npt.NDArray[np.float64], geometry: VolumeGeometry, ratio: float
) -> tuple[float, float, float]:
    """Body-centre position of the NEMA phantom in the image (patient mm)."""
    x, y, z = voxel_centres_mm(geometry)
    grid_centre = (float(x.mean()), float(y.mean()), float(z.mean()))
    template = _nema_template(geometry, grid_centre, ratio)
    # full[p] = Σ_x image[x + p − (N − 1)] · template[x]: the image is the template moved by
    # p − (N − 1) voxels.
    correlation = fftconvolve(concentration, template[::-1, ::-1, ::-1], mode="full")
    shift_kji = _subvoxel_peak(correlation) - (np.asarray(geometry.shape) - 1)
    shift_ijk = shift_kji[::-1] * np.asarray(geometry.spacing_mm)
    direction = np.asarray(geometry.direction).reshape(3, 3)
    moved = np.asarray(grid_centre) + direction @ shift_ijk
    return (float(moved[0]), float(moved[1]), float(moved[2]))


def _full_mask(voi: CroppedMask, shape: tuple[int, int, int]) -> npt.NDArray[np.bool_]:
    mask = np.zeros(shape, dtype=bool)
    mask[voi.box] = voi.mask
    return mask


def nema_threshold_curve(
    sheet: NemaSheet,
    sheet_dir: Path,
    calibration_factor_cps_per_mbq: float,
    *,
    fwhm_mm: float,
) -> tuple[ThresholdCurve | None, NMAcquisition]:
    """The threshold-volume curve, with each sphere's measured contrast, of a further NEMA scan
    of the same set-up at another sphere-to-background ratio (one more sheet of the phantom,
    as NEMA NU 2 and EARL fill it at 4:1 and 10:1), and the scan it came from.

    Only the delineation's curve is derived (the CF, RC and PSF are the first scan's); the
    search region and background shell are sized by the first scan's sphere ``fwhm_mm``.
    The threshold is a ratio of the image's own levels, so the calibrator's bias cancels.
    """
    acquisition, counts = _scan(sheet, sheet_dir)
    geometry = acquisition.geometry
    concentration = counts / (
        calibration_factor_cps_per_mbq
        * sheet.scan.acquisition_duration_s
        * geometry.voxel_volume_ml
    )
    offset = locate_nema(concentration, geometry, sheet.fill.sphere_to_background_ratio)
    x, y, z = voxel_centres_mm(geometry)
    # A sphere with no voxel centre (the 10 mm one on a coarse grid) gives no point: it is
    # left out rather than failing the scan (the first scan's analysis needs every sphere).
    spheres = [
        (sphere.contains(x, y, z), sphere.volume_ml) for sphere in nema_iec_phantom(offset).spheres
    ]
    spacing = geometry.spacing_mm
    curve = measure_threshold_curve(
        concentration,
        [mask for mask, _ in spheres if mask.any()],
        [float(volume) for mask, volume in spheres if mask.any()],
        spacing_mm_zyx=(spacing[2], spacing[1], spacing[0]),
        fwhm_mm=fwhm_mm,
    )
    return curve, acquisition


def analyse_nema(
    sheet: NemaSheet,
    sheet_dir: Path,
    calibration_factor_cps_per_mbq: float,
    calibrator: DoseCalibratorBias | None = None,
    *,
    reconstruction: SiteReconstruction | None = None,
) -> NemaAnalysis:
    """Recovery coefficients and the RC(V) curve from a NEMA scan, with the site's CF.

    ``calibrator``: the bias the CF was corrected for; the sheet's concentrations are corrected
    the same way (pass the same as to :func:`analyse_cylinder`, or RC is off by 1 + bias).
    ``reconstruction``: the site's acquisition and OSEM; with it the scatter-to-primary ratio is
    fitted on the lung insert (two to four OSEM reconstructions of the phantom, μ from the
    scan's CT).

    Raises:
        ConfigurationError: ``reconstruction`` given and the sheet names no CT folder.
        OutOfRangeError: the scatter cannot be fitted (``calibration.scatter``).
    """
    acquisition, counts = _scan(sheet, sheet_dir)
    geometry = acquisition.geometry
    concentration = counts / (
        calibration_factor_cps_per_mbq
        * sheet.scan.acquisition_duration_s
        * geometry.voxel_volume_ml
    )
    spheres = sheet.fill.spheres
    offset = locate_nema(concentration, geometry, sheet.fill.sphere_to_background_ratio)
    placed = nema_iec_phantom(offset).spheres
    true_mbq_per_ml = _true_mbq(spheres.concentration_mbq_per_ml, calibrator) * (
        spheres.activity_at(sheet.scan.acquisition_start) / spheres.net_activity_mbq
    )
    by_diameter = {sphere.diameter_mm: sphere for sphere in placed}
    centres = [by_diameter[d].centre_mm for d in spheres.inner_diameters_mm]
    recovery = sphere_recovery(
        concentration,
        geometry,
        centres_mm=centres,
        diameters_mm=spheres.inner_diameters_mm,
        true_concentration=true_mbq_per_ml,
    )
    volumes = np.asarray(spheres.volumes_ml, dtype=np.float64)
    background = sheet.fill.background
    background_mbq_per_ml = (
        _true_mbq(background.activity_at(sheet.scan.acquisition_start), calibrator)
        / background.volume_ml
    )
    ratio = true_mbq_per_ml / background_mbq_per_ml
    rc0 = contrast_recovery(recovery, ratio)
    # A small sphere's RC0 can come out ≤ 0 in a noisy scan (no contrast left): the curve is
    # fitted to the spheres with RC0 > 0, and not derived when fewer than three remain.
    kept = rc0 > 0
    contrast_curve = (
        fit_recovery_curve(volumes[kept], rc0[kept]) if np.count_nonzero(kept) >= 3 else None
    )
    # PSF and phantom evidence (issue 15): the GTM's forward model of this phantom.
    phantom_model = nema_phantom_model(geometry, nema_iec_phantom(offset))
    measured_mbq_per_ml = recovery * true_mbq_per_ml
    psf = fit_psf_fwhm(phantom_model, measured_mbq_per_ml, true_mbq_per_ml, background_mbq_per_ml)
    large_object_psf = fit_edge_fwhm(
        phantom_model, concentration, true_mbq_per_ml, background_mbq_per_ml
    )
    gtm_fwhm_mm, _ = chosen_psf_fwhm(
        psf.fwhm_mm, psf.fwhm_sd_mm, large_object_psf.fwhm_mm, large_object_psf.fwhm_sd_mm
    )
    evidence = partial_volume_evidence(
        phantom_model,
        concentration,
        measured_mbq_per_ml,
        true_mbq_per_ml,
        background_mbq_per_ml,
        gtm_model=GTM_MODEL,
        rc_model=RECOVERY_ONLY_MODEL,
        rc0_model=BACKGROUND_MODEL,
        # The large-object FWHM when the GTM uses it (fitted on no sphere); else None: the
        # spheres' fit, left out sphere by sphere.
        gtm_fwhm_mm=None if gtm_fwhm_mm == psf.fwhm_mm else gtm_fwhm_mm,
    )
    # Lesion delineation (issue 15): Jentzen's T(V), each sphere's level on this image.
    threshold_curve = measure_threshold_curve(
        concentration,
        [_full_mask(voi, phantom_model.shape) for voi in phantom_model.sphere_vois],
        [float(v) for v in phantom_model.volumes_ml],
        spacing_mm_zyx=phantom_model.spacing_mm_zyx,
        fwhm_mm=psf.fwhm_mm,
    )
    scatter = None
    if reconstruction is not None:
        if sheet.scan.ct_folder is None:
            raise ConfigurationError(
                f"{sheet_dir}: the scatter is fitted through the site's reconstruction with μ "
                "from the phantom's CT: expected scan.ct_folder on the sheet, found none"
            )
        ct_files = sorted((sheet_dir / sheet.scan.ct_folder).glob("*.dcm"))
        try:
            scatter = fit_scatter_to_primary(
                concentration,
                phantom_model,
                sphere_mbq_per_ml=true_mbq_per_ml,
                background_mbq_per_ml=background_mbq_per_ml,
                mu_per_mm=attenuation_map_mu_per_mm(ct_files, geometry),
                reconstruction=reconstruction,
            )
        except ValueError as exc:  # anisotropic voxels
            raise ConfigurationError(f"{acquisition.path}: {exc}") from exc
    return NemaAnalysis(
        volumes,
        recovery,
        fit_recovery_curve(volumes, recovery),
        offset,
        acquisition,
        contrast_recovery=rc0,
        contrast_curve=contrast_curve,
        sphere_to_background_ratio=ratio,
        psf=psf,
        partial_volume_evidence=evidence,
        large_object_psf=large_object_psf,
        threshold_curve=threshold_curve,
        scatter=scatter,
        # the GTM's residual recovery per sphere: the model-error term of lesions' SD
        recovery_model_error=RecoveryModelError.from_phantom(
            [float(v) for v in phantom_model.volumes_ml],
            evidence.sphere_errors[GTM_MODEL],
            evidence.gtm_self_recovery,
        ),
    )
