"""The receiver's own upper layer (``concordose.ingest.upper_layer``): streaming, maximum PDU,
several presentation contexts, release, abort mid-transfer, unserved commands, disk errors."""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    NuclearMedicineImageStorage,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from concordose.ingest import receiver as receiver_module
from concordose.ingest.receiver import STATUS_OUT_OF_RESOURCES, StorageReceiver
from concordose.ingest.upper_layer import encode_command_pdus
from concordose.spool.journal import (
    BLOCK_BYTES,
    DEFAULT_SEGMENT_BYTES,
    DEFAULT_SEGMENT_COUNT,
    Journal,
    journal_file_bytes,
)
from concordose.spool.store import Spool
from tests.raw_association import associate_rq_bytes, read_exactly

SENDER = "MILAN_SPECT"


def _ct(rows: int = 512) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality = "P1", "CT"
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.arange(rows * rows, dtype=np.uint16).tobytes()
    return ds


def _journal_holds(folder: Path, needle: bytes) -> bool:
    """``needle`` is in the first 64 kB of records of a segment of the default journal."""
    with (folder / "journal.wal").open("rb") as handle:
        for index in range(DEFAULT_SEGMENT_COUNT):
            handle.seek(BLOCK_BYTES + index * DEFAULT_SEGMENT_BYTES + BLOCK_BYTES)
            if needle in handle.read(64 * 1024):
                return True
    return False


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[StorageReceiver]:
    with StorageReceiver(
        Spool(tmp_path / "spool"),
        port=0,
        allowed_calling_ae_titles=[SENDER],
        max_pdu_bytes=16384,
    ) as running:
        yield running


def test_an_instance_is_streamed_in_fragments_within_our_max_pdu_and_stored_as_sent(
    receiver: StorageReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    fragments: list[int] = []
    real_write = receiver_module._IncomingInstance.write

    def recording(self: receiver_module._IncomingInstance, fragment: memoryview) -> None:
        fragments.append(len(fragment))
        real_write(self, fragment)

    monkeypatch.setattr(receiver_module._IncomingInstance, "write", recording)
    ct, nm = _ct(), _ct(64)
    nm.SOPClassUID = NuclearMedicineImageStorage
    nm.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ae = AE(ae_title=SENDER)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(NuclearMedicineImageStorage, ImplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="CONCORDOSE")
    assert assoc.is_established
    try:
        assert assoc.acceptor.maximum_length == 16384  # announced in the A-ASSOCIATE-AC
        statuses = [assoc.send_c_store(ct).Status, assoc.send_c_store(nm).Status]
        statuses.append(assoc.send_c_echo().Status)
    finally:
        assoc.release()
    assert statuses == [0, 0, 0]
    # 0.5 MB arrived as > 30 pieces, each within one PDU: never assembled in memory.
    assert len(fragments) > 30
    assert max(fragments) <= 16384
    rows = {row.identity.sop_instance_uid: row for row in receiver.spool.instances()}
    for sent, syntax in ((ct, ExplicitVRLittleEndian), (nm, ImplicitVRLittleEndian)):
        row = rows[sent.SOPInstanceUID]
        assert row.identity.transfer_syntax == syntax
        stored = row.path.read_bytes()
        assert stored.endswith(sent.PixelData)
        assert row.size_bytes == len(stored)
    _wait(lambda: receiver.active_associations == 0, "the release")
    assert list(receiver.spool.tmp_dir.iterdir()) == []


class _RawPeer:
    """A requestor speaking PDUs by hand, to stop in the middle of a message."""

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.socket.sendall(
            associate_rq_bytes(SENDER, [(1, CTImageStorage, ExplicitVRLittleEndian)])
        )
        pdu_type, body = self.read_pdu()
        assert pdu_type == 0x02
        accept = A_ASSOCIATE_AC()
        accept.decode(bytes([pdu_type, 0]) + struct.pack(">I", len(body)) + body)

    def read_pdu(self) -> tuple[int, bytes]:
        pdu_type, length = struct.unpack(">BxI", read_exactly(self.socket, 6))
        return pdu_type, read_exactly(self.socket, length)

    def command(self, command_field: int, sop_instance_uid: str, has_data_set: bool) -> None:
        elements = [
            (0x0002, CTImageStorage.encode() + b"\0"),
            (0x0100, struct.pack("<H", command_field)),
            (0x0110, struct.pack("<H", 1)),
            (0x0800, struct.pack("<H", 0x0000 if has_data_set else 0x0101)),
            (0x1000, sop_instance_uid.encode() + b"\0" * (len(sop_instance_uid) % 2)),
        ]
        body = b"".join(struct.pack("<HHI", 0, tag, len(v)) + v for tag, v in elements)
        command = struct.pack("<HHI", 0, 0, 4) + struct.pack("<I", len(body)) + body
        self.socket.sendall(encode_command_pdus(1, command, 16384))

    def data_fragment(self, data: bytes) -> None:
        pdv = struct.pack(">IBB", len(data) + 2, 1, 0x00) + data  # data set, not last
        self.socket.sendall(struct.pack(">BxI", 0x04, len(pdv)) + pdv)


def test_an_abort_in_the_middle_of_a_data_set_keeps_nothing_and_the_service_stays_up(
    receiver: StorageReceiver,
) -> None:
    peer = _RawPeer(receiver.port)
    peer.command(0x0001, generate_uid(), has_data_set=True)
    peer.data_fragment(b"\x08\x00\x16\x00" + b"x" * 8000)
    journal = receiver.spool.root / "journal"
    _wait(  # the fragment went straight into a journal segment
        lambda: (journal / "journal.wal").is_file() and _journal_holds(journal, b"x" * 8000),
        "the partial record",
    )
    peer.socket.sendall(struct.pack(">BxI", 0x07, 4) + bytes((0, 0, 0, 0)))  # A-ABORT
    peer.socket.close()
    _wait(lambda: receiver.active_associations == 0, "the abort")
    assert list(receiver.spool.tmp_dir.iterdir()) == []
    assert receiver.spool.status().instances == 0
    reader = Journal(journal)
    try:
        assert list(reader.records()) == []  # nothing a restart would file either
    finally:
        reader.close()
    ae = AE(ae_title=SENDER)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="CONCORDOSE")
    try:
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def test_a_command_we_do_not_serve_aborts_the_association(receiver: StorageReceiver) -> None:
    peer = _RawPeer(receiver.port)
    peer.command(0x0020, "", has_data_set=True)  # C-FIND-RQ on a storage context
    pdu_type, body = peer.read_pdu()
    assert pdu_type == 0x07  # A-ABORT
    assert body[2] == 0x02  # source: service provider
    peer.socket.close()
    _wait(lambda: receiver.active_associations == 0, "the abort")


def test_a_write_refused_by_the_disk_answers_out_of_resources_and_leaves_nothing(
    receiver: StorageReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*_args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    ae = AE(ae_title=SENDER)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="CONCORDOSE")
    try:
        monkeypatch.setattr(os, "write", no_space)  # a temp file
        monkeypatch.setattr(os, "pwrite", no_space)  # the journal
        refused = assoc.send_c_store(_ct(64))
        monkeypatch.undo()
        accepted = assoc.send_c_store(_ct(64))
    finally:
        assoc.release()
    assert (refused.Status, accepted.Status) == (STATUS_OUT_OF_RESOURCES, 0x0000)
    assert receiver.spool.status().instances == 1
    assert list(receiver.spool.tmp_dir.iterdir()) == []


def test_a_small_journal_is_recycled_as_instances_are_filed(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    sent = [_ct(256) for _ in range(12)]  # 12 × 128 kB through 2 segments of 512 kB
    with StorageReceiver(
        Spool(root),
        port=0,
        allowed_calling_ae_titles=[SENDER],
        journal_segment_bytes=512 * 1024,
        journal_segments=2,
    ) as receiver:
        ae = AE(ae_title=SENDER)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", receiver.port, ae_title="CONCORDOSE")
        try:
            statuses = [assoc.send_c_store(ds).Status for ds in sent]
        finally:
            assoc.release()
        stored = {row.identity.sop_instance_uid for row in receiver.spool.instances()}
    assert statuses == [0] * len(sent)
    assert stored == {ds.SOPInstanceUID for ds in sent}
    assert [p.name for p in (root / "journal").iterdir()] == ["journal.wal"]
    assert (root / "journal" / "journal.wal").stat().st_size <= journal_file_bytes(512 * 1024, 2)


def test_concurrent_associations_and_an_instance_larger_than_a_segment(tmp_path: Path) -> None:
    # 2 segments of 256 kB: two associations stream side by side (one segment each, or a temp
    # file when none is free), and a 0.5 MB slice outgrows any segment (spilled, filed directly).
    batches = [[_ct(128) for _ in range(4)] + [_ct(512)] for _ in range(2)]
    statuses: list[int] = []

    def send(datasets: list[Dataset], port: int) -> None:
        ae = AE(ae_title=SENDER)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="CONCORDOSE")
        try:
            statuses.extend(int(assoc.send_c_store(ds).Status) for ds in datasets)
        finally:
            assoc.release()

    with StorageReceiver(
        Spool(tmp_path / "spool"),
        port=0,
        allowed_calling_ae_titles=[SENDER],
        journal_segment_bytes=256 * 1024,
        journal_segments=2,
    ) as receiver:
        threads = [threading.Thread(target=send, args=(b, receiver.port)) for b in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        rows = {row.identity.sop_instance_uid: row for row in receiver.spool.instances()}
    assert statuses == [0] * 10
    for ds in (ds for batch in batches for ds in batch):
        assert rows[ds.SOPInstanceUID].path.read_bytes().endswith(ds.PixelData)
    assert list((tmp_path / "spool" / "tmp").iterdir()) == []
