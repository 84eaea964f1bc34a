"""Raw DICOM upper-layer pieces for tests that speak PDUs by hand (to stop mid-message, trickle
bytes or send crafted data sets): the A-ASSOCIATE-RQ bytes and reading exactly n bytes."""

from __future__ import annotations

import socket
from collections.abc import Sequence

from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"


def associate_rq_bytes(
    calling_ae: str,
    contexts: Sequence[tuple[int, str, str | None]],
    *,
    called_ae: str = "CONCORDOSE",
    max_pdu_bytes: int = 16384,
    implementation_class_uid: str = "1.2.3.4",
) -> bytes:
    """An encoded A-ASSOCIATE-RQ proposing ``contexts`` — (context id, abstract syntax,
    transfer syntax or None for pynetdicom's defaults) — with our maximum PDU length."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT_NAME
    primitive.calling_ae_title = calling_ae
    primitive.called_ae_title = called_ae
    proposed = []
    for context_id, abstract_syntax, transfer_syntax in contexts:
        item = build_context(abstract_syntax, transfer_syntax)
        item.context_id = context_id
        proposed.append(item)
    primitive.presentation_context_definition_list = proposed
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = max_pdu_bytes
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = implementation_class_uid
    primitive.user_information = [maximum, implementation]
    request = A_ASSOCIATE_RQ()
    request.from_primitive(primitive)
    return bytes(request.encode())


def read_exactly(connection: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``connection``.

    Raises:
        ConnectionError: the peer closed it first (saying after how many bytes).
    """
    data = b""
    while len(data) < size:
        part = connection.recv(size - len(data))
        if not part:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += part
    return data
