"""Table ``site_calibrations``: the calibration records a run applied, one row per record."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from concordose.calibration.registry import CalibrationRecord
from concordose.results.provenance import Provenance
from concordose.schemas.tables import PARTIAL_VOLUME_EVIDENCE_MODELS, SITE_CALIBRATIONS


def build_site_calibrations(
    records: Iterable[tuple[str, CalibrationRecord]], provenance: Provenance
) -> pa.Table:
    """Rows of ``site_calibrations`` for (site id, record) pairs, each record once."""
    unique = {(site_id, record.record_id): record for site_id, record in records}
    rows = [
        {
            "site_id": site_id,
            "calibration_record_id": record.record_id,
            "camera_model": record.camera_model,
            "collimator": record.collimator,
            "calibration_factor_cps_per_mbq": record.calibration_factor_cps_per_mbq,
            "calibration_factor_relative_uncertainty": (
                record.calibration_factor_relative_uncertainty
            ),
            "valid_from": record.valid_from,
            "valid_to": record.valid_to,
            "reconstruction": record.reconstruction,
            "energy_window_lower_kev": (
                record.energy_window_kev[0] if record.energy_window_kev else None
            ),
            "energy_window_upper_kev": (
                record.energy_window_kev[1] if record.energy_window_kev else None
            ),
            "recovery_a_ml": record.recovery_a_ml,
            "recovery_b": record.recovery_b,
            "contrast_recovery_a_ml": record.contrast_recovery_a_ml,
            "contrast_recovery_b": record.contrast_recovery_b,
            # dose-calibrator traceability (v4)
            "dose_calibrator_traceable": record.dose_calibrator_traceable,
            "dose_calibrator_bias_relative": record.dose_calibrator_bias_relative,
            "dose_calibrator_bias_sd_relative": record.dose_calibrator_bias_sd_relative,
            "dose_calibrator_traceability": record.dose_calibrator_traceability,
            # v5 (issue 15): PSF and phantom evidence on PVC models
            "psf_fwhm_mm": record.psf_fwhm_mm,
            "psf_fwhm_sd_mm": record.psf_fwhm_sd_mm,
            "partial_volume_model_chosen": record.partial_volume_model_chosen,
            **{
                f"phantom_rms_error_{model}": (record.partial_volume_evidence or {}).get(model)
                for model in PARTIAL_VOLUME_EVIDENCE_MODELS
            },
            # v6 (issue 15): the large-object PSF the GTM uses
            "psf_large_object_fwhm_mm": record.psf_large_object_fwhm_mm,
            "psf_large_object_fwhm_sd_mm": record.psf_large_object_fwhm_sd_mm,
            "schema_version": SITE_CALIBRATIONS.version,
            **provenance.columns(),
        }
        for (site_id, _), record in sorted(unique.items())
    ]
    return pa.Table.from_pylist(rows, schema=SITE_CALIBRATIONS.schema)
