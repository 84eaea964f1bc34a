"""Storage SCP: receives instances by C-STORE and hands them to the :class:`~.spool.Spool`.

Handler contract (``EVT_C_STORE``), written down once as pynetdicom does for its own handlers:

* in: the association's calling AE title, the request's SOP Class/Instance UIDs, the dataset as
  encoded by the sender (stored byte-for-byte in the negotiated transfer syntax, never decoded
  beyond the UIDs and the few header elements that place it in its time point; pixel data is
  never touched);
* out: ``0x0124`` (refused, not authorised) over TLS when the peer certificate's CN (or DNS
  name) is not the site the calling AE title belongs to;
  ``0x0000`` only after :meth:`Spool.store` has returned (fsync + rename + index commit);
  ``0xA700`` (out of resources) when the disk refuses the write, nothing half-written;
  ``0xC000`` (cannot understand) when identifying UIDs are missing or invalid or the dataset
  cannot be decoded — the bytes are then kept in the quarantine with the reason, and the service
  stays up.

``EVT_C_ECHO`` is answered with success by pynetdicom's default handler.

Each stored instance marks its time point busy until its association closes; a
:class:`~.completion.CompletionMonitor` then completes quiet time points and calls the
``on_complete`` hook (see :class:`~.timepoints.OnComplete`). One line is logged per association
(accepted / rejected / closed with its counts) and per completed time point.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

from pydicom.uid import UID
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    VerificationPresentationContexts,
    evt,
)
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)

from concordose.dicom.completion import DEFAULT_QUIET_PERIOD_S, CompletionMonitor, utc_now
from concordose.dicom.spool import (
    RECEIVER_LOCK_FILENAME,
    InstanceIdentity,
    InvalidInstanceError,
    Spool,
)
from concordose.dicom.timepoints import InstanceSummary, OnComplete
from concordose.errors import ConcordoseError

LOG = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_NOT_AUTHORIZED = 0x0124  # PS3.7 Annex C: "Refused: Not Authorized"
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000

DEFAULT_DUL_POLL_INTERVAL_S = 0.0002
"""How long an association's pynetdicom DUL thread sleeps when it has nothing to do (s).

pynetdicom's default, 1 ms, sits on every C-STORE's critical path: the response waits in the
DUL's queue until its next wake-up, and a sender such as ``storescu`` sends the next instance
only after the response. 0.2 ms took the do-nothing pynetdicom SCP from 0.67 s to 0.42 s for the
200-instance CT series of ``benchmarks/bench_receiver.py``; the price is ≈3.4 % of one core more
per *idle* open association (5 000 instead of 1 000 wake-ups per second; benchmarks/README.md).
"""


def _ae_title(value: Any) -> str:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return text.strip()


# pynetdicom binds these to every association by default; they build a debug text for each PDU
# and DIMSE message even when the "pynetdicom" logger discards DEBUG (see ``start``).
_PYNETDICOM_DEBUG_HANDLERS: tuple[tuple[Any, Any], ...] = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)


def unbind_pynetdicom_debug_handlers(server: Any) -> None:
    """Unbind pynetdicom's per-PDU debug handlers from ``server`` unless its logger shows DEBUG.

    They format a text for every PDU and DIMSE message even when the ``pynetdicom`` logger
    discards it: ≈5 % of a pynetdicom SCP's time receiving a CT series (benchmarks/README.md).
    """
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
        for event, handler in _PYNETDICOM_DEBUG_HANDLERS:
            server.unbind(event, handler)


def _certificate_names(event: Any) -> set[str] | None:
    """Subject CN and DNS names of the peer's TLS certificate; ``None`` without TLS."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is None or not hasattr(sock, "getpeercert"):
        return None
    certificate = sock.getpeercert()
    if not certificate:
        return set()
    names = {
        str(value)
        for rdn in certificate.get("subject", ())
        for key, value in rdn
        if key == "commonName"
    }
    names |= {str(value) for key, value in certificate.get("subjectAltName", ()) if key == "DNS"}
    return names


@dataclass
class _AssociationLog:
    """Counters of one association, logged when it closes.

    ``certificate_names`` is ``None`` on plain TCP, else the peer certificate's CN/DNS names.
    """

    number: int
    calling_ae_title: str
    peer: str
    certificate_names: set[str] | None = None
    stored: int = 0
    failed: int = 0
    studies: set[str] = field(default_factory=set)


class StorageReceiver:
    """A pynetdicom storage SCP writing into a :class:`Spool`.

    Args:
        spool: where instances are made durable.
        ae_title: our AE title (called AE).
        host, port: where to listen; port 0 picks a free port (see :attr:`port` after start).
        allowed_calling_ae_titles: if given, associations from any other calling AE title are
            rejected at association with reason 0x03 "calling AE title not recognised".
        max_pdu_bytes: maximum PDU size we receive (0 = unlimited).
        max_associations: concurrent associations accepted.
        site_by_ae_title: calling AE title → site id (from ``sites.yaml``); named in the log,
            and, when ``allowed_calling_ae_titles`` is not given, the titles allowed.
        ssl_context: a server TLS context (see :mod:`.tls`); ``None`` for plain TCP.
        quiet_period_s: seconds without activity after the last association touching a time
            point before it is complete.
        on_complete: the completion hook (contract: :class:`~.timepoints.OnComplete`).
        completion_poll_interval_s: how often the background thread looks for quiet time
            points; ``None`` starts no thread (call :meth:`CompletionMonitor.poll` yourself).
        clock: current UTC time (injectable for tests).
        dul_poll_interval_s: idle sleep of each association's pynetdicom DUL thread (see
            :data:`DEFAULT_DUL_POLL_INTERVAL_S`); ``None`` keeps pynetdicom's 1 ms.
    """

    def __init__(
        self,
        spool: Spool,
        *,
        ae_title: str = "CONCORDOSE",
        host: str = "127.0.0.1",
        port: int = 11112,
        allowed_calling_ae_titles: Iterable[str] | None = None,
        max_pdu_bytes: int = 131072,
        max_associations: int = 10,
        site_by_ae_title: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        quiet_period_s: float = DEFAULT_QUIET_PERIOD_S,
        on_complete: OnComplete | None = None,
        completion_poll_interval_s: float | None = None,
        clock: Callable[[], datetime] = utc_now,
        dul_poll_interval_s: float | None = DEFAULT_DUL_POLL_INTERVAL_S,
    ) -> None:
        self.spool = spool
        self.dul_poll_interval_s = dul_poll_interval_s
        self.site_by_ae_title = dict(site_by_ae_title or {})
        self.ssl_context = ssl_context
        self.completion = CompletionMonitor(
            spool, quiet_period_s=quiet_period_s, on_complete=on_complete, clock=clock
        )
        self._poll_interval_s = completion_poll_interval_s
        self._associations: dict[int, _AssociationLog] = {}
        self._association_counter = 0
        self._counter_lock = threading.Lock()
        if allowed_calling_ae_titles is None and site_by_ae_title is not None:
            allowed_calling_ae_titles = list(site_by_ae_title)
        self.host = host
        self._requested_port = port
        self._ae = AE(ae_title=ae_title)
        self._ae.maximum_pdu_size = max_pdu_bytes
        self._ae.maximum_associations = max_associations
        for context in [*VerificationPresentationContexts, *AllStoragePresentationContexts]:
            assert context.abstract_syntax is not None
            # Every transfer syntax, compressed ones included: stored as received.
            self._ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        if allowed_calling_ae_titles is not None:
            self._ae.require_calling_aet = list(allowed_calling_ae_titles)
        self._server: Any = None
        self.stored_count = 0
        self.failed_count = 0

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def active_associations(self) -> int:
        """Associations currently open (0 when not started)."""
        if self._server is None:
            return 0
        return len(self._server.active_associations)

    def _describe(self, calling_ae: str) -> str:
        site = self.site_by_ae_title.get(calling_ae)
        return f"{calling_ae} (site {site})" if site else calling_ae

    def _association(self, event: Any) -> _AssociationLog:
        key = id(event.assoc)
        entry = self._associations.get(key)
        if entry is None:
            with self._counter_lock:
                self._association_counter += 1
                number = self._association_counter
            address = event.assoc.requestor.address
            port = event.assoc.requestor.port
            entry = _AssociationLog(
                number,
                _ae_title(event.assoc.requestor.ae_title),
                f"{address}:{port}",
                _certificate_names(event),
            )
            self._associations[key] = entry
        return entry

    def _fail(self, entry: _AssociationLog, status: int) -> int:
        entry.failed += 1
        with self._counter_lock:
            self.failed_count += 1
        return status

    def _handle_store(self, event: Any) -> int:
        entry = self._association(event)
        calling_ae = entry.calling_ae_title
        site = self.site_by_ae_title.get(calling_ae)
        if entry.certificate_names is not None and site and site not in entry.certificate_names:
            # TLS proves the institution: a site's certificate may only send as that site.
            LOG.warning(
                "refused instance from %s: its TLS certificate (%s) is not site %s's",
                calling_ae,
                ", ".join(sorted(entry.certificate_names)) or "none",
                site,
            )
            return self._fail(entry, STATUS_NOT_AUTHORIZED)
        data = event.encoded_dataset(include_meta=True)
        try:
            dataset = event.dataset
            identity = InstanceIdentity.checked(
                sop_class_uid=event.request.AffectedSOPClassUID,
                sop_instance_uid=event.request.AffectedSOPInstanceUID,
                study_uid=dataset.get("StudyInstanceUID"),
                series_uid=dataset.get("SeriesInstanceUID"),
                transfer_syntax=UID(event.context.transfer_syntax),
            )
            summary = InstanceSummary.from_dataset(dataset)
        except Exception as exc:
            # Undecodable bytes raise anything pydicom's parser can raise; none may stop us.
            kind = "invalid identity" if isinstance(exc, InvalidInstanceError) else "undecodable"
            reason = f"from {calling_ae}: {kind}: {type(exc).__name__}: {exc}"
            try:
                path = self.spool.quarantine(data, reason)
            except OSError as disk_error:
                LOG.error("could not quarantine (%s): %s", reason, disk_error)
                return self._fail(entry, STATUS_OUT_OF_RESOURCES)
            LOG.warning("quarantined instance %s (%s)", path.name, reason)
            return self._fail(entry, STATUS_CANNOT_UNDERSTAND)
        try:
            self.spool.store(identity, data, calling_ae, summary, now=self.completion.clock())
        except OSError as exc:
            # Disk full, quota, I/O error: nothing was indexed, the sender may retry later.
            LOG.error("could not store %s: %s", identity.sop_instance_uid, exc)
            return self._fail(entry, STATUS_OUT_OF_RESOURCES)
        self.completion.association_stored(id(event.assoc), identity.study_uid)
        entry.stored += 1
        entry.studies.add(identity.study_uid)
        with self._counter_lock:
            self.stored_count += 1
        return STATUS_SUCCESS

    def _handle_connection_opened(self, event: Any) -> None:
        # pynetdicom leaves Nagle on: each small C-STORE response would then wait for the
        # sender's delayed ACK. dcmtk peers set TCP_NODELAY from the environment; we set it here.
        sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        if sock is not None:
            with suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # pynetdicom's DUL reactor reads this (private) attribute on every idle loop; a renamed
        # attribute in a later pynetdicom is caught by tests/unit/test_receiver_speed.py.
        if self.dul_poll_interval_s is not None and hasattr(event.assoc.dul, "_run_loop_delay"):
            event.assoc.dul._run_loop_delay = self.dul_poll_interval_s

    def _handle_accepted(self, event: Any) -> None:
        entry = self._association(event)
        LOG.info(
            "association #%d from %s at %s accepted",
            entry.number,
            self._describe(entry.calling_ae_title),
            entry.peer,
        )

    def _handle_rejected(self, event: Any) -> None:
        requestor = event.assoc.requestor
        LOG.warning(
            "association from %s at %s:%s rejected (calling AE title not allowed or busy)",
            _ae_title(requestor.ae_title),
            requestor.address,
            requestor.port,
        )

    def _handle_closed(self, event: Any) -> None:
        entry = self._associations.pop(id(event.assoc), None)
        self.completion.association_closed(id(event.assoc))
        if entry is None:
            return  # rejected or never got past negotiation: logged already
        how = "aborted" if event.assoc.is_aborted else "released"
        LOG.info(
            "association #%d from %s %s: %d stored, %d failed, %d study(ies)",
            entry.number,
            self._describe(entry.calling_ae_title),
            how,
            entry.stored,
            entry.failed,
            len(entry.studies),
        )

    def _acquire_spool_lock(self) -> None:
        try:
            self.spool.lock_for_receiver()
        except BlockingIOError:
            raise ConcordoseError(
                f"another receiver already serves spool {self.spool.root} "
                f"(lock {RECEIVER_LOCK_FILENAME} is held); run one receiver per spool"
            ) from None

    def _release_spool_lock(self) -> None:
        self.spool.unlock_receiver()

    def start(self) -> int:
        """Start listening in a background thread; returns the bound port.

        Raises:
            ConcordoseError: another receiver holds this spool.
        """
        self._acquire_spool_lock()
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_CONN_OPEN, self._handle_connection_opened),
            (evt.EVT_ACCEPTED, self._handle_accepted),
            (evt.EVT_REJECTED, self._handle_rejected),
            (evt.EVT_CONN_CLOSE, self._handle_closed),
        ]
        try:
            self._server = self._ae.start_server(
                (self.host, self._requested_port),
                block=False,
                evt_handlers=handlers,
                ssl_context=self.ssl_context,
            )
        except BaseException:
            self._release_spool_lock()
            raise
        unbind_pynetdicom_debug_handlers(self._server)
        if self._poll_interval_s is not None:
            self.completion.start(self._poll_interval_s)
        LOG.info(
            "receiver %s listening on %s:%d%s, spool %s, quiet period %.0f s",
            self._ae.ae_title,
            self.host,
            self.port,
            " (TLS)" if self.ssl_context else "",
            self.spool.root,
            self.completion.quiet_period_s,
        )
        return self.port

    def stop(self) -> None:
        """Stop listening, stop the completion thread and release the spool."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.completion.stop()
        self._release_spool_lock()

    def __enter__(self) -> StorageReceiver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
