"""Retention of raw payloads: what a processed cycle left in the raw store goes after N days.

The rule (``CONCORDOSE_RAW_RETENTION_DAYS``; unset keeps everything):

* a cycle is *expired* when its newest manifest's revision was recorded ``processed`` by a
  worker (``outcomes/``) at least the retention ago; held, failed and never-run cycles are kept
  (the sweep may still need them);
* an expired cycle's manifests are deleted (all its revisions), then the instances they named,
  except those still named by a manifest that is kept (the same content in a younger cycle or
  revision);
* instances no manifest names (an upload interrupted before its manifest) and recorded outcomes
  are left alone: an upload in progress is never cut short, and the outcomes are the history.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from concordose.payloads.manifest import CycleManifest, instance_key, manifest_key
from concordose.payloads.store import RawStore
from concordose.spool.cycles import CycleState


@dataclass(frozen=True)
class PruneReport:
    """What :func:`prune` did (or, for a dry run, would do).

    Attributes:
        cycles: expired cycles (ids).
        manifests_deleted: manifests deleted.
        instances_deleted: instance objects deleted.
        instances_kept: instances of expired cycles kept for a younger manifest.
    """

    cycles: tuple[str, ...]
    manifests_deleted: int
    instances_deleted: int
    instances_kept: int


def expired_cycles(
    manifests: list[CycleManifest], raw: RawStore, retention_days: int, now: datetime
) -> set[str]:
    """The ids of cycles whose newest revision was processed ``retention_days`` or more ago."""
    cutoff = now - timedelta(days=retention_days)
    newest: dict[str, CycleManifest] = {}
    for manifest in manifests:  # oldest first
        newest[manifest.cycle_id] = manifest
    processed_at = {
        (o.cycle_id, o.content_revision): o.recorded_at
        for o in raw.outcomes()
        if o.state is CycleState.PROCESSED
    }
    expired = set()
    for cycle_id, manifest in newest.items():
        when = processed_at.get((cycle_id, manifest.content_revision))
        if when is not None and when <= cutoff:
            expired.add(cycle_id)
    return expired


def prune(
    raw: RawStore, retention_days: int, now: datetime, *, dry_run: bool = False
) -> PruneReport:
    """Delete the raw payloads of cycles processed ``retention_days`` or more before ``now``
    (rule: module docstring). Manifests go first, so no kept manifest ever names a deleted
    instance.

    Raises:
        StoreAccessDeniedError, StoreUnavailableError: the store.
    """
    manifests = raw.manifests()
    expired = expired_cycles(manifests, raw, retention_days, now)
    by_fate: dict[bool, list[CycleManifest]] = defaultdict(list)
    for manifest in manifests:
        by_fate[manifest.cycle_id in expired].append(manifest)
    kept_hashes = {i.sha256 for m in by_fate[False] for i in m.instances}
    expired_hashes = {i.sha256 for m in by_fate[True] for i in m.instances}
    doomed = sorted(expired_hashes - kept_hashes)
    if not dry_run:
        for manifest in by_fate[True]:
            raw.delete(manifest_key(manifest.cycle_id, manifest.content_revision))
        for sha256 in doomed:
            raw.delete(instance_key(sha256))
    return PruneReport(
        cycles=tuple(sorted(expired)),
        manifests_deleted=len(by_fate[True]),
        instances_deleted=len(doomed),
        instances_kept=len(expired_hashes & kept_hashes),
    )
