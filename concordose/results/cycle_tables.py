"""Build the published tables of one cycle from its quantification, kinetics and dose results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from concordose.dicom.pseudonym import uid_hash
from concordose.dose.models import DoseBatch
from concordose.kinetics.models import KineticsBatch, settings_hash
from concordose.kinetics.uncertainty import activity_sd_mbq, tia_sd_with_calibration_mbq_h
from concordose.pipeline.quantify import (
    QUANTIFICATION_METHOD,
    QUANTIFICATION_SETTINGS,
    CycleTimeActivity,
)
from concordose.quant.pvc import BACKGROUND_MODEL, STATUS_OK
from concordose.results.provenance import Provenance
from concordose.schemas.tables import ABSORBED_DOSE, KINETICS, VOI_TIMEPOINTS, TableSpec


@dataclass(frozen=True)
class CycleIdentity:
    """Pseudonymous keys of a cycle (no direct identifier).

    Attributes:
        subject_key, cycle_key: keyed hashes of the patient, and of patient and injection.
        site_id: the cycle's site.
        cycle_number: the cycle's rank by injection among the patient's cycles its source holds
            (:func:`concordose.spool.cycles.cycle_number`: not read from DICOM, which carries
            none); ``None`` when unknown (no PatientID, or a caller that does not set it).
    """

    subject_key: str
    cycle_key: str
    site_id: str
    cycle_number: int | None = None


def _nullable(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _nullable_at(values: npt.NDArray[np.float64] | None, index: int) -> float | None:
    return None if values is None else _nullable(values[index])


def _pvc_applied(tac: CycleTimeActivity, voi: int) -> bool:
    return bool(tac.partial_volume_status) and tac.partial_volume_status[voi] == STATUS_OK


def _partial_volume_columns(tac: CycleTimeActivity, voi: int, point: int) -> dict[str, Any]:
    """The v5 columns of one row: model applied, status, local background (MBq/mL) and its SD,
    the background only where the background-aware model corrected the VOI."""
    applied = _pvc_applied(tac, voi)
    with_background = applied and tac.partial_volume_model == BACKGROUND_MODEL
    background = tac.partial_volume_background_mbq_per_ml
    background_sd = tac.partial_volume_background_sd_mbq_per_ml
    return {
        "partial_volume_model": tac.partial_volume_model if applied else None,
        "partial_volume_status": (
            tac.partial_volume_status[voi] if tac.partial_volume_status else None
        ),
        "local_background_mbq_per_ml": (
            _nullable(background[voi, point])
            if with_background and background is not None
            else None
        ),
        "local_background_sd_mbq_per_ml": (
            _nullable(background_sd[voi, point])
            if with_background and background_sd is not None
            else None
        ),
    }


def _parameter(batch: KineticsBatch, name: str, voi: int) -> float | None:
    values = batch.fit_parameters.get(name)
    return None if values is None else _nullable(values[voi])


def _kinetics_extras(batch: KineticsBatch, voi: int) -> dict[str, Any]:
    """The nullable v2 and v3 columns of a kinetics row."""
    parameters = {
        name: _nullable(values[voi])
        for name, values in sorted(batch.fit_parameters.items())
        if np.isfinite(values[voi])
    }
    used = batch.time_points_used_h
    return {
        "tia_sd_mbq_h": None if batch.tia_sd_mbq_h is None else _nullable(batch.tia_sd_mbq_h[voi]),
        "time_points_used_h": None if used is None else list(used),
        "time_point_offsets_h": (
            None if batch.time_point_offsets_h is None else list(batch.time_point_offsets_h)
        ),
        "model": None if batch.models is None else batch.models[voi],
        "fit_parameters_json": json.dumps(parameters, sort_keys=True) if parameters else None,
        "reduced_chi_square": _goodness(batch, "reduced_chi_square", voi),
        "r_squared": _goodness(batch, "r_squared", voi),
        "aicc": _goodness(batch, "aicc", voi),
    }


def _total_sds(
    batch: KineticsBatch,
    tac: CycleTimeActivity,
    partial_volume_relative_sd: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64] | None:
    """Each VOI's TIA SD: fit ⊕ calibration ⊕ partial-volume parts; None without the first two."""
    if batch.tia_sd_mbq_h is None or tac.calibration_relative_sd is None:
        return None
    return tia_sd_with_calibration_mbq_h(
        batch.tia_mbq_h,
        batch.tia_sd_mbq_h,
        tac.calibration_relative_sd,
        partial_volume_relative_sd,
    )


def _goodness(batch: KineticsBatch, name: str, voi: int) -> float | None:
    values = batch.goodness.get(name)
    return None if values is None else _nullable(values[voi])


def _table(spec: TableSpec, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=spec.schema)


def build_cycle_tables(
    identity: CycleIdentity,
    tac: CycleTimeActivity,
    kinetics: Sequence[KineticsBatch],
    doses: Sequence[tuple[KineticsBatch, DoseBatch]],
    provenance: Provenance,
) -> dict[str, pa.Table]:
    """Tables ``voi_timepoints``, ``kinetics`` and ``absorbed_dose`` for one cycle."""
    common_provenance = {
        **provenance.columns(),
        "calibration_record_id": tac.calibration_record_id,
        "input_uid_hashes": [uid_hash(uid) for uid in tac.sop_instance_uids],
    }

    quantification_settings = QUANTIFICATION_SETTINGS
    if tac.recovery_coefficient is not None:  # opt-in PVC changes the path's settings
        quantification_settings = {
            **QUANTIFICATION_SETTINGS,
            "partial_volume_correction": "lesions_rc_curve_of_calibration_record",
        }
    if tac.partial_volume_shell_mm is not None:  # the background-aware model and its shell
        quantification_settings = {
            **QUANTIFICATION_SETTINGS,
            "partial_volume_correction": "lesions_rc0_curve_local_background",
            "background_shell_gap_mm": tac.partial_volume_shell_mm[0],
            "background_shell_width_mm": tac.partial_volume_shell_mm[1],
        }
    if tac.partial_volume_psf_fwhm_mm is not None:  # the GTM and the PSF it used
        quantification_settings = {
            **QUANTIFICATION_SETTINGS,
            "partial_volume_correction": "every_voi_geometric_transfer_matrix",
            "psf_fwhm_mm": tac.partial_volume_psf_fwhm_mm[0],
            "psf_fwhm_sd_mm": tac.partial_volume_psf_fwhm_mm[1],
        }
    quantification_hash = settings_hash(quantification_settings)

    def subject(voi: int) -> dict[str, Any]:
        return {
            "subject_key": identity.subject_key,
            "site_id": identity.site_id,
            "cycle_key": identity.cycle_key,
            "voi_label": tac.labels[voi],
            "voi_type": str(tac.voi_types[voi]),
        }

    n_voi, n_points = tac.activity_mbq.shape
    activity_sd = (
        None
        if tac.counts is None
        else activity_sd_mbq(
            tac.activity_mbq,
            tac.counts,
            recovery_relative_sd=(
                0.0
                if tac.partial_volume_relative_sd is None
                else np.nan_to_num(tac.partial_volume_relative_sd, nan=0.0)
            ),
            other_relative_sd=tac.calibration_relative_sd or 0.0,
        )
    )
    timepoint_rows = [
        {
            **subject(voi),
            "time_point_index": point,
            "time_h": float(tac.time_h[point]),
            "activity_mbq": float(tac.activity_mbq[voi, point]),
            "volume_ml": float(tac.volume_ml[voi]),
            "quantification_method": QUANTIFICATION_METHOD,
            "method_parameters_hash": quantification_hash,
            "counts": None if tac.counts is None else float(tac.counts[voi, point]),
            "activity_sd_mbq": None if activity_sd is None else _nullable(activity_sd[voi, point]),
            "recovery_coefficient": _nullable_at(tac.recovery_coefficient, voi),
            **_partial_volume_columns(tac, voi, point),
            "schema_version": VOI_TIMEPOINTS.version,
            **common_provenance,
        }
        for voi in range(n_voi)
        for point in range(n_points)
    ]
    partial_volume_tia_relative_sd = tac.partial_volume_tia_relative_sd
    total_sds = [_total_sds(batch, tac, partial_volume_tia_relative_sd) for batch in kinetics]
    kinetics_rows = [
        {
            **subject(voi),
            "kinetics_method": batch.method,
            "kinetics_method_version": batch.method_version,
            "method_parameters_hash": batch.parameters_hash,
            "n_time_points": (
                n_points if batch.time_points_used_h is None else len(batch.time_points_used_h)
            ),
            "tia_mbq_h": _nullable(batch.tia_mbq_h[voi]),
            "a0_mbq": _parameter(batch, "a0_mbq", voi),
            "lambda_eff_per_h": _parameter(batch, "lambda_eff_per_h", voi),
            "teff_h": _parameter(batch, "teff_h", voi),
            "status": batch.status[voi],
            **_kinetics_extras(batch, voi),
            "tia_total_sd_mbq_h": None if totals is None else _nullable(totals[voi]),
            "schema_version": KINETICS.version,
            **common_provenance,
        }
        for batch, totals in zip(kinetics, total_sds, strict=True)
        for voi in range(n_voi)
    ]
    dose_rows = [
        {
            **subject(voi),
            "kinetics_method": kinetics_batch.method,
            "dose_method": dose_batch.method,
            "dose_method_version": dose_batch.method_version,
            "method_parameters_hash": dose_batch.parameters_hash,
            "mass_g": float(tac.mass_g[voi]),
            "tia_mbq_h": _nullable(kinetics_batch.tia_mbq_h[voi]),
            "mean_dose_gy": _nullable(dose_batch.mean_dose_gy[voi]),
            "dose_sd_gy": _nullable_at(dose_batch.mean_dose_sd_gy, voi),
            "status": dose_batch.status[voi],
            "schema_version": ABSORBED_DOSE.version,
            **common_provenance,
        }
        for kinetics_batch, dose_batch in doses
        for voi in range(n_voi)
    ]
    return {
        VOI_TIMEPOINTS.name: _table(VOI_TIMEPOINTS, timepoint_rows),
        KINETICS.name: _table(KINETICS, kinetics_rows),
        ABSORBED_DOSE.name: _table(ABSORBED_DOSE, dose_rows),
    }
