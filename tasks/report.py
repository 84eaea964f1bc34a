"""Tasks of the reports: a cycle's image products and HTML published beside the tables, and
the consortium dashboard.

None is retried as a task: the object store retries its own requests, and a report that
cannot be built must not hold up or fail the cycle's publication or the sweep (the flows
record a warning).
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from concordose.calibration.registry import CalibrationRecord
from concordose.dicom.seg import VoiMask
from concordose.dose.voxel_dosimetry import LesionDoseSlice
from concordose.pipeline.alignment import TimePointAlignment
from concordose.pipeline.assembly import CycleStudy
from concordose.pipeline.report_images import cycle_report_images
from concordose.report import (
    CycleImages,
    build_cycle_report,
    build_dashboard,
    publish_cycle_images,
    publish_cycle_report,
    publish_dashboard,
)
from concordose.results.object_store import ObjectStore
from concordose.results.publish import MANIFEST_DIR


@task(name="report-images", cache_policy=NO_CACHE)
def report_images_task(
    cycle: CycleStudy,
    calibration: CalibrationRecord,
    alignments: Sequence[TimePointAlignment],
    vois: Sequence[VoiMask],
    lesion_slices: Sequence[LesionDoseSlice] = (),
) -> CycleImages:
    """The cycle's MIPs, projected VOI outlines and lesion dose slices (no identifiers)."""
    return cycle_report_images(cycle, calibration, alignments, vois, lesion_slices)


@task(name="cycle-images", cache_policy=NO_CACHE)
def cycle_images_task(store: ObjectStore, cycle_key: str, images: CycleImages) -> str:
    """Publish the cycle's image products only (its report is built later, from the published
    rows: :func:`cycle_report_task` with no images reuses them); their location."""
    return publish_cycle_images(store, cycle_key, images)


@task(name="cycle-report", cache_policy=NO_CACHE)
def cycle_report_task(store: ObjectStore, cycle_key: str, images: CycleImages | None) -> str:
    """Publish the image products (when made), then build the report from the published rows
    and write it at ``_reports/cycles/<cycle_key>.html``; its path."""
    if images is not None:
        publish_cycle_images(store, cycle_key, images)
    return publish_cycle_report(store, cycle_key, build_cycle_report(store, cycle_key))


@task(name="dashboard", cache_policy=NO_CACHE)
def dashboard_task(store: ObjectStore) -> str | None:
    """Rebuild the consortium dashboard from the store's current rows and write it at
    ``_reports/dashboard/index.html``; its path, or None when nothing is published yet (no
    manifest: an empty store gets no page)."""
    if not any(p.endswith(".json") for p in store.list_files(store.path(MANIFEST_DIR))):
        return None
    return publish_dashboard(store, build_dashboard(store))
