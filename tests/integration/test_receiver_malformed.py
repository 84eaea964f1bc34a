"""Malformed data sets over real associations (issue 18): each is answered with the status
PS3.4 Annex B.2.3 / PS3.7 Annex C gives it, quarantined or dropped, never indexed nor journaled
as received, and the association and the service stay up (a C-ECHO after each).

dcmtk ``storescp`` (3.6) on the same bytes, for comparison: cut-short values, VR ``ZZ`` and the
wrong VR encoding → it aborts the association (implicit-VR bytes on an explicit-VR context: it
waits until its timeout); UID mismatch → 0xA900; UID missing → 0xC000; a C-STORE on the
Verification context → 0x0000 (stored). We answer 0xC000 per instance instead of aborting (the
sender learns which instance failed and the rest of the association proceeds) and 0x0122 on the
Verification context (PS3.7 Annex C "SOP class not supported", as pynetdicom answers).
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    NuclearMedicineImageStorage,
    generate_uid,
)

from concordose.ingest.receiver import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
    StorageReceiver,
)
from concordose.spool.journal import Journal
from concordose.spool.store import Spool
from tests.integration.crafted_peer import VERIFICATION, Context, CraftedPeer, encode_data_set

pytestmark = pytest.mark.integration

SENDER = "MILAN_SPECT"
NM_EXPLICIT, NM_IMPLICIT, ECHO, CT_EXPLICIT, NM_DEFLATED, NM_BIG_ENDIAN = 1, 3, 5, 7, 9, 11
CONTEXTS = [
    Context(NM_EXPLICIT, NuclearMedicineImageStorage, ExplicitVRLittleEndian),
    Context(NM_IMPLICIT, NuclearMedicineImageStorage, ImplicitVRLittleEndian),
    Context(ECHO, VERIFICATION, ImplicitVRLittleEndian),
    Context(CT_EXPLICIT, CTImageStorage, ExplicitVRLittleEndian),
    Context(NM_DEFLATED, NuclearMedicineImageStorage, DeflatedExplicitVRLittleEndian),
    Context(NM_BIG_ENDIAN, NuclearMedicineImageStorage, ExplicitVRBigEndian),
]
INFLATED_CAP_BYTES = 1 << 20
"""The receiver's cap on a deflated data set's inflated size in these tests (1 MiB, so a
bomb is built and refused in milliseconds)."""


def _nm() -> Dataset:
    """A small NM instance with a detector sequence and 32 bytes of pixel data."""
    ds = Dataset()
    ds.SOPClassUID = NuclearMedicineImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality, ds.Manufacturer = "P1", "NM", "ACME"
    detector = Dataset()
    detector.ImagePositionPatient = [0, 0, 0]
    detector.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    detector.CollimatorGridName = "MEGP" * 50
    ds.DetectorInformationSequence = [detector]
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = bytes(32)
    return ds


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[StorageReceiver]:
    with StorageReceiver(
        Spool(tmp_path / "spool"),
        port=0,
        allowed_calling_ae_titles=[SENDER],
        max_inflated_bytes=INFLATED_CAP_BYTES,
    ) as running:
        yield running


def _send(receiver: StorageReceiver, context_id: int, sop_class: str, uid: str, data: bytes) -> int:
    """One C-STORE in its own association; asserts the association still answers a C-ECHO."""
    peer = CraftedPeer(receiver.port, CONTEXTS, calling_ae=SENDER)
    try:
        status = peer.store(context_id, sop_class, uid, data)
        assert peer.echo(ECHO) == 0x0000, "the association did not survive the instance"
    finally:
        peer.release()
    return status


def _assert_nothing_received(receiver: StorageReceiver, reason: str | None) -> None:
    """Nothing indexed, nothing journaled; the quarantine holds one file with ``reason``."""
    assert receiver.spool.instances() == []
    reader = Journal(receiver.spool.root / "journal")
    try:
        assert list(reader.records()) == []
    finally:
        reader.close()
    reasons = [p.read_text() for p in receiver.spool.quarantine_dir.glob("*.reason.txt")]
    if reason is None:
        assert reasons == []
    else:
        assert len(reasons) == 1
        assert reason in reasons[0]


def test_a_well_formed_instance_is_stored_and_dcmdump_reads_it(
    receiver: StorageReceiver,
) -> None:
    ds = _nm()
    status = _send(
        receiver,
        NM_IMPLICIT,
        NuclearMedicineImageStorage,
        ds.SOPInstanceUID,
        encode_data_set(ds, ImplicitVRLittleEndian),
    )
    assert status == 0x0000
    [row] = receiver.spool.instances()
    dcmdump = shutil.which("dcmdump")
    assert dcmdump is not None, "dcmtk's dcmdump is required (installed by `make test`)"
    completed = subprocess.run(
        [dcmdump, "-q", str(row.path)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr


def test_a_sequence_of_under_64_kb_cut_short_is_not_understood(
    receiver: StorageReceiver,
) -> None:
    ds = _nm()
    del ds.PixelData  # the detector sequence is the last element
    data = encode_data_set(ds, ExplicitVRLittleEndian)
    cut = data[:-80]  # declared length of the sequence (and its last value) > bytes present
    status = _send(receiver, NM_EXPLICIT, NuclearMedicineImageStorage, ds.SOPInstanceUID, cut)
    assert status == STATUS_CANNOT_UNDERSTAND
    _assert_nothing_received(receiver, "element (0054,0022) declares")


def test_pixel_data_declared_32_bytes_with_10_sent_is_not_understood(
    receiver: StorageReceiver,
) -> None:
    ds = _nm()
    data = encode_data_set(ds, ExplicitVRLittleEndian)[:-22]
    status = _send(receiver, NM_EXPLICIT, NuclearMedicineImageStorage, ds.SOPInstanceUID, data)
    assert status == STATUS_CANNOT_UNDERSTAND
    _assert_nothing_received(receiver, "(7FE0,0010) declares 32 bytes, 10 remain")


def test_an_element_overrunning_its_sequence_item_is_not_understood(
    receiver: StorageReceiver,
) -> None:
    # pydicom reads an item's elements from the stream and does not stop at the item's end
    # (the value swallows what follows); dcmtk refuses it: "Length of element larger than
    # explicit length of surrounding item" (found by the fuzzing test).
    ds = _nm()
    ds.DetectorInformationSequence.is_undefined_length = True  # items of defined length
    data = encode_data_set(ds, ExplicitVRLittleEndian)
    # ImageOrientationPatient, the detector item's last element: 24 bytes declared 32
    at = data.index(b"\x20\x00\x37\x00DS\x18\x00")
    data = data[: at + 6] + b"\x20\x00" + data[at + 8 :]
    status = _send(receiver, NM_EXPLICIT, NuclearMedicineImageStorage, ds.SOPInstanceUID, data)
    assert status == STATUS_CANNOT_UNDERSTAND
    _assert_nothing_received(receiver, "(0054,0022)[0](0020,0037) declares 32 bytes, 24 remain")


def test_an_unknown_value_representation_is_not_understood(receiver: StorageReceiver) -> None:
    ds = _nm()
    data = encode_data_set(ds, ExplicitVRLittleEndian)
    at = data.index(b"LO\x04\x00ACME")  # Manufacturer (0008,0070)
    data = data[:at] + b"ZZ" + data[at + 2 :]
    status = _send(receiver, NM_EXPLICIT, NuclearMedicineImageStorage, ds.SOPInstanceUID, data)
    assert status == STATUS_CANNOT_UNDERSTAND
    _assert_nothing_received(receiver, "(0008,0070) has Value Representation 'ZZ'")


def test_an_unknown_vr_deep_in_a_sequence_over_64_kb_is_not_understood(
    receiver: StorageReceiver,
) -> None:
    # pydicom leaves a sequence over 64 kB unread (a SEG's per-frame functional groups): its
    # items are checked by the header walk (found by the 3,000-mutant run: VR 'UA' in
    # (5200,9230)[18](0062,000A)[0](0062,000B) of a SEG acknowledged, dcmdump fails on it).
    ds = _nm()
    detector = ds.DetectorInformationSequence[0]
    ds.DetectorInformationSequence = [detector] * 400  # 400 × ≈ 280 bytes
    last = Dataset()
    last.CollimatorType = "PARA"
    ds.DetectorInformationSequence.append(last)
    data = encode_data_set(ds, ExplicitVRLittleEndian)
    assert len(data) > 100_000
    at = data.index(b"CS\x04\x00PARA")
    data = data[:at] + b"ZZ" + data[at + 2 :]
    status = _send(receiver, NM_EXPLICIT, NuclearMedicineImageStorage, ds.SOPInstanceUID, data)
    assert status == STATUS_CANNOT_UNDERSTAND
    _assert_nothing_received(receiver, "(0054,0022)[400](0018,1181) has Value Representation 'ZZ'")


@pytest.mark.parametrize(
    ("context_id", "encoded_in", "found"),
    [
        (NM_IMPLICIT, ExplicitVRLittleEndian, "explicit VR"),
        (NM_EXPLICIT, ImplicitVRLittleEndian, "implicit VR"),
    ],
)
def test_a_data_set_in_the_other_vr_encoding_than_its_context_is_not_understood(
    receiver: StorageReceiver, context_id: int, encoded_in: str, found: str
) -> None:
    ds = _nm()
    data = encode_data_set(ds, encoded_in)
    status = _send(receiver, context_id, NuclearMedicineImageStorage, ds.SOPInstanceUID, data)
    assert status == STATUS_CANNOT_UNDERSTAND
    _assert_nothing_received(receiver, f"data set encoded in {found}")


def test_a_sop_instance_uid_other_than_the_commands_does_not_match(
    receiver: StorageReceiver,
) -> None:
    ds = _nm()
    data = encode_data_set(ds, ExplicitVRLittleEndian)
    status = _send(receiver, NM_EXPLICIT, NuclearMedicineImageStorage, generate_uid(), data)
    assert status == STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    _assert_nothing_received(receiver, f"SOPInstanceUID in the data set is {ds.SOPInstanceUID}")


def test_a_sop_class_uid_other_than_the_commands_does_not_match(
    receiver: StorageReceiver,
) -> None:
    ds = _nm()  # an NM data set sent as a CT on the CT context
    data = encode_data_set(ds, ExplicitVRLittleEndian)
    status = _send(receiver, CT_EXPLICIT, CTImageStorage, ds.SOPInstanceUID, data)
    assert status == STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    expected = f"SOPClassUID in the data set is {NuclearMedicineImageStorage}"
    _assert_nothing_received(receiver, expected)


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "SOPClassUID"])
def test_a_sop_uid_missing_from_the_data_set_is_not_understood(
    receiver: StorageReceiver, keyword: str
) -> None:
    ds = _nm()
    uid = ds.SOPInstanceUID
    delattr(ds, keyword)
    data = encode_data_set(ds, ExplicitVRLittleEndian)
    status = _send(receiver, NM_EXPLICIT, NuclearMedicineImageStorage, uid, data)
    assert status == STATUS_CANNOT_UNDERSTAND
    _assert_nothing_received(receiver, f"{keyword} missing from the data set")


def test_a_c_store_on_the_verification_context_is_refused(receiver: StorageReceiver) -> None:
    ds = _nm()
    data = encode_data_set(ds, ImplicitVRLittleEndian)
    status = _send(receiver, ECHO, NuclearMedicineImageStorage, ds.SOPInstanceUID, data)
    assert status == STATUS_SOP_CLASS_NOT_SUPPORTED
    _assert_nothing_received(receiver, None)
    assert receiver.failed_count == 1


def test_a_good_instance_after_bad_ones_in_one_association_is_stored(
    receiver: StorageReceiver,
) -> None:
    bad, good = _nm(), _nm()
    peer = CraftedPeer(receiver.port, CONTEXTS, calling_ae=SENDER)
    try:
        statuses = [
            peer.store(
                NM_EXPLICIT,
                NuclearMedicineImageStorage,
                bad.SOPInstanceUID,
                encode_data_set(bad, ExplicitVRLittleEndian)[:-22],
            ),
            peer.store(
                NM_EXPLICIT,
                NuclearMedicineImageStorage,
                good.SOPInstanceUID,
                encode_data_set(good, ExplicitVRLittleEndian),
            ),
        ]
    finally:
        peer.release()
    assert statuses == [STATUS_CANNOT_UNDERSTAND, 0x0000]
    [row] = receiver.spool.instances()
    assert row.identity.sop_instance_uid == good.SOPInstanceUID
    assert pydicom.dcmread(row.path).PixelData == good.PixelData


def _deflated(data: bytes) -> bytes:
    """``data`` as a deflated transfer syntax carries it: raw deflate (RFC 1951, no zlib
    header), padded with a NUL to an even length (PS3.5 A.5)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = compressor.compress(data) + compressor.flush()
    return stream + b"\0" * (len(stream) % 2)


def _overrunning_item(little_endian: bool) -> tuple[Dataset, bytes]:
    """An NM data set whose detector item's ImageOrientationPatient (24 bytes) declares 32,
    overrunning its item (Explicit VR, in either byte order)."""
    ds = _nm()
    ds.DetectorInformationSequence.is_undefined_length = True
    syntax = ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian
    data = encode_data_set(ds, syntax)
    order: Literal["little", "big"] = "little" if little_endian else "big"
    tag = b"".join(v.to_bytes(2, order) for v in (0x0020, 0x0037))
    at = data.index(tag + b"DS" + (24).to_bytes(2, order))
    return ds, data[: at + 6] + (32).to_bytes(2, order) + data[at + 8 :]


OVERRUN = "(0054,0022)[0](0020,0037) declares 32 bytes, 24 remain"


def test_a_big_endian_data_set_with_an_overrunning_element_is_not_understood(
    receiver: StorageReceiver,
) -> None:
    ds, data = _overrunning_item(little_endian=False)
    status = _send(receiver, NM_BIG_ENDIAN, NuclearMedicineImageStorage, ds.SOPInstanceUID, data)
    assert status == STATUS_CANNOT_UNDERSTAND
    _assert_nothing_received(receiver, OVERRUN)


def test_a_deflated_data_set_with_an_overrunning_element_is_not_understood(
    receiver: StorageReceiver,
) -> None:
    ds, data = _overrunning_item(little_endian=True)
    deflated = _deflated(data)
    status = _send(receiver, NM_DEFLATED, NuclearMedicineImageStorage, ds.SOPInstanceUID, deflated)
    assert status == STATUS_CANNOT_UNDERSTAND
    _assert_nothing_received(receiver, OVERRUN)


@pytest.mark.parametrize(
    ("context_id", "encode"),
    [
        (NM_BIG_ENDIAN, lambda ds: encode_data_set(ds, ExplicitVRBigEndian)),
        (NM_DEFLATED, lambda ds: _deflated(encode_data_set(ds, ExplicitVRLittleEndian))),
    ],
    ids=["big_endian", "deflated"],
)
def test_a_well_formed_big_endian_or_deflated_data_set_is_stored_byte_identical(
    receiver: StorageReceiver, context_id: int, encode: Callable[[Dataset], bytes]
) -> None:
    ds = _nm()
    data = encode(ds)
    status = _send(receiver, context_id, NuclearMedicineImageStorage, ds.SOPInstanceUID, data)
    assert status == 0x0000
    [row] = receiver.spool.instances()
    stored = row.path.read_bytes()
    assert stored.endswith(data)
    back = pydicom.dcmread(row.path)
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.DetectorInformationSequence[0].CollimatorGridName == "MEGP" * 50
    dcmdump = shutil.which("dcmdump")
    assert dcmdump is not None
    completed = subprocess.run([dcmdump, "-q", str(row.path)], capture_output=True, check=False)
    assert completed.returncode == 0, completed.stderr


def test_a_deflated_data_set_inflating_beyond_the_cap_is_refused_as_a_bomb(
    receiver: StorageReceiver,
) -> None:
    ds = _nm()
    ds.PixelData = bytes(4 * INFLATED_CAP_BYTES)  # 4 MiB of zeros: ≈ 4 kB deflated
    ds.Rows = ds.Columns = 1024
    ds.NumberOfFrames = 2
    data = _deflated(encode_data_set(ds, ExplicitVRLittleEndian))
    assert len(data) < 16_384
    status = _send(receiver, NM_DEFLATED, NuclearMedicineImageStorage, ds.SOPInstanceUID, data)
    assert status == STATUS_CANNOT_UNDERSTAND
    _assert_nothing_received(receiver, "refused as a decompression bomb")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda stream: stream[: len(stream) // 2 & ~1], "deflated data set cut short"),
        (lambda stream: stream + b"\x01\x02", "bytes after the end of the deflated"),
        (lambda stream: b"\xff\xff" + stream, "does not inflate"),
    ],
    ids=["cut_short", "trailing_bytes", "not_deflate"],
)
def test_a_damaged_deflate_stream_is_not_understood(
    receiver: StorageReceiver, damage: Callable[[bytes], bytes], reason: str
) -> None:
    ds = _nm()
    data = damage(_deflated(encode_data_set(ds, ExplicitVRLittleEndian)))
    status = _send(receiver, NM_DEFLATED, NuclearMedicineImageStorage, ds.SOPInstanceUID, data)
    assert status == STATUS_CANNOT_UNDERSTAND
    _assert_nothing_received(receiver, reason)


def test_no_room_to_inflate_is_out_of_resources_not_cannot_understand(
    receiver: StorageReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The inflated bytes spill to the spool's tmp/ beyond 8 MB: a full disk there is the
    # receiver's problem (0xA700, the sender retries later), not a malformed data set.
    def disk_full(*args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("concordose.ingest.receiver.inflate_data_set", disk_full)
    ds = _nm()
    data = _deflated(encode_data_set(ds, ExplicitVRLittleEndian))
    status = _send(receiver, NM_DEFLATED, NuclearMedicineImageStorage, ds.SOPInstanceUID, data)
    assert status == STATUS_OUT_OF_RESOURCES
    _assert_nothing_received(receiver, None)
