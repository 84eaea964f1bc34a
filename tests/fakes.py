"""Test doubles shared by unit and integration tests: a clock moved by hand, a recording hook."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from concordose.spool.timepoints import TimePointEvent

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


class FakeClock:
    """UTC time that only moves when told (tests move time instead of sleeping)."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Recorder:
    """An ``on_complete`` hook that records events (thread-safe) and can be told to fail."""

    def __init__(self, fail: bool = False) -> None:
        self.events: list[TimePointEvent] = []
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, event: TimePointEvent) -> None:
        if self.fail:
            raise RuntimeError("flow server unreachable")
        with self._lock:
            self.events.append(event)

    @property
    def event_ids(self) -> list[str]:
        with self._lock:
            return [event.event_id for event in self.events]
