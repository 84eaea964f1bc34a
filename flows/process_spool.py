"""Flow ``process-spool``: every treatment cycle in a spool, from DICOM to published Parquet.

Steps per cycle: site and calibration lookup → quantification → kinetics (every requested
method) → dose (every requested method on every TIA) → tables; then one publication for the run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from concordose.calibration.registry import CalibrationRecord, SiteRegistry
from concordose.dicom.pseudonym import cycle_key, subject_key
from concordose.dicom.study import CycleStudy
from concordose.errors import CalibrationMissingError
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
    kinetics_task,
    publish_task,
    quantify_task,
    summary_tables_task,
    tables_task,
)

DEFAULT_KINETICS_METHODS = ("mono_exponential",)
DEFAULT_DOSE_METHODS = ("sphere",)


@dataclass(frozen=True)
class SpoolRunResult:
    """What a run published, plus the tables for display."""

    published: PublishedRun
    tables: dict[str, pa.Table]


def _site_of(cycle: CycleStudy, registry: SiteRegistry, site_id: str | None) -> str:
    if cycle.calling_ae_title:
        return registry.site_for_ae_title(cycle.calling_ae_title).site_id
    if site_id is None:
        raise CalibrationMissingError(
            "the files were not received through the spool, so their site is unknown; "
            "pass the site explicitly (--site)"
        )
    return registry.site(site_id).site_id


@flow(name="process-spool")
def process_spool(
    source: Path,
    sites_file: Path,
    *,
    output_uri: str | None = None,
    site_id: str | None = None,
    kinetics_methods: Sequence[str] = DEFAULT_KINETICS_METHODS,
    dose_methods: Sequence[str] = DEFAULT_DOSE_METHODS,
) -> SpoolRunResult:
    """Process every cycle found in ``source`` and publish the results.

    Args:
        source: a spool folder (with index) or any folder of DICOM files.
        sites_file: the site registry (YAML).
        output_uri: where to publish; default from settings (``CONCORDOSE_OUTPUT_URI``).
        site_id: the site of the files when ``source`` is not a spool.
        kinetics_methods, dose_methods: registry names of the methods to run side by side.
    """
    logger = get_run_logger()
    settings = Settings()
    registry = SiteRegistry.load(sites_file)
    store = open_object_store(output_uri or settings.output_uri, settings)
    provenance = Provenance(run_id=new_run_id(), flow_run_id=flow_run.get_id())

    cycles = assemble_task(catalogue_task(source))
    logger.info("found %d cycle(s) in %s", len(cycles), source)
    collected: dict[str, list[pa.Table]] = defaultdict(list)
    calibrations_used: list[tuple[str, CalibrationRecord]] = []
    for cycle in cycles:
        site = registry.site(_site_of(cycle, registry, site_id))
        first = cycle.time_points[0].acquisition.acquisition_datetime
        assert first is not None  # assembly placed every time point in time
        calibration = site.calibration_on(first.date())
        calibrations_used.append((site.site_id, calibration))
        identity = CycleIdentity(
            subject_key=subject_key(cycle.patient_id, settings.pseudonym_key),
            cycle_key=cycle_key(
                cycle.patient_id, cycle.injection_datetime.isoformat(), settings.pseudonym_key
            ),
            site_id=site.site_id,
        )
        tac = quantify_task(cycle, calibration)
        kinetics = kinetics_task(tac, kinetics_methods)
        doses = dose_task(tac, kinetics, dose_methods)
        for name, table in tables_task(identity, tac, kinetics, doses, provenance).items():
            collected[name].append(table)
        summaries = summary_tables_task(
            identity, cycle, calibration, tac, doses, provenance=provenance
        )
        for name, table in summaries.items():
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
    )
