"""The spool: durable, indexed, idempotent, path-safe, with a quarantine; a repeated SOP
Instance UID with other bytes is kept and counted, never dropped (issue 18, item 4)."""

from __future__ import annotations

import logging
import os
import sqlite3
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from concordose.dicom.pseudonym import uid_hash
from concordose.spool import store
from concordose.spool.file_system_sync import sync_file_system
from concordose.spool.store import InstanceIdentity, InvalidInstanceError, Spool
from concordose.spool.timepoints import TimePointState
from concordose.spool.uids import is_valid_uid

NM = "1.2.840.10008.5.1.4.1.1.20"
SYNC_FILE_SYSTEM = "concordose.spool.store.sync_file_system"  # as the filing looks it up
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _identity(sop: str = "1.2.3.4.5", study: str = "1.2.3") -> InstanceIdentity:
    return InstanceIdentity.checked(
        sop_class_uid=NM,
        sop_instance_uid=sop,
        study_uid=study,
        series_uid="1.2.3.4",
        transfer_syntax=EXPLICIT_LE,
    )


@pytest.mark.parametrize(
    "value",
    ["", "1.2..3", "../../etc/passwd", "1.2.3/4", "1.2.3 ", "a.b", "1." + "2" * 70, None, 1.2],
)
def test_invalid_uids_are_refused(value: object) -> None:
    assert not is_valid_uid(value)


def test_identity_names_every_bad_uid() -> None:
    with pytest.raises(
        InvalidInstanceError, match=r"StudyInstanceUID='\.\./x'.*SeriesInstanceUID=None"
    ):
        InstanceIdentity.checked(
            sop_class_uid=NM,
            sop_instance_uid="1.2",
            study_uid="../x",
            series_uid=None,
            transfer_syntax=EXPLICIT_LE,
        )


def test_store_writes_file_and_index_and_is_idempotent(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    first = spool.store(_identity(), b"first bytes", "SITE_A")
    again = spool.store(_identity(), b"first bytes", "SITE_A")
    assert first == again
    assert first.read_bytes() == b"first bytes"
    assert first.relative_to(spool.instances_dir) == Path("1.2.3/1.2.3.4/1.2.3.4.5.dcm")
    rows = Spool.open_existing(tmp_path / "spool").instances()
    assert [
        (row.identity.sop_instance_uid, row.calling_ae_title, row.size_bytes) for row in rows
    ] == [("1.2.3.4.5", "SITE_A", 11)]
    assert list(spool.tmp_dir.iterdir()) == []
    assert spool.quarantined() == []  # the same bytes again: nothing flagged
    status = spool.status()
    assert (status.duplicates_conflicting, status.duplicates_other_study) == (0, 0)


def test_a_repeated_uid_with_other_bytes_is_kept_in_the_quarantine_and_counted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path / "spool")
    first = spool.store(_identity(), b"first bytes", "SITE_A")
    with caplog.at_level(logging.WARNING, logger="concordose.spool"):
        kept = spool.store(_identity(), b"other bytes", "SITE_B")
        assert spool.store(_identity(), b"other bytes", "SITE_B") == kept  # kept once
    moved = _identity(study="1.2.9")  # the same SOP Instance UID under another study
    elsewhere = spool.store(moved, b"moved bytes", "SITE_B")
    assert first.read_bytes() == b"first bytes"  # the first copy stays filed and indexed
    assert [row.path for row in spool.instances()] == [first]
    assert set(spool.quarantined()) == {kept, elsewhere}
    assert (kept.read_bytes(), elsewhere.read_bytes()) == (b"other bytes", b"moved bytes")
    reason = kept.with_suffix(".reason.txt").read_text()
    assert "duplicate SOP Instance UID (conflicting)" in reason
    assert "instances/1.2.3/1.2.3.4/1.2.3.4.5.dcm" in reason
    assert "(other_study)" in elsewhere.with_suffix(".reason.txt").read_text()
    status = Spool.open_existing(spool.root).status()
    assert (status.duplicates_conflicting, status.duplicates_other_study) == (1, 1)
    assert status.instances == 1
    assert [tp.instance_count for tp in spool.timepoints()] == [1]  # 1.2.9 got nothing
    warnings = [r.getMessage() for r in caplog.records if "duplicate SOP" in r.getMessage()]
    # Logged once per kept copy, not again for the same different copy sent twice.
    assert ["(conflicting)" in w for w in warnings] == [True, False]
    assert "(other_study)" in warnings[1]
    assert all("1.2.3.4.5" not in w and uid_hash("1.2.3.4.5") in w for w in warnings)


def test_duplicates_in_one_filing_batch_keep_the_first_copy(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.lock_for_receiver()
    spool.start_journal(segment_bytes=1 << 20, segment_count=2)
    try:
        for data in (b"first", b"first", b"second"):
            temp = spool.new_temp_path()
            temp.write_bytes(data)
            spool.accept_temp_file(
                _identity(), temp, len(data), zlib.crc32(data), calling_ae_title="SITE_A"
            )
    finally:
        spool.stop_journal()
        spool.unlock_receiver()
    (row,) = spool.instances()
    assert row.path.read_bytes() == b"first"
    (kept,) = spool.quarantined()
    assert kept.read_bytes() == b"second"
    assert spool.status().duplicates_conflicting == 1


def test_index_survives_reopening_and_partial_writes_are_dropped(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    Spool(root).store(_identity("1.9"), b"x", "SITE_A")
    (root / "tmp" / "crashed.part").write_bytes(b"half")
    reopened = Spool(root)
    assert [row.identity.sop_instance_uid for row in reopened.instances()] == ["1.9"]
    assert not (root / "tmp" / "crashed.part").exists()


def test_quarantine_keeps_bytes_and_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.quarantine(b"garbage", "missing StudyInstanceUID")
    assert path.read_bytes() == b"garbage"
    assert path.with_suffix(".reason.txt").read_text() == "missing StudyInstanceUID"
    assert spool.instances() == []


def test_open_existing_on_missing_spool_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="does not exist"):
        Spool.open_existing(tmp_path / "nowhere")


def test_no_completion_event_while_an_acknowledged_instance_of_its_study_is_not_filed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: an explicit trigger's event waits while the index refuses (SQLite full) an
    instance of its study; the refused batch is not lost: filed once the index accepts."""
    spool = Spool(tmp_path / "spool")
    spool.lock_for_receiver()
    spool.start_journal(segment_bytes=1 << 20, segment_count=2)
    try:
        spool.store(_identity("1.2.3.4.1"), b"filed", "SITE_A")
        assert spool.mark_complete("1.2.3", "explicit trigger", datetime.now(UTC))
        assert len(spool.pending_events()) == 1

        def index_full(_self: Spool, _items: object, **_options: bool) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(Spool, "_file", index_full)
        temp = spool.new_temp_path()
        temp.write_bytes(b"late")
        late = _identity("1.2.3.4.2")
        spool.accept_temp_file(late, temp, 4, zlib.crc32(b"late"), calling_ae_title="SITE_A")
        assert spool.pending_events() == []  # its study has an instance not yet filed
        assert spool.unfiled_study_uids() == {"1.2.3"}
        monkeypatch.undo()
        assert spool.pending_events() == []  # filed now: the time point reopened
        (timepoint,) = spool.timepoints()
        assert (timepoint.instance_count, timepoint.state) == (2, TimePointState.RECEIVING)
    finally:
        spool.stop_journal()
        spool.unlock_receiver()


@pytest.fixture
def journaling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Spool]:
    """A spool with its journal started (2 × 1 MB) and filing only when the test files."""
    monkeypatch.setattr(store, "FILE_AFTER_IDLE_S", 3600.0)
    spool = Spool(tmp_path / "spool")
    spool.lock_for_receiver()
    spool.start_journal(segment_bytes=1 << 20, segment_count=2)
    try:
        yield spool
    finally:
        spool.stop_journal()
        spool.unlock_receiver()


def _journal_five(spool: Spool) -> None:
    """Five journaled instances, each in its own study (five folders), not yet filed."""
    for index in range(1, 6):
        temp = spool.new_temp_path()
        temp.write_bytes(b"instance %d" % index)
        spool.accept_temp_file(
            _identity(f"1.2.3.4.{index}", study=f"1.2.{index}"),
            temp,
            temp.stat().st_size,
            zlib.crc32(temp.read_bytes()),
            calling_ae_title="SITE_A",
        )


def test_journaled_instances_are_filed_in_batches_each_kept_once_filed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18 item 6: filing goes in batches of FILING_BATCH, each complete on its own (its
    journal records released), so a burst recycles segments while it is still arriving; a
    refused batch leaves the earlier ones filed and itself and the later ones pending."""
    monkeypatch.setattr(store, "FILE_AFTER_IDLE_S", 3600.0)  # only this test files
    monkeypatch.setattr(store, "FILING_BATCH", 2)
    spool = Spool(tmp_path / "spool")
    spool.lock_for_receiver()
    spool.start_journal(segment_bytes=1 << 20, segment_count=2)
    try:
        _journal_five(spool)
        batches: list[int] = []
        file_items = Spool._file

        def second_batch_refused(self: Spool, items: list[Any], **options: bool) -> None:
            batches.append(len(items))
            if len(batches) == 2:
                raise sqlite3.OperationalError("database or disk is full")
            file_items(self, items, **options)

        monkeypatch.setattr(Spool, "_file", second_batch_refused)
        with pytest.raises(sqlite3.OperationalError):
            spool.file_journaled()
        assert batches == [2, 2]
        assert spool.unfiled_study_uids() == {"1.2.3", "1.2.4", "1.2.5"}
        monkeypatch.undo()
        filed = sorted(row.identity.sop_instance_uid for row in spool.instances())
        assert filed == [f"1.2.3.4.{index}" for index in range(1, 6)]
    finally:
        spool.stop_journal()
        spool.unlock_receiver()


def _write_back_failed(path: Path) -> bool:
    raise OSError(5, f"syncfs of {path}: Input/output error")


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    fsync = os.fsync

    def counted(fd: int) -> None:
        calls.append(fd)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", counted)
    return calls


def test_a_filing_batch_is_made_durable_by_one_file_system_flush(
    journaling: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18 item 6: journaled instances are renamed into place, then one ``syncfs`` makes
    the batch durable before its index commit (their journal records stay valid until then),
    instead of an fsync per file and per folder."""
    flushes: list[Path] = []

    def counted_sync(path: Path) -> bool:
        flushes.append(path)
        return sync_file_system(path)

    monkeypatch.setattr(SYNC_FILE_SYSTEM, counted_sync)
    spool = journaling
    _journal_five(spool)
    fsyncs = _count_fsyncs(monkeypatch)
    assert spool.file_journaled() == 5
    assert flushes == [spool.root]
    assert fsyncs == []
    assert sorted(row.path.read_bytes() for row in spool.instances()) == [
        b"instance %d" % index for index in range(1, 6)
    ]


def test_without_syncfs_each_filed_file_and_folder_is_fsynced(
    journaling: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where ``syncfs`` is unavailable (not Linux), the batch falls back to an fsync per
    file and per folder, and ``syncfs`` is not tried again."""
    tries: list[Path] = []

    def unavailable(path: Path) -> bool:
        tries.append(path)
        return False

    monkeypatch.setattr(SYNC_FILE_SYSTEM, unavailable)
    spool = journaling
    _journal_five(spool)
    fsyncs = _count_fsyncs(monkeypatch)
    monkeypatch.setattr(store, "FILING_BATCH", 3)
    assert spool.file_journaled() == 5
    assert tries == [spool.root]  # the first batch learnt it; the second fsynced at once
    folders = {row.path.parent for row in spool.instances()}
    assert len(folders) == 5
    # First batch (3): made without fsyncs, then each file, each series and study folder
    # and the instances folder. Second (2): each new folder's parent as it is made (2 × 2),
    # each file, each series folder.
    assert len(fsyncs) == (3 + 3 + 3 + 1) + (4 + 2 + 2)


def test_a_failed_file_system_flush_indexes_nothing_and_the_batch_is_filed_later(
    journaling: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write-back error reported by ``syncfs`` fails the batch before its index commit: its
    instances stay pending (journaled) and are filed by the next attempt."""
    spool = journaling
    _journal_five(spool)
    monkeypatch.setattr(SYNC_FILE_SYSTEM, _write_back_failed)
    with pytest.raises(OSError, match="Input/output error"):
        spool.file_journaled()
    assert spool.unfiled_instance_count() == 5
    monkeypatch.setattr(SYNC_FILE_SYSTEM, sync_file_system)
    assert len(spool.instances()) == 5  # the reader's drain files them
    assert spool.unfiled_instance_count() == 0


def test_the_bytes_only_in_the_journal_are_counted_until_filed_also_after_a_refusal(
    journaling: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The free-space check reads a running sum, not a walk over the backlog: it must match
    the pending instances' bytes, drop to 0 once they are filed, and not drift when a batch
    is refused and filed again (a drift upwards would answer 0xA700 with room to spare)."""
    spool = journaling
    for round_ in range(2):
        sizes = []
        for index in range(1, 4):
            data = b"round %d instance %d" % (round_, index) * (index + 1)
            sizes.append(len(data))
            writer = spool.journal_writer()
            assert writer is not None
            writer.write(memoryview(data))
            spool.commit_journaled(
                writer,
                _identity(f"1.2.3.{round_}.{index}"),
                zlib.crc32(data),
                calling_ae_title="SITE_A",
            )
        assert spool.journal_only_bytes() == sum(sizes)
        if round_ == 1:
            monkeypatch.setattr(SYNC_FILE_SYSTEM, _write_back_failed)
            with pytest.raises(OSError, match="Input/output error"):
                spool.file_journaled()  # copied out, then refused: still to be filed
            monkeypatch.setattr(SYNC_FILE_SYSTEM, sync_file_system)
        assert spool.file_journaled() == 3
        assert spool.journal_only_bytes() == 0


def test_an_instance_the_journal_cannot_hold_is_filed_before_its_answer_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The slow path (no segment with room: filed before the answer) is counted, served as
    ``concordose_receiver_filed_before_answer_total`` and logged when the journal stops."""
    spool = Spool(tmp_path / "spool")
    spool.lock_for_receiver()
    spool.start_journal(segment_bytes=2 * 4096, segment_count=2)  # 4 kB of room a segment
    try:
        temp = spool.new_temp_path()
        data = b"\x01" * 20_000
        temp.write_bytes(data)
        spool.accept_temp_file(_identity(), temp, len(data), zlib.crc32(data), calling_ae_title="A")
        assert spool.filed_before_acknowledgement == 1
        assert spool.journal_depth() == 0
        (row,) = spool.instances()
        assert row.path.read_bytes() == data
    finally:
        with caplog.at_level(logging.INFO, logger="concordose.spool.store"):
            spool.stop_journal()
        spool.unlock_receiver()
    assert any("1 instance(s) filed before their answer" in r.getMessage() for r in caplog.records)


class _Crash(BaseException):
    """The process dying at that point (nothing catches it on the way out)."""


def test_a_crash_between_the_renames_and_the_syncfs_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filing renames a batch into place before the one ``syncfs`` that makes it durable;
    a power cut in between can leave those files empty. Their journal records are still
    valid (released only after the index commit), so the next start files them again and
    ``os.replace`` overwrites what the renames left."""
    monkeypatch.setattr(store, "FILE_AFTER_IDLE_S", 3600.0)
    root = tmp_path / "spool"
    crashed = Spool(root)
    crashed.lock_for_receiver()
    crashed.start_journal(segment_bytes=1 << 20, segment_count=2)
    try:
        _journal_five(crashed)

        def power_cut(path: Path) -> bool:
            raise _Crash

        monkeypatch.setattr(SYNC_FILE_SYSTEM, power_cut)
        with pytest.raises(_Crash):
            crashed.file_journaled()
        renamed = sorted((root / "instances").rglob("*.dcm"))
        assert len(renamed) == 5  # in place, neither durable nor indexed
        for path in renamed:
            path.write_bytes(b"")  # what a power cut may leave of a file never flushed
        crashed.unlock_receiver()  # the process is gone: so is its lock

        monkeypatch.setattr(SYNC_FILE_SYSTEM, sync_file_system)
        restarted = Spool(root)  # files what the journal holds, no receiver running
        assert sorted(row.path.read_bytes() for row in restarted.instances()) == [
            b"instance %d" % index for index in range(1, 6)
        ]
    finally:
        crashed.stop_journal()
