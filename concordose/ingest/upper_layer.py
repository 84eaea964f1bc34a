"""The DICOM upper layer of our storage SCP: association negotiation by pynetdicom, then a
streaming P-DATA loop of our own.

Why our own loop (benchmarks/README.md, "Receiver speed"): pynetdicom's acceptor runs two
reactor threads per association that poll with sleeps (``time.sleep(0.001)`` per loop of
``Association._run_reactor``, hard-coded; the DUL's ``_run_loop_delay``), decodes every PDU into
Python objects and assembles each dataset in a ``BytesIO``. Receiving a 200-instance CT series
with a handler that does nothing took 0.71–0.86 s there (2.2–4.2× dcmtk's ``storescp`` writing
the files), 0.15–0.26 s on this layer (0.7–1.2×).

What stays pynetdicom's: decoding the A-ASSOCIATE-RQ (:class:`pynetdicom.pdu.A_ASSOCIATE_RQ`),
presentation-context and SCP/SCU-role negotiation
(:func:`pynetdicom.presentation.negotiate_as_acceptor` against an :class:`pynetdicom.AE`'s
supported contexts), and encoding the A-ASSOCIATE-AC/-RJ PDUs. What is ours: after the
A-ASSOCIATE-AC, one thread per association reads PDUs with ``recv_into`` into one reusable
buffer, decodes only command sets (group 0000, implicit VR little endian, PS3.7 §6.3.1) and
hands every data-set fragment straight to an :class:`IncomingDataSet` (the receiver writes it
into a spool-journal record), so an instance is never assembled in memory and nothing sleeps.

Supported after negotiation (PS3.8 §9.3): P-DATA-TF carrying C-ECHO-RQ and C-STORE-RQ (answered
with C-ECHO-RSP / C-STORE-RSP, one message at a time as negotiated without an asynchronous
operations window), A-RELEASE-RQ (answered, then closed), A-ABORT (closed). Any other PDU or
DIMSE command, a malformed PDU or command set, or silence longer than the network timeout → we
send an A-ABORT (service provider) and close; an instance being received is then discarded.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import negotiate_as_acceptor
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated

LOG = logging.getLogger(__name__)

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

# PDU types (PS3.8 §9.3.1)
PDU_ASSOCIATE_RQ = 0x01
PDU_P_DATA_TF = 0x04
PDU_RELEASE_RQ = 0x05
PDU_ABORT = 0x07
A_RELEASE_RP = b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"

# DIMSE command fields and values (PS3.7 §9.3, §E)
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_CANCEL_RQ = 0x0FFF
NO_DATA_SET = 0x0101

MAX_ASSOCIATE_RQ_BYTES = 1 << 20
"""Largest A-ASSOCIATE-RQ we read (a request lists ≤ 128 contexts: a few tens of kB)."""

MAX_COMMAND_BYTES = 1 << 16
"""Largest command set we assemble (a C-STORE-RQ is ≈ 200 bytes)."""

_PDU_HEADER = struct.Struct(">BxI")
_PDV_HEADER = struct.Struct(">IBB")
_ELEMENT_HEADER = struct.Struct("<HHI")


class ProtocolError(Exception):
    """The peer broke the upper-layer protocol; the association is aborted."""


class PeerClosedError(Exception):
    """The peer closed the connection (or aborted the association)."""


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ's result, source and diagnostic (PS3.8 §9.3.4)."""

    result: int
    source: int
    diagnostic: int


CALLING_AE_NOT_RECOGNISED = Rejection(0x01, 0x01, 0x03)
LOCAL_LIMIT_EXCEEDED = Rejection(0x02, 0x03, 0x02)


@dataclass
class Association:
    """One association as the service sees it.

    Attributes:
        calling_ae_title / called_ae_title: from the A-ASSOCIATE-RQ, stripped.
        peer: ``host:port`` of the requestor.
        certificate_names: subject CN and DNS names of the peer's TLS certificate, ``None``
            on plain TCP (an empty set: TLS without a client certificate).
        transfer_syntax_by_context: accepted presentation context id → transfer syntax UID.
        abstract_syntax_by_context: accepted presentation context id → its SOP class UID.
        peer_max_pdu_bytes: the largest PDU the peer receives (0: unlimited).
        aborted: ``True`` once it ended by A-ABORT, error or timeout rather than release.
    """

    calling_ae_title: str
    called_ae_title: str
    peer: str
    certificate_names: set[str] | None
    transfer_syntax_by_context: dict[int, str] = field(default_factory=dict)
    abstract_syntax_by_context: dict[int, str] = field(default_factory=dict)
    peer_max_pdu_bytes: int = 0
    aborted: bool = False


@dataclass(frozen=True)
class StoreRequest:
    """The command set of one C-STORE-RQ (UIDs as sent, not yet validated) and the abstract
    syntax of the presentation context it came on (``""`` when unknown)."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    context_abstract_syntax: str = ""


class IncomingDataSet(Protocol):
    """Where the fragments of one C-STORE data set go, in order, as they arrive.

    ``write`` must not raise for a disk error (remember it and answer from ``finish``); it may
    be called with zero fragments when the data set is empty. ``finish`` returns the C-STORE
    status to answer. ``discard`` is called instead of ``finish`` when the association ends
    mid-transfer (nothing may be kept, nothing answered).
    """

    def write(self, fragment: memoryview) -> None: ...

    def finish(self) -> int: ...

    def discard(self) -> None: ...


class StorageService(Protocol):
    """What the upper layer asks of the receiver (:class:`~.receiver.StorageReceiver`)."""

    def admit(self, association: Association) -> Rejection | None:
        """``None`` to accept the association (called before any presentation context)."""
        ...

    def established(self, association: Association) -> None:
        """The A-ASSOCIATE-AC was sent."""
        ...

    def begin_store(self, association: Association, request: StoreRequest) -> IncomingDataSet:
        """A C-STORE-RQ command arrived; its data set follows."""
        ...

    def ended(self, association: Association) -> None:
        """The association ended (released or aborted); called once after ``established``."""
        ...


def _certificate_names(connection: socket.socket) -> set[str] | None:
    if not isinstance(connection, ssl.SSLSocket):
        return None
    certificate = connection.getpeercert()
    if not certificate:
        return set()
    subject: Any = certificate.get("subject", ())
    alternative: Any = certificate.get("subjectAltName", ())
    names = {str(value) for rdn in subject for key, value in rdn if key == "commonName"}
    names |= {str(value) for key, value in alternative if key == "DNS"}
    return names


class _Reader:
    """Buffered reads from a socket with ``recv_into`` into one reusable buffer."""

    def __init__(self, connection: socket.socket, size: int) -> None:
        self._connection = connection
        self._buffer = bytearray(size)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0

    def _receive(self) -> None:
        """Receive at least one byte after the buffered ones (compacting first if needed)."""
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buffer):
            kept = self._end - self._start
            self._buffer[:kept] = self._view[self._start : self._end]
            self._start, self._end = 0, kept
        count = self._connection.recv_into(self._view[self._end :])
        if count == 0:
            raise PeerClosedError("the peer closed the connection")
        self._end += count

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes (copied)."""
        if size > len(self._buffer):
            parts = []
            while size:
                part = min(size, len(self._buffer))
                parts.append(self.read(part))
                size -= part
            return b"".join(parts)
        while self._end - self._start < size:
            self._receive()
        data = bytes(self._view[self._start : self._start + size])
        self._start += size
        return data

    def unpack(self, layout: struct.Struct) -> tuple[int, ...]:
        while self._end - self._start < layout.size:
            self._receive()
        values = layout.unpack_from(self._buffer, self._start)
        self._start += layout.size
        return tuple(values)

    def stream(self, size: int, sink: Callable[[memoryview], None]) -> None:
        """Hand exactly ``size`` bytes to ``sink`` in the pieces they arrive in (no copy)."""
        while size:
            if self._start == self._end:
                self._receive()
            part = min(size, self._end - self._start)
            sink(self._view[self._start : self._start + part])
            self._start += part
            size -= part


def _parse_command(data: bytes) -> dict[int, bytes]:
    """Group 0000 elements of an implicit VR little endian command set: element → value."""
    elements: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        if offset + 8 > len(data):
            raise ProtocolError("command set truncated inside an element header")
        group, element, length = _ELEMENT_HEADER.unpack_from(data, offset)
        offset += 8
        if group != 0x0000 or offset + length > len(data):
            raise ProtocolError(f"malformed command set element ({group:04X},{element:04X})")
        elements[element] = data[offset : offset + length]
        offset += length
    return elements


def _us(elements: dict[int, bytes], element: int) -> int:
    value = elements.get(element)
    if value is None or len(value) != 2:
        raise ProtocolError(f"command set lacks a valid (0000,{element:04X}) US value")
    return int.from_bytes(value, "little")


def _ui(elements: dict[int, bytes], element: int) -> str:
    return elements.get(element, b"").decode("ascii", "replace").rstrip("\0 ")


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT_HEADER.pack(0x0000, element, len(value)) + value


def _uid_value(uid: str) -> bytes:
    raw = uid.encode("ascii", "replace")
    return raw + b"\0" if len(raw) % 2 else raw


def encode_response(
    command_field: int, message_id: int, status: int, sop_class_uid: str, sop_instance_uid: str
) -> bytes:
    """A C-STORE-RSP or C-ECHO-RSP command set (implicit VR little endian, PS3.7 §9.3)."""
    body = b"".join(
        (
            _element(0x0002, _uid_value(sop_class_uid)),
            _element(0x0100, struct.pack("<H", command_field)),
            _element(0x0120, struct.pack("<H", message_id)),
            _element(0x0800, struct.pack("<H", NO_DATA_SET)),
            _element(0x0900, struct.pack("<H", status)),
            _element(0x1000, _uid_value(sop_instance_uid)) if sop_instance_uid else b"",
        )
    )
    return _element(0x0000, struct.pack("<I", len(body))) + body


def encode_command_pdus(context_id: int, command: bytes, peer_max_pdu_bytes: int) -> bytes:
    """P-DATA-TF PDU(s) carrying ``command`` as command fragments within the peer's limit."""
    limit = peer_max_pdu_bytes - 6 if peer_max_pdu_bytes >= 7 else len(command)
    pieces = [command[i : i + limit] for i in range(0, len(command), max(limit, 1))] or [b""]
    out = []
    for index, piece in enumerate(pieces):
        control = 0x03 if index == len(pieces) - 1 else 0x01
        pdv = _PDV_HEADER.pack(len(piece) + 2, context_id, control) + piece
        out.append(_PDU_HEADER.pack(PDU_P_DATA_TF, len(pdv)) + pdv)
    return b"".join(out)


def _abort_pdu(source: int = 0x02, reason: int = 0x00) -> bytes:
    return _PDU_HEADER.pack(PDU_ABORT, 4) + bytes((0, 0, source, reason))


@dataclass(frozen=True)
class UpperLayerSettings:
    """Association settings shared by every connection.

    Attributes:
        ae: the pynetdicom AE holding our AE title and supported presentation contexts.
        max_pdu_bytes: the largest PDU we accept, announced in the A-ASSOCIATE-AC (0: none).
        acse_timeout_s: how long we wait for the A-ASSOCIATE-RQ after connecting.
        network_timeout_s: silence after which an established association is aborted.
        buffer_bytes: receive buffer of each association.
    """

    ae: AE
    max_pdu_bytes: int
    acse_timeout_s: float = 30.0
    network_timeout_s: float = 60.0
    buffer_bytes: int = 1 << 18


def _read_associate_rq(reader: _Reader) -> A_ASSOCIATE:
    pdu_type, length = reader.unpack(_PDU_HEADER)
    if pdu_type != PDU_ASSOCIATE_RQ:
        raise ProtocolError(f"expected an A-ASSOCIATE-RQ, got PDU type 0x{pdu_type:02X}")
    if length > MAX_ASSOCIATE_RQ_BYTES:
        raise ProtocolError(f"A-ASSOCIATE-RQ of {length} bytes refused")
    raw = _PDU_HEADER.pack(pdu_type, length) + reader.read(length)
    pdu = A_ASSOCIATE_RQ()
    try:
        pdu.decode(raw)
        return pdu.to_primitive()
    except Exception as exc:  # pynetdicom raises various errors for malformed PDUs
        raise ProtocolError(f"undecodable A-ASSOCIATE-RQ: {exc}") from exc


def _accept(request: A_ASSOCIATE, settings: UpperLayerSettings, association: Association) -> bytes:
    """Negotiate presentation contexts; returns the encoded A-ASSOCIATE-AC."""
    roles: dict[str, tuple[bool | None, bool | None]] = {}
    peer_max = 0
    for item in request.user_information:
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid:
            roles[str(item.sop_class_uid)] = (item.scu_role, item.scp_role)
        elif isinstance(item, MaximumLengthNotification):
            peer_max = int(item.maximum_length_received or 0)
    results, role_items = negotiate_as_acceptor(
        request.presentation_context_definition_list,
        settings.ae.supported_contexts,
        roles or None,  # type: ignore[arg-type]
    )
    association.peer_max_pdu_bytes = peer_max
    association.transfer_syntax_by_context = {
        int(cx.context_id): str(cx.transfer_syntax[0])
        for cx in results
        if cx.result == 0x00 and cx.context_id is not None
    }
    association.abstract_syntax_by_context = {
        int(cx.context_id): str(cx.abstract_syntax)
        for cx in results
        if cx.result == 0x00 and cx.context_id is not None
    }
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = settings.max_pdu_bytes
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT_NAME
    primitive.calling_ae_title = request.calling_ae_title
    primitive.called_ae_title = request.called_ae_title
    primitive.result = 0x00
    primitive.result_source = 0x01
    primitive.presentation_context_definition_results_list = results
    primitive.user_information = [maximum, implementation, version, *role_items]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def _reject(rejection: Rejection) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.result = rejection.result
    primitive.result_source = rejection.source
    primitive.diagnostic = rejection.diagnostic
    pdu = A_ASSOCIATE_RJ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


class _MessageLoop:
    """The P-DATA loop of one established association (one DIMSE message at a time)."""

    def __init__(
        self,
        connection: socket.socket,
        reader: _Reader,
        association: Association,
        service: StorageService,
    ) -> None:
        self.connection = connection
        self.reader = reader
        self.association = association
        self.service = service
        self.command = bytearray()
        self.request: StoreRequest | None = None
        self.request_context = 0
        self.incoming: IncomingDataSet | None = None

    def run(self) -> None:
        """Serve until release; else raise :class:`PeerClosedError` or :class:`ProtocolError`."""
        while True:
            pdu_type, length = self.reader.unpack(_PDU_HEADER)
            if pdu_type == PDU_P_DATA_TF:
                self._p_data(length)
            elif pdu_type == PDU_RELEASE_RQ:
                self.reader.read(length)
                if self.incoming is not None or self.command:
                    raise ProtocolError("A-RELEASE-RQ in the middle of a DIMSE message")
                self.connection.sendall(A_RELEASE_RP)
                return
            elif pdu_type == PDU_ABORT:
                self.reader.read(length)
                raise PeerClosedError("the peer aborted the association")
            else:
                raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02X} after association")

    def _p_data(self, length: int) -> None:
        while length:
            if length < _PDV_HEADER.size:
                raise ProtocolError("P-DATA-TF truncated inside a PDV header")
            item_length, context_id, control = self.reader.unpack(_PDV_HEADER)
            data_length = item_length - 2
            length -= _PDV_HEADER.size + data_length
            if data_length < 0 or length < 0:
                raise ProtocolError("PDV item longer than its P-DATA-TF PDU")
            if context_id not in self.association.transfer_syntax_by_context:
                raise ProtocolError(f"PDV on presentation context {context_id}, not accepted")
            is_command, is_last = bool(control & 0x01), bool(control & 0x02)
            if is_command:
                if self.incoming is not None:
                    raise ProtocolError("command fragment in the middle of a data set")
                if len(self.command) + data_length > MAX_COMMAND_BYTES:
                    raise ProtocolError("command set too long")
                self.command += self.reader.read(data_length)
                if is_last:
                    self._command_received(context_id)
            else:
                if self.incoming is None or context_id != self.request_context:
                    raise ProtocolError("data set fragment without a C-STORE-RQ command")
                self.reader.stream(data_length, self.incoming.write)
                if is_last:
                    self._data_set_received()

    def _command_received(self, context_id: int) -> None:
        elements = _parse_command(bytes(self.command))
        self.command.clear()
        command_field = _us(elements, 0x0100)
        if command_field == C_CANCEL_RQ:
            return  # nothing of ours to cancel: each message is answered before the next
        message_id = _us(elements, 0x0110)
        has_data_set = _us(elements, 0x0800) != NO_DATA_SET
        if command_field == C_ECHO_RQ and not has_data_set:
            self._respond(
                context_id,
                command_field=C_ECHO_RSP,
                message_id=message_id,
                status=0x0000,
                sop_class_uid=Verification,
                sop_instance_uid="",
            )
        elif command_field == C_STORE_RQ and has_data_set:
            request = StoreRequest(
                message_id=message_id,
                sop_class_uid=_ui(elements, 0x0002),
                sop_instance_uid=_ui(elements, 0x1000),
                transfer_syntax=self.association.transfer_syntax_by_context[context_id],
                context_abstract_syntax=self.association.abstract_syntax_by_context.get(
                    context_id, ""
                ),
            )
            self.request, self.request_context = request, context_id
            self.incoming = self.service.begin_store(self.association, request)
        else:
            raise ProtocolError(f"DIMSE command 0x{command_field:04X} is not served here")

    def _data_set_received(self) -> None:
        assert self.incoming is not None
        assert self.request is not None
        incoming, request = self.incoming, self.request
        self.incoming = None
        status = incoming.finish()
        self._respond(
            self.request_context,
            command_field=C_STORE_RSP,
            message_id=request.message_id,
            status=status,
            sop_class_uid=request.sop_class_uid,
            sop_instance_uid=request.sop_instance_uid,
        )

    def _respond(
        self,
        context_id: int,
        *,
        command_field: int,
        message_id: int,
        status: int,
        sop_class_uid: str,
        sop_instance_uid: str,
    ) -> None:
        command = encode_response(
            command_field, message_id, status, sop_class_uid, sop_instance_uid
        )
        self.connection.sendall(
            encode_command_pdus(context_id, command, self.association.peer_max_pdu_bytes)
        )

    def discard(self) -> None:
        """Drop an instance whose data set will never complete."""
        if self.incoming is not None:
            self.incoming.discard()
            self.incoming = None


def serve_connection(
    connection: socket.socket,
    peer: str,
    settings: UpperLayerSettings,
    service: StorageService,
    *,
    ssl_context: ssl.SSLContext | None = None,
    on_socket: Callable[[socket.socket], None] | None = None,
) -> None:
    """Serve one TCP connection: TLS handshake, negotiation, then messages until it ends.

    ``on_socket`` is told the socket in use (the TLS one once wrapped), so that a stopping
    service can shut it down. Never raises for the peer's misbehaviour (logged); closes
    ``connection`` before returning.
    """
    try:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.settimeout(settings.acse_timeout_s)
        if ssl_context is not None:
            try:
                connection = ssl_context.wrap_socket(connection, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                LOG.warning("TLS handshake with %s failed: %s", peer, exc)
                return
            if on_socket is not None:
                on_socket(connection)
        reader = _Reader(connection, settings.buffer_bytes)
        try:
            request = _read_associate_rq(reader)
        except (PeerClosedError, ProtocolError, OSError) as exc:
            LOG.warning("no valid A-ASSOCIATE-RQ from %s: %s", peer, exc)
            return
        association = Association(
            calling_ae_title=str(request.calling_ae_title or "").strip(),
            called_ae_title=str(request.called_ae_title or "").strip(),
            peer=peer,
            certificate_names=_certificate_names(connection),
        )
        rejection = service.admit(association)
        if rejection is not None:
            connection.sendall(_reject(rejection))
            return
        loop = _MessageLoop(connection, reader, association, service)
        try:
            connection.sendall(_accept(request, settings, association))
            connection.settimeout(settings.network_timeout_s)
            service.established(association)
            loop.run()
        except PeerClosedError as exc:
            association.aborted = True
            LOG.debug("association with %s ended: %s", peer, exc)
        except Exception as exc:  # protocol errors, I/O errors, and bugs: never stop the service
            association.aborted = True
            if isinstance(exc, ProtocolError | OSError):
                LOG.warning("aborting association with %s: %s", peer, exc)
            else:
                LOG.exception("aborting association with %s after an internal error", peer)
            with contextlib.suppress(OSError):
                connection.sendall(_abort_pdu())
        finally:
            loop.discard()
            service.ended(association)  # once admitted, always: frees its association slot
    except OSError as exc:
        LOG.warning("connection from %s failed: %s", peer, exc)
    finally:
        with contextlib.suppress(OSError):
            connection.close()
