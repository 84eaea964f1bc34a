"""Keeping the cohort tables current: called after each processed cycle and by the sweeps.

A failed rebuild does not fail the cycle that triggered it: the cycle is published and recorded
as processed; the failure is logged and the next rebuild (the next cycle, or the nightly sweep)
starts again from every current cycle.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.runtime import flow_run

from concordose.planning import planning_settings
from concordose.results.object_store import open_object_store
from concordose.results.publish import PublishedRun
from concordose.settings import Settings
from concordose.tasks.consortium import cohort_tables_task


def refresh_cohort_tables(output_uri: str | None) -> PublishedRun | None:
    """Rebuild and publish the cohort tables (``kinetics_agreement``, ``dose_agreement``,
    ``threshold_concordance``) in ``output_uri``
    (default from settings). Returns the publication, or None when there was nothing to
    compare or the rebuild failed (logged as an error)."""
    logger = get_run_logger()
    settings = Settings()
    store = open_object_store(output_uri or settings.output_uri, settings)
    state = cohort_tables_task(
        store, flow_run.get_id(), planning_settings(settings), return_state=True
    )
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException):
        logger.error("cohort tables not rebuilt: %s: %s", type(outcome).__name__, outcome)
        return None
    if outcome is None:
        logger.info("cohort tables: nothing to compare yet")
        return None
    assert isinstance(outcome, PublishedRun)
    logger.info("cohort tables rebuilt: run %s", outcome.run_id)
    return outcome
