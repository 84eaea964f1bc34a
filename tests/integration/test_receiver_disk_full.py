"""Disk full end to end (issue 18, item 3), on a real small volume (a tmpfs): the free-space
reserve answers 0xA700 although the preallocated journal has room; a full index (SQLite) keeps
the filing batch pending and no completion fires without it; a receiver killed with a full disk
restarts and files once space returns; a new spool on a too-small volume is one clear error;
with the journal off the same reserve applies."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom import association as pynetdicom_association
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from typer.testing import CliRunner

from concordose.cli import EXIT_INPUT_ERROR, app
from concordose.ingest import receiver as receiver_module
from concordose.ingest.receiver import STATUS_OUT_OF_RESOURCES, StorageReceiver
from concordose.phantoms import GeneratedPatient
from concordose.spool.journal import journal_file_bytes
from concordose.spool.store import Spool
from tests.fakes import FakeClock, Recorder
from tests.integration.crafted_peer import Context, CraftedPeer, encode_data_set
from tests.integration.peers import free_port, port_open, stop_process, storescu, wait_until
from tests.integration.receiver_fuzzing import deflate
from tests.integration.small_volume import fill, free_bytes, mounted_tmpfs

pytestmark = pytest.mark.integration

SITES = {"MILAN_SPECT": "milan", "STORESCU": "milan"}
QUIET_S = 120.0
KB = 1024
MB = 1 << 20


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "volume", size_mb=8) as mounted:
        yield mounted


def _association(port: int) -> pynetdicom_association.Association:
    ae = AE(ae_title="MILAN_SPECT")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="CONCORDOSE")
    assert assoc.is_established
    return assoc


def _send(port: int, path: Path) -> int:
    assoc = _association(port)
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()


def _cts(patient: GeneratedPatient) -> list[Path]:
    return sorted(p for p in patient.dicom_files if "/ct/" in p.as_posix())


def _sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_below_the_reserve_the_receiver_answers_out_of_resources_though_the_journal_has_room(
    volume: Path, small_patient: GeneratedPatient, caplog: pytest.LogCaptureFixture
) -> None:
    ct = _cts(small_patient)[0]
    spool = Spool(volume / "spool", free_reserve_bytes=1 * MB)
    with StorageReceiver(
        spool,
        port=0,
        site_by_ae_title=SITES,
        journal_segment_bytes=256 * KB,
        journal_segments=4,
        journal_prefill=True,  # as `concordose receive`: the journal's blocks are allocated
    ) as receiver:
        filler = fill(volume, leave_bytes=512 * KB)  # under the 1 MB reserve
        with caplog.at_level(logging.ERROR, logger="concordose"):
            assert _send(receiver.port, ct) == STATUS_OUT_OF_RESOURCES
        assert "reserve 1.0 MB" in caplog.text
        assert receiver.spool.status().instances == 0
        filler.unlink()
        assert _send(receiver.port, ct) == 0x0000
        assert [r.identity.sop_instance_uid for r in receiver.spool.instances()] == [_sop_uid(ct)]
        assert list(receiver.spool.tmp_dir.iterdir()) == []


def test_a_full_index_keeps_the_batch_pending_and_completion_waits_for_it(
    volume: Path, small_patient: GeneratedPatient, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = _cts(small_patient)[:2]
    clock, hook = FakeClock(), Recorder()
    spool = Spool(volume / "spool", free_reserve_bytes=0)
    with StorageReceiver(
        spool,
        port=0,
        site_by_ae_title=SITES,
        quiet_period_s=QUIET_S,
        on_complete=hook,
        clock=clock,
        journal_segment_bytes=512 * KB,
        journal_segments=4,
        journal_prefill=True,
    ) as receiver:
        assert _send(receiver.port, first) == 0x0000
        wait_until(lambda: spool.status().instances == 1, timeout_s=10, what="the first filed")
        # Room for the second instance's file, none for the index's WAL to grow: SQLite
        # answers "database or disk is full" when the batch is committed.
        filler = fill(volume, leave_bytes=second.stat().st_size + 512)
        with caplog.at_level(logging.WARNING, logger="concordose"):
            assert _send(receiver.port, second) == 0x0000  # durable in the journal
            wait_until(
                lambda: "database or disk is full" in caplog.text,
                timeout_s=10,
                what="the refused filing",
            )
        assert "spool-filer" in {thread.name for thread in threading.enumerate()}
        assert "Exception in thread" not in caplog.text
        assert spool.unfiled_study_uids() == {
            str(pydicom.dcmread(second, stop_before_pixels=True).StudyInstanceUID)
        }
        clock.advance(QUIET_S + 1)
        assert receiver.completion.poll() == []  # its time point has an unfiled instance
        assert hook.events == []

        filler.unlink()  # space returns: the filing thread's retry files the batch
        wait_until(lambda: not spool.unfiled_study_uids(), timeout_s=15, what="the retry")
        clock.advance(QUIET_S + 1)
        (event,) = receiver.completion.poll()
    assert event.timepoint.instance_count == 2
    assert {r.identity.sop_instance_uid for r in Spool(spool.root).instances()} == {
        _sop_uid(first),
        _sop_uid(second),
    }


_JOURNAL_ONLY_RECEIVER = """
import signal, sys
from pathlib import Path
from concordose.ingest.receiver import StorageReceiver
from concordose.spool.store import Spool

Spool.file_journaled = lambda self: 0  # never file: only the journal holds what is acknowledged
Spool._filer_loop = lambda self: None
receiver = StorageReceiver(
    Spool(Path(sys.argv[1]), free_reserve_bytes=1 << 20),
    port=0,
    site_by_ae_title={"STORESCU": "milan"},
    journal_segment_bytes=1 << 20,
    journal_segments=4,
    journal_prefill=True,
)
receiver.start()
print(receiver.port, flush=True)
signal.pause()
"""


def test_a_receiver_killed_on_a_full_disk_restarts_and_files_once_space_returns(
    volume: Path, small_patient: GeneratedPatient
) -> None:
    root = volume / "spool"
    files = [*small_patient.nm_files, small_patient.seg_path]
    process = subprocess.Popen(
        [sys.executable, "-c", _JOURNAL_ONLY_RECEIVER, str(root)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        sent = storescu(port, "STORESCU", files)
        assert sent.returncode == 0, sent.stderr
    finally:
        process.send_signal(signal.SIGKILL)  # after every acknowledgement, before any filing
        process.wait(timeout=30)
    unfiled_bytes = sum(p.stat().st_size for p in files)
    filler = fill(volume, leave_bytes=unfiled_bytes // 4)  # far less than what is unfiled

    receiver = StorageReceiver(
        Spool(root, free_reserve_bytes=256 * KB),
        port=0,
        site_by_ae_title=SITES,
        journal_segment_bytes=1 << 20,
        journal_segments=4,
        journal_prefill=True,
    )
    with receiver:  # the restart works with little free space
        assoc = _association(receiver.port)
        try:
            assert assoc.send_c_echo().Status == 0x0000
            refused = assoc.send_c_store(_cts(small_patient)[0])
        finally:
            assoc.release()
        assert refused.Status == STATUS_OUT_OF_RESOURCES  # what is unfiled comes first
        assert 0 < receiver.spool.status().instances < len(files)  # what fits is filed
        filler.unlink()
        wait_until(
            lambda: receiver.spool.status().instances == len(files),
            timeout_s=20,
            what="the journaled instances filed once space returned",
        )
        rows = {row.identity.sop_instance_uid: row for row in receiver.spool.instances()}
    assert set(rows) == {_sop_uid(p) for p in files}
    for path in files:
        sent_ds = pydicom.dcmread(path)
        assert pydicom.dcmread(rows[str(sent_ds.SOPInstanceUID)].path).PixelData == (
            sent_ds.PixelData
        )
    counts = {tp.study_uid: tp.instance_count for tp in Spool(root).timepoints()}
    assert sum(counts.values()) == len(files)  # nothing filed twice by the replays
    assert list((root / "tmp").iterdir()) == []


def test_a_new_spool_on_a_too_small_volume_is_one_clear_error_and_the_journal_size_is_set(
    tmp_path: Path, small_patient: GeneratedPatient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mounted_tmpfs(tmp_path / "volume", size_mb=5) as small:
        spool = small / "spool"
        args = ["receive", "--spool", str(spool), "--sites", str(small_patient.sites_path)]
        monkeypatch.delenv("CONCORDOSE_SPOOL_JOURNAL_MB", raising=False)
        monkeypatch.delenv("CONCORDOSE_SPOOL_FREE_RESERVE_MB", raising=False)
        result = CliRunner().invoke(app, [*args, "--port", "0", "--host", "127.0.0.1"])
        output = " ".join((result.output + (result.stderr or "")).split())
        assert result.exit_code == EXIT_INPUT_ERROR, output
        assert "its journal needs 256.0 MB more (256.0 MB in all, CONCORDOSE_SPOOL_JOURNAL_MB)" in (
            output
        )
        assert "Traceback" not in output
        assert list(spool.rglob("*.wal")) == []  # no partial journal left behind
        free_before = free_bytes(small)

        port = free_port()
        env = {
            **os.environ,
            "CONCORDOSE_SPOOL_JOURNAL_MB": "2",
            "CONCORDOSE_SPOOL_FREE_RESERVE_MB": "1",
        }
        command = [sys.executable, "-m", "concordose", *args, "--port", str(port)]
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1"],
            env=env,
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: port_open(port), timeout_s=30, what="concordose receive")
            sent = storescu(port, small_patient.site.calling_ae_title, small_patient.nm_files[:1])
            assert sent.returncode == 0, sent.stderr
        finally:
            assert stop_process(process) == 0
        journal = spool / "journal" / "journal.wal"  # 2 MB in 4 segments, and its header block
        assert journal.stat().st_size == journal_file_bytes(512 * KB, 4) == 2 * MB + 4 * KB
        assert free_before - free_bytes(small) >= 2 * MB
        assert Spool(spool).status().instances == 1


def test_with_the_journal_off_the_reserve_also_answers_out_of_resources(
    tmp_path: Path, small_patient: GeneratedPatient
) -> None:
    """CONCORDOSE_SPOOL_JOURNAL_MB=0: each instance is filed before its answer; the same check."""
    ct = _cts(small_patient)[0]
    larger_than_any_disk = 1 << 62
    spool = Spool(tmp_path / "spool", free_reserve_bytes=larger_than_any_disk)
    with StorageReceiver(
        spool, port=0, site_by_ae_title=SITES, journal_segment_bytes=None
    ) as receiver:
        assert _send(receiver.port, ct) == STATUS_OUT_OF_RESOURCES
        assert receiver.spool.status().instances == 0
        assert list(receiver.spool.tmp_dir.iterdir()) == []
        receiver.spool.free_reserve_bytes = 0
        assert _send(receiver.port, ct) == 0x0000
        assert receiver.spool.status().instances == 1


def test_a_deflated_instance_is_refused_when_inflating_it_would_cross_the_reserve(
    volume: Path,
    small_patient: GeneratedPatient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The unnamed file a deflated data set is inflated into counts against the reserve: 80 kB
    sent inflate to ≈ 3 MB; with 3.5 MB free and a 1 MB reserve, inflating would leave less
    than the reserve (though the 80 kB to file would fit): 0xA700, nothing kept; with room,
    0x0000."""
    monkeypatch.setattr(receiver_module, "INFLATED_IN_MEMORY_BYTES", 64 * KB)  # to disk soon
    dataset = pydicom.dcmread(_cts(small_patient)[0])
    dataset.private_block(0x0011, "CONCORDOSE TEST", create=True).add_new(0x01, "OB", bytes(3 * MB))
    data = deflate(encode_data_set(dataset, ExplicitVRLittleEndian))
    assert len(data) < 80 * KB
    spool = Spool(volume / "spool", free_reserve_bytes=1 * MB)
    context = Context(1, CTImageStorage, DeflatedExplicitVRLittleEndian)

    def send() -> int:
        peer = CraftedPeer(receiver.port, [context], calling_ae="MILAN_SPECT")
        try:
            return peer.store(1, CTImageStorage, str(dataset.SOPInstanceUID), data)
        finally:
            peer.release()

    with StorageReceiver(
        spool, port=0, site_by_ae_title=SITES, journal_segment_bytes=None
    ) as receiver:
        filler = fill(volume, leave_bytes=3 * MB + 512 * KB)
        with caplog.at_level(logging.ERROR, logger="concordose"):
            assert send() == STATUS_OUT_OF_RESOURCES
        assert "reserve 1.0 MB" in caplog.text
        assert receiver.spool.status().instances == 0
        assert list(receiver.spool.tmp_dir.iterdir()) == []
        filler.unlink()
        assert send() == 0x0000
        assert [r.identity.sop_instance_uid for r in receiver.spool.instances()] == [
            str(dataset.SOPInstanceUID)
        ]
