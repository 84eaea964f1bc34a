"""Flow ``process-spool``: every treatment cycle in a spool, from DICOM to published Parquet.

Steps per cycle: metadata checks and calibration gate (held cycles are skipped, their findings
reported) → quantification → kinetics (every requested
method) → dose (every requested method on every TIA) → voxel dosimetry (site protocol) → tables;
then one publication for the run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from concordose.calibration.findings import Finding
from concordose.calibration.registry import CalibrationRecord, SiteRegistry
from concordose.dicom.pseudonym import cycle_key, subject_key
from concordose.results.calibration_table import build_site_calibrations
from concordose.results.cycle_tables import CycleIdentity
from concordose.results.object_store import open_object_store
from concordose.results.provenance import Provenance, new_run_id
from concordose.results.publish import PublishedRun
from concordose.settings import Settings
from tasks.study import (
    assemble_task,
    catalogue_task,
    dose_task,
    gate_task,
    held_findings_task,
    kinetics_task,
    publish_task,
    quantify_task,
    summary_tables_task,
    tables_task,
    voxel_dose_task,
    voxel_tables_task,
)

DEFAULT_KINETICS_METHODS = ("mono_exponential",)
DEFAULT_DOSE_METHODS = ("sphere",)
UNKNOWN_SITE = "unknown"


@dataclass(frozen=True)
class SpoolRunResult:
    """What a run published, plus the tables for display."""

    published: PublishedRun
    tables: dict[str, pa.Table]
    findings: tuple[Finding, ...] = ()
    held_cycles: int = 0


@flow(name="process-spool")
def process_spool(
    source: Path,
    sites_file: Path,
    *,
    output_uri: str | None = None,
    site_id: str | None = None,
    kinetics_methods: Sequence[str] = DEFAULT_KINETICS_METHODS,
    dose_methods: Sequence[str] = DEFAULT_DOSE_METHODS,
    voxel_dosimetry: bool = True,
) -> SpoolRunResult:
    """Process every cycle found in ``source`` and publish the results.

    Args:
        source: a spool folder (with index) or any folder of DICOM files.
        sites_file: the site registry (YAML).
        output_uri: where to publish; default from settings (``CONCORDOSE_OUTPUT_URI``).
        site_id: the site of the files when ``source`` is not a spool.
        kinetics_methods, dose_methods: registry names of the methods to run side by side.
        voxel_dosimetry: run voxel dosimetry where the site protocol enables it
            (``voxel_dosimetry:`` in ``schemas/protocols/``); False skips it for every site.
    """
    logger = get_run_logger()
    settings = Settings()
    registry = SiteRegistry.load(sites_file)
    store = open_object_store(output_uri or settings.output_uri, settings)
    provenance = Provenance(run_id=new_run_id(), flow_run_id=flow_run.get_id())

    cycles = assemble_task(catalogue_task(source))
    logger.info("found %d cycle(s) in %s", len(cycles), source)
    collected: dict[str, list[pa.Table]] = defaultdict(list)
    findings: list[Finding] = []
    held = 0
    calibrations_used: list[tuple[str, CalibrationRecord]] = []
    for cycle in cycles:
        verdict = gate_task(cycle, registry, site_id)
        findings.extend(verdict.findings)
        identity = CycleIdentity(
            subject_key=subject_key(cycle.patient_id, settings.pseudonym_key),
            cycle_key=cycle_key(
                cycle.patient_id, cycle.injection_datetime.isoformat(), settings.pseudonym_key
            ),
            site_id=verdict.site.site_id if verdict.site else UNKNOWN_SITE,
        )
        if verdict.held or verdict.calibration is None or verdict.site is None:
            held += 1
            logger.warning(
                "cycle %s held: %s",
                identity.cycle_key,
                "; ".join(str(f) for f in verdict.findings if f.severity == "error"),
            )
            collected["qc_findings"].append(
                held_findings_task(identity, cycle, verdict, provenance)
            )
            continue
        site, calibration = verdict.site, verdict.calibration
        calibrations_used.append((site.site_id, calibration))
        tac = quantify_task(cycle, calibration, site.site_id)
        kinetics = kinetics_task(tac, kinetics_methods)
        doses = dose_task(tac, kinetics, dose_methods)
        for name, table in tables_task(identity, tac, kinetics, doses, provenance).items():
            collected[name].append(table)
        summaries = summary_tables_task(identity, cycle, verdict, tac, doses, provenance=provenance)
        for name, table in summaries.items():
            collected[name].append(table)
        voxel = voxel_dose_task(cycle, calibration, tac, site.site_id) if voxel_dosimetry else None
        if voxel is not None:
            for name, table in voxel_tables_task(identity, cycle, tac, voxel, provenance).items():
                collected[name].append(table)
        logger.info(
            "cycle %s at site %s: %d VOI(s), %d time point(s), calibration %s",
            identity.cycle_key,
            site.site_id,
            len(tac.labels),
            len(tac.time_h),
            calibration.record_id,
        )
    if calibrations_used:
        collected["site_calibrations"].append(
            build_site_calibrations(calibrations_used, provenance)
        )
    published = publish_task(store, dict(collected), provenance)
    logger.info("published run %s: manifest %s", published.run_id, published.manifest_path)
    return SpoolRunResult(
        published=published,
        tables={name: pa.concat_tables(parts) for name, parts in collected.items()},
        findings=tuple(findings),
        held_cycles=held,
    )
