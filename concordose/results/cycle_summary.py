"""Cycle-level tables: acquisitions with their QC status, QC findings and the patient summary.

Thresholds of the patient summary are the published cycle-1 tumour-dose predictors of
progression-free survival cited in the seed review (``../shared/seed/``): a minimum lesion dose
of 35 Gy and a global mean tumour dose (mass-weighted over lesions) of 10.6 Gy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from concordose.calibration.findings import Finding, Severity
from concordose.calibration.gate import CycleVerdict
from concordose.calibration.records import CalibrationRecord
from concordose.dicom.pseudonym import uid_hash
from concordose.dicom.seg import VoiType
from concordose.dose.models import DoseBatch
from concordose.errors import StudyIncompleteError
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.kinetics.models import KineticsBatch
from concordose.pipeline.alignment import TimePointAlignment
from concordose.pipeline.assembly import CycleStudy
from concordose.pipeline.quantify import CycleTimeActivity
from concordose.quant.delineation import CENTRAL_PEAK_ONLY, DELINEATED, SEVERAL_FIXED_POINTS
from concordose.quant.organ_outline import FITTED
from concordose.quant.pvc import NO_CORRECTION, NOT_CORRECTED, STATUS_OK
from concordose.results.cycle_tables import CycleIdentity
from concordose.results.provenance import Provenance
from concordose.schemas.tables import (
    ACQUISITIONS,
    METHOD_COMPARISON,
    PATIENT_SUMMARY,
    QC_FINDINGS,
    TableSpec,
)

MIN_LESION_DOSE_THRESHOLD_GY = 35.0
MEAN_LESION_DOSE_THRESHOLD_GY = 10.6
LU177_PHOTOPEAK_KEV = 208.4  # Lu-177 principal gamma line (ENSDF; 10.4 % yield)
NO_CALIBRATION = "none"  # calibration_record_id of findings of a cycle held without one


def _provenance(
    provenance: Provenance, calibration_record_id: str, uids: Sequence[str]
) -> dict[str, Any]:
    return {
        **provenance.columns(),
        "calibration_record_id": calibration_record_id,
        "input_uid_hashes": [uid_hash(uid) for uid in uids],
    }


def _qc_status(findings: Sequence[Finding]) -> str:
    if any(finding.severity is Severity.ERROR for finding in findings):
        return "fail"
    # Info findings record how a value was read (provenance); they do not make a warning.
    return "warn" if any(f.severity is Severity.WARNING for f in findings) else "pass"


def build_qc_findings(
    identity: CycleIdentity,
    cycle: CycleStudy,
    verdict: CycleVerdict,
    provenance: Provenance,
) -> pa.Table:
    """Table ``qc_findings``: every finding of the metadata checks and the calibration gate."""
    record_id = verdict.calibration.record_id if verdict.calibration else NO_CALIBRATION
    rows: list[dict[str, Any]] = []
    for index, (point, findings) in enumerate(
        zip(cycle.time_points, verdict.time_point_findings, strict=True)
    ):
        for finding in findings:
            rows.append(
                {
                    "subject_key": identity.subject_key,
                    "site_id": identity.site_id,
                    "cycle_key": identity.cycle_key,
                    "finding_index": len(rows),
                    "check_name": finding.rule,
                    "severity": str(finding.severity),
                    "message": finding.message,
                    "time_point_index": index,
                    "schema_version": QC_FINDINGS.version,
                    **_provenance(provenance, record_id, [point.acquisition.sop_instance_uid]),
                }
            )
    return pa.Table.from_pylist(rows, schema=QC_FINDINGS.schema)


def build_cycle_findings(
    identity: CycleIdentity,
    findings: Sequence[Finding],
    provenance: Provenance,
    input_uids: Sequence[str] = (),
) -> pa.Table:
    """Table ``qc_findings`` for findings about a cycle as a whole (no time point): e.g. a cycle
    held because it cannot be assembled. ``input_uids`` are hashed into the provenance."""
    rows = [
        {
            "subject_key": identity.subject_key,
            "site_id": identity.site_id,
            "cycle_key": identity.cycle_key,
            "finding_index": index,
            "check_name": finding.rule,
            "severity": str(finding.severity),
            "message": finding.message,
            "time_point_index": None,
            "schema_version": QC_FINDINGS.version,
            **_provenance(provenance, NO_CALIBRATION, input_uids),
        }
        for index, finding in enumerate(findings)
    ]
    return pa.Table.from_pylist(rows, schema=QC_FINDINGS.schema)


PARTIAL_VOLUME_CHECK = "partial_volume_correction"
"""``check_name`` of the findings on lesions the protocol's correction left as measured."""


def with_partial_volume_findings(
    qc_findings: pa.Table,
    identity: CycleIdentity,
    tac: CycleTimeActivity,
    provenance: Provenance,
) -> pa.Table:
    """``qc_findings`` plus one warning per reason the asked-for partial-volume correction left
    VOIs as measured (no curve or PSF in the calibration record, volume outside the curve, no
    background, an ill-conditioned GTM), naming the VOIs it applies to (lesions under every
    model, organs under the GTM, the only model that corrects them) as ``[label, …]`` in the
    message and in ``voi_labels`` (the column a reader joins on ``voi_label``), numbered
    after the existing findings: a record without a PSF is one finding, not one per VOI; one
    warning per VOI whose ``gtm_platform_voi`` extent fell back to the GTM's T·V at some time
    points (``CycleTimeActivity.partial_volume_fallback``); and, under ``gtm_platform_voi``, one
    warning per reason the platform used what the site drew instead of its own rule: lesions
    it could not re-delineate (measured on the site's VOI: ``quant.delineation``), organs whose
    outline it could not fit (the site's volume kept as the dose mass: ``quant.organ_outline``).
    Unchanged when no correction was asked for."""
    if not tac.partial_volume_status or tac.partial_volume_model == NO_CORRECTION:
        return qc_findings  # nothing asked for, or the site's phantom chose no correction
    messages: list[tuple[str, list[str]]] = []  # (message, the VOIs it names)

    def naming(vois: Sequence[int], what: str) -> tuple[str, list[str]]:
        kinds = sorted({tac.voi_types[voi] for voi in vois})
        labels = [tac.labels[voi] for voi in vois]
        return f"{len(vois)} {' and '.join(kinds)} VOI(s) [{', '.join(labels)}]: {what}", labels

    by_status: dict[str, list[int]] = {}
    for voi, status in enumerate(tac.partial_volume_status):
        if status in (STATUS_OK, NOT_CORRECTED):  # corrected, or an organ no model corrects
            continue
        by_status.setdefault(status, []).append(voi)
    messages += [
        naming(
            vois,
            f"{tac.partial_volume_model} partial-volume correction asked for by the site "
            f"protocol, left as measured: {status}",
        )
        for status, vois in by_status.items()
    ]
    # gtm_platform_voi: where the platform's rule gave way to what the site drew, the published
    # value is the site's object, not the common one; where the rule found only a lesion's
    # central peak, the site's object is the other end of its SD; where it found several fixed
    # points at the lesion's scale, they span its SD
    site_drawn: dict[str, list[int]] = {}
    for voi, delineation in enumerate(tac.delineations):
        if delineation is not None and delineation.status != DELINEATED:
            reason = f"not re-delineated, measured on the site's VOI: {delineation.status}"
            site_drawn.setdefault(reason, []).append(voi)
        elif delineation is not None and delineation.central_peak_only:
            site_drawn.setdefault(CENTRAL_PEAK_ONLY, []).append(voi)
        elif delineation is not None and delineation.other_fixed_point_volumes_ml:
            site_drawn.setdefault(SEVERAL_FIXED_POINTS, []).append(voi)
    for voi, outline in enumerate(tac.organ_outlines):
        if outline is not None and outline.status != FITTED:
            reason = f"outline not fitted, the site's volume is the dose mass: {outline.status}"
            site_drawn.setdefault(reason, []).append(voi)
    messages += [
        naming(vois, f"{tac.partial_volume_model} {reason}") for reason, vois in site_drawn.items()
    ]
    # gtm_platform_voi: an organ corrected at every time point, by its extent except where that
    # was not > 0 (quant.gtm.EXTENT_FALLBACK): one warning per such VOI naming the time points
    messages += [
        (
            f"{tac.voi_types[voi]} VOI [{tac.labels[voi]}]: {tac.partial_volume_model} "
            f"corrected, with a per-time-point fallback: {note}",
            [tac.labels[voi]],
        )
        for voi, note in enumerate(tac.partial_volume_fallback)
        if note
    ]
    if not messages:
        return qc_findings
    rows = [
        {
            "subject_key": identity.subject_key,
            "site_id": identity.site_id,
            "cycle_key": identity.cycle_key,
            "finding_index": qc_findings.num_rows + index,
            "check_name": PARTIAL_VOLUME_CHECK,
            "severity": str(Severity.WARNING),
            "message": message,
            "time_point_index": None,
            "voi_labels": labels,
            "schema_version": QC_FINDINGS.version,
            **_provenance(provenance, tac.calibration_record_id, tac.sop_instance_uids),
        }
        for index, (message, labels) in enumerate(messages)
    ]
    return pa.concat_tables([qc_findings, pa.Table.from_pylist(rows, schema=QC_FINDINGS.schema)])


def build_acquisition_tables(
    identity: CycleIdentity,
    cycle: CycleStudy,
    verdict: CycleVerdict,
    provenance: Provenance,
    alignments: Sequence[TimePointAlignment] = (),
) -> dict[str, pa.Table]:
    """Tables ``acquisitions`` (one row per time point) and ``qc_findings`` of a passed cycle.

    QC status per time point comes from the gate's findings (metadata checks and calibration):
    ``fail`` with an error, ``warn`` with warnings only, ``pass`` otherwise.

    Raises:
        StudyIncompleteError: the cycle has no calibration (it was held) or a time point has no
            acquisition duration.
    """
    calibration = verdict.calibration
    if calibration is None:
        raise StudyIncompleteError("a held cycle has no acquisitions to publish, only findings")
    acquisitions: list[dict[str, Any]] = []
    for index, (point, findings) in enumerate(
        zip(cycle.time_points, verdict.time_point_findings, strict=True)
    ):
        acquisition = point.acquisition
        registration = alignments[index].registration if alignments else None
        if acquisition.acquisition_duration_s is None:
            raise StudyIncompleteError(
                f"NM file {acquisition.path}: no acquisition duration (ActualFrameDuration × "
                "frames); cannot publish its acquisition row"
            )
        windows = acquisition.energy_windows_kev
        photopeak = [w for w in windows if w[0] <= LU177_PHOTOPEAK_KEV <= w[1]]
        window = photopeak[0] if photopeak else (windows[0] if windows else None)
        acquisitions.append(
            {
                "subject_key": identity.subject_key,
                "site_id": identity.site_id,
                "cycle_key": identity.cycle_key,
                "time_point_index": index,
                "time_h": float(point.time_h),
                "modality": "NM",
                "acquisition_duration_s": float(acquisition.acquisition_duration_s),
                "energy_window_kev": (window[0] + window[1]) / 2 if window else None,
                "calibration_factor_cps_per_mbq": calibration.calibration_factor_cps_per_mbq,
                "qc_status": _qc_status(findings),
                "n_qc_findings": len(findings),
                "injected_activity_mbq": (
                    acquisition.radiopharmaceutical.injected_activity_mbq
                    if acquisition.radiopharmaceutical
                    else None
                ),
                "camera_model": acquisition.camera_model,
                "collimator": acquisition.collimator,
                "reconstruction": acquisition.reconstruction,
                "voxel_mm": max(acquisition.geometry.spacing_mm),
                "patient_weight_kg": acquisition.patient_weight_kg,
                "registration_metric": registration.metric_value if registration else None,
                "registration_translation_mm": (
                    list(registration.translation_mm) if registration else None
                ),
                "schema_version": ACQUISITIONS.version,
                **_provenance(provenance, calibration.record_id, [acquisition.sop_instance_uid]),
            }
        )
    return {
        ACQUISITIONS.name: pa.Table.from_pylist(acquisitions, schema=ACQUISITIONS.schema),
        QC_FINDINGS.name: build_qc_findings(identity, cycle, verdict, provenance),
    }


def _mass_weighted_mean(values: np.ndarray[Any, Any], mass_g: np.ndarray[Any, Any]) -> float | None:
    if values.size == 0 or float(mass_g.sum()) <= 0:
        return None
    return float(np.sum(values * mass_g) / np.sum(mass_g))


def build_patient_summary(
    identity: CycleIdentity,
    cycle: CycleStudy,
    tac: CycleTimeActivity,
    doses: Sequence[tuple[KineticsBatch, DoseBatch]],
    provenance: Provenance,
    *,
    calibration: CalibrationRecord | None,
    mass_g: np.ndarray[Any, Any] | None = None,
    spec: TableSpec = PATIENT_SUMMARY,
) -> pa.Table:
    """Table ``patient_summary``: one row per (kinetics method, dose method) of the cycle.

    ``mass_g`` (per VOI, default ``tac.mass_g``) weighs the mean tumour and kidney doses: the
    voxel methods pass their SPECT-grid masses, with ``spec`` ``voxel_dose_summary``.

    ``calibration``: the record the doses were quantified with. The injected activity was read
    on the same dose calibrator as the phantom; when the record corrected the CF for that
    calibrator's bias, the doses are on the traceable scale and the recorded injected activity
    is not, so ``injected_activity_traceable_mbq`` puts it there with the record's own
    correction (:meth:`CalibrationRecord.dose_calibrator_bias`); otherwise it is null.
    """
    bias = None if calibration is None else calibration.dose_calibrator_bias()
    injected_traceable_mbq = (
        None
        if bias is None or cycle.injected_activity_mbq is None
        else bias.true_activity_mbq(cycle.injected_activity_mbq)
    )
    masses = tac.mass_g if mass_g is None else mass_g
    is_lesion = np.array([t == VoiType.LESION for t in tac.voi_types])
    is_kidney = np.array([label.startswith("kidney") for label in tac.labels])
    rows = []
    for kinetics_batch, dose_batch in doses:
        dose_gy = dose_batch.mean_dose_gy
        finite = np.isfinite(dose_gy)
        lesions = is_lesion & finite
        kidneys = is_kidney & finite
        lesion_min = float(dose_gy[lesions].min()) if lesions.any() else None
        lesion_mean = _mass_weighted_mean(dose_gy[lesions], masses[lesions])
        parameters = f"{kinetics_batch.parameters_hash}|{dose_batch.parameters_hash}"
        rows.append(
            {
                "subject_key": identity.subject_key,
                "site_id": identity.site_id,
                "cycle_key": identity.cycle_key,
                "cycle_number": identity.cycle_number,  # rank by injection: CycleIdentity
                "kinetics_method": kinetics_batch.method,
                "dose_method": dose_batch.method,
                "method_parameters_hash": hashlib.sha256(parameters.encode()).hexdigest()[:16],
                "injected_activity_mbq": cycle.injected_activity_mbq,
                "injected_activity_traceable_mbq": injected_traceable_mbq,
                "n_lesions": int(lesions.sum()),
                "lesion_min_dose_gy": lesion_min,
                "lesion_mean_dose_gy": lesion_mean,
                "kidney_mean_dose_gy": _mass_weighted_mean(dose_gy[kidneys], masses[kidneys]),
                "meets_min_lesion_35gy": (
                    None if lesion_min is None else lesion_min >= MIN_LESION_DOSE_THRESHOLD_GY
                ),
                "meets_mean_lesion_10_6gy": (
                    None if lesion_mean is None else lesion_mean >= MEAN_LESION_DOSE_THRESHOLD_GY
                ),
                "schema_version": spec.version,
                **_provenance(provenance, tac.calibration_record_id, tac.sop_instance_uids),
            }
        )
    return pa.Table.from_pylist(rows, schema=spec.schema)


REFERENCE_KINETICS_METHOD = REFERENCE_METHOD_NAME
"""The full-fit reference every simplified method is compared with (DESIGN.md, step 6): the
SPECTacular six-time-point fit, as in ``concordose.kinetics.comparison``."""


def build_method_comparison(
    identity: CycleIdentity,
    tac: CycleTimeActivity,
    doses: Sequence[tuple[KineticsBatch, DoseBatch]],
    provenance: Provenance,
    *,
    reference_method: str = REFERENCE_KINETICS_METHOD,
) -> pa.Table:
    """Table ``method_comparison``: every other kinetics method's dose against the reference's.

    One row per VOI, compared kinetics method and dose method. Empty when the reference method
    was not run (it is not registered yet in every installation); then nothing is compared.
    """
    reference = {
        dose_batch.method: dose_batch
        for kinetics_batch, dose_batch in doses
        if kinetics_batch.method == reference_method
    }
    rows: list[dict[str, Any]] = []
    common = _provenance(provenance, tac.calibration_record_id, tac.sop_instance_uids)
    for kinetics_batch, dose_batch in doses:
        if kinetics_batch.method == reference_method or dose_batch.method not in reference:
            continue
        reference_gy = reference[dose_batch.method].mean_dose_gy
        compared_gy = dose_batch.mean_dose_gy
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = (compared_gy - reference_gy) / reference_gy
        parameters = "|".join(
            [
                reference[dose_batch.method].parameters_hash,
                kinetics_batch.parameters_hash,
                dose_batch.parameters_hash,
            ]
        )
        for voi, label in enumerate(tac.labels):
            rows.append(
                {
                    "subject_key": identity.subject_key,
                    "site_id": identity.site_id,
                    "cycle_key": identity.cycle_key,
                    "voi_label": label,
                    "voi_type": str(tac.voi_types[voi]),
                    "reference_kinetics_method": reference_method,
                    "kinetics_method": kinetics_batch.method,
                    "dose_method": dose_batch.method,
                    "method_parameters_hash": hashlib.sha256(parameters.encode()).hexdigest()[:16],
                    "reference_dose_gy": _finite(reference_gy[voi]),
                    "dose_gy": _finite(compared_gy[voi]),
                    "relative_difference": _finite(relative[voi]),
                    "schema_version": METHOD_COMPARISON.version,
                    **common,
                }
            )
    return pa.Table.from_pylist(rows, schema=METHOD_COMPARISON.schema)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
