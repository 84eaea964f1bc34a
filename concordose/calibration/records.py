"""A calibration record: one camera set-up's calibration, valid over a date range."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field, model_validator

from concordose.calibration.traceability import DoseCalibratorBias
from concordose.errors import OutOfRangeError
from concordose.quant.recovery_model import RecoveryModelError
from concordose.reconstruction.scatter import ScatterCorrection


class DelineationThresholdScan(BaseModel):
    """One NEMA scan's points of the contrast-dependent lesion threshold
    (``quant.delineation.ThresholdSurface``): per detectable sphere, its true volume, the
    mean-referenced background-corrected level that delineates it, and the measured contrast
    K = C_mean / C_B of the region so delineated.

    Attributes:
        sphere_to_background_ratio: the fill's true C_S/C_B (the sheet's).
        volumes_ml, fractions, contrasts: one entry per sphere, increasing volume.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sphere_to_background_ratio: float = Field(gt=0)
    volumes_ml: list[float] = Field(min_length=2)
    fractions: list[float] = Field(min_length=2)
    contrasts: list[float] = Field(min_length=2)

    @model_validator(mode="after")
    def _one_entry_per_sphere(self) -> DelineationThresholdScan:
        sizes = (len(self.volumes_ml), len(self.fractions), len(self.contrasts))
        if len(set(sizes)) != 1:
            raise ValueError(
                "volumes_ml, fractions and contrasts: expected one entry per sphere each, "
                f"found {sizes[0]}, {sizes[1]} and {sizes[2]}"
            )
        return self


class CalibrationRecord(BaseModel):
    """One calibration of one camera set-up, valid over a date range.

    Attributes:
        camera_model, collimator: the set-up calibrated; a study must match those that are set.
        energy_window_kev: the photopeak window (lower, upper) calibrated; a study must have a
            window within 1 % of it when set.
        reconstruction: fingerprint of the reconstruction protocol (method and kernel as the
            vendor writes them, e.g. ``"3DOSEM,4i,8s"``); a study must match it when set.
        calibration_factor_cps_per_mbq: counts per second in the reconstructed image per MBq in
            the field of view (from a uniform-cylinder phantom scan).
        recovery_a_ml, recovery_b, recovery_covariance: RC(V) = 1 / (1 + (a/V)^b) (V in mL)
            from a NEMA IEC body phantom scan, with the 2×2 covariance of (a, b). RC is the
            sphere VOI's mean over the true sphere concentration, so it holds the phantom
            background's spill-in (kept for provenance and the plain ``A / RC`` correction).
        contrast_recovery_a_ml, contrast_recovery_b, contrast_recovery_covariance: the same
            form fitted to the background-independent RC0 = (C_meas − C_B)/(C_sphere − C_B) of
            the same spheres with the phantom's known background C_B (used by the
            background-aware correction, ``quant.pvc``); ``None`` in records calibrated before
            it was derived.
        valid_from / valid_to: inclusive dates; ``valid_to`` ``None`` means still valid.
        dose_calibrator_bias_relative, dose_calibrator_bias_sd_relative,
        dose_calibrator_traceability: the site dose calibrator's bias (its reading = true ×
            (1 + bias)) and its standard uncertainty, measured against a traceable reference
            (:mod:`.traceability`), and what was measured. When set, the phantom's activities
            were divided by (1 + bias) before the CF was derived, and the bias's uncertainty is
            in ``calibration_factor_relative_uncertainty``; ``None`` (no traceability
            measurement on the sheets, or a record from before it existed): the CF carries the
            calibrator's bias (:attr:`dose_calibrator_traceable` is False).
        psf_fwhm_mm, psf_fwhm_sd_mm: effective isotropic Gaussian FWHM of the reconstruction
            and its SD, mm, fitted to the NEMA spheres (``calibration.psf``; the GTM correction's
            PSF unless the large-object fit below is narrower, ``quant.pvc.chosen_psf_fwhm``);
            ``None`` in records calibrated before it was fitted.
        psf_large_object_fwhm_mm, psf_large_object_fwhm_sd_mm: the Gaussian FWHM and its SD, mm,
            fitted across the NEMA phantom body's outer surface (``calibration.psf.fit_edge_fwhm``:
            the resolution of a large, high-contrast object, which organs and hot lesions
            share; the spheres' low-contrast fit is wider under OSEM). The GTM uses the smaller
            of the two fits; ``None`` in records calibrated before it was fitted.
        partial_volume_evidence: leave-one-out RMS relative error of the NEMA spheres'
            activities per correction model (``none``, ``rc_curve``, ``rc0_local_background``,
            ``gtm``); ``partial_volume_model_chosen`` the model with the smallest (``none``
            when no correction helps). ``None`` in older records.
        delineation_threshold_volumes_ml, delineation_threshold_fractions: the site's
            threshold-volume curve for the platform's lesion delineation (Jentzen et al. J Nucl
            Med 2007;48:108): per detectable NEMA sphere, its true volume and the
            mean-referenced, background-corrected level that delineates it on the site's own
            reconstruction (``quant.delineation.ThresholdCurve``); ``None`` in older records
            (the Gaussian model of ``psf_fwhm_mm`` is then used).
        delineation_threshold_scans: the contrast-dependent lesion threshold's points, one
            :class:`DelineationThresholdScan` per NEMA scan (the site's scans at two or more
            sphere-to-background ratios, e.g. EARL's 4:1 and 10:1); set only when two or more
            scans of different contrasts gave points. With it the platform's delineation uses
            g(V, K) (``quant.delineation.ThresholdSurface``) instead of the curve above;
            ``None`` (one contrast, or an older record): the curve.
        recovery_model_volumes_ml, recovery_model_residuals: per NEMA sphere the GTM corrected
            at calibration, its true volume and its residual recovery (measured − the fitted
            PSF's ω_ii, in units of its true concentration; ``quant.recovery_model``): the
            evidence of the recovery-model term of lesions' activity SD. ``None`` in older
            records (no such term).
        scatter_to_primary, scatter_to_primary_sd, scatter_residual_fraction,
        scatter_kernel_fwhm_mm: the photopeak window's scatter-to-primary ratio k and its
            standard uncertainty, fitted on the NEMA phantom's cold lung insert through the
            site's reconstruction (``calibration.scatter``), with the model's assumptions it was
            fitted under: the share of the scatter the site's correction misses and the
            scatter's FWHM in the detector plane, mm
            (:class:`concordose.reconstruction.scatter.ScatterCorrection`); the perturbation GTM
            images through it (:meth:`scatter_correction`). ``None``: not fitted (no
            reconstruction given at calibration, or an older record): scatter-free data are
            modelled.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_id: str = Field(min_length=1)
    camera_model: str | None = None
    collimator: str | None = None
    reconstruction: str | None = None
    energy_window_kev: tuple[float, float] | None = None
    calibration_factor_cps_per_mbq: float = Field(gt=0)
    calibration_factor_relative_uncertainty: float | None = Field(default=None, ge=0)
    recovery_a_ml: float | None = Field(default=None, gt=0)
    recovery_b: float | None = Field(default=None, gt=0)
    recovery_covariance: list[list[float]] | None = None
    contrast_recovery_a_ml: float | None = Field(default=None, gt=0)
    contrast_recovery_b: float | None = Field(default=None, gt=0)
    contrast_recovery_covariance: list[list[float]] | None = None
    valid_from: date
    valid_to: date | None = None
    # --- dose-calibrator traceability (issue 15, item 2) ---
    dose_calibrator_bias_relative: float | None = Field(default=None, gt=-0.5, lt=0.5)
    dose_calibrator_bias_sd_relative: float | None = Field(default=None, ge=0)
    dose_calibrator_traceability: str | None = None
    # --- end dose-calibrator traceability ---

    @model_validator(mode="after")
    def _bias_with_its_uncertainty(self) -> CalibrationRecord:
        given = (self.dose_calibrator_bias_relative, self.dose_calibrator_bias_sd_relative)
        if (given[0] is None) != (given[1] is None):
            raise ValueError(
                "dose_calibrator_bias_relative and dose_calibrator_bias_sd_relative: expected "
                f"both or neither, found {given[0]!r} and {given[1]!r}"
            )
        return self

    @property
    def dose_calibrator_traceable(self) -> bool:
        """True when the CF was corrected for a measured dose-calibrator bias."""
        return self.dose_calibrator_bias_relative is not None

    def dose_calibrator_bias(self) -> DoseCalibratorBias | None:
        """The bias the CF was corrected for (``None``: not traceable); its
        :meth:`~DoseCalibratorBias.true_activity_mbq` corrects any other reading of the site's
        calibrator (e.g. an injected activity) the same way."""
        if self.dose_calibrator_bias_relative is None:
            return None
        return DoseCalibratorBias(
            bias_relative=self.dose_calibrator_bias_relative,
            bias_sd_relative=self.dose_calibrator_bias_sd_relative or 0.0,
            description=self.dose_calibrator_traceability or "",
        )

    # --- vendor quantitative SPECT (issue 16, item 3) ---
    vendor_quantification_bias_relative: float | None = Field(default=None, gt=-1, lt=1)
    """Measured relative bias of the vendor's own quantification (Units BQML images) on the
    site's phantom of known activity: vendor total / true total − 1 (dose-calibrator traceable
    when the record is). A BQML image passes the gate only with a record stating it, within the
    protocol's ``vendor_quantification_tolerance``; its CF is then not applied."""
    vendor_quantification_bias_sd_relative: float | None = Field(default=None, ge=0)
    """Standard uncertainty of that bias (relative); used as the calibration uncertainty of a
    vendor-quantified cycle."""
    # --- end vendor quantitative SPECT ---

    # --- PSF and phantom evidence for partial-volume correction (issue 15, GTM) ---
    psf_fwhm_mm: float | None = Field(default=None, gt=0)
    psf_fwhm_sd_mm: float | None = Field(default=None, ge=0)
    psf_large_object_fwhm_mm: float | None = Field(default=None, gt=0)
    psf_large_object_fwhm_sd_mm: float | None = Field(default=None, ge=0)
    partial_volume_model_chosen: str | None = None
    partial_volume_evidence: dict[str, float] | None = None
    # --- lesion delineation threshold (issue 15, platform delineation) ---
    delineation_threshold_volumes_ml: list[float] | None = None
    delineation_threshold_fractions: list[float] | None = None
    # --- contrast-dependent lesion threshold (issue 15, NEMA at two contrasts) ---
    delineation_threshold_scans: list[DelineationThresholdScan] | None = None
    # --- end contrast-dependent lesion threshold ---
    # --- recovery-model residuals (issue 15, item 5: small lesions' SD) ---
    recovery_model_volumes_ml: list[float] | None = None
    recovery_model_residuals: list[float] | None = None
    # --- scatter in the system model (issue 15: fitted on the NEMA lung insert) ---
    scatter_to_primary: float | None = Field(default=None, ge=0)
    scatter_to_primary_sd: float | None = Field(default=None, ge=0)
    scatter_residual_fraction: float | None = Field(default=None, gt=-1, lt=1)
    scatter_kernel_fwhm_mm: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _scatter_complete(self) -> CalibrationRecord:
        given = (
            self.scatter_to_primary,
            self.scatter_to_primary_sd,
            self.scatter_residual_fraction,
            self.scatter_kernel_fwhm_mm,
        )
        if len({value is None for value in given}) > 1:
            raise ValueError(
                "scatter_to_primary, scatter_to_primary_sd, scatter_residual_fraction and "
                f"scatter_kernel_fwhm_mm: expected all or none, found {given!r}"
            )
        return self

    def scatter_correction(self) -> ScatterCorrection | None:
        """The window's scatter the perturbation GTM images through (None: not fitted)."""
        if (
            self.scatter_to_primary is None
            or self.scatter_residual_fraction is None
            or self.scatter_kernel_fwhm_mm is None
        ):
            return None
        return ScatterCorrection(
            self.scatter_to_primary,
            residual_fraction=self.scatter_residual_fraction,
            kernel_fwhm_mm=self.scatter_kernel_fwhm_mm,
        )

    # --- end scatter in the system model ---

    @model_validator(mode="after")
    def _residuals_per_sphere(self) -> CalibrationRecord:
        volumes, residuals = self.recovery_model_volumes_ml, self.recovery_model_residuals
        if (volumes is None) != (residuals is None) or (
            volumes is not None and residuals is not None and len(volumes) != len(residuals)
        ):
            raise ValueError(
                "recovery_model_volumes_ml and recovery_model_residuals: expected both or "
                f"neither, one residual per volume, found {volumes!r} and {residuals!r}"
            )
        if volumes and residuals:  # what the lesion SD is built from (≥ 2 spheres, finite)
            try:
                RecoveryModelError(tuple(volumes), tuple(residuals))
            except OutOfRangeError as exc:
                raise ValueError(str(exc)) from None
        return self

    def is_valid_on(self, day: date) -> bool:
        """True when ``day`` lies in the record's validity range."""
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)
