"""Valid rows of the published tables, for tests of the results store (no DICOM needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from concordose.results.provenance import Provenance
from concordose.schemas.tables import ABSORBED_DOSE, KINETICS, SITE_CALIBRATIONS


def provenance_columns(run_id: str) -> dict[str, object]:
    """Provenance of a row written by ``run_id``."""
    return {
        "software_version": "test",
        "run_id": run_id,
        "flow_run_id": None,
        "calibration_record_id": "cal-1",
        "input_uid_hashes": ["h1", "h2"],
        "created_at": datetime(2026, 11, 24, tzinfo=UTC),
    }


def kinetics_table(
    run_id: str, cycle_key: str, *, site: str = "milan", tia_mbq_h: float = 1000.0
) -> pa.Table:
    """Two VOIs of one cycle, mono-exponential."""
    rows = [
        {
            "subject_key": "sub-" + cycle_key,
            "site_id": site,
            "cycle_key": cycle_key,
            "voi_label": label,
            "voi_type": voi_type,
            "kinetics_method": "mono_exponential",
            "kinetics_method_version": "1",
            "method_parameters_hash": "abc",
            "n_time_points": 4,
            "tia_mbq_h": tia_mbq_h,
            "a0_mbq": 10.0,
            "lambda_eff_per_h": 0.01,
            "teff_h": 69.3,
            "status": "ok",
            "schema_version": KINETICS.version,
            **provenance_columns(run_id),
        }
        for label, voi_type in (("lesion_1", "lesion"), ("kidney_left", "organ"))
    ]
    return pa.Table.from_pylist(rows, schema=KINETICS.schema)


def dose_table(
    run_id: str, cycle_key: str, *, site: str = "milan", dose_gy: float = 40.0
) -> pa.Table:
    """One lesion dose of one cycle, sphere model."""
    row = {
        "subject_key": "sub-" + cycle_key,
        "site_id": site,
        "cycle_key": cycle_key,
        "voi_label": "lesion_1",
        "voi_type": "lesion",
        "kinetics_method": "mono_exponential",
        "dose_method": "sphere",
        "dose_method_version": "1",
        "method_parameters_hash": "def",
        "mass_g": 10.0,
        "tia_mbq_h": 1000.0,
        "mean_dose_gy": dose_gy,
        "status": "ok",
        "schema_version": ABSORBED_DOSE.version,
        **provenance_columns(run_id),
    }
    return pa.Table.from_pylist([row], schema=ABSORBED_DOSE.schema)


def calibration_table(run_id: str, cf_cps_per_mbq: float = 9.5) -> pa.Table:
    """One site calibration record."""
    provenance = provenance_columns(run_id)
    row = {
        "site_id": "milan",
        "calibration_record_id": "cal-1",
        "camera_model": None,
        "collimator": "MELP",
        "calibration_factor_cps_per_mbq": cf_cps_per_mbq,
        "calibration_factor_relative_uncertainty": 0.03,
        "valid_from": datetime(2026, 1, 1).date(),
        "valid_to": None,
        "dose_calibrator_traceable": False,
        "schema_version": SITE_CALIBRATIONS.version,
        "software_version": provenance["software_version"],
        "run_id": run_id,
        "flow_run_id": None,
        "created_at": provenance["created_at"],
    }
    return pa.Table.from_pylist([row], schema=SITE_CALIBRATIONS.schema)


def run_tables(run_id: str, cycles: dict[str, float]) -> dict[str, list[pa.Table]]:
    """Kinetics and dose tables of several cycles (cycle key → lesion dose in Gy)."""
    return {
        "kinetics": [kinetics_table(run_id, cycle) for cycle in cycles],
        "absorbed_dose": [
            dose_table(run_id, cycle, dose_gy=dose) for cycle, dose in cycles.items()
        ],
    }


def provenance(run_id: str) -> Provenance:
    """A run's provenance."""
    return Provenance(run_id=run_id)
