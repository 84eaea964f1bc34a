"""The spool's write-ahead journal: one ``fdatasync`` makes an instance and its index record
durable, so the receiver can acknowledge it before the instance is filed and indexed.

Why (benchmarks/README.md, "Receiver speed"): filing an instance durably is three ordered
journal commits of the file system — the file's fsync before its rename, the folder's fsync
after it, the SQLite WAL fsync of its index row — 1.3 ms per 0.5 MB instance on a quiet disk and
≈ 12 ms when other jobs write. Appending the instance and its index record to a journal segment
and ``fdatasync``-ing it is one flush; once the segment's blocks have been written in an earlier
pass (segments are recycled, never deleted), the overwrite changes no file-system metadata and
the flush needs no file-system journal commit at all.

Layout (``journal/`` in the spool)::

    segment-<n>.wal   a segment header block, then records, each starting on a 4 kB boundary

Segment header (first 4 kB): magic ``CDSSEG01``, generation (u64), CRC-32 of both.
Record: a 48-byte header — magic ``CDSREC01``, generation (u64, the segment's), sequence (u64,
increasing across segments), meta length (u32), data length (u64), CRC-32 of the data, CRC-32
of the meta, CRC-32 of the header — then the data (the Part 10 file as received, streamed in
as it arrives: :meth:`Journal.begin`) and the meta (UTF-8 JSON: the index record, known only
once the data is checked). The header is written last, before the one ``fdatasync``.

Durability argument:

* a record is acknowledged only after the ``fdatasync`` covering its header, meta and data
  returned;
* records of a segment are written one after the other, each only after the previous one's
  ``fdatasync`` returned (a failed record's offset is reused), so a scan that stops at the first
  invalid record (bad magic or CRC, another generation, end of file) has seen every
  acknowledged record of that segment: a torn, unacknowledged write fails a CRC;
* a segment is recycled (its header rewritten with a new generation, which invalidates its old
  records) only once every record in it has been filed and indexed durably (file fsync, rename,
  folder fsync, index commit: :meth:`~.spool.Spool._file_temp_files`);
* at start-up the receiver's :meth:`~.spool.Spool.lock_for_receiver` files every valid record
  not yet indexed (idempotent: a SOP Instance UID already indexed with the same bytes is
  skipped), then recycles every segment; records it cannot file for want of space stay valid
  in their segments (never recycled, :meth:`Journal.open_for_append` ``keep``) and the filing
  thread files them from the journal once space returns.

Size: ``segment_count`` × ``segment_bytes`` (default 4 × 64 MB = 256 MB,
:func:`segment_bytes_for`; ``CONCORDOSE_SPOOL_JOURNAL_MB``) bounds what is acknowledged and
not yet filed; ``concordose receive`` allocates it once when the spool is new.
"""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BLOCK_BYTES = 4096
SEGMENT_MAGIC = b"CDSSEG01"
RECORD_MAGIC = b"CDSREC01"
_SEGMENT_HEADER = struct.Struct("<8sQI")
_RECORD_BODY = struct.Struct("<8sQQIQII")
_RECORD_HEADER_BYTES = _RECORD_BODY.size + 4

DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_SEGMENT_COUNT = 4
DEFAULT_JOURNAL_MB = (DEFAULT_SEGMENT_BYTES * DEFAULT_SEGMENT_COUNT) >> 20
"""The journal's default total size, MB (``CONCORDOSE_SPOOL_JOURNAL_MB``)."""


def segment_bytes_for(journal_mb: int, segment_count: int = DEFAULT_SEGMENT_COUNT) -> int | None:
    """Each segment's size for a journal of ``journal_mb`` MB in all (whole 4 kB blocks, at
    least two per segment); ``None`` for 0 MB: no journal, every instance is filed before it
    is acknowledged."""
    if journal_mb <= 0:
        return None
    per_segment = (journal_mb << 20) // segment_count // BLOCK_BYTES * BLOCK_BYTES
    return max(per_segment, 2 * BLOCK_BYTES)


def _aligned(size: int) -> int:
    return -(-size // BLOCK_BYTES) * BLOCK_BYTES


def fsync_folder(path: Path) -> None:
    """fsync a folder, making the entries created or renamed in it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_header(generation: int) -> bytes:
    head = SEGMENT_MAGIC + struct.pack("<Q", generation)
    return _SEGMENT_HEADER.pack(SEGMENT_MAGIC, generation, zlib.crc32(head))


def _read_generation(fd: int) -> int | None:
    raw = os.pread(fd, _SEGMENT_HEADER.size, 0)
    if len(raw) < _SEGMENT_HEADER.size:
        return None
    magic, generation, crc = _SEGMENT_HEADER.unpack(raw)
    if magic != SEGMENT_MAGIC or crc != zlib.crc32(raw[:16]):
        return None
    return int(generation)


@dataclass(frozen=True)
class JournalRecord:
    """A valid record found by :meth:`Journal.records` (its data stays in the segment)."""

    sequence: int
    meta: dict[str, Any]
    segment_fd: int
    data_offset: int
    data_bytes: int
    segment: int = 0
    """Index of the segment holding it."""
    end_offset: int = 0
    """Where the next record of its segment starts."""

    def entry(self) -> JournalEntry:
        """The record as an entry to :meth:`Journal.release` once filed (a kept record)."""
        return JournalEntry(self.segment, self.sequence, self.data_offset, self.data_bytes)


@dataclass(frozen=True)
class JournalEntry:
    """An appended record, to :meth:`Journal.release` once filed and indexed."""

    segment: int
    sequence: int
    data_offset: int
    data_bytes: int


class _Segment:
    def __init__(self, index: int, path: Path, fd: int, generation: int) -> None:
        self.index = index
        self.path = path
        self.fd = fd
        self.generation = generation
        self.offset = BLOCK_BYTES
        self.live = 0  # records appended in this generation and not yet released
        self.claimed = False  # a record is being streamed into the tail


class JournalOverflowError(Exception):
    """The record being streamed does not fit in its segment (the caller spills it)."""


class JournalWriter:
    """One record being streamed into a claimed segment tail (one association's instance).

    :meth:`write` the data as it arrives, read it back with :meth:`reader`, then :meth:`commit`
    (meta, header, one ``fdatasync``) or :meth:`abort` (the space is reused).
    """

    def __init__(self, journal: Journal, segment: _Segment) -> None:
        self.journal = journal
        self.segment = segment
        self.start = segment.offset
        self.data_offset = self.start + _RECORD_HEADER_BYTES
        self.size = 0
        self._open = True

    def write(self, fragment: memoryview) -> None:
        """Append to the record's data.

        Raises:
            JournalOverflowError: it would pass the segment's end (nothing written).
            OSError: the write failed.
        """
        # Room is kept for a meta of up to one block after the data.
        if self.data_offset + self.size + len(fragment) + BLOCK_BYTES > self.journal.segment_bytes:
            self.journal._close_tail(self.segment)  # the next record starts a fresh segment
            raise JournalOverflowError("instance larger than the room left in the segment")
        while fragment:
            written = os.pwrite(self.segment.fd, fragment, self.data_offset + self.size)
            fragment = fragment[written:]
            self.size += written

    def copy_to(self, target_fd: int) -> None:
        """Copy the data written so far into ``target_fd`` (offset 0)."""
        _copy(self.segment.fd, self.data_offset, target_fd, 0, self.size)

    def reader(self) -> io.BufferedReader:
        """The data written so far as a read-only file (for decoding it)."""
        return io.BufferedReader(_Window(self.segment.fd, self.data_offset, self.size))

    def commit(self, meta: dict[str, Any], data_crc: int) -> JournalEntry:
        """Write the meta and the header, ``fdatasync``: the record is durable on return.

        Raises:
            JournalOverflowError: the meta does not fit (nothing counts; :meth:`abort`).
            OSError: a write or the flush failed (nothing counts; :meth:`abort`).
        """
        meta_raw = json.dumps(meta, separators=(",", ":")).encode("utf-8")
        entry = self.journal._commit(self, meta_raw, data_crc)
        self._open = False
        return entry

    def abort(self) -> None:
        """Give the claimed space back (no-op after :meth:`commit`)."""
        if self._open:
            self._open = False
            self.journal._unclaim(self.segment)


class _Window(io.RawIOBase):
    """``size`` bytes of a file from ``offset``, as a seekable read-only raw file."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self._fd, self._offset, self._size, self._position = fd, offset, size, 0
        self.name = f"<journal record at byte {offset}>"  # pydicom reads ``name``

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), self._size - self._position))
        data = os.pread(self._fd, count, self._offset + self._position)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position


class Journal:
    """Segments under ``folder``: appended on the acknowledgement path, recycled when filed.

    Thread-safe. :meth:`append` returns ``None`` (the caller then files the instance directly)
    when no segment has room: every segment holds records not yet filed, or the record is
    larger than a segment.
    """

    def __init__(
        self,
        folder: Path,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        segment_count: int = DEFAULT_SEGMENT_COUNT,
    ) -> None:
        self.folder = folder
        self.segment_bytes = segment_bytes
        self.segment_count = segment_count
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._next_sequence = 1
        self._next_generation = 1

    # -- start-up --------------------------------------------------------------------------------

    def _paths(self) -> list[Path]:
        return sorted(self.folder.glob("segment-*.wal"), key=lambda p: int(p.stem.split("-")[1]))

    def _open_existing(self) -> None:
        for index, path in enumerate(self._paths()):
            fd = os.open(path, os.O_RDWR)
            generation = _read_generation(fd) or 0
            self._segments.append(_Segment(index, path, fd, generation))
            self._next_generation = max(self._next_generation, generation + 1)

    def records(self) -> Iterator[JournalRecord]:
        """Every valid record of every segment, in sequence order (opens the segments)."""
        with self._lock:
            if not self._segments and self.folder.is_dir():
                self._open_existing()
            found: list[JournalRecord] = []
            for segment in self._segments:
                found.extend(self._scan(segment))
        found.sort(key=lambda record: record.sequence)
        if found:
            self._next_sequence = max(self._next_sequence, found[-1].sequence + 1)
        yield from found

    def _scan(self, segment: _Segment) -> Iterator[JournalRecord]:
        offset = BLOCK_BYTES
        while True:
            raw = os.pread(segment.fd, _RECORD_HEADER_BYTES, offset)
            if len(raw) < _RECORD_HEADER_BYTES:
                return
            body, (header_crc,) = raw[:-4], struct.unpack("<I", raw[-4:])
            if zlib.crc32(body) != header_crc:
                return
            magic, generation, sequence, meta_len, data_len, data_crc, meta_crc = (
                _RECORD_BODY.unpack(body)
            )
            if magic != RECORD_MAGIC or generation != segment.generation:
                return
            data_offset = offset + _RECORD_HEADER_BYTES
            meta_raw = os.pread(segment.fd, meta_len, data_offset + data_len)
            if len(meta_raw) != meta_len or zlib.crc32(meta_raw) != meta_crc:
                return
            if self._data_crc(segment.fd, data_offset, data_len) != data_crc:
                return
            end_offset = offset + _aligned(_RECORD_HEADER_BYTES + meta_len + data_len)
            yield JournalRecord(
                sequence=int(sequence),
                meta=json.loads(meta_raw),
                segment_fd=segment.fd,
                data_offset=data_offset,
                data_bytes=int(data_len),
                segment=segment.index,
                end_offset=end_offset,
            )
            offset = end_offset

    @staticmethod
    def _data_crc(fd: int, offset: int, size: int) -> int | None:
        crc = 0
        while size:
            chunk = os.pread(fd, min(size, 1 << 20), offset)
            if not chunk:
                return None
            crc = zlib.crc32(chunk, crc)
            offset += len(chunk)
            size -= len(chunk)
        return crc

    def bytes_to_allocate(self, *, prefill: bool) -> int:
        """Disk space :meth:`open_for_append` would take now: with ``prefill``, every segment's
        missing length (a new spool: the whole journal); without, nothing beyond headers."""
        if not prefill:
            return 0
        sizes = [path.stat().st_size for path in self._paths()[: self.segment_count]]
        sizes += [0] * (self.segment_count - len(sizes))
        return sum(max(0, self.segment_bytes - size) for size in sizes)

    def open_for_append(self, *, prefill: bool = False, keep: Sequence[JournalRecord] = ()) -> None:
        """Create the missing segments (durably) and recycle every segment not holding a
        record of ``keep``.

        ``prefill`` writes zeros up to each segment's full size first (once per spool; a
        no-op for segments already that long): records then overwrite allocated blocks from the
        first one on, and their ``fdatasync`` changes no file-system metadata. Without it,
        the first pass through a segment allocates its blocks record by record.

        ``keep``: records found by :meth:`records` and not filed yet (start-up with too little
        free space to file them): their segments keep their generation, new records go after
        them, and each is released (:meth:`release`) once filed. Segments beyond
        ``segment_count`` or longer than ``segment_bytes`` (the journal was configured
        smaller) are removed or cut once they hold no kept record.

        Call only once every other valid record has been filed (after :meth:`records`).

        Raises:
            OSError: creating or filling a segment failed; segments this call created are
                removed again (no partial journal is left behind).
        """
        with self._lock:
            if not self._segments and self.folder.is_dir():
                self._open_existing()
            created: list[_Segment] = []
            made_folder = not self.folder.is_dir()
            try:
                if made_folder:
                    self.folder.mkdir()
                    fsync_folder(self.folder.parent)
                for index in range(len(self._segments), self.segment_count):
                    path = self.folder / f"segment-{index}.wal"
                    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                    segment = _Segment(index, path, fd, 0)
                    self._segments.append(segment)
                    created.append(segment)
                kept: dict[int, list[JournalRecord]] = {}
                for record in keep:
                    kept.setdefault(record.segment, []).append(record)
                self._drop_surplus(set(kept))
                zeros = bytes(1 << 20)
                for segment in self._segments:
                    size = os.fstat(segment.fd).st_size
                    while prefill and size < self.segment_bytes:
                        size += os.pwrite(segment.fd, zeros[: self.segment_bytes - size], size)
                    records = kept.get(segment.index)
                    if records:
                        segment.offset = max(record.end_offset for record in records)
                        segment.live = len(records)
                    else:
                        self._recycle(segment, full_sync=True)
                if created:
                    fsync_folder(self.folder)
            except OSError:
                for segment in created:
                    os.close(segment.fd)
                    segment.path.unlink(missing_ok=True)
                    self._segments.remove(segment)
                if made_folder:
                    with suppress(OSError):
                        self.folder.rmdir()
                raise

    def _drop_surplus(self, kept_segments: set[int]) -> None:
        """Remove segments beyond ``segment_count`` and cut segments longer than
        ``segment_bytes`` (a journal configured smaller), unless they hold kept records; lock
        held."""
        while len(self._segments) > self.segment_count:
            last = self._segments[-1]
            if last.index in kept_segments:
                break
            os.close(last.fd)
            last.path.unlink()
            self._segments.pop()
        for segment in self._segments:
            cut = os.fstat(segment.fd).st_size > self.segment_bytes
            if cut and segment.index not in kept_segments:
                os.ftruncate(segment.fd, self.segment_bytes)

    def _recycle(self, segment: _Segment, *, full_sync: bool = False) -> None:
        """Give ``segment`` a new generation (its old records become invalid); lock held."""
        generation = self._next_generation
        os.pwrite(segment.fd, _segment_header(generation).ljust(BLOCK_BYTES, b"\0"), 0)
        if full_sync:
            os.fsync(segment.fd)  # a new file's size and blocks, once
        else:
            os.fdatasync(segment.fd)
        self._next_generation += 1
        segment.generation = generation
        segment.offset = BLOCK_BYTES
        segment.live = 0

    # -- the acknowledgement path ----------------------------------------------------------------

    def begin(self) -> JournalWriter | None:
        """Claim a segment's tail to stream one record into; ``None`` when none is free (every
        segment holds unfiled records or another association is streaming into it)."""
        with self._lock:
            segment = self._claim(BLOCK_BYTES)
            return None if segment is None else JournalWriter(self, segment)

    def append(
        self, meta: dict[str, Any], source_fd: int, data_bytes: int, data_crc: int
    ) -> JournalEntry | None:
        """Append one record (data copied from ``source_fd`` offset 0) and ``fdatasync`` it.

        Returns:
            The entry, or ``None`` when no segment has room (nothing written then).

        Raises:
            OSError: the write or the flush failed; the record does not count and its space is
            reused by the next one.
        """
        with self._lock:
            segment = self._claim(_aligned(_RECORD_HEADER_BYTES + data_bytes + BLOCK_BYTES))
            if segment is None:
                return None
        writer = JournalWriter(self, segment)
        try:
            _copy(source_fd, 0, segment.fd, writer.data_offset, data_bytes)
            writer.size = data_bytes
            return writer.commit(meta, data_crc)
        finally:
            writer.abort()  # no-op once committed

    def _claim(self, need: int) -> _Segment | None:
        """An unclaimed segment with ``need`` bytes of room at its tail, claimed; lock held."""
        if need > self.segment_bytes - BLOCK_BYTES:
            return None
        free = [segment for segment in self._segments if not segment.claimed]
        # Continue the segment with the latest records first, so a burst stays sequential.
        free.sort(key=lambda segment: -segment.offset)
        for segment in free:
            if segment.offset + need <= self.segment_bytes:
                segment.claimed = True
                return segment
        for segment in free:
            if segment.live == 0:
                self._recycle(segment)
                segment.claimed = True
                return segment
        return None

    def _commit(self, writer: JournalWriter, meta_raw: bytes, data_crc: int) -> JournalEntry:
        segment = writer.segment
        end = writer.data_offset + writer.size
        if end + len(meta_raw) > self.segment_bytes:
            raise JournalOverflowError("no room left in the segment for the record's meta")
        with self._lock:
            sequence = self._next_sequence
            self._next_sequence += 1
        body = _RECORD_BODY.pack(
            RECORD_MAGIC,
            segment.generation,
            sequence,
            len(meta_raw),
            writer.size,
            data_crc,
            zlib.crc32(meta_raw),
        )
        os.pwrite(segment.fd, meta_raw, end)
        os.pwrite(segment.fd, body + struct.pack("<I", zlib.crc32(body)), writer.start)
        os.fdatasync(segment.fd)
        with self._lock:
            segment.offset = writer.start + _aligned(
                _RECORD_HEADER_BYTES + writer.size + len(meta_raw)
            )
            segment.live += 1
            segment.claimed = False
        return JournalEntry(segment.index, sequence, writer.data_offset, writer.size)

    def _close_tail(self, segment: _Segment) -> None:
        with self._lock:
            segment.offset = self.segment_bytes

    def _unclaim(self, segment: _Segment) -> None:
        with self._lock:
            segment.claimed = False

    def copy_entry(self, entry: JournalEntry, target_fd: int) -> None:
        """Copy an unreleased entry's data into ``target_fd`` (its temp file was lost)."""
        with self._lock:
            fd = self._segments[entry.segment].fd
        _copy(fd, entry.data_offset, target_fd, 0, entry.data_bytes)

    def half_full(self) -> bool:
        """True when more than half the segments hold records not yet released."""
        with self._lock:
            busy = sum(1 for segment in self._segments if segment.live)
            return 2 * busy > len(self._segments)

    def release(self, entry: JournalEntry) -> None:
        """The entry's instance is filed and indexed durably: its record may be overwritten."""
        with self._lock:
            self._segments[entry.segment].live -= 1

    def recycle_all(self) -> None:
        """After start-up recovery filed every record: invalidate them all."""
        with self._lock:
            for segment in self._segments:
                self._recycle(segment)

    def close(self) -> None:
        """Close the segments' file descriptors."""
        with self._lock:
            for segment in self._segments:
                os.close(segment.fd)
            self._segments.clear()


def _copy(
    source_fd: int, source_offset: int, target_fd: int, target_offset: int, size: int
) -> None:
    """Copy ``size`` bytes between files in the kernel (no user-space copy)."""
    while size:
        copied = os.copy_file_range(source_fd, target_fd, size, source_offset, target_offset)
        if copied == 0:
            raise OSError(f"copy ended {size} bytes early (source shorter than expected)")
        source_offset += copied
        target_offset += copied
        size -= copied


def copy_out(record: JournalRecord, target_fd: int) -> None:
    """Copy a record's data into ``target_fd`` (offset 0), for start-up recovery."""
    _copy(record.segment_fd, record.data_offset, target_fd, 0, record.data_bytes)
