"""Tasks of one cycle's science and publication: quantify, kinetics, dose, voxel dose, tables,
publish. Deterministic science is never retried; publication's retries live in the object store
(one layer: each request retried with backoff, :mod:`concordose.results.object_store`), so the
task itself has none and one publish never multiplies attempts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from concordose.calibration.gate import CycleVerdict
from concordose.calibration.protocol import load_protocol
from concordose.calibration.registry import CalibrationRecord
from concordose.dicom.seg import VoiMask
from concordose.dose.models import DoseBatch, DoseInput
from concordose.dose.registry import DOSE_METHODS
from concordose.dose.voxel_dosimetry import VOXEL_KINETICS_MODELS, CycleVoxelDose
from concordose.kinetics.models import KineticsBatch
from concordose.kinetics.registry import fit_methods
from concordose.kinetics.uncertainty import total_tia_sd_mbq_h
from concordose.pipeline.assembly import CycleStudy
from concordose.pipeline.quantify import (
    CycleTimeActivity,
    quantify_cycle,
    quantify_cycle_per_protocol,
)
from concordose.pipeline.result_cache import ResultCache
from concordose.pipeline.voxel_dosimetry import cycle_voxel_dosimetry
from concordose.results.cycle_summary import (
    build_acquisition_tables,
    build_method_comparison,
    build_patient_summary,
    build_qc_findings,
    with_partial_volume_findings,
)
from concordose.results.cycle_tables import CycleIdentity, build_cycle_tables
from concordose.results.object_store import ObjectStore
from concordose.results.provenance import Provenance
from concordose.results.publish import PublishedRun, publish_tables
from concordose.results.voxel_tables import build_voxel_dose_tables
from concordose.settings import TASK_RUNNER_DEFAULT
from concordose.tasks.voxel_chunks import voxel_chunk_map


@task(name="quantify", cache_policy=NO_CACHE)
def quantify_task(
    cycle: CycleStudy,
    calibration: CalibrationRecord,
    site_id: str | None = None,
    vois: Sequence[VoiMask] | None = None,
    cache_dir: Path | None = None,
    *,
    protocol_dir: Path | None = None,
) -> CycleTimeActivity:
    """Activity per VOI and time point (``vois`` as read once by the preparation); with
    ``site_id``, corrected for partial volume as its protocol's ``partial_volume_correction``
    says (on by default: ``gtm_platform_voi``, every VOI). With ``cache_dir``, registrations
    are cached there on their inputs' identity (a re-run registers only new time points).
    ``protocol_dir``: the site registry's (``sites.yaml`` ``protocol_dir:``)."""
    cache = ResultCache(cache_dir) if cache_dir is not None else None
    if site_id is None:
        return quantify_cycle(cycle, calibration, vois=vois, cache=cache)
    protocol = load_protocol(site_id, protocol_dir)
    rules = protocol.partial_volume_correction
    return quantify_cycle_per_protocol(
        cycle,
        calibration,
        vois=vois,
        cache=cache,
        reconstruction=protocol.reconstruction,
        partial_volume_correction=rules.enabled,
        partial_volume_model=rules.model,
        background_gap_mm=rules.shell_gap_mm,
        background_width_mm=rules.shell_width_mm,
    )


@task(name="kinetics", cache_policy=NO_CACHE)
def kinetics_task(
    tac: CycleTimeActivity,
    methods: Sequence[str],
    injected_activity_mbq: float | None = None,
) -> list[KineticsBatch]:
    """TIA of every VOI by every requested kinetics method (fits shared between methods); with
    the cycle's injected activity (MBq), fits holding more than that at injection refused."""
    voi_types = [str(kind) for kind in tac.voi_types]
    return fit_methods(
        methods,
        tac.time_h,
        tac.activity_mbq,
        voi_types=voi_types,
        injected_activity_mbq=injected_activity_mbq,
    )


@task(name="dose", cache_policy=NO_CACHE)
def dose_task(
    tac: CycleTimeActivity, kinetics: list[KineticsBatch], methods: Sequence[str]
) -> list[tuple[KineticsBatch, DoseBatch]]:
    """Mean dose of every VOI for every (kinetics method, dose method) pair, with its SD where
    the kinetics method gives the TIA's (fit ⊕ calibration factor ⊕ partial-volume correction)."""
    return [
        (
            batch,
            DOSE_METHODS.get(name).compute(
                DoseInput(
                    labels=tac.labels,
                    tia_mbq_h=batch.tia_mbq_h,
                    mass_g=tac.mass_g,
                    tia_sd_mbq_h=total_tia_sd_mbq_h(
                        batch.tia_mbq_h,
                        batch.tia_sd_mbq_h,
                        tac.calibration_relative_sd,
                        tac.partial_volume_tia_relative_sd,
                    ),
                )
            ),
        )
        for batch in kinetics
        for name in methods
    ]


@task(name="voxel-dose", cache_policy=NO_CACHE)
def voxel_dose_task(
    cycle: CycleStudy,
    calibration: CalibrationRecord,
    tac: CycleTimeActivity,
    site_id: str,
    vois: Sequence[VoiMask] | None = None,
    *,
    cache_dir: Path | None = None,
    protocol_dir: Path | None = None,
    task_runner: str = TASK_RUNNER_DEFAULT,
) -> CycleVoxelDose | None:
    """Voxel dosimetry of a cycle as its site protocol's ``voxel_dosimetry`` says (None when
    disabled), reusing the quantification's registrations. ``protocol_dir``: the site
    registry's (``sites.yaml`` ``protocol_dir:``). ``task_runner``: where the voxel fits' and
    convolutions' chunks run (:func:`tasks.voxel_chunks.voxel_chunk_map`; same results)."""
    rules = load_protocol(site_id, protocol_dir).voxel_dosimetry
    if not rules.enabled:
        return None
    model = VOXEL_KINETICS_MODELS.get(rules.model)
    if model is not None and model.n_parameters >= len(cycle.time_points):
        # A single-time-point cycle (Hebert cycles 3-4) has no voxel curve to fit: it is
        # dosed at VOI level only (issue 20), not failed.
        get_run_logger().info(
            "voxel dosimetry skipped: model %s needs more than %d time point(s)",
            rules.model,
            len(cycle.time_points),
        )
        return None
    with voxel_chunk_map(task_runner) as map_chunks:
        return cycle_voxel_dosimetry(
            cycle,
            calibration,
            tac.alignments,
            vois=vois,
            rules=rules,
            cache=ResultCache(cache_dir) if cache_dir is not None else None,
            map_chunks=map_chunks,
        )


@task(name="voxel-dose-tables", cache_policy=NO_CACHE)
def voxel_tables_task(
    identity: CycleIdentity,
    cycle: CycleStudy,
    tac: CycleTimeActivity,
    voxel: CycleVoxelDose,
    provenance: Provenance,
    *,
    calibration: CalibrationRecord | None,
) -> dict[str, pa.Table]:
    """Tables ``voxel_dose``, ``voxel_dose_summary`` and ``whole_body_tumour_dose`` of one
    cycle (``calibration``: the record the cycle was quantified with)."""
    return build_voxel_dose_tables(identity, cycle, tac, voxel, provenance, calibration=calibration)


@task(name="cycle-tables", cache_policy=NO_CACHE)
def tables_task(
    identity: CycleIdentity,
    tac: CycleTimeActivity,
    kinetics: list[KineticsBatch],
    doses: list[tuple[KineticsBatch, DoseBatch]],
    provenance: Provenance,
) -> dict[str, pa.Table]:
    """The published tables of one cycle."""
    return build_cycle_tables(identity, tac, kinetics, doses, provenance)


@task(name="cycle-summary-tables", cache_policy=NO_CACHE)
def summary_tables_task(
    identity: CycleIdentity,
    cycle: CycleStudy,
    verdict: CycleVerdict,
    tac: CycleTimeActivity,
    doses: list[tuple[KineticsBatch, DoseBatch]],
    *,
    provenance: Provenance,
    reference_method: str,
) -> dict[str, pa.Table]:
    """Cycle-level tables: acquisitions with QC status, QC findings, patient summary and the
    comparison of every kinetics method with ``reference_method`` (empty when it was not run)."""
    tables = build_acquisition_tables(identity, cycle, verdict, provenance, tac.alignments)
    tables["patient_summary"] = build_patient_summary(
        identity, cycle, tac, doses, provenance, calibration=verdict.calibration
    )
    tables["method_comparison"] = build_method_comparison(
        identity, tac, doses, provenance, reference_method=reference_method
    )
    tables["qc_findings"] = with_partial_volume_findings(
        tables["qc_findings"], identity, tac, provenance
    )
    return tables


@task(name="held-findings", cache_policy=NO_CACHE)
def held_findings_task(
    identity: CycleIdentity, cycle: CycleStudy, verdict: CycleVerdict, provenance: Provenance
) -> pa.Table:
    """QC findings of a cycle the gate held (published so the site sees why)."""
    return build_qc_findings(identity, cycle, verdict, provenance)


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(
    store: ObjectStore, tables: dict[str, list[pa.Table]], provenance: Provenance
) -> PublishedRun:
    """Write the run's Parquet objects and, last, its manifest."""
    return publish_tables(store, tables, provenance)
