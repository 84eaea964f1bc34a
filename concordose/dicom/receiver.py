"""Storage SCP: receives instances by C-STORE and hands them to the :class:`~.spool.Spool`.

Handler contract (``EVT_C_STORE``), written down once as pynetdicom does for its own handlers:

* in: the association's calling AE title, the request's SOP Class/Instance UIDs, the dataset as
  encoded by the sender (stored byte-for-byte in the negotiated transfer syntax, never decoded
  beyond the few UID elements needed to file it);
* out: ``0x0000`` only after :meth:`Spool.store` has returned (fsync + rename + index commit);
  ``0xA700`` (out of resources) when the disk refuses the write, nothing half-written;
  ``0xC000`` (cannot understand) when identifying UIDs are missing or invalid — the bytes are then
  kept in the quarantine with the reason, and the service stays up.

``EVT_C_ECHO`` is answered with success by pynetdicom's default handler.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
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

from concordose.dicom.spool import InstanceIdentity, InvalidInstanceError, Spool

LOG = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000


def _ae_title(value: Any) -> str:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return text.strip()


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
    ) -> None:
        self.spool = spool
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

    def _handle_store(self, event: Any) -> int:
        calling_ae = _ae_title(event.assoc.requestor.ae_title)
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
        except (InvalidInstanceError, ValueError, KeyError, AttributeError) as exc:
            reason = f"from {calling_ae}: {exc}"
            path = self.spool.quarantine(data, reason)
            LOG.warning("quarantined instance %s (%s)", path.name, reason)
            self.failed_count += 1
            return STATUS_CANNOT_UNDERSTAND
        try:
            self.spool.store(identity, data, calling_ae)
        except OSError as exc:
            # Disk full, quota, I/O error: nothing was indexed, the sender may retry later.
            LOG.error("could not store %s: %s", identity.sop_instance_uid, exc)
            self.failed_count += 1
            return STATUS_OUT_OF_RESOURCES
        self.stored_count += 1
        return STATUS_SUCCESS

    def _handle_released(self, event: Any) -> None:
        LOG.info(
            "association from %s released (%d stored so far)",
            _ae_title(event.assoc.requestor.ae_title),
            self.stored_count,
        )

    def start(self) -> int:
        """Start listening in a background thread; returns the bound port."""
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_RELEASED, self._handle_released),
        ]
        self._server = self._ae.start_server(
            (self.host, self._requested_port), block=False, evt_handlers=handlers
        )
        LOG.info("receiver %s listening on %s:%d", self._ae.ae_title, self.host, self.port)
        return self.port

    def stop(self) -> None:
        """Stop listening and close the server's socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

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
