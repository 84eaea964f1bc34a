"""Keeping the cohort tables current: called after each processed cycle and by the sweeps
(which also rebuild ``dose_prediction`` from the spool's pre-therapy PET studies).

A failed rebuild does not fail the cycle that triggered it: the cycle is published and recorded
as processed; the failure is logged and the next rebuild (the next cycle, or the nightly sweep)
starts again from every current cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger
from prefect.runtime import flow_run

from concordose.pipeline.pretherapy_pet import DosePredictionRun
from concordose.planning import planning_settings
from concordose.results.object_store import open_object_store
from concordose.results.publish import PublishedRun
from concordose.settings import Settings
from concordose.spool.store import Spool
from concordose.tasks.consortium import cohort_tables_task, dose_prediction_task
from concordose.tasks.report import cycle_report_task


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


def refresh_dose_prediction(
    source: Path, sites_file: Path, output_uri: str | None
) -> PublishedRun | None:
    """Rebuild and publish ``dose_prediction`` (issue 20, item 3) from the pre-therapy PET
    studies of ``source`` when it is a spool (a folder of files has none). Returns the
    publication, or None when there is no PET study with features or the rebuild failed (logged
    as an error, like the cohort tables': the sweep's cycles stay processed)."""
    if not Spool.exists_at(source):
        return None
    logger = get_run_logger()
    settings = Settings()
    store = open_object_store(output_uri or settings.output_uri, settings)
    state = dose_prediction_task(source, sites_file, store, flow_run.get_id(), return_state=True)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException):
        logger.error("dose_prediction not rebuilt: %s: %s", type(outcome).__name__, outcome)
        return None
    assert isinstance(outcome, DosePredictionRun)
    for problem in outcome.problems:
        logger.warning("pre-therapy PET skipped: %s", problem)
    if outcome.published is None:
        logger.info("dose_prediction: no pre-therapy PET features")
        return None
    logger.info(
        "dose_prediction rebuilt: %d VOIs with PET features, run %s",
        outcome.n_vois,
        outcome.published.run_id,
    )
    return outcome.published


@dataclass(frozen=True)
class ReportOutcome:
    """A cycle's report built after its run: where it was published, or why it was not."""

    path: str | None = None
    error: str | None = None


def build_cycle_reports(
    output_uri: str | None, cycle_keys: Sequence[str]
) -> dict[str, ReportOutcome]:
    """Build the HTML reports of ``cycle_keys`` from the store's current rows and the image
    products each cycle's run published: a sweep's cycle runs do not build their reports
    (``process_cycle(build_report=False)``), because the cohort tables they show (planning,
    threshold concordance, the tumour-sink regression) are rebuilt once after all of them;
    building each report once, here, after those tables, saves one build per cycle. Returns
    each cycle's :class:`ReportOutcome`; a report not built is a warning (the cycle's tables
    stand, and ``concordose report`` builds it again)."""
    if not cycle_keys:
        return {}
    logger = get_run_logger()
    settings = Settings()
    store = open_object_store(output_uri or settings.output_uri, settings)
    outcomes: dict[str, ReportOutcome] = {}
    built = 0
    for cycle_key in cycle_keys:
        state = cycle_report_task(store, cycle_key, None, return_state=True)
        outcome = state.result(raise_on_failure=False)
        if isinstance(outcome, BaseException):
            error = f"{type(outcome).__name__}: {outcome}"[:500]
            logger.warning("report of cycle %s not built: %s", cycle_key, error)
            outcomes[cycle_key] = ReportOutcome(error=error)
            continue
        outcomes[cycle_key] = ReportOutcome(path=str(outcome))
        built += 1
    logger.info("%d cycle report(s) built with the current cohort tables", built)
    return outcomes
