"""Keeping the consortium dashboard current: rebuilt by the nightly ``sweep`` after the cohort
tables (issue 17, item 2).

A dashboard that cannot be built is a warning recorded in the sweep's result, never a failed
sweep: every cycle and cohort table is already published, and the next sweep (or
``concordose report --dashboard``) builds it again from the store.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger

from concordose.errors import ConfigurationError
from concordose.results.object_store import open_object_store
from concordose.settings import Settings
from concordose.tasks.report import dashboard_task


@dataclass(frozen=True)
class DashboardOutcome:
    """Where the dashboard was written (None: nothing published yet, or it failed) and why
    it failed (None when it did not)."""

    path: str | None = None
    error: str | None = None


def refresh_dashboard(output_uri: str | None) -> DashboardOutcome:
    """Rebuild and publish the dashboard of ``output_uri`` (default from settings)."""
    logger = get_run_logger()
    settings = Settings()
    try:
        store = open_object_store(output_uri or settings.output_uri, settings, create=False)
    except ConfigurationError:  # no such folder: nothing was ever published there
        logger.info("dashboard: nothing published yet")
        return DashboardOutcome()
    try:
        path = dashboard_task(store)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
        logger.warning("dashboard not rebuilt: %s", error)
        return DashboardOutcome(error=error)
    if path is None:
        logger.info("dashboard: nothing published yet")
    else:
        logger.info("dashboard rebuilt: %s", path)
    return DashboardOutcome(path=path)
