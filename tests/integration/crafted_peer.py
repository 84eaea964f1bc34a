"""A storage requestor that sends whatever bytes a test crafts: data sets that no encoder would
write (cut short, unknown VRs, the wrong VR encoding), UIDs in the command that disagree with the
data set, a C-STORE on a presentation context of another SOP class. Works against our receiver
and dcmtk's ``storescp`` alike."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.pdu_primitives import (
    MaximumLengthNotification,
)

from concordose.ingest.upper_layer import encode_command_pdus
from tests.raw_association import associate_rq_bytes, read_exactly

PEER_MAX_PDU_BYTES = 16384
VERIFICATION = "1.2.840.10008.1.1"


def encode_data_set(dataset: Dataset, transfer_syntax: str) -> bytes:
    """``dataset`` encoded as a C-STORE carries it (no preamble, no file meta)."""
    syntax = UID(transfer_syntax)
    buffer = DicomBytesIO()
    buffer.is_little_endian = syntax.is_little_endian
    buffer.is_implicit_VR = syntax.is_implicit_VR
    write_dataset(buffer, dataset)
    return buffer.getvalue()


def _uid_bytes(uid: str) -> bytes:
    raw = uid.encode("ascii", "replace")
    return raw + b"\0" * (len(raw) % 2)


@dataclass(frozen=True)
class Context:
    """A presentation context to propose: id (odd), abstract syntax, transfer syntax."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str


class CraftedPeer:
    """One association to ``port`` on loopback proposing ``contexts``.

    Raises:
        ConnectionError: the association was not accepted (rejected or aborted).
    """

    def __init__(
        self,
        port: int,
        contexts: list[Context],
        *,
        calling_ae: str = "MILAN_SPECT",
        called_ae: str = "CONCORDOSE",
        timeout_s: float = 30.0,
    ) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.message_id = 0
        self.socket.sendall(
            associate_rq_bytes(
                calling_ae,
                [(c.context_id, c.abstract_syntax, c.transfer_syntax) for c in contexts],
                called_ae=called_ae,
                max_pdu_bytes=PEER_MAX_PDU_BYTES,
                implementation_class_uid="1.2.826.0.1.3680043.9.7433.1",
            )
        )
        pdu_type, body = self.read_pdu()
        if pdu_type != 0x02:
            self.socket.close()
            raise ConnectionError(f"association not accepted (PDU type 0x{pdu_type:02X})")
        accept = A_ASSOCIATE_AC()
        accept.decode(bytes([pdu_type, 0]) + struct.pack(">I", len(body)) + body)
        self.peer_max_pdu_bytes = next(
            (
                int(item.maximum_length_received or 0)
                for item in accept.to_primitive().user_information
                if isinstance(item, MaximumLengthNotification)
            ),
            0,
        )

    def read_pdu(self) -> tuple[int, bytes]:
        pdu_type, length = struct.unpack(">BxI", read_exactly(self.socket, 6))
        return pdu_type, read_exactly(self.socket, length)

    def _command(
        self, context_id: int, command_field: int, sop_class_uid: str, sop_instance_uid: str
    ) -> None:
        self.message_id += 1
        elements = [
            (0x0002, _uid_bytes(sop_class_uid)),
            (0x0100, struct.pack("<H", command_field)),
            (0x0110, struct.pack("<H", self.message_id)),
            (0x0700, struct.pack("<H", 0)) if command_field == 0x0001 else None,
            (0x0800, struct.pack("<H", 0x0000 if command_field == 0x0001 else 0x0101)),
            (0x1000, _uid_bytes(sop_instance_uid)) if sop_instance_uid else None,
        ]
        body = b"".join(
            struct.pack("<HHI", 0, tag, len(value)) + value
            for tag, value in (e for e in elements if e is not None)
        )
        command = struct.pack("<HHI", 0, 0, 4) + struct.pack("<I", len(body)) + body
        self.socket.sendall(encode_command_pdus(context_id, command, self.peer_max_pdu_bytes))

    def _data_set(self, context_id: int, data: bytes) -> None:
        limit = (self.peer_max_pdu_bytes or PEER_MAX_PDU_BYTES) - 6
        pieces = [data[i : i + limit] for i in range(0, len(data), limit)] or [b""]
        out = []
        for index, piece in enumerate(pieces):
            control = 0x02 if index == len(pieces) - 1 else 0x00
            pdv = struct.pack(">IBB", len(piece) + 2, context_id, control) + piece
            out.append(struct.pack(">BxI", 0x04, len(pdv)) + pdv)
        self.socket.sendall(b"".join(out))

    def _status(self) -> int:
        """The status of the next response (command fragments of P-DATA-TF PDUs)."""
        command = b""
        while True:
            pdu_type, body = self.read_pdu()
            if pdu_type != 0x04:
                raise ConnectionError(f"expected a response, got PDU type 0x{pdu_type:02X}")
            offset, last = 0, False
            while offset < len(body):
                length, _context, control = struct.unpack_from(">IBB", body, offset)
                command += body[offset + 6 : offset + 4 + length]
                offset += 4 + length
                last = last or bool(control & 0x02)
            if last:
                break
        offset = 0
        while offset < len(command):
            group, element, length = struct.unpack_from("<HHI", command, offset)
            if (group, element) == (0, 0x0900):
                return int(struct.unpack_from("<H", command, offset + 8)[0])
            offset += 8 + length
        raise ConnectionError("response without a status")

    def store(self, context_id: int, sop_class_uid: str, sop_instance_uid: str, data: bytes) -> int:
        """Send one C-STORE-RQ with ``data`` as its data set; the status answered."""
        self._command(context_id, 0x0001, sop_class_uid, sop_instance_uid)
        self._data_set(context_id, data)
        return self._status()

    def echo(self, context_id: int) -> int:
        """Send a C-ECHO-RQ; the status answered."""
        self._command(context_id, 0x0030, VERIFICATION, "")
        return self._status()

    def release(self) -> None:
        """A-RELEASE-RQ, wait for the A-RELEASE-RP, close."""
        try:
            self.socket.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
            self.read_pdu()
        finally:
            self.socket.close()

    def close(self) -> None:
        self.socket.close()
