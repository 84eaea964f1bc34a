"""Flow ``timepoint-complete`` and the receiver's hooks that start it (one run per time point).

The receiver stays Prefect-free: it calls an ``on_complete`` hook (contract:
:class:`concordose.dicom.timepoints.OnComplete`). Two hooks live here:

* :class:`DeploymentTrigger` starts a run of a Prefect *deployment* of this flow, with the event
  id as the run's idempotency key: a re-delivered event (after a crash between delivery and its
  record) creates no second run.
* :class:`InProcessFlowTrigger` runs the flow in this process on one worker thread (a laptop or
  the demo, no work pool); the flow itself skips a time point already processed at that revision.

The flow processes the spool (every cycle, via ``process-spool``: re-running replaces rows) once
the cycle can be assembled, and records the time point as processed. A cycle that is not
assemblable yet (e.g. the SEG of the VOIs not received) is *held* with the reason logged; the
next time point's completion or the nightly sweep picks it up.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from concordose.calibration.registry import SiteRegistry
from concordose.dicom.spool import Spool
from concordose.dicom.timepoints import TimePointEvent, TimePointState
from concordose.errors import ConcordoseError
from flows.demo import preflight
from flows.process_spool import process_spool

LOG = logging.getLogger(__name__)

OUTCOME_PROCESSED = "processed"
OUTCOME_HELD = "held"
OUTCOME_SKIPPED = "skipped"


@flow(name="timepoint-complete")
def timepoint_complete(
    spool: Path,
    sites_file: Path,
    study_uid: str,
    revision: int,
    output_uri: str | None = None,
) -> str:
    """Process the spool after ``study_uid`` (at ``revision``) completed.

    Returns:
        ``"processed"``, ``"held"`` (cycle not assemblable yet; reason logged) or ``"skipped"``
        (already processed, or superseded by a newer revision).
    """
    logger = get_run_logger()
    record = Spool.open_existing(spool).timepoint(study_uid)
    if record.revision != revision or record.state is not TimePointState.COMPLETE:
        logger.info(
            "time point %s#%d skipped: now revision %d, %s",
            study_uid,
            revision,
            record.revision,
            record.state.value,
        )
        return OUTCOME_SKIPPED
    try:
        preflight(spool, SiteRegistry.load(sites_file), None)
    except ConcordoseError as exc:
        logger.warning("time point %s#%d held: %s", study_uid, revision, exc)
        return OUTCOME_HELD
    process_spool(spool, sites_file, output_uri=output_uri)
    Spool.open_existing(spool).mark_processed(study_uid, revision, datetime.now(UTC))
    return OUTCOME_PROCESSED


def _parameters(
    event: TimePointEvent, sites_file: Path, output_uri: str | None
) -> dict[str, object]:
    return {
        "spool": event.spool_root,
        "sites_file": str(sites_file),
        "study_uid": event.timepoint.study_uid,
        "revision": event.timepoint.revision,
        "output_uri": output_uri,
    }


class DeploymentTrigger:
    """``on_complete`` hook: one run of a deployment of ``timepoint-complete`` per event.

    Args:
        deployment_name: ``"timepoint-complete/<deployment>"``.
        sites_file: the site registry the flow loads.
        output_uri: where the flow publishes (default: the worker's settings).
    """

    def __init__(
        self, deployment_name: str, sites_file: Path, output_uri: str | None = None
    ) -> None:
        self.deployment_name = deployment_name
        self.sites_file = sites_file
        self.output_uri = output_uri

    def __call__(self, event: TimePointEvent) -> None:
        """Create the flow run (does not wait for it)."""
        run = run_deployment(
            self.deployment_name,
            parameters=_parameters(event, self.sites_file, self.output_uri),
            timeout=0,
            idempotency_key=event.event_id,
            as_subflow=False,
        )
        assert isinstance(run, FlowRun)  # called synchronously: not a coroutine
        LOG.info("time point %s: flow run %s created", event.event_id, run.id)


class InProcessFlowTrigger:
    """``on_complete`` hook: runs ``timepoint-complete`` here, one run at a time, in order.

    Args:
        sites_file: the site registry.
        output_uri: where to publish (default: settings).
    """

    def __init__(self, sites_file: Path, output_uri: str | None = None) -> None:
        self.sites_file = sites_file
        self.output_uri = output_uri
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="timepoint-flow")
        self.futures: dict[str, Future[str]] = {}

    def __call__(self, event: TimePointEvent) -> None:
        """Queue the flow run and return at once (the receiver's thread is not blocked)."""
        self.futures[event.event_id] = self._executor.submit(
            timepoint_complete,
            Path(event.spool_root),
            self.sites_file,
            event.timepoint.study_uid,
            event.timepoint.revision,
            self.output_uri,
        )

    def shutdown(self) -> None:
        """Wait for queued runs to finish."""
        self._executor.shutdown(wait=True)
