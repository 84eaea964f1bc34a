"""Tasks over the whole consortium: rebuild the cohort tables from every published cycle, and
``dose_prediction`` from the spool's pre-therapy PET studies.

No retries: object-store requests retry themselves (:mod:`concordose.results.object_store`);
what remains (a validation failure, a malformed manifest) would fail the same way again.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from concordose.calibration.registry import SiteRegistry
from concordose.consortium import rebuild_cohort_tables
from concordose.pipeline.pretherapy_pet import DosePredictionRun, publish_spool_dose_prediction
from concordose.planning import PlanningSettings
from concordose.results.object_store import ObjectStore
from concordose.results.provenance import Provenance, new_run_id
from concordose.results.publish import PublishedRun
from concordose.settings import Settings
from concordose.spool.store import Spool


@task(name="cohort-tables", cache_policy=NO_CACHE)
def cohort_tables_task(
    store: ObjectStore, flow_run_id: str | None, planning: PlanningSettings | None = None
) -> PublishedRun | None:
    """Rebuild the cohort tables (``kinetics_agreement``, ``dose_agreement``,
    ``threshold_concordance``, ``planning`` with ``planning``'s limits) from the store's current
    cycles and publish them as a run of their own (None: nothing to compare yet)."""
    provenance = Provenance(run_id=new_run_id(), flow_run_id=flow_run_id)
    return rebuild_cohort_tables(store, provenance, planning=planning)


@task(name="dose-prediction", cache_policy=NO_CACHE)
def dose_prediction_task(
    spool_root: Path, sites_file: Path, store: ObjectStore, flow_run_id: str | None
) -> DosePredictionRun:
    """Rebuild ``dose_prediction`` from the spool's pre-therapy PET studies and the store's
    current first-cycle doses, published as a run of its own (issue 20, item 3)."""
    settings = Settings()
    return publish_spool_dose_prediction(
        Spool.open_existing(spool_root),
        SiteRegistry.load(sites_file),
        store,
        Provenance(run_id=new_run_id(), flow_run_id=flow_run_id),
        pseudonym_key=settings.pseudonym_key,
    )
