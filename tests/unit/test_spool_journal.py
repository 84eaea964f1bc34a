"""The spool journal finds exactly the records that were flushed whole, once."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from concordose.spool.journal import Journal, segment_bytes_for


def _append(journal: Journal, tmp_path: Path, name: str, data: bytes) -> None:
    source = tmp_path / name
    source.write_bytes(data)
    fd = os.open(source, os.O_RDONLY)
    try:
        entry = journal.append({"name": name}, fd, len(data), zlib.crc32(data))
    finally:
        os.close(fd)
    assert entry is not None


def _found(folder: Path) -> list[tuple[str, bytes]]:
    reader = Journal(folder)
    try:
        return [
            (str(r.meta["name"]), os.pread(r.segment_fd, r.data_bytes, r.data_offset))
            for r in reader.records()
        ]
    finally:
        reader.close()


def test_records_survive_reopening_and_a_torn_record_ends_the_scan(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    journal = Journal(folder, segment_bytes=1 << 20, segment_count=2)
    journal.open_for_append()
    payloads = {f"r{i}": bytes([i]) * (100_000 + i) for i in range(3)}
    for name, data in payloads.items():
        _append(journal, tmp_path, name, data)
    journal.close()
    assert _found(folder) == list(payloads.items())

    # A torn write of the second record (one byte of its data never reached the disk).
    segment = folder / "segment-0.wal"
    raw = bytearray(segment.read_bytes())
    second = raw.index(b"\x01" * 1000)
    raw[second + 500] ^= 0xFF
    segment.write_bytes(bytes(raw))
    assert _found(folder) == [("r0", payloads["r0"])]


def test_a_full_segment_moves_on_and_recycling_invalidates_old_records(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    journal = Journal(folder, segment_bytes=256 * 1024, segment_count=2)
    journal.open_for_append()
    for index in range(4):  # two fit in a segment: the third opens the second segment
        _append(journal, tmp_path, f"r{index}", b"x" * 100_000)
    assert [name for name, _ in _found(folder)] == ["r0", "r1", "r2", "r3"]
    source = tmp_path / "big"
    source.write_bytes(b"y" * 100_000)
    fd = os.open(source, os.O_RDONLY)
    try:  # both segments hold unreleased records: no room, the caller files directly
        assert journal.append({"name": "r4"}, fd, 100_000, 0) is None
    finally:
        os.close(fd)
    journal.recycle_all()
    journal.close()
    assert _found(folder) == []


def test_prefill_allocates_each_segment_once_and_keeps_records_readable(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    journal = Journal(folder, segment_bytes=256 * 1024, segment_count=2)
    journal.open_for_append(prefill=True)
    sizes = [p.stat().st_size for p in sorted(folder.glob("segment-*.wal"))]
    assert sizes == [256 * 1024, 256 * 1024]
    _append(journal, tmp_path, "r0", b"z" * 50_000)  # zeros after it end the scan
    journal.close()
    assert _found(folder) == [("r0", b"z" * 50_000)]


def test_kept_records_survive_reopening_for_append_and_new_records_go_after_them(
    tmp_path: Path,
) -> None:
    """Start-up on a full disk (issue 18): records not filed yet stay valid, never recycled."""
    folder = tmp_path / "journal"
    journal = Journal(folder, segment_bytes=1 << 20, segment_count=2)
    journal.open_for_append(prefill=True)
    for index in range(3):
        _append(journal, tmp_path, f"r{index}", bytes([index]) * 50_000)
    journal.close()

    reopened = Journal(folder, segment_bytes=1 << 20, segment_count=2)
    kept = [record for record in reopened.records() if record.meta["name"] != "r0"]
    reopened.open_for_append(prefill=True, keep=kept)
    _append(reopened, tmp_path, "r3", b"\x03" * 50_000)
    reopened.release(kept[0].entry())
    reopened.close()
    assert [name for name, _ in _found(folder)][-3:] == ["r1", "r2", "r3"]
    assert dict(_found(folder))["r2"] == b"\x02" * 50_000


def test_a_smaller_journal_setting_cuts_and_removes_segments(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    journal = Journal(folder, segment_bytes=256 * 1024, segment_count=4)
    journal.open_for_append(prefill=True)
    journal.close()
    smaller = Journal(folder, segment_bytes=128 * 1024, segment_count=2)
    assert smaller.bytes_to_allocate(prefill=True) == 0
    smaller.open_for_append(prefill=True)
    smaller.close()
    assert [p.stat().st_size for p in sorted(folder.glob("segment-*.wal"))] == [128 * 1024] * 2
    assert segment_bytes_for(0) is None
    assert segment_bytes_for(2) == 512 * 1024
