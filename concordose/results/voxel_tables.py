"""Tables ``voxel_dose``, ``voxel_dose_summary`` and ``whole_body_tumour_dose`` of one cycle,
from its voxel dosimetry (:mod:`concordose.dose.voxel_dosimetry`,
:mod:`concordose.dose.whole_body_tumour`).

``voxel_dose_summary`` is built by the same function as ``patient_summary``
(:func:`concordose.results.cycle_summary.build_patient_summary`), on the voxel methods' VOI mean
doses and masses (on the dose grid, ``dose_grid``: the first CT's with CT density, or the first
SPECT's at unit density), so both tables mean the same thing column by column.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa

from concordose.calibration.records import CalibrationRecord
from concordose.dicom.pseudonym import uid_hash
from concordose.dicom.seg import VoiType
from concordose.dose.voxel_dosimetry import CycleVoxelDose
from concordose.dose.whole_body_tumour import WHOLE_BODY_TUMOUR_METHOD
from concordose.pipeline.assembly import CycleStudy
from concordose.pipeline.quantify import CycleTimeActivity
from concordose.results.cycle_summary import build_patient_summary
from concordose.results.cycle_tables import CycleIdentity
from concordose.results.provenance import Provenance
from concordose.schemas.tables import VOXEL_DOSE, VOXEL_DOSE_SUMMARY, WHOLE_BODY_TUMOUR_DOSE


def _nullable(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def build_voxel_dose_tables(
    identity: CycleIdentity,
    cycle: CycleStudy,
    tac: CycleTimeActivity,
    voxel: CycleVoxelDose,
    provenance: Provenance,
    *,
    calibration: CalibrationRecord | None,
) -> dict[str, pa.Table]:
    """Tables ``voxel_dose`` (one row per VOI and voxel method) and ``voxel_dose_summary``.

    ``calibration``: the record the cycle was quantified with (its dose-calibrator bias puts the
    injected activity on the doses' scale, :func:`build_patient_summary`).

    ``tac`` is the cycle's VOI quantification: it gives the calibration record and the input
    UIDs of the provenance columns (the voxel path reads the same instances).

    Raises:
        ValueError: the voxel dosimetry's VOIs are not the quantification's.
    """
    if voxel.labels != tac.labels:
        raise ValueError(
            f"voxel dosimetry VOIs {voxel.labels} differ from the quantification's {tac.labels}; "
            "both must come from the cycle's one segmentation"
        )
    common: dict[str, Any] = {
        **provenance.columns(),
        "calibration_record_id": tac.calibration_record_id,
        "input_uid_hashes": [uid_hash(uid) for uid in tac.sop_instance_uids],
    }
    rows = []
    for dose in voxel.doses:
        parameters = f"{voxel.kinetics_parameters_hash}|{dose.parameters_hash}"
        parameters_hash = hashlib.sha256(parameters.encode()).hexdigest()[:16]
        for index, voi in enumerate(dose.vois):
            metrics = voi.metrics
            rows.append(
                {
                    "subject_key": identity.subject_key,
                    "site_id": identity.site_id,
                    "cycle_key": identity.cycle_key,
                    "voi_label": voxel.labels[index],
                    "voi_type": str(voxel.voi_types[index]),
                    "kinetics_method": voxel.kinetics_method,
                    "dose_method": dose.method,
                    "dose_method_version": dose.method_version,
                    "method_parameters_hash": parameters_hash,
                    "mass_g": float(voxel.mass_g[index]),
                    "tia_mbq_h": _nullable(voxel.tia_mbq_h[index]),
                    "tia_sd_mbq_h": _nullable(voxel.tia_sd_mbq_h[index]),
                    "voxel_fit_failed_fraction": _nullable(voxel.failed_fraction[index]),
                    "mean_dose_gy": None if metrics is None else metrics.mean_dose_gy,
                    "dose_sd_gy": _nullable(voi.dose_sd_gy),
                    "median_dose_gy": None if metrics is None else metrics.median_dose_gy,
                    "min_dose_gy": None if metrics is None else metrics.min_dose_gy,
                    "max_dose_gy": None if metrics is None else metrics.max_dose_gy,
                    "d2_gy": None if metrics is None else metrics.d2_gy,
                    "d50_gy": None if metrics is None else metrics.d50_gy,
                    "d98_gy": None if metrics is None else metrics.d98_gy,
                    "dvh_dose_gy": None if metrics is None else metrics.dvh_dose_gy.tolist(),
                    "dvh_mass_fraction": (
                        None if metrics is None else metrics.dvh_mass_fraction.tolist()
                    ),
                    "status": voi.status,
                    "dose_grid": voxel.dose_grid,
                    "schema_version": VOXEL_DOSE.version,
                    **common,
                }
            )
    return {
        VOXEL_DOSE.name: pa.Table.from_pylist(rows, schema=VOXEL_DOSE.schema),
        VOXEL_DOSE_SUMMARY.name: build_patient_summary(
            identity,
            cycle,
            tac,
            voxel.as_voi_batches(),
            provenance,
            calibration=calibration,
            mass_g=voxel.mass_g,
            spec=VOXEL_DOSE_SUMMARY,
        ),
        WHOLE_BODY_TUMOUR_DOSE.name: build_whole_body_tumour_dose(identity, voxel, common),
    }


# --- whole_body_tumour_dose (issue 20, item 4) ---
def build_whole_body_tumour_dose(
    identity: CycleIdentity, voxel: CycleVoxelDose, common: dict[str, Any]
) -> pa.Table:
    """Table ``whole_body_tumour_dose``: one row per voxel dose method of the cycle, next to
    the lesion VOIs' mass-weighted mean dose by the same method. ``common``: the provenance
    columns of :func:`build_voxel_dose_tables`."""
    lesion = np.array([t == VoiType.LESION for t in voxel.voi_types], dtype=bool)
    rows = []
    for dose, whole_body in zip(voxel.doses, voxel.whole_body_tumour, strict=True):
        settings = (
            f"{voxel.kinetics_parameters_hash}|{dose.parameters_hash}|{WHOLE_BODY_TUMOUR_METHOD}"
            f"|{whole_body.threshold_gy:g}Gy|{whole_body.margin_mm:g}mm"
        )
        mean = dose.mean_dose_gy
        usable = lesion & np.isfinite(mean)
        gtd = (
            float(np.dot(mean[usable], voxel.mass_g[usable]) / voxel.mass_g[usable].sum())
            if usable.any()
            else None
        )
        rows.append(
            {
                "subject_key": identity.subject_key,
                "site_id": identity.site_id,
                "cycle_key": identity.cycle_key,
                "cycle_number": identity.cycle_number,
                "kinetics_method": voxel.kinetics_method,
                "dose_method": dose.method,
                "method_parameters_hash": hashlib.sha256(settings.encode()).hexdigest()[:16],
                "whole_body_method": WHOLE_BODY_TUMOUR_METHOD,
                "threshold_gy": whole_body.threshold_gy,
                "margin_mm": whole_body.margin_mm,
                "excluded_organs": list(whole_body.excluded_organs),
                "n_voxels": whole_body.n_voxels,
                "tumour_volume_ml": whole_body.volume_ml,
                "mean_dose_gy": _nullable(whole_body.mean_dose_gy),
                "max_dose_gy": _nullable(whole_body.max_dose_gy),
                "excluded_volume_ml": whole_body.excluded_volume_ml,
                "lesion_voi_volume_ml": whole_body.lesion_voi_volume_ml,
                "lesion_voi_recovered_ml": whole_body.lesion_voi_recovered_ml,
                "lesion_voi_gtd_gy": gtd,
                "dose_grid": voxel.dose_grid,
                "schema_version": WHOLE_BODY_TUMOUR_DOSE.version,
                **common,
            }
        )
    return pa.Table.from_pylist(rows, schema=WHOLE_BODY_TUMOUR_DOSE.schema)


# --- end whole_body_tumour_dose ---
