"""Tasks of the study path: catalogue, assemble, quantify, kinetics, dose, tables, publish."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from concordose.calibration.registry import CalibrationRecord
from concordose.dicom.catalogue import CataloguedInstance, catalogue
from concordose.dicom.study import CycleStudy, assemble_cycles
from concordose.dose.models import DoseBatch, DoseInput
from concordose.dose.registry import DOSE_METHODS
from concordose.kinetics.models import KineticsBatch
from concordose.kinetics.registry import KINETICS_METHODS
from concordose.quant.cycle import CycleTimeActivity, quantify_cycle
from concordose.results.cycle_tables import CycleIdentity, build_cycle_tables
from concordose.results.object_store import ObjectStore
from concordose.results.provenance import Provenance
from concordose.results.publish import PublishedRun, publish_tables


@task(name="catalogue", cache_policy=NO_CACHE)
def catalogue_task(source: Path) -> list[CataloguedInstance]:
    """List the instances of a spool or folder."""
    return catalogue(source)


@task(name="assemble-cycles", cache_policy=NO_CACHE)
def assemble_task(instances: list[CataloguedInstance]) -> list[CycleStudy]:
    """Group instances into treatment cycles with ordered time points."""
    return assemble_cycles(instances)


@task(name="quantify", cache_policy=NO_CACHE)
def quantify_task(cycle: CycleStudy, calibration: CalibrationRecord) -> CycleTimeActivity:
    """Activity per VOI and time point."""
    return quantify_cycle(cycle, calibration)


@task(name="kinetics", cache_policy=NO_CACHE)
def kinetics_task(tac: CycleTimeActivity, methods: Sequence[str]) -> list[KineticsBatch]:
    """TIA of every VOI by every requested kinetics method."""
    voi_types = [str(kind) for kind in tac.voi_types]
    return [
        KINETICS_METHODS.get(name).fit(tac.time_h, tac.activity_mbq, voi_types=voi_types)
        for name in methods
    ]


@task(name="dose", cache_policy=NO_CACHE)
def dose_task(
    tac: CycleTimeActivity, kinetics: list[KineticsBatch], methods: Sequence[str]
) -> list[tuple[KineticsBatch, DoseBatch]]:
    """Mean dose of every VOI for every (kinetics method, dose method) pair."""
    return [
        (
            batch,
            DOSE_METHODS.get(name).compute(
                DoseInput(labels=tac.labels, tia_mbq_h=batch.tia_mbq_h, mass_g=tac.mass_g)
            ),
        )
        for batch in kinetics
        for name in methods
    ]


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


@task(name="publish", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def publish_task(
    store: ObjectStore, tables: dict[str, list[pa.Table]], provenance: Provenance
) -> PublishedRun:
    """Write the run's Parquet objects and, last, its manifest."""
    return publish_tables(store, tables, provenance)
