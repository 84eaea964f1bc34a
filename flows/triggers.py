"""The receiver's completion hooks: a completed time point starts ``process-cycle`` for its cycle.

The receiver stays Prefect-free: it calls an ``on_complete`` hook (contract:
:class:`concordose.spool.timepoints.OnComplete`) once per completed time point revision. Both
hooks here resolve the time point's treatment cycle from the spool index
(:meth:`concordose.spool.store.Spool.cycles_of_study`) and start one ``process-cycle`` run per
cycle whose content changed:

* :class:`DeploymentTrigger` creates a run of a *deployment* of ``process-cycle`` with the
  idempotency key ``<spool UUID>/<cycle id>/<content revision>``: a re-delivered event creates no
  second run, the same study in another spool gets its own run there, and a re-sent study with
  new instances (a new content revision) gets a new one.
* :class:`WorkerProcessTrigger` (``concordose receive --run-flows``: one machine, no work pool)
  runs ``process-cycle`` in a separate worker process, one cycle at a time, so that processing
  never runs in the process holding the DICOM journal;
* :class:`InProcessFlowTrigger` runs ``process-cycle`` in the calling process on one thread
  (embedding and tests).

With ``CONCORDOSE_RAW_STORE_URI`` set (issue 19), each hook first uploads the cycle's instances
and then its manifest to the raw store (:func:`concordose.payloads.upload_if_configured`), and
the run is given the manifest's URI: the worker reads the cycle from there, not from the spool.
Unset, runs read the spool folder (one machine, or a shared filesystem).

A cycle with a time point still receiving is not started (that time point's own completion
will); a visit whose cycle is not known yet (only its CT or SEG arrived) starts nothing until
its SPECT does. If the hook raises (e.g. the Prefect server is down), the event stays pending and
the receiver retries its delivery with exponential backoff (:mod:`concordose.spool.completion`).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, TypeVar

from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from concordose.flows.process_cycle import CycleRunResult, process_cycle
from concordose.observability.metrics import record_cycle_run
from concordose.payloads import upload_if_configured
from concordose.spool.cycles import CycleRecord, CycleState
from concordose.spool.store import Spool
from concordose.spool.timepoints import TimePointEvent

LOG = logging.getLogger(__name__)


def idempotency_key(spool_id: str, record: CycleRecord) -> str:
    """``<spool UUID>/<cycle id>/<content revision>``: one run per cycle content per spool."""
    return f"{spool_id}/{record.cycle_id}/{record.members.content_revision}"


def cycles_to_start(event: TimePointEvent) -> tuple[Spool, list[CycleRecord]]:
    """The spool and the cycles an event should start a run for (none still receiving)."""
    spool = Spool.open_existing(Path(event.spool_root))
    records = spool.cycles_of_study(event.timepoint.study_uid)
    if not records:
        LOG.info("time point %s: no cycle yet (no SPECT with injection data)", event.event_id)
    for record in records:
        if record.state is CycleState.RECEIVING:
            LOG.info(
                "time point %s: cycle %s not started, a time point is still receiving",
                event.event_id,
                record.cycle_id,
            )
    return spool, [r for r in records if r.state is not CycleState.RECEIVING]


def _parameters(
    event: TimePointEvent,
    record: CycleRecord,
    sites_file: Path,
    output_uri: str | None,
    manifest_uri: str | None,
) -> dict[str, object]:
    parameters: dict[str, object] = {
        "source": event.spool_root,
        "sites_file": str(sites_file),
        "cycle_id": record.cycle_id,
        "content_revision": record.members.content_revision,
        "output_uri": output_uri,
    }
    if manifest_uri is not None:  # absent otherwise: a deployment of an older flow still runs
        parameters["manifest_uri"] = manifest_uri
    return parameters


class DeploymentTrigger:
    """``on_complete`` hook: one run of a ``process-cycle`` deployment per changed cycle.

    Args:
        deployment_name: ``"process-cycle/<deployment>"``.
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
        """Create the flow runs (does not wait for them)."""
        spool, records = cycles_to_start(event)
        for record in records:
            manifest_uri = upload_if_configured(spool, record)
            run = run_deployment(
                self.deployment_name,
                parameters=_parameters(
                    event, record, self.sites_file, self.output_uri, manifest_uri
                ),
                timeout=0,
                idempotency_key=idempotency_key(spool.spool_id, record),
                as_subflow=False,
            )
            assert isinstance(run, FlowRun)  # called synchronously: not a coroutine
            LOG.info(
                "time point %s: cycle %s revision %s → flow run %s",
                event.event_id,
                record.cycle_id,
                record.members.content_revision,
                run.id,
            )


ResultT = TypeVar("ResultT")


class QueuedCycleTrigger(Generic[ResultT]):
    """An ``on_complete`` hook that queues one run per changed cycle on one thread, in order,
    and returns at once (the receiver is never blocked); a re-delivered event whose content is
    already queued or done is ignored. Subclasses say how a run is made (:meth:`run`).

    Attributes:
        futures: per idempotency key, the queued run.
    """

    def __init__(self, thread_name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self.futures: dict[str, Future[ResultT]] = {}

    def run(self, spool_root: Path, record: CycleRecord, manifest_uri: str | None) -> ResultT:
        """Process ``record`` (runs on the trigger's thread), from ``manifest_uri`` in the raw
        store when the cycle was uploaded there, else from the spool."""
        raise NotImplementedError

    def __call__(self, event: TimePointEvent) -> None:
        """Queue one run per changed cycle of ``event`` (uploading it first when a raw store is
        configured: an upload failure leaves the event pending, to be delivered again)."""
        spool, records = cycles_to_start(event)
        for record in records:
            key = idempotency_key(spool.spool_id, record)
            if key in self.futures:
                continue  # a re-delivered event: that content is already queued or done
            manifest_uri = upload_if_configured(spool, record)
            self.futures[key] = self._executor.submit(
                self.run, Path(event.spool_root), record, manifest_uri
            )

    def shutdown(self) -> None:
        """Wait for queued runs to finish."""
        self._executor.shutdown(wait=True)


class InProcessFlowTrigger(QueuedCycleTrigger[CycleRunResult]):
    """``on_complete`` hook: runs ``process-cycle`` here, one run at a time, in order.

    Args:
        sites_file: the site registry.
        output_uri: where to publish (default: settings).
    """

    def __init__(self, sites_file: Path, output_uri: str | None = None) -> None:
        super().__init__("cycle-flow")
        self.sites_file = sites_file
        self.output_uri = output_uri

    def run(
        self, spool_root: Path, record: CycleRecord, manifest_uri: str | None
    ) -> CycleRunResult:
        """``process-cycle`` for ``record``'s current content, in this process."""
        return process_cycle(
            spool_root,
            self.sites_file,
            record.cycle_id,
            content_revision=record.members.content_revision,
            output_uri=self.output_uri,
            manifest_uri=manifest_uri,
        )


WORKER_OUTCOME_EXIT_CODES = {0: "processed or skipped", 1: "held"}
"""Exit statuses of ``concordose process-cycle`` that are an outcome, not a failure."""


class WorkerProcessTrigger(QueuedCycleTrigger[int]):
    """``on_complete`` hook of ``concordose receive --run-flows``: runs ``process-cycle`` in a
    separate worker process (``concordose process-cycle``), one at a time, in order.

    The receiver's process holds the DICOM journal: no processing runs in it, so no processing
    failure or memory spike can take the receiver down. A worker that dies (e.g. killed by the
    kernel for memory) records the cycle ``failed`` with the signal, and the receiver goes on.

    Args:
        sites_file: the site registry.
        output_uri: where to publish (default: the worker's settings).
        command: how to start the CLI (default: this Python running ``concordose``).
    """

    def __init__(
        self,
        sites_file: Path,
        output_uri: str | None = None,
        command: Sequence[str] = (sys.executable, "-m", "concordose"),
    ) -> None:
        super().__init__("cycle-worker")
        self.sites_file = sites_file
        self.output_uri = output_uri
        self.command = tuple(command)

    def run(self, spool_root: Path, record: CycleRecord, manifest_uri: str | None) -> int:
        """``concordose process-cycle`` for ``record`` in a child process; its exit status."""
        arguments = [
            *self.command,
            "process-cycle",
            "--spool",
            str(spool_root),
            "--sites",
            str(self.sites_file),
            "--cycle-id",
            record.cycle_id,
            "--content-revision",
            record.members.content_revision,
        ]
        if self.output_uri is not None:
            arguments += ["--output", self.output_uri]
        started_s = time.monotonic()
        if manifest_uri is not None:
            arguments += ["--manifest", manifest_uri]
        status = subprocess.run(arguments, check=False, stdin=subprocess.DEVNULL).returncode
        if status in WORKER_OUTCOME_EXIT_CODES:
            LOG.info(
                "cycle %s: worker finished (%s)", record.cycle_id, WORKER_OUTCOME_EXIT_CODES[status]
            )
            return status
        reason = (
            f"worker process killed by signal {-status} ({signal.Signals(-status).name}"
            f"{': out of memory?' if -status == signal.SIGKILL else ''})"
            if status < 0
            else f"worker process exited with status {status}"
        )
        LOG.warning("cycle %s: %s", record.cycle_id, reason)
        if status < 0:  # the worker could not record its own outcome (nor count it: issue 19)
            record_cycle_run(CycleState.FAILED, time.monotonic() - started_s)
            Spool.open_existing(spool_root).record_cycle_outcome(
                record.members, CycleState.FAILED, datetime.now(UTC), reason=reason
            )
        return status
