"""Tasks around one treatment cycle: find it in its source, list its instances (or download them
from the raw store, issue 19), prepare (assemble, read VOIs, gate) and record its outcome in the
spool (and in the raw store for a worker that runs from a manifest).

Retries live here only for I/O (the spool's SQLite index and files on disk: a busy database or a
slow network filesystem may succeed on the next attempt); preparation is deterministic and is
never retried.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State

from concordose.calibration.registry import SiteRegistry
from concordose.errors import ConcordoseError
from concordose.payloads import (
    CycleManifest,
    RawStore,
    RecordedOutcome,
    StagedCycle,
    import_outcomes,
    newer_revision,
    open_manifest,
    stage_cycle,
)
from concordose.pipeline.catalogue import CataloguedInstance, CycleSource
from concordose.pipeline.preparation import PreparedCycle, prepare_cycle
from concordose.pipeline.working_set import memory_budget_bytes
from concordose.settings import Settings
from concordose.spool.cycles import CycleMembers, CycleRecord, CycleState
from concordose.spool.store import Spool

IO_RETRIES = 2
IO_RETRY_DELAYS_S = [1.0, 4.0]


def transient_io_error(_task: object, _task_run: object, state: State[Any]) -> bool:
    """Retry only what a second attempt may fix: OS-level I/O errors and a locked or busy
    SQLite index — never a missing spool, an unknown cycle or bad data."""
    try:
        state.result()
    except (sqlite3.OperationalError, TimeoutError, ConnectionError):
        return True
    except OSError as exc:
        return not isinstance(exc, FileNotFoundError | NotADirectoryError | PermissionError)
    except BaseException:
        return False
    return False


@task(
    name="find-cycle",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS_S,
    retry_condition_fn=transient_io_error,
)
def find_cycle_task(source: Path, cycle_id: str) -> CycleRecord:
    """The cycle ``cycle_id`` of a spool or folder, with its current state."""
    return CycleSource(source).cycle(cycle_id)


@task(
    name="cycle-instances",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS_S,
    retry_condition_fn=transient_io_error,
)
def cycle_instances_task(source: Path, members: CycleMembers) -> list[CataloguedInstance]:
    """The instances of this cycle's studies only."""
    return CycleSource(source).instances(members)


@task(
    name="cycle-number",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS_S,
    retry_condition_fn=transient_io_error,
)
def cycle_number_task(source: Path, members: CycleMembers) -> int | None:
    """The cycle's number: its rank by injection among its patient's cycles in ``source``."""
    return CycleSource(source).cycle_number(members)


@task(name="open-manifest", cache_policy=NO_CACHE)
def open_manifest_task(manifest_uri: str) -> tuple[RawStore, CycleManifest, str | None]:
    """The raw store and cycle manifest ``manifest_uri`` names, and the revision of a newer
    manifest of the same cycle if one was written since (this run is then superseded). No
    Prefect retries here or below: every store request is retried by the store itself."""
    raw, manifest = open_manifest(manifest_uri, Settings())
    return raw, manifest, newer_revision(raw, manifest)


@task(name="stage-cycle", cache_policy=NO_CACHE)
def stage_cycle_task(raw: RawStore, manifest: CycleManifest, folder: Path) -> StagedCycle:
    """Download a cycle's instances from the raw store into ``folder`` (each checked against
    its SHA-256)."""
    return stage_cycle(raw, manifest, folder)


@task(name="prepare-cycle", cache_policy=NO_CACHE)
def prepare_task(
    instances: list[CataloguedInstance],
    registry: SiteRegistry,
    site_id: str | None,
    read_vois: bool = True,
) -> PreparedCycle:
    """Assemble, read the VOIs and gate the cycle once (held with a reason, never raising for
    the cycle's own content; held too when larger than the worker's memory budget)."""
    return prepare_cycle(
        instances,
        registry,
        site_id=site_id,
        read_vois=read_vois,
        memory_budget_bytes=memory_budget_bytes(Settings().memory_budget_gb),
    )


@task(
    name="record-outcome",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS_S,
    retry_condition_fn=transient_io_error,
)
def record_outcome_task(
    source: Path,
    members: CycleMembers,
    state: CycleState,
    reason: str | None = None,
    run_id: str | None = None,
    *,
    raw: RawStore | None = None,
) -> None:
    """Record the run's outcome in the spool (nothing to record for a plain folder).

    A run from a manifest (``raw`` given) records it in the raw store, and in the spool too when
    this worker happens to see it (one machine)."""
    now = datetime.now(UTC)
    if raw is not None:
        raw.write_outcome(
            RecordedOutcome(
                cycle_id=members.cycle_id,
                content_revision=members.content_revision,
                state=state,
                reason=reason,
                run_id=run_id,
                recorded_at=now,
            )
        )
        if not Spool.exists_at(source):
            return
    spool = CycleSource(source).spool
    if spool is not None:
        spool.record_cycle_outcome(members, state, now, reason=reason, run_id=run_id)


@task(name="import-raw-outcomes", cache_policy=NO_CACHE)
def import_raw_outcomes_task(source: Path) -> int:
    """Record in the spool at ``source`` the outcomes workers recorded in the raw store
    (``CONCORDOSE_RAW_STORE_URI``) for cycles they ran from a manifest without seeing the spool,
    so that a sweep does not run those cycles again (:func:`concordose.payloads.import_outcomes`;
    what ``concordose raw sync-outcomes`` does by hand). 0 when no raw store is set, ``source``
    is not a spool (a folder of files) or the raw store cannot be read (logged as a warning)."""
    settings = Settings()
    if not settings.raw_store_uri or not Spool.exists_at(source):
        return 0
    spool = Spool.open_existing(source)
    try:
        return import_outcomes(spool, RawStore.open(settings.raw_store_uri, settings))
    except ConcordoseError as exc:
        # An unreachable raw store must not stop the sweep: at worst it re-runs a cycle a
        # worker already ran (a re-run replaces that cycle's rows).
        get_run_logger().warning("outcomes not read from the raw store: %s", exc)
        return 0
    finally:
        spool.close()
