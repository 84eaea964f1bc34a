"""Admission control of the storage SCP: which connections and associations it takes on, and
how long each may take to say what it wants (issue 18, item 2).

A connection is *unassociated* from the TCP accept until its A-ASSOCIATE-RQ has been read
(TLS handshake included). Without limits, a peer that opens connections and never associates,
or trickles the bytes of a PDU (1 byte every 20 s passes any per-``recv`` timeout), holds a
thread, a socket and — once associated — an association slot for as long as it likes: 10 such
associations kept every other sender rejected for ≥ 150 s, 150 idle connections held 180
threads and 186 file descriptors (adversarial test, issue 18). The limits, with their settings
(:class:`concordose.settings.Settings`, environment ``CONCORDOSE_RECEIVER_…``):

* ``associate_deadline_s`` — the A-ASSOCIATE-RQ must be complete this long after the connect,
  however its bytes trickle (PS3.8 §9.2.3's ARTIM timer: on expiry the connection is closed);
* ``pdu_deadline_s`` — once the first byte of a PDU has arrived, the whole PDU must within this
  long (else A-ABORT); between PDUs the idle (network) timeout applies as before;
* ``max_unassociated`` — at most this many unassociated connections: one more closes the one
  that has waited longest (its A-ASSOCIATE-RQ the most overdue), so idle connections can
  never lock out a sender that associates at once, and threads and sockets stay bounded;
* ``max_associations_per_site`` — associations open at once from one site (the calling AE
  title's site in ``sites.yaml``, else the title itself); one more is rejected transiently
  (A-ASSOCIATE-RJ 2/3/2 "local limit exceeded"), so one site cannot take every slot of
  ``max_associations``;
* ``check_called_ae_title`` — the called AE title must be ours, else A-ASSOCIATE-RJ 1/1/7
  "called AE title not recognised" (off: any called AE title is accepted).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Hashable
from contextlib import suppress
from dataclasses import dataclass

from concordose.observability.metrics import RejectionReason, record_rejection

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdmissionLimits:
    """The receiver's admission limits (see the module docstring); the one home of their
    defaults, which :class:`concordose.settings.Settings` reuses.

    Attributes:
        associate_deadline_s: seconds from the connect within which the A-ASSOCIATE-RQ
            (after the TLS handshake, if any) must have arrived complete.
        pdu_deadline_s: seconds from a PDU's first byte within which the PDU must be
            complete (a P-DATA-TF of at most the maximum PDU length: 128 kB by default).
        max_unassociated: TCP connections without an A-ASSOCIATE-RQ yet held at once.
        max_associations_per_site: associations open at once from one site.
        check_called_ae_title: reject an A-ASSOCIATE-RQ whose called AE title is not ours.
    """

    # 10 s: a requestor sends its A-ASSOCIATE-RQ as soon as it is connected (and the TLS
    # handshake is a few round trips); dcmtk and pynetdicom wait 30 s for the answer, which
    # leaves them time to see our close rather than time out first.
    associate_deadline_s: float = 10.0
    # 30 s: a 128 kB PDU takes 1 s at 1 Mbit/s; 30 × that is a slow link, not a sender.
    pdu_deadline_s: float = 30.0
    max_unassociated: int = 32
    max_associations_per_site: int = 5
    check_called_ae_title: bool = True

    def __post_init__(self) -> None:
        for name in ("associate_deadline_s", "pdu_deadline_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 s, found {getattr(self, name)}")
        for name in ("max_unassociated", "max_associations_per_site"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, found {getattr(self, name)}")


DEFAULT_ADMISSION = AdmissionLimits()

EVICTION_LOG_INTERVAL_S = 10.0
"""At most one log line per this many seconds about connections closed to stay within the
limit (a flood of connections would otherwise flood the log)."""


@dataclass
class _Waiting:
    fileno: int
    peer: str
    connected_at: float


class UnassociatedConnections:
    """The connections waiting for their A-ASSOCIATE-RQ, oldest first, at most ``limit``.

    :meth:`enter` a connection when it is accepted, :meth:`leave` it once its A-ASSOCIATE-RQ
    was read or **before its socket is closed** (its file descriptor must still be its own when
    another connection evicts it). Entering beyond the limit shuts the oldest one down
    (``shutdown(SHUT_RDWR)`` on its file descriptor: its thread's blocked read returns at once,
    and the thread closes it).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._waiting: dict[Hashable, _Waiting] = {}  # insertion order: oldest first
        self._lock = threading.Lock()
        self.evicted_count = 0
        self._unlogged_count = 0
        self._logged_at = float("-inf")

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)

    def enter(self, key: Hashable, connection: socket.socket, peer: str) -> None:
        """Count ``connection`` (under ``key``); over the limit, shut the oldest one down."""
        with self._lock:
            self._waiting[key] = _Waiting(connection.fileno(), peer, time.monotonic())
            while len(self._waiting) > self.limit:
                oldest_key = next(iter(self._waiting))
                oldest = self._waiting.pop(oldest_key)
                self.evicted_count += 1
                record_rejection(RejectionReason.UNASSOCIATED_LIMIT)  # issue 19 (metrics)
                # Under the lock: the owner leaves before it closes, so the descriptor is still
                # that connection's (never a newer one reusing the number).
                with suppress(OSError), socket.socket(fileno=os.dup(oldest.fileno)) as dup:
                    dup.shutdown(socket.SHUT_RDWR)  # the connection itself, not only the copy
                self._unlogged_count += 1
                now = time.monotonic()
                if now - self._logged_at >= EVICTION_LOG_INTERVAL_S:
                    LOG.warning(
                        "closed %d connection(s) without an A-ASSOCIATE-RQ to admit newer ones "
                        "(at most %d such, CONCORDOSE_RECEIVER_MAX_UNASSOCIATED), the last "
                        "from %s after %.1f s; %d so far",
                        self._unlogged_count,
                        self.limit,
                        oldest.peer,
                        now - oldest.connected_at,
                        self.evicted_count,
                    )
                    self._unlogged_count, self._logged_at = 0, now

    def leave(self, key: Hashable) -> None:
        """No longer waiting (associating, or about to be closed); idempotent."""
        with self._lock:
            self._waiting.pop(key, None)
