"""Flows ``sweep`` and ``process-spool``: ``process-cycle`` mapped over a spool's cycles.

* ``sweep`` (deployed with a nightly schedule, and ``concordose sweep``) runs the cycles that
  need it: complete but unprocessed, failed, or held for a reason that has gone away (the gate
  is re-run cheaply — headers only — on each held cycle: a missing CT/SEG that arrived, a
  calibration record that now covers the date); then rebuilds ``dose_prediction`` from the
  spool's pre-therapy PET studies (:func:`flows.cohort.refresh_dose_prediction`, also after
  ``process-spool``) and the consortium dashboard (:mod:`flows.dashboard`; a failure of either
  is logged, never a failed sweep).
* ``process-spool`` (``concordose process``, the demo) runs every complete cycle of a spool or
  folder, whatever its state (re-running replaces rows).

Cycles are mapped over ``process-cycle`` runs (one child run each) at most
``max_concurrent_cycles`` at a time and only while their estimated working sets
(:mod:`concordose.pipeline.working_set`) fit the memory budget together, so a backlog cannot
exhaust memory; one cycle's failure fails its own run only and is reported in the result.
After all of them, both flows rebuild the cohort tables once and then build the report of each
cycle that published (its run published the image products only: one report build per cycle,
showing the cohort tables with its cycle; :func:`flows.cohort.build_cycle_reports`).

With ``task_runner`` ``dask`` or ``dask:ADDRESS`` (:mod:`flows.task_runners`) the cycles go to
a Dask cluster instead: a child flow ``cycles-on-dask`` runs with prefect-dask's
``DaskTaskRunner`` and maps the same ``run-cycle`` task over the cycles, as many at a time as
the cluster has worker threads (or ``max_concurrent_cycles`` when given; the workers' own
memory limits replace the local budget), and each cycle's voxel chunks (fits, convolution
slabs) spread over the same cluster (:mod:`tasks.voxel_chunks`). Same tables as the default
runner (floats to their last bits: ``tests/integration/test_dask_runner.py`` says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

import concordose.flows.process_cycle as cycle_flow
from concordose.calibration.registry import SiteRegistry
from concordose.errors import ConcordoseError
from concordose.flows.cohort import (
    ReportOutcome,
    build_cycle_reports,
    refresh_cohort_tables,
    refresh_dose_prediction,
)
from concordose.flows.dashboard import DashboardOutcome, refresh_dashboard
from concordose.flows.process_cycle import (
    OUTCOME_HELD,
    OUTCOME_PROCESSED,
    CycleRunResult,
)
from concordose.flows.task_runners import dask_cluster_threads, dask_task_runner
from concordose.pipeline.assembly import assemble_cycle
from concordose.pipeline.catalogue import CycleSource
from concordose.pipeline.preparation import prepare_cycle
from concordose.pipeline.working_set import estimate_working_set, memory_budget_bytes
from concordose.settings import TASK_RUNNER_DEFAULT, Settings, resolve_task_runner
from concordose.spool.cycles import CycleRecord, CycleState, due_for_processing
from concordose.tasks.cycle import import_raw_outcomes_task

MAX_TASK_RUNNER_WORKERS = 8
"""Thread pool size of the sweep flows; the effective limit is ``max_concurrent_cycles``."""


@dataclass(frozen=True)
class CycleOptions:
    """How every cycle of a sweep is processed (see :func:`flows.process_cycle.process_cycle`)."""

    output_uri: str | None = None
    site_id: str | None = None
    kinetics_methods: tuple[str, ...] | None = None
    dose_methods: tuple[str, ...] | None = None
    voxel_dosimetry: bool = True
    task_runner: str = TASK_RUNNER_DEFAULT

    @classmethod
    def from_parameters(
        cls,
        *,
        output_uri: str | None,
        site_id: str | None,
        kinetics_methods: Sequence[str] | None,
        dose_methods: Sequence[str] | None,
        voxel_dosimetry: bool,
        task_runner: str | None,
    ) -> CycleOptions:
        """The options from a flow's parameters (method lists copied to tuples; the task
        runner resolved from ``CONCORDOSE_TASK_RUNNER`` when None)."""
        return cls(
            output_uri,
            site_id,
            None if kinetics_methods is None else tuple(kinetics_methods),
            None if dose_methods is None else tuple(dose_methods),
            voxel_dosimetry,
            resolve_task_runner(task_runner),
        )


@dataclass(frozen=True)
class CycleRuns:
    """The cycle runs of a sweep: those that completed, and cycle id → reason for the others."""

    runs: tuple[CycleRunResult, ...]
    failed: dict[str, str]


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did, per cycle.

    Attributes:
        runs: the result of every cycle run that completed (processed, held or skipped).
        failed: cycle id → reason, for runs that failed.
        considered: cycles in the source.
        receiving: cycles left alone because a time point of theirs is still receiving.
        dashboard: the consortium dashboard's rebuild (``sweep`` only; None for
            ``process-spool``): where it was written, or why it was not.
    """

    runs: tuple[CycleRunResult, ...]
    failed: dict[str, str]
    considered: int
    receiving: int = 0
    dashboard: DashboardOutcome | None = None

    @property
    def processed(self) -> tuple[CycleRunResult, ...]:
        """Runs that published a processed cycle."""
        return tuple(run for run in self.runs if run.outcome == OUTCOME_PROCESSED)

    @property
    def held(self) -> tuple[CycleRunResult, ...]:
        """Runs that held their cycle."""
        return tuple(run for run in self.runs if run.outcome == OUTCOME_HELD)

    @property
    def tables(self) -> dict[str, pa.Table]:
        """Every published table of the sweep, concatenated over cycles."""
        parts: dict[str, list[pa.Table]] = {}
        for run in self.runs:
            for name, table in run.tables.items():
                parts.setdefault(name, []).append(table)
        return {name: pa.concat_tables(tables) for name, tables in parts.items()}


@task(name="run-cycle", cache_policy=NO_CACHE)
def run_cycle_task(
    source: Path, sites_file: Path, record: CycleRecord, options: CycleOptions
) -> CycleRunResult:
    """One ``process-cycle`` run (a child flow run) for ``record``'s current content."""
    # Through the module: under Dask this function is pickled by value with only the globals
    # it names, and a module is pickled by reference, so the worker's flow keeps its own
    # module's globals (Prefect resolves its parameters' annotations there).
    return cycle_flow.process_cycle(
        source,
        sites_file,
        record.cycle_id,
        content_revision=record.members.content_revision,
        output_uri=options.output_uri,
        site_id=options.site_id,
        kinetics_methods=options.kinetics_methods,
        dose_methods=options.dose_methods,
        voxel_dosimetry=options.voxel_dosimetry,
        refresh_cohort=False,  # rebuilt once after all the sweep's cycles (_run_cycles),
        build_report=False,  # and then the reports of the cycles that published, once
        task_runner=options.task_runner,
    )


def _with_report(run: CycleRunResult, reports: dict[str, ReportOutcome]) -> CycleRunResult:
    """``run`` with the report the sweep built for it (its own run's image error kept first)."""
    built = reports.get(run.cycle_key) if run.cycle_key is not None else None
    if built is None:
        return run
    return replace(run, report_path=built.path, report_error=run.report_error or built.error)


@task(name="select-cycles", cache_policy=NO_CACHE)
def select_cycles_task(
    source: Path, sites_file: Path, site_id: str | None, every_cycle: bool
) -> tuple[list[CycleRecord], int, int]:
    """The cycles to run, how many the source holds, and how many are still receiving."""
    cycle_source = CycleSource(source)
    records = cycle_source.cycles()
    receiving = sum(r.state is CycleState.RECEIVING for r in records)
    if every_cycle:
        return [r for r in records if r.state is not CycleState.RECEIVING], len(records), receiving
    registry = SiteRegistry.load(sites_file)
    selected = []
    for record in records:
        if due_for_processing(record):
            selected.append(record)
        elif record.state is CycleState.HELD:
            recheck = prepare_cycle(
                cycle_source.instances(record.members), registry, site_id=site_id, read_vois=False
            )
            if not recheck.held:
                selected.append(record)
    return selected, len(records), receiving


@task(name="estimate-working-sets", cache_policy=NO_CACHE)
def estimate_sizes_task(source: Path, records: list[CycleRecord]) -> list[float]:
    """Each cycle's estimated working set, bytes, from headers (0 for a cycle that cannot be
    assembled: it will be held without loading anything)."""
    cycle_source = CycleSource(source)
    sizes = []
    for record in records:
        try:
            study = assemble_cycle(cycle_source.instances(record.members))
        except ConcordoseError:
            sizes.append(0.0)
            continue
        sizes.append(estimate_working_set(study).estimated_bytes)
    return sizes


def batches_within_budget(
    records: list[CycleRecord], sizes: list[float], limit: int, budget_bytes: float
) -> list[list[CycleRecord]]:
    """Consecutive batches of at most ``limit`` cycles whose estimated working sets fit the
    memory budget together (a cycle larger than the budget alone goes in a batch of its own:
    its run holds it)."""
    batches: list[list[CycleRecord]] = []
    current: list[CycleRecord] = []
    total = 0.0
    for record, size in zip(records, sizes, strict=True):
        if current and (len(current) == limit or total + size > budget_bytes):
            batches.append(current)
            current, total = [], 0.0
        current.append(record)
        total += size
    if current:
        batches.append(current)
    return batches


def _run_batches(
    source: Path, sites_file: Path, options: CycleOptions, batches: list[list[CycleRecord]]
) -> CycleRuns:
    """``run-cycle`` mapped over each batch in turn, with the current flow's task runner."""
    logger = get_run_logger()
    runs: list[CycleRunResult] = []
    failed: dict[str, str] = {}
    for batch in batches:
        futures = run_cycle_task.map(
            unmapped(source), unmapped(sites_file), batch, unmapped(options)
        )
        futures.wait()
        for record, future in zip(batch, futures, strict=True):
            outcome = future.state.result(raise_on_failure=False)
            if isinstance(outcome, CycleRunResult):
                runs.append(outcome)
            else:
                failed[record.cycle_id] = f"{type(outcome).__name__}: {outcome}"
                logger.error("cycle %s failed: %s", record.cycle_id, failed[record.cycle_id])
    return CycleRuns(tuple(runs), failed)


@flow(name="cycles-on-dask")
def cycles_on_dask(
    source: Path,
    sites_file: Path,
    records: list[CycleRecord],
    options: CycleOptions,
    max_concurrent_cycles: int | None = None,
) -> CycleRuns:
    """The sweep's cycles on the Dask cluster of this flow's ``DaskTaskRunner`` (started with
    :func:`flows.task_runners.dask_task_runner`): as many at a time as the cluster has worker
    threads, or ``max_concurrent_cycles``."""
    limit = max_concurrent_cycles or dask_cluster_threads()
    get_run_logger().info(
        "%d cycle(s) on the Dask cluster, at most %d at a time", len(records), limit
    )
    batches = [records[start : start + limit] for start in range(0, len(records), limit)]
    return _run_batches(source, sites_file, options, batches)


def _run_cycles(
    source: Path,
    sites_file: Path,
    options: CycleOptions,
    *,
    every_cycle: bool,
    max_concurrent_cycles: int | None,
    dashboard: bool = False,
) -> SweepResult:
    logger = get_run_logger()
    on_dask = options.task_runner != TASK_RUNNER_DEFAULT
    limit = max_concurrent_cycles or Settings().max_concurrent_cycles
    # the thread pool has MAX_TASK_RUNNER_WORKERS threads; a Dask cluster has its own
    if limit < 1 or (not on_dask and limit > MAX_TASK_RUNNER_WORKERS):
        raise ValueError(
            f"max_concurrent_cycles must be within 1..{MAX_TASK_RUNNER_WORKERS}, found {limit}"
        )
    selected, considered, receiving = select_cycles_task(
        source, sites_file, options.site_id, every_cycle
    )
    if on_dask:
        logger.info(
            "%d of %d cycle(s) in %s to run on Dask (%s)",
            len(selected),
            considered,
            source,
            options.task_runner,
        )
        done = (
            cycles_on_dask.with_options(task_runner=dask_task_runner(options.task_runner))(
                source, sites_file, selected, options, max_concurrent_cycles
            )
            if selected
            else CycleRuns((), {})
        )
    else:
        logger.info(
            "%d of %d cycle(s) in %s to run, at most %d at a time",
            len(selected),
            considered,
            source,
            limit,
        )
        sizes = estimate_sizes_task(source, selected) if limit > 1 else [0.0] * len(selected)
        budget = memory_budget_bytes(Settings().memory_budget_gb)
        batches = batches_within_budget(selected, sizes, limit, budget)
        done = _run_batches(source, sites_file, options, batches)
    runs, failed = list(done.runs), done.failed
    logger.info(
        "%d processed, %d held, %d failed",
        sum(run.outcome == OUTCOME_PROCESSED for run in runs),
        sum(run.outcome == OUTCOME_HELD for run in runs),
        len(failed),
    )
    # once, after every cycle of the sweep (its cycle runs do not rebuild them each), then the
    # reports of the cycles that published (processed or held), so that they show the cohort
    # tables with their cycle
    if selected:
        refresh_cohort_tables(options.output_uri)
    reports = build_cycle_reports(
        options.output_uri,
        [run.cycle_key for run in runs if run.published is not None and run.cycle_key is not None],
    )
    runs = [_with_report(run, reports) for run in runs]
    # every sweep: pre-therapy PET studies arrive without a cycle to run (issue 20, item 3)
    refresh_dose_prediction(source, sites_file, options.output_uri)
    # every night, whether or not this sweep ran a cycle: cycles the receiver triggered during
    # the day published their rows and cohort tables without rebuilding the dashboard
    outcome = refresh_dashboard(options.output_uri) if dashboard else None
    return SweepResult(tuple(runs), failed, considered, receiving, outcome)


def cycle_task_runner() -> TaskRunner[PrefectFuture[Any]]:
    """The sweep flows' task runner: threads, at most :data:`MAX_TASK_RUNNER_WORKERS`."""
    # Prefect types TaskRunner invariantly in its future type; the thread runner is one.
    return cast(
        "TaskRunner[PrefectFuture[Any]]",
        ThreadPoolTaskRunner(max_workers=MAX_TASK_RUNNER_WORKERS),
    )


@flow(name="sweep", task_runner=cycle_task_runner())
def sweep(
    source: Path,
    sites_file: Path,
    *,
    output_uri: str | None = None,
    site_id: str | None = None,
    kinetics_methods: Sequence[str] | None = None,
    dose_methods: Sequence[str] | None = None,
    voxel_dosimetry: bool = True,
    max_concurrent_cycles: int | None = None,
    task_runner: str | None = None,
) -> SweepResult:
    """Run every cycle that needs it (see the module docstring); ``max_concurrent_cycles``
    defaults to ``CONCORDOSE_MAX_CONCURRENT_CYCLES`` (with Dask: the cluster's worker
    threads); methods default to each cycle's site protocol's
    (:func:`flows.process_cycle.process_cycle`). ``task_runner``: ``default``, ``dask`` or
    ``dask:ADDRESS`` (:mod:`flows.task_runners`); None: ``CONCORDOSE_TASK_RUNNER``.

    With a raw store (``CONCORDOSE_RAW_STORE_URI``), the outcomes workers recorded there are
    first recorded in the spool, so cycles a worker without the spool already ran are not run
    again."""
    imported = import_raw_outcomes_task(source)
    if imported:
        get_run_logger().info("%d outcome(s) from the raw store recorded in the spool", imported)
    options = CycleOptions.from_parameters(
        output_uri=output_uri,
        site_id=site_id,
        kinetics_methods=kinetics_methods,
        dose_methods=dose_methods,
        voxel_dosimetry=voxel_dosimetry,
        task_runner=task_runner,
    )
    return _run_cycles(
        source,
        sites_file,
        options,
        every_cycle=False,
        max_concurrent_cycles=max_concurrent_cycles,
        dashboard=True,
    )


@flow(name="process-spool", task_runner=cycle_task_runner())
def process_spool(
    source: Path,
    sites_file: Path,
    *,
    output_uri: str | None = None,
    site_id: str | None = None,
    kinetics_methods: Sequence[str] | None = None,
    dose_methods: Sequence[str] | None = None,
    voxel_dosimetry: bool = True,
    max_concurrent_cycles: int | None = None,
    task_runner: str | None = None,
) -> SweepResult:
    """Run every complete cycle of a spool or folder, whatever its state (re-runs replace
    rows). Arguments as :func:`sweep`."""
    options = CycleOptions.from_parameters(
        output_uri=output_uri,
        site_id=site_id,
        kinetics_methods=kinetics_methods,
        dose_methods=dose_methods,
        voxel_dosimetry=voxel_dosimetry,
        task_runner=task_runner,
    )
    return _run_cycles(
        source,
        sites_file,
        options,
        every_cycle=True,
        max_concurrent_cycles=max_concurrent_cycles,
    )
