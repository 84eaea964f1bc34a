"""What workers recorded in the raw store, brought back into the spool that they could not see.

A worker that runs a cycle from its manifest records its outcome under ``outcomes/`` in the raw
store (:meth:`concordose.payloads.store.RawStore.write_outcome`); the spool's ``cycles`` table,
which ``spool status`` shows and the sweep reads, learns it here (``concordose raw
sync-outcomes``, run beside the receiver, e.g. before the nightly sweep), so a cycle processed
remotely is not processed again.
"""

from __future__ import annotations

from concordose.payloads.store import RawStore
from concordose.spool.store import Spool


def import_outcomes(spool: Spool, raw: RawStore) -> int:
    """Record in ``spool`` each outcome ``raw`` holds for a cycle's *current* content that is
    newer than what the spool has (an outcome for older content is history and is skipped).

    Returns:
        How many outcomes were recorded.
    """
    recorded = {(o.cycle_id, o.content_revision): o for o in raw.outcomes()}
    count = 0
    for record in spool.cycles():
        outcome = recorded.get((record.cycle_id, record.members.content_revision))
        if outcome is None:
            continue
        known = record.outcome
        if (
            known is not None
            and known.content_revision == outcome.content_revision
            and known.updated_at >= outcome.recorded_at
        ):
            continue
        spool.record_cycle_outcome(
            record.members,
            outcome.state,
            outcome.recorded_at,
            reason=outcome.reason,
            run_id=outcome.run_id,
        )
        count += 1
    return count
