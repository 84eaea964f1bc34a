"""``concordose calibrate``: a site's calibration record from its two phantom scans.

Reads both sheets (cylinder and NEMA), checks they belong to the site and describe the same
camera set-up, derives CF (cylinder), the RC curves, the effective Gaussian PSF and the
phantom evidence on partial-volume models (NEMA, measured with that CF), and appends the record
to the site's calibration ledger. The record takes its reconstruction fingerprint from
the phantom's DICOM, exactly as patient studies are fingerprinted, so the gate compares like
with like.

Dose-calibrator traceability: when either sheet carries a ``dose_calibrator_traceability`` block
(both phantoms are filled from readings of the same calibrator, so one measurement serves both;
two blocks must be the same measurement), the calibrator's bias is derived from it
(:mod:`.traceability`), both phantoms' activities are corrected for it, and the record carries
the bias, its uncertainty and what was measured. Without one the record says the CF is not
traceable (bias fields ``None``) and the CF is as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from concordose.calibration.ledger import LedgerEntry, append_record
from concordose.calibration.phantom_analysis import (
    CylinderAnalysis,
    NemaAnalysis,
    analyse_cylinder,
    analyse_nema,
    nema_threshold_curve,
)
from concordose.calibration.records import CalibrationRecord, DelineationThresholdScan
from concordose.calibration.sheet import CylinderSheet, NemaSheet, load_sheet
from concordose.calibration.traceability import DoseCalibratorBias
from concordose.dicom.nm import NMAcquisition
from concordose.errors import ConfigurationError
from concordose.quant.delineation import ThresholdCurve, threshold_surface
from concordose.reconstruction.protocol import SiteReconstruction


@dataclass(frozen=True)
class SiteCalibration:
    """What ``calibrate`` derived and where it went."""

    record: CalibrationRecord
    cylinder: CylinderAnalysis
    nema: NemaAnalysis
    entry: LedgerEntry | None
    calibrator: DoseCalibratorBias | None = None
    further_nema: tuple[NMAcquisition, ...] = ()
    """The further NEMA scans (other contrasts) the threshold surface used, in sheet order."""


LU177_PHOTOPEAK_KEV = 208.37  # ICRP-107


def _photopeak_window(acquisition: NMAcquisition) -> tuple[float, float] | None:
    for low, high in acquisition.energy_windows_kev:
        if low <= LU177_PHOTOPEAK_KEV <= high:
            return (low, high)
    return None


def _sheets(
    cylinder_sheet: Path, nema_sheet: Path, site_id: str
) -> tuple[CylinderSheet, NemaSheet]:
    cylinder = load_sheet(cylinder_sheet)
    nema = load_sheet(nema_sheet)
    if not isinstance(cylinder, CylinderSheet):
        raise ConfigurationError(
            f"{cylinder_sheet} is a {cylinder.phantom} sheet, not a cylinder's"
        )
    if not isinstance(nema, NemaSheet):
        raise ConfigurationError(f"{nema_sheet} is a {nema.phantom} sheet, not a NEMA phantom's")
    _require_site(cylinder_sheet, cylinder, site_id)
    _require_site(nema_sheet, nema, site_id)
    _require_same_setup(cylinder, nema, where="the two phantom scans")
    return cylinder, nema


SETUP_FIELDS = ("camera_model", "collimator", "reconstruction")
"""What every phantom scan of one calibration shares (one camera set-up per record)."""


def _require_site(path: Path, sheet: CylinderSheet | NemaSheet, site_id: str) -> None:
    if sheet.site_id != site_id:
        raise ConfigurationError(f"{path} is site {sheet.site_id!r}'s sheet, not {site_id!r}'s")


def _require_same_setup(
    first: CylinderSheet | NemaSheet, other: CylinderSheet | NemaSheet, *, where: str
) -> None:
    for name in SETUP_FIELDS:
        if getattr(first.scan, name) != getattr(other.scan, name):
            raise ConfigurationError(
                f"{where} differ in {name}: {getattr(first.scan, name)!r} vs "
                f"{getattr(other.scan, name)!r}; calibrate one set-up at a time"
            )


def sheets_calibrator_bias(
    cylinder: CylinderSheet, nema: NemaSheet, *, where: str
) -> DoseCalibratorBias | None:
    """The dose calibrator's bias from the sheets' traceability block (``None``: neither has one).

    Raises:
        ConfigurationError: both sheets carry a block and they differ.
    """
    blocks = [
        b
        for b in (cylinder.dose_calibrator_traceability, nema.dose_calibrator_traceability)
        if b is not None
    ]
    if len(blocks) == 2 and blocks[0] != blocks[1]:
        raise ConfigurationError(
            f"{where}: both sheets carry a dose_calibrator_traceability block and they differ; "
            "expected one measurement of the calibrator both phantoms were filled with (keep it "
            "on one sheet, or copy the same block to both)"
        )
    return blocks[0].bias() if blocks else None


def _further_nema_sheets(paths: Sequence[Path], first: NemaSheet, site_id: str) -> list[NemaSheet]:
    sheets = []
    for path in paths:
        sheet = load_sheet(path)
        if not isinstance(sheet, NemaSheet):
            raise ConfigurationError(
                f"{path} is a {sheet.phantom} sheet; expected a further NEMA phantom's"
            )
        _require_site(path, sheet, site_id)
        _require_same_setup(first, sheet, where=f"{path}: the NEMA scans")
        sheets.append(sheet)
    return sheets


def _threshold_scans(
    pairs: Sequence[tuple[float, ThresholdCurve | None]],
) -> list[DelineationThresholdScan] | None:
    """The record's ``delineation_threshold_scans``: every scan's curve with contrasts, or None
    when they do not make a :class:`~concordose.quant.delineation.ThresholdSurface` (fewer
    than two)."""
    usable = [(ratio, c) for ratio, c in pairs if c is not None and c.contrasts is not None]
    if threshold_surface([c for _, c in usable]) is None:
        return None
    return [
        DelineationThresholdScan(
            sphere_to_background_ratio=ratio,
            volumes_ml=list(curve.volumes_ml),
            fractions=[round(f, 6) for f in curve.fractions],
            contrasts=[round(k, 6) for k in curve.contrasts or ()],
        )
        for ratio, curve in usable
    ]


def calibrate_site(
    *,
    site_id: str,
    cylinder_sheet: Path,
    nema_sheet: Path,
    record_id: str,
    valid_from: date,
    ledger: Path | None,
    created_by: str | None = None,
    further_nema_sheets: Sequence[Path] = (),
    reconstruction: SiteReconstruction | None = None,
) -> SiteCalibration:
    """Derive a calibration record and append it to ``ledger`` (when given).

    ``further_nema_sheets``: the same NEMA phantom scanned again at other sphere-to-background
    ratios (EARL: 4:1 and 10:1); with them the record carries the contrast-dependent lesion
    threshold (``delineation_threshold_scans``). Everything else comes from ``nema_sheet``.
    ``reconstruction``: the site's acquisition and OSEM (its protocol's ``reconstruction:``);
    with it the record carries the photopeak window's scatter-to-primary ratio fitted on the NEMA
    lung insert (``scatter_to_primary``; :mod:`.scatter`), which the perturbation GTM models.

    Raises:
        ConfigurationError: sheets invalid, of another site, or of different set-ups.
        UnreadableDicomError, StudyIncompleteError: the scans cannot be read or disagree with
            their sheets.
    """
    cylinder_sheet_data, nema_sheet_data = _sheets(cylinder_sheet, nema_sheet, site_id)
    calibrator = sheets_calibrator_bias(
        cylinder_sheet_data, nema_sheet_data, where=f"{cylinder_sheet} and {nema_sheet}"
    )
    cylinder = analyse_cylinder(cylinder_sheet_data, cylinder_sheet.parent, calibrator)
    nema = analyse_nema(
        nema_sheet_data,
        nema_sheet.parent,
        cylinder.calibration.cf_cps_per_mbq,
        calibrator,
        reconstruction=reconstruction,
    )
    further = [
        (
            sheet.fill.sphere_to_background_ratio,
            nema_threshold_curve(
                sheet,
                path.parent,
                cylinder.calibration.cf_cps_per_mbq,
                fwhm_mm=nema.psf.fwhm_mm,
            ),
        )
        for path, sheet in zip(
            further_nema_sheets,
            _further_nema_sheets(further_nema_sheets, nema_sheet_data, site_id),
            strict=True,
        )
        if nema.psf is not None
    ]
    threshold_scans = _threshold_scans(
        [(nema_sheet_data.fill.sphere_to_background_ratio, nema.threshold_curve)]
        + [(ratio, curve) for ratio, (curve, _) in further]
    )
    record = CalibrationRecord(
        record_id=record_id,
        camera_model=cylinder_sheet_data.scan.camera_model,
        collimator=cylinder_sheet_data.scan.collimator,
        reconstruction=cylinder.acquisition.reconstruction,
        energy_window_kev=_photopeak_window(cylinder.acquisition),
        calibration_factor_cps_per_mbq=cylinder.calibration.cf_cps_per_mbq,
        calibration_factor_relative_uncertainty=cylinder.calibration.relative_uncertainty,
        recovery_a_ml=nema.curve.a_ml,
        recovery_b=nema.curve.b,
        recovery_covariance=nema.curve.covariance.tolist(),
        contrast_recovery_a_ml=None if nema.contrast_curve is None else nema.contrast_curve.a_ml,
        contrast_recovery_b=None if nema.contrast_curve is None else nema.contrast_curve.b,
        contrast_recovery_covariance=(
            None if nema.contrast_curve is None else nema.contrast_curve.covariance.tolist()
        ),
        valid_from=valid_from,
        dose_calibrator_bias_relative=None if calibrator is None else calibrator.bias_relative,
        dose_calibrator_bias_sd_relative=(
            None if calibrator is None else calibrator.bias_sd_relative
        ),
        dose_calibrator_traceability=None if calibrator is None else calibrator.description,
        # PSF and phantom evidence (issue 15): kept apart from the fields above for merging.
        psf_fwhm_mm=None if nema.psf is None else nema.psf.fwhm_mm,
        psf_fwhm_sd_mm=None if nema.psf is None else nema.psf.fwhm_sd_mm,
        psf_large_object_fwhm_mm=(
            None if nema.large_object_psf is None else nema.large_object_psf.fwhm_mm
        ),
        psf_large_object_fwhm_sd_mm=(
            None if nema.large_object_psf is None else nema.large_object_psf.fwhm_sd_mm
        ),
        delineation_threshold_volumes_ml=(
            None if nema.threshold_curve is None else list(nema.threshold_curve.volumes_ml)
        ),
        delineation_threshold_fractions=(
            None
            if nema.threshold_curve is None
            else [round(f, 6) for f in nema.threshold_curve.fractions]
        ),
        delineation_threshold_scans=threshold_scans,
        recovery_model_volumes_ml=(
            None
            if nema.recovery_model_error is None
            else list(nema.recovery_model_error.volumes_ml)
        ),
        recovery_model_residuals=(
            None
            if nema.recovery_model_error is None
            else [round(r, 6) for r in nema.recovery_model_error.residuals]
        ),
        scatter_to_primary=(
            None if nema.scatter is None else round(nema.scatter.correction.scatter_to_primary, 6)
        ),
        scatter_to_primary_sd=(
            None if nema.scatter is None else round(nema.scatter.scatter_to_primary_sd, 6)
        ),
        scatter_residual_fraction=(
            None if nema.scatter is None else nema.scatter.correction.residual_fraction
        ),
        scatter_kernel_fwhm_mm=(
            None if nema.scatter is None else nema.scatter.correction.kernel_fwhm_mm
        ),
        partial_volume_model_chosen=(
            None if nema.partial_volume_evidence is None else nema.partial_volume_evidence.chosen
        ),
        partial_volume_evidence=(
            None
            if nema.partial_volume_evidence is None
            else {
                name: round(value, 6)
                for name, value in nema.partial_volume_evidence.rms_error.items()
                if np.isfinite(value)
            }
        ),
    )
    further_scans = tuple(acquisition for _, (_, acquisition) in further)
    entry = None
    if ledger is not None:
        entry = append_record(
            ledger,
            site_id,
            record,
            source_study_uids=(
                cylinder.acquisition.study_uid,
                nema.acquisition.study_uid,
                *(a.study_uid for a in further_scans),
            ),
            created_by=created_by,
        )
    return SiteCalibration(record, cylinder, nema, entry, calibrator, further_scans)
