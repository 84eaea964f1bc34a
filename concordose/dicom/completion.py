"""Deciding when a time point is complete, and telling the pipeline exactly once.

A sender may use one association per instance, per series or per study, so "the association was
released" does not mean "the study is complete". The rule here:

* a time point is **busy** while any open association has stored an instance of it;
* it becomes **complete** once it is not busy and nothing touched it (stored instance or released
  association) for ``quiet_period_s`` seconds — or at once on an explicit :meth:`trigger`;
* completion is a state change committed in the spool index *before* the ``on_complete`` hook is
  called; the delivery is recorded after the hook returns. A pending event survives a restart and
  is delivered then. The only window for a repeat is a crash between the hook returning and the
  delivery being recorded; the event then comes again with the **same** ``event_id``, which the
  Prefect trigger passes as the flow run's idempotency key, so one flow run results.

Time comes from an injectable clock (UTC), so tests move time instead of sleeping.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from concordose.dicom.spool import Spool
from concordose.dicom.timepoints import OnComplete, TimePointEvent

LOG = logging.getLogger(__name__)

DEFAULT_QUIET_PERIOD_S = 300.0  # PACS auto-routing queues usually drain within minutes


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def log_event(event: TimePointEvent) -> None:
    """Default hook: log the event only (the nightly sweep processes it)."""
    LOG.info("time point %s complete (no on_complete hook set)", event.event_id)


class CompletionMonitor:
    """Tracks open associations per study and turns quiet time points into events.

    Args:
        spool: where the state lives.
        quiet_period_s: seconds without activity after the last association released.
        on_complete: the hook (see :class:`~.timepoints.OnComplete` for its contract).
        clock: returns the current UTC time.
    """

    def __init__(
        self,
        spool: Spool,
        *,
        quiet_period_s: float = DEFAULT_QUIET_PERIOD_S,
        on_complete: OnComplete | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if quiet_period_s < 0:
            raise ValueError(f"quiet_period_s must be >= 0, got {quiet_period_s}")
        self.spool = spool
        self.quiet_period_s = quiet_period_s
        self.on_complete: OnComplete = on_complete or log_event
        self.clock = clock
        self._open: dict[int, set[str]] = defaultdict(set)
        self._state_lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def association_stored(self, association_id: int, study_uid: str) -> None:
        """An open association stored an instance of ``study_uid`` (it is busy until closed)."""
        with self._state_lock:
            self._open[association_id].add(study_uid)

    def association_closed(self, association_id: int) -> set[str]:
        """The association ended (released, aborted or dropped): its studies' quiet period starts.

        Returns:
            The studies it had stored instances of.
        """
        with self._state_lock:
            studies = self._open.pop(association_id, set())
        self.spool.touch_timepoints(studies, self.clock())
        return studies

    def busy_study_uids(self) -> set[str]:
        """Studies some open association has stored instances of."""
        with self._state_lock:
            return set().union(*self._open.values()) if self._open else set()

    def trigger(self, study_uid: str, reason: str = "explicit trigger") -> list[TimePointEvent]:
        """Complete ``study_uid`` now and deliver its event (and any other pending one).

        Raises:
            TimePointNotFoundError: the spool never received that study.
        """
        self.spool.mark_complete(study_uid, reason, self.clock())
        return self.poll()

    def poll(self) -> list[TimePointEvent]:
        """Complete the quiet time points, then deliver every pending event once.

        Returns:
            The events delivered by this call (a hook that raised leaves its event pending).
        """
        with self._poll_lock:
            now = self.clock()
            quiet_since = now - timedelta(seconds=self.quiet_period_s)
            self.spool.complete_quiet_timepoints(quiet_since, self.busy_study_uids(), now)
            delivered = []
            for event in self.spool.pending_events():
                try:
                    self.on_complete(event)
                except Exception:
                    # The hook's failure must not stop the receiver; retried on the next poll.
                    LOG.exception("on_complete failed for %s; will retry", event.event_id)
                    continue
                if self.spool.mark_notified(event, self.clock()):
                    delivered.append(event)
                    record = event.timepoint
                    time_h = f"{record.time_h:.1f} h p.i." if record.time_h is not None else "?"
                    LOG.info(
                        "time point complete: %s patient %s from %s, %d instance(s) [%s], %s (%s)",
                        event.event_id,
                        record.patient_id,
                        record.calling_ae_title,
                        record.instance_count,
                        ",".join(record.modalities),
                        time_h,
                        record.completion_reason,
                    )
            return delivered

    def start(self, interval_s: float) -> None:
        """Poll every ``interval_s`` seconds on a background thread (delivers pending events
        left by a previous run at once)."""
        self._stop.clear()

        def run() -> None:
            while True:
                try:
                    self.poll()
                except Exception:
                    LOG.exception("completion poll failed; retrying")
                if self._stop.wait(interval_s):
                    return

        self._thread = threading.Thread(target=run, name="concordose-completion", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (pending state stays in the spool)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
