"""The spool's write-ahead journal: one ``fdatasync`` makes an instance and its index record
durable, so the receiver can acknowledge it before the instance is filed and indexed; one
``fdatasync`` covers every association's records written before it (group commit).

Why (benchmarks/README.md, "Receiver speed"): filing an instance durably is three ordered
journal commits of the file system — the file's fsync before its rename, the folder's fsync
after it, the SQLite WAL fsync of its index row — 1.3 ms per 0.5 MB instance on a quiet disk and
≈ 12 ms when other jobs write. Appending the instance and its index record to the journal and
``fdatasync``-ing it is one flush; once the journal's blocks have been written in an earlier
pass (segments are recycled, never deleted), the overwrite changes no file-system metadata and
the flush needs no file-system journal commit at all.

Layout (``journal/`` in the spool)::

    journal.wal   a file header block, then ``segment_count`` segments of ``segment_bytes``,
                  each a segment header block, then records, each starting on a 4 kB boundary

File header (first 4 kB): magic ``CDSJNL01``, segment bytes (u64), segment count (u32), CRC-32
of them: the layout the records were written in, whatever the configuration says now.
Segment header (first 4 kB of a segment): magic ``CDSSEG01``, generation (u64), CRC-32 of both.
Record: a 48-byte header — magic ``CDSREC01``, generation (u64, the segment's), sequence (u64,
increasing across segments), meta length (u32), data length (u64), CRC-32 of the data, CRC-32
of the meta, CRC-32 of the header — then the data (the Part 10 file as received, streamed in
as it arrives: :meth:`Journal.begin`) and the meta (UTF-8 JSON: the index record, known only
once the data is checked). The header is written last, before the flush.

Group commit. Every segment is a region of the one file, so one ``fdatasync`` of it makes
durable every write to any segment that completed before the call. Each association streams
into a segment it has claimed (one record at a time), writes its meta and header, takes a
*ticket* (a count of header writes so far) and waits for a flush that covers it
(:meth:`Journal.flush_through`): if a running flush started after its ticket was taken, it
waits for that one; otherwise it starts a flush at once, noting the latest ticket issued, and
when that returns every ticket up to the noted one is durable. Records written while a flush
runs share a later one (started by the first of them to commit); flushes may overlap (the
kernel merges overlapping cache flushes, and a thread never waits behind a flush that does
not cover it). ``flushes`` / ``records_committed`` count them. A failed flush fails every
ticket issued and not yet durable (their records are answered 0xA700), never a later one.

Durability argument:

* a record is acknowledged only after an ``fdatasync`` that started after its header, meta and
  data were written returned (:meth:`Journal.flush_through`);
* records of a segment are written one after the other, each only after the previous one's
  flush returned (one association holds the segment's tail at a time; a failed record's
  offset is reused), so a scan that stops at the first invalid record (bad magic or CRC,
  another generation, the segment's end) has seen every acknowledged record of that segment: a
  torn, unacknowledged write fails a CRC;
* a segment is recycled (its header rewritten with a new generation, flushed before a record
  of that generation is written, which invalidates its old records) only once every record in
  it has been filed and indexed durably (file fsync, rename, folder fsync, index commit:
  :meth:`~.spool.Spool._file_temp_files`);
* at start-up the receiver's :meth:`~.spool.Spool.lock_for_receiver` files every valid record
  not yet indexed (idempotent: a SOP Instance UID already indexed with the same bytes is
  skipped), then recycles every segment; records it cannot file for want of space stay valid
  in their segments (never recycled, :meth:`Journal.open_for_append` ``keep``) and the filing
  thread files them from the journal once space returns.

Size: ``segment_count`` × ``segment_bytes`` (default 16 × 16 MB = 256 MB,
:func:`segment_bytes_for`; ``CONCORDOSE_SPOOL_JOURNAL_MB``) bounds what is acknowledged and
not yet filed; ``concordose receive`` allocates it once when the spool is new. A journal
configured to another size is made anew at the next start once every record in it is filed
(while records in it wait for space, it keeps its old layout). Segment files of the earlier
layout (``segment-<n>.wal``, one file per segment: no flush could cover two associations) are
still read at start-up, filed, and removed.
"""

from __future__ import annotations

import io
import json
import logging
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isal.isal_zlib import crc32 as isal_crc32

LOG = logging.getLogger(__name__)

BLOCK_BYTES = 4096
JOURNAL_FILENAME = "journal.wal"
FILE_MAGIC = b"CDSJNL01"
SEGMENT_MAGIC = b"CDSSEG01"
RECORD_MAGIC = b"CDSREC01"
_FILE_HEADER = struct.Struct("<8sQII")
_SEGMENT_HEADER = struct.Struct("<8sQI")
_RECORD_BODY = struct.Struct("<8sQQIQII")
_RECORD_HEADER_BYTES = _RECORD_BODY.size + 4
_LEGACY_GLOB = "segment-*.wal"

DEFAULT_SEGMENT_BYTES = 16 << 20
DEFAULT_SEGMENT_COUNT = 16
"""Segments in the journal. A segment is recycled only once every record in it is filed, and
each association streaming at once fills a segment of its own: with 4 (the earlier default)
four senders filled all of them side by side, none came free before nearly the whole journal
was filed, and the senders filed their instances themselves before answering (slow path).
16 keeps most segments filling one after the other for up to a dozen associations; an
instance larger than a segment (16 MB by default) goes through a temp file and is filed before
its answer."""
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


def data_crc32(data: Any, value: int = 0) -> int:
    """CRC-32 of a record's data (``value``: of the data before it), the checksum
    ``zlib.crc32`` computes (same polynomial, same values) by ISA-L's implementation: 0.5 MB in
    5 µs instead of zlib 1.2's 100 µs, a tenth of the receiver's CPU per CT slice (profile,
    docs/reliability.md)."""
    return int(isal_crc32(data, value))


def journal_file_bytes(segment_bytes: int, segment_count: int) -> int:
    """The journal file's full length: its header block and every segment."""
    return BLOCK_BYTES + segment_bytes * segment_count


def _aligned(size: int) -> int:
    return -(-size // BLOCK_BYTES) * BLOCK_BYTES


def fsync_path(path: Path) -> None:
    """fsync a file or folder by its path (opened read-only: an fsync makes the file's data,
    or a folder's entries, durable whatever the descriptor's mode)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(path: Path) -> None:
    """fsync a folder, making the entries created or renamed in it durable."""
    fsync_path(path)


def _file_header(segment_bytes: int, segment_count: int) -> bytes:
    head = struct.pack("<8sQI", FILE_MAGIC, segment_bytes, segment_count)
    return _FILE_HEADER.pack(FILE_MAGIC, segment_bytes, segment_count, zlib.crc32(head))


def _read_layout(fd: int) -> tuple[int, int] | None:
    """(segment bytes, segment count) from a journal file's header; ``None`` if invalid."""
    raw = os.pread(fd, _FILE_HEADER.size, 0)
    if len(raw) < _FILE_HEADER.size:
        return None
    magic, segment_bytes, segment_count, crc = _FILE_HEADER.unpack(raw)
    if magic != FILE_MAGIC or crc != zlib.crc32(raw[:20]) or segment_count <= 0:
        return None
    if segment_bytes < 2 * BLOCK_BYTES or segment_bytes % BLOCK_BYTES:
        return None
    return int(segment_bytes), int(segment_count)


def _segment_header(generation: int) -> bytes:
    head = SEGMENT_MAGIC + struct.pack("<Q", generation)
    return _SEGMENT_HEADER.pack(SEGMENT_MAGIC, generation, zlib.crc32(head))


def _read_generation(fd: int, base: int) -> int | None:
    raw = os.pread(fd, _SEGMENT_HEADER.size, base)
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
    """Index of the segment holding it (negative: a segment file of the earlier layout)."""
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
    """A segment: ``[base, end)`` of ``fd`` (the journal file, or a legacy segment file)."""

    def __init__(
        self, index: int, path: Path, fd: int, *, base: int, end: int, generation: int
    ) -> None:
        self.index = index
        self.path = path
        self.fd = fd
        self.base = base
        self.end = end
        self.generation = generation
        self.offset = base + BLOCK_BYTES  # where the next record starts (absolute)
        self.live = 0  # records appended in this generation and not yet released
        self.claimed = False  # a record is being streamed into the tail
        self.legacy = index < 0  # a file of the earlier layout: read, filed, removed

    def fill(self) -> int:
        """Bytes used by records so far."""
        return self.offset - self.base - BLOCK_BYTES


class JournalOverflowError(Exception):
    """The record being streamed does not fit in its segment (the caller spills it)."""


class JournalWriter:
    """One record being streamed into a claimed segment tail (one association's instance).

    :meth:`write` the data as it arrives, read it back with :meth:`reader`, then :meth:`commit`
    (meta, header, a shared ``fdatasync``) or :meth:`abort` (the space is reused).
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
        if self.data_offset + self.size + len(fragment) + BLOCK_BYTES > self.segment.end:
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

    def mapped(self) -> AbstractContextManager[memoryview]:
        """The data written so far, mapped read-only (for walking it without reads)."""
        return map_region(self.segment.fd, self.data_offset, self.size)

    def commit(self, meta: dict[str, Any], data_crc: int) -> JournalEntry:
        """Write the meta and the header, wait for a flush covering them (group commit): the
        record is durable on return.

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


@contextmanager
def map_region(fd: int, offset: int, size: int) -> Iterator[memoryview]:
    """``size`` bytes of file ``fd`` from ``offset``, mapped read-only (``MAP_SHARED``: what
    was written to the file, from the page cache, without a copy). The file must hold them
    (a page mapped past its end faults). Unmapped on exit, or — when a view of it is still
    referenced, e.g. by an exception's traceback — once the last view is gone."""
    if size == 0:
        yield memoryview(b"")
        return
    base = offset - offset % mmap.ALLOCATIONGRANULARITY
    region = mmap.mmap(fd, offset - base + size, prot=mmap.PROT_READ, offset=base)
    view = memoryview(region)[offset - base :]
    try:
        yield view
    finally:
        view.release()
        with suppress(BufferError):
            region.close()


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
    """Segments of ``folder/journal.wal``: appended on the acknowledgement path (group commit),
    recycled when filed.

    Thread-safe. :meth:`append` returns ``None`` (the caller then files the instance directly)
    when no segment has room: every segment holds records not yet filed, or the record is
    larger than a segment.

    ``flush``: what makes the journal file durable (default ``os.fdatasync``, looked up at each
    call); injectable so that a test can count or fail flushes. ``flushes`` counts its calls on
    the append path (records and recycled segment headers), ``records_committed`` the records
    it made durable: with several associations, fewer flushes than records (group commit).
    """

    def __init__(
        self,
        folder: Path,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        segment_count: int = DEFAULT_SEGMENT_COUNT,
        flush: Callable[[int], None] | None = None,
    ) -> None:
        self.folder = folder
        self.segment_bytes = segment_bytes
        self.segment_count = segment_count
        self._flush = flush
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []  # of the journal file, index = position
        self._legacy: list[_Segment] = []  # segment files of the earlier layout, index -1 - k
        self._fd: int | None = None
        self._opened = False
        self._next_sequence = 1
        self._next_generation = 1
        # Group commit (flush_through): tickets issued, durable through, flushes running.
        self._flush_state = threading.Condition(threading.Lock())
        self._tickets = 0
        self._flushed_through = 0
        self._running: list[int] = []  # the last ticket each running flush covers
        self._failed: list[tuple[int, int]] = []  # (after, through): tickets a failed flush lost
        self.flushes = 0
        self.records_committed = 0

    @property
    def path(self) -> Path:
        """The journal file."""
        return self.folder / JOURNAL_FILENAME

    # -- start-up --------------------------------------------------------------------------------

    def _open_existing(self) -> None:
        """Open the journal file (its own layout) and legacy segment files, if any; lock held."""
        self._opened = True
        if not self.folder.is_dir():
            return
        if self.path.is_file():
            fd = os.open(self.path, os.O_RDWR)
            self._fd = fd
            layout = _read_layout(fd)
            if layout is not None:
                self._map_segments(fd, *layout)
        legacy = sorted(self.folder.glob(_LEGACY_GLOB), key=lambda p: int(p.stem.split("-")[1]))
        for position, path in enumerate(legacy):
            fd = os.open(path, os.O_RDWR)
            generation = _read_generation(fd, 0) or 0
            segment = _Segment(
                -1 - position, path, fd, base=0, end=os.fstat(fd).st_size, generation=generation
            )
            self._legacy.append(segment)
            self._next_generation = max(self._next_generation, generation + 1)

    def _map_segments(self, fd: int, segment_bytes: int, segment_count: int) -> None:
        """The journal file's segments in ``segment_bytes`` × ``segment_count``; lock held."""
        self._segments = []
        for index in range(segment_count):
            base = BLOCK_BYTES + index * segment_bytes
            generation = _read_generation(fd, base) or 0
            self._segments.append(
                _Segment(
                    index, self.path, fd, base=base, end=base + segment_bytes, generation=generation
                )
            )
            self._next_generation = max(self._next_generation, generation + 1)

    def _segment(self, index: int) -> _Segment:
        return self._segments[index] if index >= 0 else self._legacy[-1 - index]

    def records(self) -> Iterator[JournalRecord]:
        """Every valid record of every segment, in sequence order (opens the journal)."""
        with self._lock:
            if not self._opened:
                self._open_existing()
            found: list[JournalRecord] = []
            for segment in [*self._legacy, *self._segments]:
                found.extend(self._scan(segment))
        found.sort(key=lambda record: record.sequence)
        if found:
            self._next_sequence = max(self._next_sequence, found[-1].sequence + 1)
        yield from found

    def _scan(self, segment: _Segment) -> Iterator[JournalRecord]:
        offset = segment.base + BLOCK_BYTES
        while offset + _RECORD_HEADER_BYTES <= segment.end:
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
            if data_offset + data_len + meta_len > segment.end:
                return
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
            crc = data_crc32(chunk, crc)
            offset += len(chunk)
            size -= len(chunk)
        return crc

    def bytes_to_allocate(self, *, prefill: bool) -> int:
        """Disk space :meth:`open_for_append` would take now: with ``prefill``, the journal
        file's missing length (a new spool: the whole journal; a journal made anew at another
        size: the difference); without, nothing beyond headers."""
        if not prefill:
            return 0
        size = self.path.stat().st_size if self.path.is_file() else 0
        return max(0, journal_file_bytes(self.segment_bytes, self.segment_count) - size)

    def open_for_append(self, *, prefill: bool = False, keep: Sequence[JournalRecord] = ()) -> None:
        """Create the journal file if missing (durably) and recycle every segment not holding a
        record of ``keep``.

        ``prefill`` writes zeros up to the file's full length first (once per spool; a no-op
        for a file already that long): records then overwrite allocated blocks from the first
        one on, and their ``fdatasync`` changes no file-system metadata. Without it, the first
        pass through a segment allocates its blocks record by record.

        ``keep``: records found by :meth:`records` and not filed yet (start-up with too little
        free space to file them): their segments keep their generation, new records go after
        them, and each is released (:meth:`release`) once filed. A journal file of another
        layout than ``segment_bytes`` × ``segment_count`` (the journal was configured to another
        size) is made anew when it holds no kept record, else kept as it is until the next
        start. Legacy segment files holding no kept record are removed.

        Call only once every other valid record has been filed (after :meth:`records`).

        Raises:
            OSError: creating or filling the journal failed; a file this call created is
                removed again (no partial journal is left behind).
        """
        with self._lock:
            if not self._opened:
                self._open_existing()
            kept: dict[int, list[JournalRecord]] = {}
            for record in keep:
                kept.setdefault(record.segment, []).append(record)
            self._drop_legacy(kept)
            made_folder = not self.folder.is_dir()
            created = False
            try:
                if made_folder:
                    self.folder.mkdir()
                    fsync_folder(self.folder.parent)
                wanted = (self.segment_bytes, self.segment_count)
                layout = None if self._fd is None else _read_layout(self._fd)
                keeps_file = any(index >= 0 for index in kept)
                if keeps_file and layout is not None and layout != wanted:
                    LOG.warning(
                        "the journal keeps its size (%d × %d bytes) until its records are "
                        "filed; the configured size applies at a later start",
                        layout[1],
                        layout[0],
                    )
                    self.segment_bytes, self.segment_count = layout
                elif layout != wanted:  # none yet, torn at creation, or another size: anew
                    self._discard_file()
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                    self._fd, created = fd, True
                    os.pwrite(fd, _file_header(*wanted).ljust(BLOCK_BYTES, b"\0"), 0)
                    self._map_segments(fd, *wanted)
                fd = self._require_fd()
                total = journal_file_bytes(self.segment_bytes, self.segment_count)
                size = os.fstat(fd).st_size
                zeros = bytes(1 << 20)
                while prefill and size < total:
                    size += os.pwrite(fd, zeros[: min(len(zeros), total - size)], size)
                for segment in self._segments:
                    records = kept.get(segment.index)
                    if records:
                        segment.offset = max(record.end_offset for record in records)
                        segment.live = len(records)
                    else:
                        self._write_segment_header(segment)
                os.fsync(fd)  # a new file's size and blocks, and every header, once
                if created or made_folder:
                    fsync_folder(self.folder)
            except OSError:
                if created:
                    self._discard_file()
                if made_folder:
                    with suppress(OSError):
                        self.folder.rmdir()
                raise

    def _require_fd(self) -> int:
        if self._fd is None:
            raise OSError(f"journal {self.path} is not open")
        return self._fd

    def _discard_file(self) -> None:
        """Close and remove the journal file (every record in it filed); lock held."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._segments = []
        self.path.unlink(missing_ok=True)

    def _drop_legacy(self, kept: dict[int, list[JournalRecord]]) -> None:
        """Remove legacy segment files holding no kept record; lock held."""
        for segment in self._legacy:
            segment.live = len(kept.get(segment.index, []))
            if not segment.live:
                self._retire(segment)

    def _retire(self, segment: _Segment) -> None:
        """A legacy segment file whose records are all filed: removed; lock held."""
        if segment.fd >= 0:
            os.close(segment.fd)
            segment.fd = -1
            segment.path.unlink(missing_ok=True)

    def _write_segment_header(self, segment: _Segment) -> None:
        """Give ``segment`` a new generation (its old records become invalid) — not yet
        durable; lock held."""
        generation = self._next_generation
        os.pwrite(segment.fd, _segment_header(generation).ljust(BLOCK_BYTES, b"\0"), segment.base)
        self._next_generation += 1
        segment.generation = generation
        segment.offset = segment.base + BLOCK_BYTES
        segment.live = 0

    def _recycle(self, segment: _Segment) -> None:
        """A new generation for ``segment``, durable before any record of it is written (a
        record of a generation whose header was lost could be mistaken for a later one's);
        the segment changes only once the flush succeeded (after a failed one, the next claim
        writes its header again, with another generation); lock held."""
        generation = self._next_generation
        self._next_generation += 1  # never reused, even when the flush fails
        header = _segment_header(generation).ljust(BLOCK_BYTES, b"\0")
        os.pwrite(segment.fd, header, segment.base)
        self.flush_through(self._take_ticket())
        segment.generation = generation
        segment.offset = segment.base + BLOCK_BYTES
        segment.live = 0

    # -- group commit ----------------------------------------------------------------------------

    def _take_ticket(self) -> int:
        """A ticket for the writes this thread completed so far (:meth:`flush_through`)."""
        with self._flush_state:
            self._tickets += 1
            return self._tickets

    def flush_through(self, ticket: int) -> None:
        """Return once a flush that started after ``ticket`` was taken has completed.

        A thread whose ticket a running flush covers (it started after the ticket was taken)
        waits for it; otherwise it starts a flush at once, covering every ticket issued so far
        (several flushes may run: ``fdatasync`` calls on one file overlap, and the kernel
        merges their cache flushes; serialising them halved four associations' throughput on
        a quiet machine). A thread never waits for a flush that does not cover it.

        Raises:
            OSError: a flush failed before one covering ``ticket`` succeeded (every ticket
                issued by then is failed: a page whose write-back failed may be marked clean,
                so a later flush cannot vouch for it).
        """
        state = self._flush_state
        with state:
            while self._flushed_through < ticket and not self._lost(ticket):
                if any(through >= ticket for through in self._running):
                    state.wait()
                    continue
                through = self._tickets
                self._running.append(through)
                flushed = False
                state.release()
                try:
                    (self._flush or os.fdatasync)(self._require_fd())
                    flushed = True
                finally:  # on any error every ticket not yet durable is lost, none later
                    state.acquire()
                    self._running.remove(through)
                    self.flushes += 1
                    if flushed:
                        self._flushed_through = max(self._flushed_through, through)
                    else:
                        self._failed.append((self._flushed_through, self._tickets))
                    state.notify_all()
            if self._lost(ticket):
                raise OSError(f"journal {self.path}: the flush covering this record failed")

    def _lost(self, ticket: int) -> bool:
        return any(after < ticket <= through for after, through in self._failed)

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
        """Append one record (data copied from ``source_fd`` offset 0) and flush it.

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
        free.sort(key=lambda segment: -segment.fill())
        for segment in free:
            if segment.offset + need <= segment.end:
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
        if end + len(meta_raw) > segment.end:
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
        self.flush_through(self._take_ticket())
        with self._lock:
            segment.offset = writer.start + _aligned(
                _RECORD_HEADER_BYTES + writer.size + len(meta_raw)
            )
            segment.live += 1
            segment.claimed = False
            self.records_committed += 1
        return JournalEntry(segment.index, sequence, writer.data_offset, writer.size)

    def _close_tail(self, segment: _Segment) -> None:
        with self._lock:
            segment.offset = segment.end

    def _unclaim(self, segment: _Segment) -> None:
        with self._lock:
            segment.claimed = False

    def copy_entry(self, entry: JournalEntry, target_fd: int) -> None:
        """Copy an unreleased entry's data into ``target_fd`` (its temp file was lost)."""
        with self._lock:
            fd = self._segment(entry.segment).fd
        _copy(fd, entry.data_offset, target_fd, 0, entry.data_bytes)

    def half_full(self) -> bool:
        """True when more than half the segments hold records not yet released."""
        with self._lock:
            busy = sum(1 for segment in self._segments if segment.live)
            return 2 * busy > len(self._segments)

    def release(self, entry: JournalEntry) -> None:
        """The entry's instance is filed and indexed durably: its record may be overwritten."""
        with self._lock:
            segment = self._segment(entry.segment)
            segment.live -= 1
            if segment.legacy and segment.live <= 0:
                self._retire(segment)

    def recycle_all(self) -> None:
        """After start-up recovery filed every record: invalidate them all (legacy segment
        files removed)."""
        with self._lock:
            for legacy in self._legacy:
                self._retire(legacy)
            for segment in self._segments:
                self._write_segment_header(segment)
        if self._segments:
            self.flush_through(self._take_ticket())
        if self._legacy:
            fsync_folder(self.folder)

    def close(self) -> None:
        """Close the journal's file descriptors (logs how many flushes its records took)."""
        with self._lock:
            if self.records_committed:
                LOG.info(
                    "journal: %d record(s) made durable by %d flush(es)",
                    self.records_committed,
                    self.flushes,
                )
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            for legacy in self._legacy:
                if legacy.fd >= 0:
                    os.close(legacy.fd)
                    legacy.fd = -1
            self._segments.clear()
            self._legacy.clear()
            self._opened = False


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
