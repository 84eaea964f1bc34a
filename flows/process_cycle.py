"""Flow ``process-cycle``: one treatment cycle, from its DICOM instances to published Parquet.

The unit of work. It reads only the cycle's instances (from the spool index, or a folder), so its
cost does not grow with the spool. Steps: prepare (assemble, read VOIs, gate — once) → either
*held* (its findings published to ``qc_findings``, the spool records ``held`` with the reason)
or quantification → kinetics (every method of the run) → dose (every dose method on every
TIA) → voxel dosimetry (site protocol) → tables → one publication → the spool records
``processed``. The methods are the cycle's site protocol's (``kinetics_methods``,
``dose_methods``, ``reference_method``) unless the run overrides them. A science failure
records ``failed`` with the reason and fails this run only. After publication (and the cohort
tables) the cycle's report is built from the published rows and written to
``_reports/cycles/<cycle_key>.html`` with its image products; a report failure is a warning in
the run's summary artifact, never a failed cycle.

Re-running a cycle replaces its rows (publication is scoped by ``cycle_key``). A run started for
an older content revision (the cycle changed since its event) or while a time point is still
receiving does nothing and says so: the newer event's run covers it.

Given a ``manifest_uri`` (the receiver uploaded the cycle to the raw store, issue 19), the run
needs no spool: it streams the cycle's instances into a temporary folder (each checked against
its SHA-256), processes them as above, records its outcome in the raw store (and in the spool
only if this worker sees it) and removes the folder. A run whose manifest was superseded by a
newer one of the same cycle does nothing.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from concordose.calibration.findings import Finding
from concordose.calibration.protocol import load_protocol
from concordose.calibration.registry import SiteRegistry
from concordose.dose.voxel_dosimetry import LesionDoseSlice
from concordose.flows.cohort import refresh_cohort_tables
from concordose.observability.metrics import record_cycle_run
from concordose.payloads import ManifestError, RawStore, StagedCycle
from concordose.pipeline.catalogue import CycleSource
from concordose.pipeline.preparation import PreparedCycle, cycle_identity
from concordose.report import CycleImages, cycle_report_key
from concordose.results.calibration_table import build_site_calibrations
from concordose.results.cycle_summary import build_cycle_findings
from concordose.results.cycle_tables import CycleIdentity
from concordose.results.object_store import ObjectStore, open_object_store
from concordose.results.provenance import Provenance, new_run_id
from concordose.results.publish import PublishedRun
from concordose.settings import TASK_RUNNER_DEFAULT, Settings, resolve_task_runner
from concordose.spool.cycles import CycleMembers, CycleState
from concordose.tasks.cycle import (
    cycle_instances_task,
    cycle_number_task,
    find_cycle_task,
    open_manifest_task,
    prepare_task,
    record_outcome_task,
    stage_cycle_task,
)
from concordose.tasks.report import cycle_images_task, cycle_report_task, report_images_task
from concordose.tasks.study import (
    dose_task,
    held_findings_task,
    kinetics_task,
    publish_task,
    quantify_task,
    summary_tables_task,
    tables_task,
    voxel_dose_task,
    voxel_tables_task,
)

OUTCOME_PROCESSED = "processed"
OUTCOME_HELD = "held"
OUTCOME_SKIPPED = "skipped"


@dataclass(frozen=True)
class CycleRunResult:
    """What one ``process-cycle`` run did.

    Attributes:
        cycle_id: the cycle (keyed hash; no identifier).
        outcome: ``processed``, ``held`` or ``skipped``.
        reason: why it was held or skipped.
        published: the publication (processed, or held with its findings), if any.
        tables: the published tables, for display.
        findings: every QC finding of the cycle.
        cycle_key: the cycle's published key (keyed hash), when prepared.
        report_path: where its report was published (``_reports/cycles/<cycle_key>.html``).
        report_error: why the report could not be built (the cycle's publication stands).
    """

    cycle_id: str
    outcome: str
    reason: str | None = None
    published: PublishedRun | None = None
    tables: dict[str, pa.Table] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    cycle_key: str | None = None
    report_path: str | None = None
    report_error: str | None = None


@dataclass(frozen=True)
class ReportInputs:
    """What the report step after publication needs from the processing step."""

    store: ObjectStore
    cycle_key: str
    images: CycleImages | None


def _held_tables(
    prepared: PreparedCycle, identity: CycleIdentity, provenance: Provenance
) -> dict[str, list[pa.Table]]:
    if prepared.study is not None and prepared.verdict is not None:
        return {
            "qc_findings": [
                held_findings_task(identity, prepared.study, prepared.verdict, provenance)
            ]
        }
    return {"qc_findings": [build_cycle_findings(identity, prepared.findings, provenance)]}


def _science_tables(
    prepared: PreparedCycle,
    identity: CycleIdentity,
    provenance: Provenance,
    *,
    kinetics_methods: Sequence[str] | None,
    dose_methods: Sequence[str] | None,
    voxel_dosimetry: bool,
    cache_dir: Path | None,
    protocol_dir: Path | None,
    task_runner: str = TASK_RUNNER_DEFAULT,
) -> tuple[dict[str, list[pa.Table]], CycleImages | None]:
    study, verdict = prepared.study, prepared.verdict
    assert study is not None
    assert verdict is not None
    assert verdict.site is not None
    assert verdict.calibration is not None
    site, calibration = verdict.site, verdict.calibration
    collected: dict[str, list[pa.Table]] = defaultdict(list)
    lesion_slices: tuple[LesionDoseSlice, ...] = ()
    methods = load_protocol(site.site_id, protocol_dir).run_methods(kinetics_methods, dose_methods)
    tac = quantify_task(
        study, calibration, site.site_id, prepared.vois, cache_dir, protocol_dir=protocol_dir
    )
    kinetics = kinetics_task(tac, methods.kinetics_methods, verdict.injected_activity_mbq)
    doses = dose_task(tac, kinetics, methods.dose_methods)
    for name, table in tables_task(identity, tac, kinetics, doses, provenance).items():
        collected[name].append(table)
    summaries = summary_tables_task(
        identity,
        study,
        verdict,
        tac,
        doses,
        provenance=provenance,
        reference_method=methods.reference_method,
    )
    for name, table in summaries.items():
        collected[name].append(table)
    if voxel_dosimetry:
        voxel = voxel_dose_task(
            study,
            calibration,
            tac,
            site.site_id,
            prepared.vois,
            cache_dir=cache_dir,
            protocol_dir=protocol_dir,
            task_runner=task_runner,
        )
        if voxel is not None:
            lesion_slices = voxel.lesion_slices
            voxel_tables = voxel_tables_task(
                identity, study, tac, voxel, provenance, calibration=calibration
            )
            for name, table in voxel_tables.items():
                collected[name].append(table)
    collected["site_calibrations"].append(
        build_site_calibrations([(site.site_id, calibration)], provenance)
    )
    images: CycleImages | None = None
    try:
        images = report_images_task(
            study, calibration, tac.alignments, prepared.vois, lesion_slices
        )
    except Exception as exc:  # the report's images are optional: the report says so
        get_run_logger().warning("cycle report images not made: %s: %s", type(exc).__name__, exc)
    return dict(collected), images


def _summary_markdown(
    result: CycleRunResult, site_id: str, pending_report: str | None = None
) -> str:
    """The run's markdown artifact; ``pending_report``: where the sweep will publish the
    report of a run that deferred it (``build_report=False``)."""
    lines = [
        f"# Cycle `{result.cycle_id}` at site `{site_id}`: **{result.outcome}**",
        "",
    ]
    if result.reason:
        lines += [f"Reason: {result.reason}", ""]
    if result.published is not None:
        lines += [
            f"Published run `{result.published.run_id}` "
            f"({len(result.published.objects)} object(s)); manifest "
            f"`{result.published.manifest_path}`.",
            "",
        ]
    report = result.report_path or (
        pending_report if result.published is not None and not result.report_error else None
    )
    if report is not None:
        link = report if "://" in report else f"file://{report}"
        when = " (built by the sweep after its cohort tables)" if result.report_path is None else ""
        lines += [f"Report: [{report}]({link}){when}", ""]
    elif result.report_error is not None:
        lines += [f"Report not built: {result.report_error}", ""]
    if result.tables:
        lines += ["| table | rows |", "|---|---|"]
        lines += [f"| {name} | {table.num_rows} |" for name, table in sorted(result.tables.items())]
    return "\n".join(lines)


def _process(
    source: Path,
    sites_file: Path,
    members: CycleMembers,
    staged: StagedCycle | None,
    *,
    output_uri: str | None,
    site_id: str | None,
    kinetics_methods: Sequence[str] | None,
    dose_methods: Sequence[str] | None,
    voxel_dosimetry: bool,
    task_runner: str = TASK_RUNNER_DEFAULT,
) -> tuple[CycleRunResult, str, ReportInputs]:
    """Prepare, then hold (publish the findings) or process (publish the tables); record the
    outcome. The cycle's instances are the spool's (``source``), or ``staged`` ones downloaded
    from the raw store. Returns the result, the cycle's site and what its report needs."""
    logger = get_run_logger()
    cycle_id = members.cycle_id
    settings = Settings()
    registry = SiteRegistry.load(sites_file)
    raw: RawStore | None = None
    if staged is None:
        instances = cycle_instances_task(source, members)
        number = cycle_number_task(source, members)
        cache_dir = CycleSource(source).cache_dir
    else:  # from the raw store: the temporary folder is no cache worth keeping
        instances, number, cache_dir, raw = staged.instances, staged.cycle_number, None, staged.raw
    prepared = prepare_task(instances, registry, site_id)
    identity = cycle_identity(
        members,
        prepared,
        registry,
        settings.pseudonym_key,
        site_id=site_id,
        cycle_number=number,
    )
    store = open_object_store(output_uri or settings.output_uri, settings)
    provenance = Provenance(run_id=new_run_id(), flow_run_id=flow_run.get_id())
    images: CycleImages | None = None
    if prepared.held:
        held_reason = prepared.held_reason
        logger.warning("cycle %s held: %s", cycle_id, held_reason)
        tables = _held_tables(prepared, identity, provenance)
        published = publish_task(store, tables, provenance)
        record_outcome_task(
            source, members, CycleState.HELD, held_reason, published.run_id, raw=raw
        )
        outcome, reason = OUTCOME_HELD, held_reason
    else:
        tables, images = _science_tables(
            prepared,
            identity,
            provenance,
            kinetics_methods=kinetics_methods,
            dose_methods=dose_methods,
            voxel_dosimetry=voxel_dosimetry,
            cache_dir=cache_dir,
            protocol_dir=registry.protocol_dir,
            task_runner=task_runner,
        )
        published = publish_task(store, tables, provenance)
        record_outcome_task(source, members, CycleState.PROCESSED, None, published.run_id, raw=raw)
        assert prepared.study is not None
        logger.info(
            "cycle %s at site %s: %d time point(s), published run %s",
            cycle_id,
            identity.site_id,
            len(prepared.study.time_points),
            published.run_id,
        )
        outcome, reason = OUTCOME_PROCESSED, None
    result = CycleRunResult(
        cycle_id,
        outcome,
        reason,
        published,
        {name: pa.concat_tables(parts) for name, parts in tables.items()},
        prepared.findings,
        cycle_key=identity.cycle_key,
    )
    return result, identity.site_id, ReportInputs(store, identity.cycle_key, images)


def with_report(
    result: CycleRunResult, inputs: ReportInputs, *, build_report: bool = True
) -> CycleRunResult:
    """Build and publish the cycle's report (or, without ``build_report``, its image products
    only: the caller builds the report later); a failure is a warning recorded in the result,
    never a failed cycle (its tables are already published)."""
    path: str | None = None  # until the caller builds it, without build_report
    try:
        if build_report:
            path = cycle_report_task(inputs.store, inputs.cycle_key, inputs.images)
        elif inputs.images is not None:
            cycle_images_task(inputs.store, inputs.cycle_key, inputs.images)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
        what = "report" if build_report else "report images"
        get_run_logger().warning("cycle %s: %s not built: %s", result.cycle_id, what, error)
        return replace(result, report_error=error)
    return replace(result, report_path=path)


@flow(name="process-cycle", flow_run_name="cycle-{cycle_id}")
def process_cycle(
    source: Path,
    sites_file: Path,
    cycle_id: str,
    *,
    content_revision: str | None = None,
    output_uri: str | None = None,
    site_id: str | None = None,
    kinetics_methods: Sequence[str] | None = None,
    dose_methods: Sequence[str] | None = None,
    voxel_dosimetry: bool = True,
    refresh_cohort: bool = True,
    build_report: bool = True,
    manifest_uri: str | None = None,
    task_runner: str | None = None,
) -> CycleRunResult:
    """Process one cycle of ``source`` and publish its tables (see the module docstring).

    Args:
        source: a spool folder (with index) or any folder of DICOM files.
        sites_file: the site registry (YAML).
        cycle_id: the cycle (``concordose spool status`` lists them).
        content_revision: the cycle's content revision the triggering event saw; a run for an
            older revision is skipped (the newer event's run covers it). None: process as is.
        output_uri: where to publish; default from settings (``CONCORDOSE_OUTPUT_URI``).
        site_id: the site of the files when ``source`` is not a spool.
        kinetics_methods, dose_methods: registry names of the methods to run side by side (or
            ``["all"]``); None (default): the cycle's site protocol's. The protocol's reference
            method is always run (added when missing).
        voxel_dosimetry: run voxel dosimetry where the site protocol enables it.
        refresh_cohort: rebuild the cohort tables after a processed cycle (a sweep passes
            False and rebuilds them once, after all its cycles).
        build_report: build the cycle's report after its tables (and the cohort tables); False
            publishes its image products only (a sweep builds every cycle's report once, after
            the cohort tables it rebuilds last, instead of a report its cohort tables outdate).
        manifest_uri: the cycle's manifest in the raw store (``CONCORDOSE_RAW_STORE_URI``,
            set by the receiver's hook): the instances come from there into a temporary folder,
            and ``source`` is read only if this worker sees it. None: read the spool.
        task_runner: where the voxel fits' and convolutions' chunks run: ``default`` (here),
            ``dask`` or ``dask:ADDRESS`` (:mod:`tasks.voxel_chunks`; same results); None:
            ``CONCORDOSE_TASK_RUNNER``.

    Raises:
        ManifestError, RawObjectMissingError, PayloadHashMismatchError: a manifest that cannot
            be run from (nothing processed).
        Exception: a science or publication failure, after recording ``failed`` in the spool
            (and in the raw store for a run from a manifest).
    """
    logger = get_run_logger()
    runner = resolve_task_runner(task_runner)
    with ExitStack() as cleanup:
        staged: StagedCycle | None = None
        if manifest_uri is None:
            record = find_cycle_task(source, cycle_id)
            members = record.members
            if content_revision is not None and content_revision != members.content_revision:
                reason = f"superseded: content is now revision {members.content_revision}"
                logger.info("cycle %s %s", cycle_id, reason)
                return CycleRunResult(cycle_id, OUTCOME_SKIPPED, reason)
            if record.state is CycleState.RECEIVING:
                reason = "a time point of the cycle is still receiving"
                logger.info("cycle %s skipped: %s", cycle_id, reason)
                return CycleRunResult(cycle_id, OUTCOME_SKIPPED, reason)
        else:
            raw, manifest, newer = open_manifest_task(manifest_uri)
            if manifest.cycle_id != cycle_id or content_revision not in (
                None,
                manifest.content_revision,
            ):
                raise ManifestError(
                    f"manifest {manifest_uri}: expected cycle {cycle_id} revision "
                    f"{content_revision}, found cycle {manifest.cycle_id} revision "
                    f"{manifest.content_revision}"
                )
            if newer is not None:
                reason = f"superseded: the raw store holds revision {newer}"
                logger.info("cycle %s %s", cycle_id, reason)
                return CycleRunResult(cycle_id, OUTCOME_SKIPPED, reason)
            folder = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="concordose-cycle-"))
            staged = stage_cycle_task(raw, manifest, Path(folder))
            members = staged.members
        started_s = time.monotonic()  # issue 19: concordose_cycle_processing_seconds
        try:
            result, site_name, report_inputs = _process(
                source,
                sites_file,
                members,
                staged,
                output_uri=output_uri,
                site_id=site_id,
                kinetics_methods=kinetics_methods,
                dose_methods=dose_methods,
                voxel_dosimetry=voxel_dosimetry,
                task_runner=runner,
            )
        except Exception as exc:
            # Recorded so that `spool status` shows it and the sweep retries it; nothing was
            # published (validation and the manifest come last).
            failure = f"{type(exc).__name__}: {exc}"[:2000]
            raw_store = staged.raw if staged is not None else None
            record_outcome_task(source, members, CycleState.FAILED, failure, raw=raw_store)
            record_cycle_run(CycleState.FAILED, time.monotonic() - started_s)  # issue 19
            raise
        record_cycle_run(CycleState(result.outcome), time.monotonic() - started_s)  # issue 19
    if refresh_cohort and result.outcome == OUTCOME_PROCESSED:
        refresh_cohort_tables(output_uri)  # kinetics_agreement, dose_agreement (issue 14)
    # after the cohort tables, so the report shows this cycle's threshold concordance rows
    result = with_report(result, report_inputs, build_report=build_report)
    create_markdown_artifact(
        _summary_markdown(
            result,
            site_name,
            None
            if build_report
            else report_inputs.store.path(cycle_report_key(report_inputs.cycle_key)),
        ),
        key=f"cycle-{cycle_id}",
        description=f"process-cycle {result.outcome}",
    )
    return result
