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
DIMSE command, a malformed PDU or command set, a P-DATA-TF longer than the maximum PDU length we
announced, a PDU not complete within the PDU deadline of its first byte, or silence longer than
the network timeout → we send an A-ABORT (service provider) and close; an instance being
received is then discarded.

Before it (PS3.8 §9.2.3, state Sta2): the A-ASSOCIATE-RQ must be complete within the association
deadline of the connect (else the connection is closed, as on ARTIM expiry); one that is not
well formed (items reaching past their PDU, undecodable) or another PDU is answered with an
A-ABORT (AA-1); a well-formed one we cannot accept with an A-ASSOCIATE-RJ (protocol version,
application context, then :meth:`StorageService.admit`: AE titles and limits). Deadlines are
overall, however the bytes trickle (:mod:`.admission`). After an A-ABORT we wait briefly for
the peer to close first, so that it reads our answer before the connection goes (the peer may
be in the middle of sending: closing with its bytes unread would reset the connection).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import time
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

from concordose.ingest.admission import DEFAULT_ADMISSION

LOG = logging.getLogger(__name__)

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

# PDU types (PS3.8 §9.3.1)
PDU_ASSOCIATE_RQ = 0x01
PDU_ASSOCIATE_AC = 0x02
PDU_ASSOCIATE_RJ = 0x03
PDU_P_DATA_TF = 0x04
PDU_RELEASE_RQ = 0x05
PDU_RELEASE_RP = 0x06
PDU_ABORT = 0x07
_PDU_TYPES = frozenset(range(PDU_ASSOCIATE_RQ, PDU_ABORT + 1))
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

CLOSE_LINGER_S = 1.0
"""After an A-ABORT, how long we wait for the peer to close (PS3.8 §9.2.3, Sta13: the peer
closes on it; closing first with its bytes unread would reset the connection and could lose our
answer)."""

# A-ABORT source and reason/diag. (PS3.8 §9.3.8, Table 9-26)
ABORT_SOURCE_SERVICE_PROVIDER = 0x02
ABORT_REASON_NOT_SPECIFIED = 0x00
ABORT_REASON_UNRECOGNIZED_PDU = 0x01
ABORT_REASON_UNEXPECTED_PDU = 0x02
ABORT_REASON_INVALID_PARAMETER_VALUE = 0x06

# Fixed fields of an A-ASSOCIATE-RQ after its PDU header: protocol version (2), reserved (2),
# called and calling AE titles (16 each), reserved (32) (PS3.8 §9.3.2, Table 9-11).
_ASSOCIATE_RQ_FIXED_BYTES = 68
# Variable items (PS3.8 §9.3.2, Tables 9-12 to 9-16)
_ITEM_APPLICATION_CONTEXT = 0x10
_ITEM_PRESENTATION_CONTEXT = 0x20
_ITEM_USER_INFORMATION = 0x50

_PDU_HEADER = struct.Struct(">BxI")
_PDV_HEADER = struct.Struct(">IBB")
_ELEMENT_HEADER = struct.Struct("<HHI")


class ProtocolError(Exception):
    """The peer broke the upper-layer protocol; the association is aborted.

    ``abort_reason``: the A-ABORT's reason/diag. (PS3.8 Table 9-26).
    """

    def __init__(self, message: str, abort_reason: int = ABORT_REASON_NOT_SPECIFIED) -> None:
        super().__init__(message)
        self.abort_reason = abort_reason


class DeadlineExceededError(ProtocolError):
    """A PDU (or the A-ASSOCIATE-RQ) was not complete within its overall deadline."""


class PeerClosedError(Exception):
    """The peer closed the connection (or aborted the association)."""


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ's result, source and diagnostic (PS3.8 §9.3.4)."""

    result: int
    source: int
    diagnostic: int


# PS3.8 §9.3.4, Table 9-21: result (1 permanent, 2 transient), source (1 service user,
# 2 service provider ACSE-related, 3 service provider presentation-related), diagnostic.
APPLICATION_CONTEXT_NOT_SUPPORTED = Rejection(0x01, 0x01, 0x02)
CALLING_AE_NOT_RECOGNISED = Rejection(0x01, 0x01, 0x03)
CALLED_AE_NOT_RECOGNISED = Rejection(0x01, 0x01, 0x07)
PROTOCOL_VERSION_NOT_SUPPORTED = Rejection(0x01, 0x02, 0x02)
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
    """Buffered reads from a socket with ``recv_into`` into one reusable buffer, each within
    the idle timeout and, while one is set, before an overall deadline.

    ``deadline`` (``time.monotonic()``) bounds every read until it is cleared: a peer sending
    one byte just before each idle timeout still runs out of time (the per-``recv`` timeout
    alone never fires). :meth:`send_all` writes within the idle timeout.
    """

    def __init__(self, connection: socket.socket, size: int, idle_timeout_s: float) -> None:
        self._connection = connection
        self._buffer = bytearray(size)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0
        self._idle_timeout_s = idle_timeout_s
        self.received_bytes = 0
        self.deadline: float | None = None
        self.deadline_message = ""

    def start_deadline(self, deadline: float, message: str) -> None:
        """Everything read from now on must have arrived by ``deadline``, else
        :class:`DeadlineExceededError` with ``message``."""
        self.deadline, self.deadline_message = deadline, message

    def start_pdu(self, deadline_s: float) -> None:
        """Wait (within the idle timeout) for the next PDU's first byte, then give the whole
        PDU ``deadline_s`` seconds."""
        self.deadline = None
        if self._start == self._end:
            self._receive()
        self.start_deadline(
            time.monotonic() + deadline_s,
            f"PDU not complete {deadline_s:g} s after its first byte "
            "(CONCORDOSE_RECEIVER_PDU_DEADLINE_S)",
        )

    def extend_deadline(self, seconds: float) -> None:
        """Add our own time (e.g. making an instance durable) back to the peer's deadline."""
        if self.deadline is not None:
            self.deadline += seconds

    def clear_deadline(self) -> None:
        self.deadline = None

    def send_all(self, data: bytes) -> None:
        """``sendall`` within the idle timeout (not what is left of a read deadline)."""
        self._connection.settimeout(self._idle_timeout_s)
        self._connection.sendall(data)

    def _receive(self) -> None:
        """Receive at least one byte after the buffered ones (compacting first if needed)."""
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buffer):
            kept = self._end - self._start
            self._buffer[:kept] = self._view[self._start : self._end]
            self._start, self._end = 0, kept
        timeout_s = self._idle_timeout_s
        if self.deadline is not None:
            remaining_s = self.deadline - time.monotonic()
            if remaining_s <= 0:
                raise DeadlineExceededError(self.deadline_message)
            timeout_s = min(timeout_s, remaining_s)
        self._connection.settimeout(timeout_s)
        try:
            count = self._connection.recv_into(self._view[self._end :])
        except TimeoutError:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise DeadlineExceededError(self.deadline_message) from None
            raise
        if count == 0:
            raise PeerClosedError("the peer closed the connection")
        self._end += count
        self.received_bytes += count

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


def _abort_pdu(
    source: int = ABORT_SOURCE_SERVICE_PROVIDER, reason: int = ABORT_REASON_NOT_SPECIFIED
) -> bytes:
    return _PDU_HEADER.pack(PDU_ABORT, 4) + bytes((0, 0, source, reason))


@dataclass(frozen=True)
class UpperLayerSettings:
    """Association settings shared by every connection.

    Attributes:
        ae: the pynetdicom AE holding our AE title and supported presentation contexts.
        max_pdu_bytes: the largest PDU we accept, announced in the A-ASSOCIATE-AC (0: none);
            a longer P-DATA-TF is aborted.
        associate_deadline_s: seconds from the connect by which the A-ASSOCIATE-RQ (after the
            TLS handshake) must be complete, however it trickles.
        pdu_deadline_s: seconds from a PDU's first byte by which the PDU must be complete.
        network_timeout_s: silence after which an established association is aborted.
        buffer_bytes: receive buffer of each association.
    """

    ae: AE
    max_pdu_bytes: int
    associate_deadline_s: float = DEFAULT_ADMISSION.associate_deadline_s
    pdu_deadline_s: float = DEFAULT_ADMISSION.pdu_deadline_s
    network_timeout_s: float = 60.0
    buffer_bytes: int = 1 << 18


@dataclass(frozen=True)
class _AssociateRequest:
    """A well-formed A-ASSOCIATE-RQ: pynetdicom's primitive, and why we refuse it (if we do)."""

    primitive: A_ASSOCIATE
    rejection: Rejection | None


def _items(data: bytes, start: int, end: int, where: str) -> list[tuple[int, int, int]]:
    """The (type, value start, value end) of the items between ``start`` and ``end``, each
    header 4 bytes (type, reserved, 16-bit length; PS3.8 §9.3.2); an item reaching past
    ``end`` is a malformed PDU."""
    items = []
    offset = start
    while offset < end:
        if end - offset < 4:
            raise ProtocolError(
                f"{where}: {end - offset} byte(s) left, fewer than an item header",
                ABORT_REASON_INVALID_PARAMETER_VALUE,
            )
        item_type = data[offset]
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        if offset + 4 + length > end:
            raise ProtocolError(
                f"{where}: item 0x{item_type:02X} declares {length} bytes, "
                f"{end - offset - 4} remain",
                ABORT_REASON_INVALID_PARAMETER_VALUE,
            )
        items.append((item_type, offset + 4, offset + 4 + length))
        offset += 4 + length
    return items


def _check_associate_rq_layout(raw: bytes) -> None:
    """Every item and sub-item of an A-ASSOCIATE-RQ lies within its parent (pynetdicom's
    decoder asserts this, so ``python -O`` would not), and the required ones are there:
    one application context, at least one presentation context, one user information item
    (PS3.8 §9.3.2)."""
    body = _PDU_HEADER.size + _ASSOCIATE_RQ_FIXED_BYTES
    if len(raw) < body:
        raise ProtocolError(
            f"A-ASSOCIATE-RQ of {len(raw) - _PDU_HEADER.size} bytes, shorter than its "
            f"{_ASSOCIATE_RQ_FIXED_BYTES} bytes of fixed fields",
            ABORT_REASON_INVALID_PARAMETER_VALUE,
        )
    items = _items(raw, body, len(raw), "A-ASSOCIATE-RQ")
    for item_type, start, end in items:
        if item_type == _ITEM_PRESENTATION_CONTEXT:
            if end - start < 4:
                raise ProtocolError(
                    "A-ASSOCIATE-RQ: presentation context item shorter than 4 bytes",
                    ABORT_REASON_INVALID_PARAMETER_VALUE,
                )
            _items(raw, start + 4, end, "A-ASSOCIATE-RQ presentation context")
        elif item_type == _ITEM_USER_INFORMATION:
            _items(raw, start, end, "A-ASSOCIATE-RQ user information")
    required = (_ITEM_APPLICATION_CONTEXT, _ITEM_PRESENTATION_CONTEXT, _ITEM_USER_INFORMATION)
    counts = [sum(1 for item_type, _, _ in items if item_type == wanted) for wanted in required]
    if counts[0] != 1 or counts[1] < 1 or counts[2] != 1:
        raise ProtocolError(
            "A-ASSOCIATE-RQ needs 1 application context, ≥ 1 presentation context and 1 user "
            f"information item; found {counts[0]}, {counts[1]} and {counts[2]}",
            ABORT_REASON_INVALID_PARAMETER_VALUE,
        )


def _read_associate_rq(reader: _Reader) -> _AssociateRequest:
    """Read and decode the first PDU, an A-ASSOCIATE-RQ.

    Raises:
        ProtocolError: another PDU, or a malformed one (answered with an A-ABORT).
    """
    pdu_type, length = reader.unpack(_PDU_HEADER)
    if pdu_type != PDU_ASSOCIATE_RQ:
        raise ProtocolError(
            f"expected an A-ASSOCIATE-RQ, got PDU type 0x{pdu_type:02X}",
            ABORT_REASON_UNEXPECTED_PDU
            if pdu_type in _PDU_TYPES
            else ABORT_REASON_UNRECOGNIZED_PDU,
        )
    if length > MAX_ASSOCIATE_RQ_BYTES:
        raise ProtocolError(
            f"A-ASSOCIATE-RQ of {length} bytes refused (at most {MAX_ASSOCIATE_RQ_BYTES})",
            ABORT_REASON_INVALID_PARAMETER_VALUE,
        )
    raw = _PDU_HEADER.pack(pdu_type, length) + reader.read(length)
    _check_associate_rq_layout(raw)
    pdu = A_ASSOCIATE_RQ()
    try:
        pdu.decode(raw)
        primitive = pdu.to_primitive()
    except Exception as exc:  # pynetdicom raises various errors for malformed PDUs
        raise ProtocolError(
            f"undecodable A-ASSOCIATE-RQ: {type(exc).__name__}: {exc}",
            ABORT_REASON_INVALID_PARAMETER_VALUE,
        ) from exc
    rejection: Rejection | None = None
    if not int(pdu.protocol_version) & 0x0001:  # bit 0: version 1, the only one (§9.3.2)
        rejection = PROTOCOL_VERSION_NOT_SUPPORTED
    elif str(primitive.application_context_name) != APPLICATION_CONTEXT_NAME:
        rejection = APPLICATION_CONTEXT_NOT_SUPPORTED
    return _AssociateRequest(primitive, rejection)


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
        settings: UpperLayerSettings,
    ) -> None:
        self.connection = connection
        self.reader = reader
        self.association = association
        self.service = service
        self.settings = settings
        self.command = bytearray()
        self.request: StoreRequest | None = None
        self.request_context = 0
        self.incoming: IncomingDataSet | None = None

    def run(self) -> None:
        """Serve until release; else raise :class:`PeerClosedError` or :class:`ProtocolError`."""
        max_pdu_bytes = self.settings.max_pdu_bytes
        while True:
            self.reader.start_pdu(self.settings.pdu_deadline_s)
            pdu_type, length = self.reader.unpack(_PDU_HEADER)
            if pdu_type == PDU_P_DATA_TF:
                if max_pdu_bytes and length > max_pdu_bytes:
                    raise ProtocolError(
                        f"P-DATA-TF of {length} bytes, longer than the maximum PDU length we "
                        f"announced ({max_pdu_bytes} bytes)",
                        ABORT_REASON_INVALID_PARAMETER_VALUE,
                    )
                if length == 0:  # PS3.8 §9.3.5: one or more PDV items
                    raise ProtocolError(
                        "P-DATA-TF without a PDV item", ABORT_REASON_INVALID_PARAMETER_VALUE
                    )
                self._p_data(length)
            elif pdu_type in {PDU_RELEASE_RQ, PDU_ABORT}:
                if length != 4:  # PS3.8 §9.3.6, §9.3.8: 4 bytes, whatever the peer claims
                    raise ProtocolError(
                        f"PDU type 0x{pdu_type:02X} of {length} bytes, not 4",
                        ABORT_REASON_INVALID_PARAMETER_VALUE,
                    )
                self.reader.read(length)
                if pdu_type == PDU_ABORT:
                    raise PeerClosedError("the peer aborted the association")
                if self.incoming is not None or self.command:
                    raise ProtocolError(
                        "A-RELEASE-RQ in the middle of a DIMSE message",
                        ABORT_REASON_UNEXPECTED_PDU,
                    )
                self.reader.send_all(A_RELEASE_RP)
                return
            else:
                raise ProtocolError(
                    f"unexpected PDU type 0x{pdu_type:02X} after association",
                    ABORT_REASON_UNEXPECTED_PDU
                    if pdu_type in _PDU_TYPES
                    else ABORT_REASON_UNRECOGNIZED_PDU,
                )

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
                    started = time.monotonic()
                    self._data_set_received()
                    # Making it durable is our time, not the peer's.
                    self.reader.extend_deadline(time.monotonic() - started)

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
        self.reader.send_all(
            encode_command_pdus(context_id, command, self.association.peer_max_pdu_bytes)
        )

    def discard(self) -> None:
        """Drop an instance whose data set will never complete."""
        if self.incoming is not None:
            self.incoming.discard()
            self.incoming = None


def _linger_and_close(connection: socket.socket) -> None:
    """After our A-ABORT: read and drop what the peer still sends until it
    closes, for at most :data:`CLOSE_LINGER_S`, then close (see the module docstring)."""
    deadline = time.monotonic() + CLOSE_LINGER_S
    with contextlib.suppress(OSError):
        while (remaining_s := deadline - time.monotonic()) > 0:
            connection.settimeout(remaining_s)
            if not connection.recv(65536):
                break
    with contextlib.suppress(OSError):
        connection.close()


def serve_connection(
    connection: socket.socket,
    peer: str,
    settings: UpperLayerSettings,
    service: StorageService,
    *,
    ssl_context: ssl.SSLContext | None = None,
    on_socket: Callable[[socket.socket], None] | None = None,
    on_associate_phase_end: Callable[[], None] | None = None,
) -> None:
    """Serve one TCP connection: TLS handshake, negotiation, then messages until it ends.

    ``on_socket`` is told the socket in use (the TLS one once wrapped), so that a stopping
    service can shut it down. ``on_associate_phase_end`` is called once, when the
    A-ASSOCIATE-RQ has been read or — none came — before the connection is closed (so that
    admission control stops counting it while its descriptor is still its own). Never raises
    for the peer's misbehaviour (logged); closes ``connection`` before returning.
    """
    phase_ended = False

    def end_associate_phase() -> None:
        nonlocal phase_ended
        if not phase_ended:
            phase_ended = True
            if on_associate_phase_end is not None:
                on_associate_phase_end()

    linger = False
    try:
        deadline = time.monotonic() + settings.associate_deadline_s
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Since Python 3.5 the timeout bounds the whole TLS handshake, not each read of it.
        connection.settimeout(settings.associate_deadline_s)
        if ssl_context is not None:
            # The handshake is ours to run: on failure ``wrap_socket`` would close the
            # descriptor itself, before admission control stops counting it (below).
            connection = ssl_context.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
            if on_socket is not None:
                on_socket(connection)
            try:
                connection.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                LOG.warning("TLS handshake with %s failed: %s", peer, exc)
                return
        reader = _Reader(connection, settings.buffer_bytes, settings.network_timeout_s)
        reader.start_deadline(
            deadline,
            f"no complete A-ASSOCIATE-RQ {settings.associate_deadline_s:g} s after the "
            "connect (CONCORDOSE_RECEIVER_ASSOCIATE_DEADLINE_S)",
        )
        try:
            request = _read_associate_rq(reader)
        except (DeadlineExceededError, TimeoutError) as exc:
            # PS3.8 Sta2 + ARTIM expired (AA-2): close the transport connection.
            LOG.warning("closing the connection from %s: %s", peer, exc)
            return
        except ProtocolError as exc:
            # PS3.8 Sta2 + an invalid or unexpected PDU (AA-1): A-ABORT, then close. From the
            # service provider, so that its reason is significant (Table 9-26).
            LOG.warning("aborting the connection from %s: %s", peer, exc)
            linger = True
            reader.send_all(_abort_pdu(ABORT_SOURCE_SERVICE_PROVIDER, exc.abort_reason))
            return
        except (PeerClosedError, OSError) as exc:
            # Closed before sending a byte: a TCP probe (monitoring), or closed by admission
            # control (logged there); else a peer that gave up in the middle.
            level = logging.WARNING if reader.received_bytes else logging.DEBUG
            LOG.log(level, "no A-ASSOCIATE-RQ from %s: %s", peer, exc)
            return
        end_associate_phase()
        reader.clear_deadline()
        primitive = request.primitive
        association = Association(
            calling_ae_title=str(primitive.calling_ae_title or "").strip(),
            called_ae_title=str(primitive.called_ae_title or "").strip(),
            peer=peer,
            certificate_names=_certificate_names(connection),
        )
        rejection = request.rejection
        if rejection is not None:
            LOG.warning(
                "association from %s at %s rejected (%s)",
                association.calling_ae_title,
                peer,
                "protocol version not supported"
                if rejection is PROTOCOL_VERSION_NOT_SUPPORTED
                else "application context not supported",
            )
        else:
            rejection = service.admit(association)
        if rejection is not None:
            # Closed at once: the requestor, awaiting our answer, has nothing left unread here
            # (no reset). Waiting for its close instead made pynetdicom's requestor report 11
            # of 600 rejections as aborts (2 of 900 closing at once: a race of its own between
            # its reactor closing the transport and its caller checking it).
            reader.send_all(_reject(rejection))
            return
        loop = _MessageLoop(connection, reader, association, service, settings)
        try:
            reader.send_all(_accept(primitive, settings, association))
            service.established(association)
            loop.run()
        except PeerClosedError as exc:
            association.aborted = True
            LOG.debug("association with %s ended: %s", peer, exc)
        except Exception as exc:  # protocol errors, I/O errors, and bugs: never stop the service
            association.aborted = True
            reason = ABORT_REASON_NOT_SPECIFIED
            if isinstance(exc, ProtocolError | OSError):
                LOG.warning("aborting association with %s: %s", peer, exc)
                reason = exc.abort_reason if isinstance(exc, ProtocolError) else reason
            else:
                LOG.exception("aborting association with %s after an internal error", peer)
            linger = True
            with contextlib.suppress(OSError):
                reader.send_all(_abort_pdu(ABORT_SOURCE_SERVICE_PROVIDER, reason))
        finally:
            loop.discard()
            service.ended(association)  # once admitted, always: frees its association slot
    except OSError as exc:
        LOG.warning("connection from %s failed: %s", peer, exc)
    finally:
        end_associate_phase()
        if linger:
            _linger_and_close(connection)
        with contextlib.suppress(OSError):
            connection.close()
