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

While the hook fails (e.g. the Prefect server is down), the background thread polls again
with exponential backoff (tenacity: ``delivery_backoff_s`` doubled per failed poll, capped at
``delivery_backoff_max_s``), logging one line per failed delivery, never a traceback; delivery
resumes at the normal interval once a poll delivers everything.

Time comes from an injectable clock (UTC), so tests move time instead of sleeping.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_when_event_set,
    wait_exponential,
)

from concordose.dicom.pseudonym import patient_label
from concordose.observability.metrics import observe_completion_lag
from concordose.spool.store import Spool
from concordose.spool.timepoints import OnComplete, TimePointEvent

LOG = logging.getLogger(__name__)

DEFAULT_QUIET_PERIOD_S = 300.0  # PACS auto-routing queues usually drain within minutes
DEFAULT_DELIVERY_BACKOFF_S = 2.0
DEFAULT_DELIVERY_BACKOFF_MAX_S = 300.0


def short_reason(exc: BaseException) -> str:
    """One line naming an exception (class and the first line of its message, ≤ 200 chars)."""
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}"[:200]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def log_next_attempt(state: RetryCallState) -> None:
    """tenacity ``before_sleep``: one line per backoff, no traceback."""
    outcome = state.outcome
    error = outcome.exception() if outcome is not None and outcome.failed else None
    wait_s = state.next_action.sleep if state.next_action is not None else 0.0
    LOG.warning(
        "completion: %s; next poll in %.1f s (attempt %d)",
        short_reason(error) if error is not None else "undelivered events",
        wait_s,
        state.attempt_number + 1,
    )


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
        show_phi: name patients by PatientID in the log (``concordose receive --show-phi``);
            otherwise by their subject key (``pseudonym_key``), or hidden without a key
            (:func:`~concordose.dicom.pseudonym.patient_label`).
        pseudonym_key: the consortium secret keying subject keys.
    """

    def __init__(
        self,
        spool: Spool,
        *,
        quiet_period_s: float = DEFAULT_QUIET_PERIOD_S,
        on_complete: OnComplete | None = None,
        clock: Callable[[], datetime] = utc_now,
        delivery_backoff_s: float = DEFAULT_DELIVERY_BACKOFF_S,
        delivery_backoff_max_s: float = DEFAULT_DELIVERY_BACKOFF_MAX_S,
        show_phi: bool = False,
        pseudonym_key: SecretStr | None = None,
    ) -> None:
        if quiet_period_s < 0:
            raise ValueError(f"quiet_period_s must be >= 0, got {quiet_period_s}")
        self.spool = spool
        self.quiet_period_s = quiet_period_s
        self.on_complete: OnComplete = on_complete or log_event
        self.clock = clock
        self.delivery_backoff_s = delivery_backoff_s
        self.delivery_backoff_max_s = delivery_backoff_max_s
        self.show_phi = show_phi
        self.pseudonym_key = pseudonym_key
        self.failed_deliveries = 0
        """Deliveries that failed in the last poll (their events stay pending)."""
        self._attempts: dict[str, int] = defaultdict(int)
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
        try:
            self.spool.touch_timepoints(studies, self.clock())
        except (OSError, sqlite3.Error) as exc:
            # Disk or index full: the quiet period then runs from the studies' last filed
            # instance (filing their pending ones records its receive time), and a study with
            # instances not yet filed is not completed meanwhile (Spool.unfiled_study_uids).
            LOG.warning("could not record the end of an association's activity: %s", exc)
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
            failed = 0
            for event in self.spool.pending_events():
                try:
                    self.on_complete(event)
                except Exception as exc:
                    # The hook's failure must not stop the receiver; retried on a later poll.
                    failed += 1
                    self._attempts[event.event_id] += 1
                    LOG.warning(
                        "time point %s: delivery attempt %d failed (%s); it stays pending",
                        event.event_id,
                        self._attempts[event.event_id],
                        short_reason(exc),
                    )
                    continue
                self._attempts.pop(event.event_id, None)
                if self.spool.mark_notified(event, self.clock()):
                    delivered.append(event)
                    record = event.timepoint
                    observe_completion_lag(record.last_activity_at, record.completed_at)
                    time_h = f"{record.time_h:.1f} h p.i." if record.time_h is not None else "?"
                    LOG.info(
                        "time point complete: %s patient %s from %s, %d instance(s) [%s], %s (%s)",
                        event.event_id,
                        patient_label(
                            record.patient_id, self.pseudonym_key, show_phi=self.show_phi
                        ),
                        record.calling_ae_title,
                        record.instance_count,
                        ",".join(record.modalities),
                        time_h,
                        record.completion_reason,
                    )
            self.failed_deliveries = failed
            return delivered

    def start(self, interval_s: float) -> None:
        """Poll every ``interval_s`` seconds on a background thread (delivers pending events
        left by a previous run at once)."""
        self._stop.clear()

        def run() -> None:
            while True:
                self.deliver_with_backoff()
                if self._stop.wait(interval_s):
                    return

        self._thread = threading.Thread(target=run, name="concordose-completion", daemon=True)
        self._thread.start()

    def deliver_with_backoff(self) -> None:
        """Poll; while deliveries fail (or the poll itself does), poll again after an
        exponential backoff (``delivery_backoff_s`` × 2ⁿ, capped at ``delivery_backoff_max_s``)
        until every pending event is delivered or :meth:`stop` is called. One log line per
        backoff, none with a traceback."""
        retrying = Retrying(
            retry=retry_if_exception_type(Exception) | retry_if_result(lambda failed: failed),
            wait=wait_exponential(
                multiplier=self.delivery_backoff_s, max=self.delivery_backoff_max_s
            ),
            stop=stop_when_event_set(self._stop),
            sleep=self._backoff_sleep,
            before_sleep=log_next_attempt,
            retry_error_callback=lambda _state: None,
        )
        retrying(self._poll_once)

    def _backoff_sleep(self, seconds: float) -> None:
        """Wait between polls, cut short by :meth:`stop`."""
        self._stop.wait(seconds)

    def _poll_once(self) -> bool:
        """One poll; True when some delivery failed (the backoff loop polls again)."""
        self.poll()
        return self.failed_deliveries > 0

    def stop(self) -> None:
        """Stop the background thread (pending state stays in the spool)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
