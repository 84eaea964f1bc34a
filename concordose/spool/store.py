"""The spool: where received instances are made durable and indexed before they are acknowledged.

Layout under the spool root::

    index.sqlite3                       one row per stored instance (crash-safe, WAL)
    instances/<study>/<series>/<sop>.dcm  the bytes as received (Part 10 file, original syntax)
    journal/journal.wal                 write-ahead journal of the receiver (see :mod:`.journal`)
    quarantine/<timestamp>-<n>.dcm      bytes we could not accept, with ``.reason.txt`` beside
    tmp/                                partial writes; never read, cleaned at start-up
    receiver.lock                       held (flock) by the one receiver serving the spool

Two ways in, both safe to acknowledge when they return:

* :meth:`Spool.store` / :meth:`Spool.store_temp_file` *file* an instance: the file is fsync'ed,
  atomically renamed into place, its folder entry fsync'ed, and its index row committed;
* :meth:`Spool.accept_temp_file` (the receiver, once :meth:`Spool.start_journal` ran) appends the
  instance and its index record to the journal with one ``fdatasync``; a filing thread then files
  journaled instances in batches (rename each file into place, one ``syncfs`` of the spool's
  file system for the batch — or an fsync per file and folder where it is missing,
  :mod:`.file_system_sync` — then one index transaction) and only then lets the journal reuse
  their space. A receiver killed in between
  leaves the records in the journal; the next :meth:`Spool.lock_for_receiver` (the next
  receiver, or any :class:`Spool` opened while no receiver runs) files them before anything
  else, idempotently. Until filed, a journaled instance is not in the index: readers in other
  processes see it a few milliseconds later (or after the restart), never half-written.

Disk full (:mod:`.free_space`): an instance is acknowledged only while the volume's free space,
less what is still to be filed, stays above a reserve (else ``SpoolFullError``, 0xA700); a
filing attempt the disk or SQLite refuses keeps what it could not file pending and is retried;
a time point with instances not yet filed is never completed; a restart files what fits and
leaves the rest in the journal for the filing thread. A SOP Instance UID received again:
:mod:`.duplicates`.

Path components are validated UIDs only (see :mod:`.uids`).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from concordose.errors import ConcordoseError, SpoolNotFoundError
from concordose.spool import duplicates
from concordose.spool.cycles import (
    OUTCOME_STATES,
    CycleMembers,
    CycleOutcome,
    CycleRecord,
    CycleState,
    StudyMembership,
    cycle_number,
    find_cycle,
    group_cycles,
    is_pretherapy_study,
)
from concordose.spool.duplicates import DuplicateKind
from concordose.spool.file_system_sync import sync_file_system
from concordose.spool.free_space import (
    DEFAULT_FREE_RESERVE_MB,
    JournalDoesNotFitError,
    check_journal_fits,
    check_room,
    free_bytes,
)
from concordose.spool.journal import (
    DEFAULT_SEGMENT_BYTES,
    DEFAULT_SEGMENT_COUNT,
    Journal,
    JournalEntry,
    JournalRecord,
    JournalWriter,
    copy_out,
    fsync_folder,
    fsync_path,
)
from concordose.spool.timepoints import (
    InstanceSummary,
    TimePointEvent,
    TimePointRecord,
    TimePointState,
)
from concordose.spool.uids import is_valid_uid

LOG = logging.getLogger(__name__)

INDEX_FILENAME = "index.sqlite3"
JOURNAL_DIRNAME = "journal"

FILE_AFTER_IDLE_S = 0.05
"""The filing thread files journaled instances once no instance was journaled for this long
(or once more than half the journal segments hold unfiled records): :meth:`Spool._filer_loop`."""
RECEIVER_LOCK_FILENAME = "receiver.lock"
FILING_RETRY_S = 1.0
"""After a filing attempt the disk or the index refused (full), the filing thread tries again
this often (its batch stays pending meanwhile)."""
FILING_BATCH = 32
"""Journaled instances filed per batch (one folder fsync per folder, one index transaction):
each batch's journal records are released once it is filed, so that segments are recycled
while a burst larger than the journal is still arriving (filing everything pending in one batch
kept every segment busy until its end, and the receiver meanwhile filed instances itself before
answering: three flushes each; benchmarks/README.md, "Receiver under load")."""
RECOVERY_BATCH = 32
"""Journal records filed per index transaction at start-up (a full disk stops the recovery
after the last batch that fitted; the rest stays in the journal)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid    TEXT NOT NULL,
    study_uid        TEXT NOT NULL,
    series_uid       TEXT NOT NULL,
    transfer_syntax  TEXT NOT NULL,
    calling_ae_title TEXT NOT NULL,
    relative_path    TEXT NOT NULL,
    size_bytes       INTEGER NOT NULL,
    received_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances (study_uid, series_uid);
CREATE TABLE IF NOT EXISTS timepoints (
    study_uid            TEXT PRIMARY KEY,
    patient_id           TEXT,
    calling_ae_title     TEXT NOT NULL,
    injection_datetime   TEXT,
    acquisition_datetime TEXT,
    modalities           TEXT NOT NULL DEFAULT '',
    instance_count       INTEGER NOT NULL DEFAULT 0,
    size_bytes           INTEGER NOT NULL DEFAULT 0,
    revision             INTEGER NOT NULL DEFAULT 1,
    state                TEXT NOT NULL,
    last_activity_at     TEXT NOT NULL,
    completed_at         TEXT,
    completion_reason    TEXT,
    notified_at          TEXT,
    processed_at         TEXT
);
CREATE INDEX IF NOT EXISTS timepoints_by_state ON timepoints (state);
CREATE INDEX IF NOT EXISTS timepoints_by_patient ON timepoints (patient_id);
CREATE TABLE IF NOT EXISTS spool_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cycles (
    cycle_id         TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    content_revision TEXT NOT NULL,
    reason           TEXT,
    run_id           TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    updated_at       TEXT NOT NULL
);
"""


class InvalidInstanceError(ValueError):
    """The instance cannot be stored because its identifying UIDs are missing or malformed."""


class TimePointNotFoundError(ConcordoseError):
    """An explicit trigger named a study the spool has never received."""


_INSTANCE_COLUMNS = (
    "sop_instance_uid, sop_class_uid, study_uid, series_uid, transfer_syntax, calling_ae_title,"
    " relative_path, size_bytes, received_at"
)
_TIMEPOINT_COLUMNS = (
    "study_uid, patient_id, calling_ae_title, injection_datetime, acquisition_datetime,"
    " modalities, instance_count, size_bytes, revision, state, last_activity_at, completed_at,"
    " completion_reason, notified_at, processed_at"
)


def _stamp(moment: datetime) -> str:
    """A service timestamp as fixed-width UTC ISO text, so that SQL compares it as time."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _from_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _timepoint_from_row(row: tuple[object, ...]) -> TimePointRecord:
    last_activity = _from_iso(str(row[10]))
    assert last_activity is not None
    return TimePointRecord(
        study_uid=str(row[0]),
        patient_id=None if row[1] is None else str(row[1]),
        calling_ae_title=str(row[2]),
        injection_datetime=_from_iso(None if row[3] is None else str(row[3])),
        acquisition_datetime=_from_iso(None if row[4] is None else str(row[4])),
        modalities=tuple(m for m in str(row[5]).split(",") if m),
        instance_count=int(str(row[6])),
        size_bytes=int(str(row[7])),
        revision=int(str(row[8])),
        state=TimePointState(str(row[9])),
        last_activity_at=last_activity,
        completed_at=_from_iso(None if row[11] is None else str(row[11])),
        completion_reason=None if row[12] is None else str(row[12]),
        notified_at=_from_iso(None if row[13] is None else str(row[13])),
        processed_at=_from_iso(None if row[14] is None else str(row[14])),
    )


@dataclass(frozen=True)
class SpoolStatus:
    """Counts for ``concordose spool status``.

    Attributes:
        instances: indexed instances; size_bytes: their total size.
        receiving / complete / processed: time points in each state.
        pending_events: complete time points whose event has not been delivered yet.
        quarantined: files kept in the quarantine.
        cycles: treatment cycles per state (receiving, ready, processed, held, failed).
        duplicates_conflicting / duplicates_other_study: copies of an already-filed SOP
            Instance UID with other bytes, in the same study / under another study, kept in
            the quarantine (:mod:`.duplicates`).
    """

    instances: int
    size_bytes: int
    receiving: int
    complete: int
    processed: int
    pending_events: int
    quarantined: int
    cycles: dict[str, int] = field(default_factory=dict)
    duplicates_conflicting: int = 0
    duplicates_other_study: int = 0


@dataclass(frozen=True)
class InstanceIdentity:
    """The identifying UIDs of one instance, already validated."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str

    @classmethod
    def checked(
        cls,
        *,
        sop_class_uid: object,
        sop_instance_uid: object,
        study_uid: object,
        series_uid: object,
        transfer_syntax: object,
    ) -> InstanceIdentity:
        """Build an identity, raising :class:`InvalidInstanceError` naming any bad UID."""
        values = {
            "SOPClassUID": sop_class_uid,
            "SOPInstanceUID": sop_instance_uid,
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": series_uid,
            "TransferSyntaxUID": transfer_syntax,
        }
        bad = [f"{name}={value!r}" for name, value in values.items() if not is_valid_uid(value)]
        if bad:
            raise InvalidInstanceError("missing or invalid UID(s): " + ", ".join(bad))
        return cls(
            sop_class_uid=str(sop_class_uid),
            sop_instance_uid=str(sop_instance_uid),
            study_uid=str(study_uid),
            series_uid=str(series_uid),
            transfer_syntax=str(transfer_syntax),
        )


@dataclass(frozen=True)
class SpooledInstance:
    """One row of the spool index."""

    identity: InstanceIdentity
    calling_ae_title: str
    path: Path
    size_bytes: int
    received_at: datetime


def _make_dirs_durably(folder: Path) -> None:
    """Create ``folder`` and missing parents, fsync'ing each new entry's parent folder (a file
    renamed into a folder whose own entry is not durable could vanish with it)."""
    if folder.is_dir():
        return
    _make_dirs_durably(folder.parent)
    folder.mkdir(exist_ok=True)
    fsync_folder(folder.parent)


def _write_durably(final_path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write ``data`` to ``final_path`` via temp file, fsync and atomic rename."""
    tmp_path = tmp_dir / f"{uuid.uuid4().hex}.part"
    try:
        with open(tmp_path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _make_dirs_durably(final_path.parent)
        os.replace(tmp_path, final_path)
        fsync_folder(final_path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def _upsert_timepoint(
    connection: sqlite3.Connection,
    study_uid: str,
    summary: InstanceSummary,
    *,
    calling_ae_title: str,
    size_bytes: int,
    now: datetime,
) -> None:
    """Count one new instance in its time point, creating or reopening the time point."""
    row = connection.execute(
        "SELECT state, modalities, patient_id, injection_datetime, acquisition_datetime"
        " FROM timepoints WHERE study_uid = ?",
        (study_uid,),
    ).fetchone()
    if row is None:
        connection.execute(
            "INSERT INTO timepoints (study_uid, patient_id, calling_ae_title, injection_datetime,"
            " acquisition_datetime, modalities, instance_count, size_bytes, revision, state,"
            " last_activity_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, 1, ?, ?)",
            (
                study_uid,
                summary.patient_id,
                calling_ae_title,
                _iso(summary.injection_datetime),
                _iso(summary.acquisition_datetime),
                summary.modality or "",
                size_bytes,
                TimePointState.RECEIVING.value,
                _stamp(now),
            ),
        )
        return
    state, modalities, patient_id, injection, acquisition = row
    known = [m for m in str(modalities).split(",") if m]
    if summary.modality and summary.modality not in known:
        known.append(summary.modality)
    # The NM/PT series carries injection and acquisition time; a CT or SEG does not override it.
    is_emission = summary.modality in ("NM", "PT")
    if summary.injection_datetime is not None and (injection is None or is_emission):
        injection = _iso(summary.injection_datetime)
    if summary.acquisition_datetime is not None and (acquisition is None or is_emission):
        acquisition = _iso(summary.acquisition_datetime)
    reopen = state != TimePointState.RECEIVING.value
    connection.execute(
        "UPDATE timepoints SET patient_id = ?, injection_datetime = ?, acquisition_datetime = ?,"
        " modalities = ?, instance_count = instance_count + 1, size_bytes = size_bytes + ?,"
        " last_activity_at = ?, state = ?, revision = revision + ?,"
        " completed_at = CASE WHEN ? THEN NULL ELSE completed_at END,"
        " completion_reason = CASE WHEN ? THEN NULL ELSE completion_reason END,"
        " notified_at = CASE WHEN ? THEN NULL ELSE notified_at END,"
        " processed_at = CASE WHEN ? THEN NULL ELSE processed_at END"
        " WHERE study_uid = ?",
        (
            patient_id or summary.patient_id,
            injection,
            acquisition,
            ",".join(known),
            size_bytes,
            _stamp(now),
            TimePointState.RECEIVING.value,
            int(reopen),
            reopen,
            reopen,
            reopen,
            reopen,
            study_uid,
        ),
    )


@dataclass
class _Unfiled:
    """An instance durable somewhere (journal or fsync'ed temp file) but not yet filed."""

    identity: InstanceIdentity
    temp_path: Path
    size_bytes: int
    calling_ae_title: str
    summary: InstanceSummary
    received_at: datetime
    entry: JournalEntry | None = None
    synced: bool = False
    final_path: Path | None = None
    needs_copy: bool = False
    """Its bytes are only in the journal (the free-space check counts them as still to file)."""
    dropped: bool = False
    """A copy of the same bytes as the filed one: nothing to file."""
    duplicate: DuplicateKind | None = None
    sha256: str | None = None
    first_relative: str | None = None
    quarantine_path: Path | None = None

    def meta(self) -> dict[str, str | int | None]:
        """The index record as the journal keeps it."""
        return {
            "sop_instance_uid": self.identity.sop_instance_uid,
            "sop_class_uid": self.identity.sop_class_uid,
            "study_uid": self.identity.study_uid,
            "series_uid": self.identity.series_uid,
            "transfer_syntax": self.identity.transfer_syntax,
            "calling_ae_title": self.calling_ae_title,
            "received_at": _stamp(self.received_at),
            "patient_id": self.summary.patient_id,
            "modality": self.summary.modality,
            "acquisition_datetime": _iso(self.summary.acquisition_datetime),
            "injection_datetime": _iso(self.summary.injection_datetime),
            "size_bytes": self.size_bytes,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], temp_path: Path) -> _Unfiled:
        """Rebuild an instance from its journal record (start-up recovery)."""
        return cls(
            identity=InstanceIdentity(
                sop_class_uid=str(meta["sop_class_uid"]),
                sop_instance_uid=str(meta["sop_instance_uid"]),
                study_uid=str(meta["study_uid"]),
                series_uid=str(meta["series_uid"]),
                transfer_syntax=str(meta["transfer_syntax"]),
            ),
            temp_path=temp_path,
            size_bytes=int(meta["size_bytes"]),
            calling_ae_title=str(meta["calling_ae_title"]),
            summary=InstanceSummary(
                meta["patient_id"],
                meta["modality"],
                _from_iso(meta["acquisition_datetime"]),
                _from_iso(meta["injection_datetime"]),
            ),
            received_at=datetime.fromisoformat(str(meta["received_at"])),
        )


class Spool:
    """A durable, indexed store of received DICOM instances (thread-safe)."""

    def __init__(
        self, root: Path, *, free_reserve_bytes: int = DEFAULT_FREE_RESERVE_MB << 20
    ) -> None:
        """Open (creating if missing) the spool at ``root``.

        ``free_reserve_bytes``: free space kept on the volume beyond what acknowledged
        instances still need to be filed; below it the receiver answers 0xA700
        (:meth:`ensure_room`, ``CONCORDOSE_SPOOL_FREE_RESERVE_MB``).
        """
        self.root = root
        self.free_reserve_bytes = free_reserve_bytes
        self.instances_dir = root / "instances"
        self.quarantine_dir = root / "quarantine"
        self.tmp_dir = root / "tmp"
        for folder in (self.instances_dir, self.quarantine_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # guards the shared connection and the write path
        self._connection: sqlite3.Connection | None = None
        self._receiver_lock_fd: int | None = None
        self._journal: Journal | None = None
        self._unfiled: list[_Unfiled] = []
        self._filing: list[_Unfiled] = []  # the batch being filed (out of _unfiled meanwhile)
        # Bytes of pending instances held only by the journal (``needs_copy``), kept as a sum
        # under ``_unfiled_changed``: every acknowledgement's free-space check reads it, and
        # adding it up per instance grew with the backlog (11 % of the receiver's interpreter
        # time with four senders, py-spy).
        self._journal_only_bytes = 0
        self._filing_failures = 0  # consecutive refused filing attempts (logged once)
        self._backlog: tuple[Journal, list[JournalRecord]] | None = None
        self._unfiled_changed = threading.Condition()
        self._filing_lock = threading.Lock()  # one filer at a time (thread or reader's drain)
        self._filer: threading.Thread | None = None
        self._stop_filer = False
        self._last_accept = 0.0
        self._syncfs_works = True  # until sync_file_system says it is unavailable here
        self.filed_before_acknowledgement = 0
        """Instances :meth:`accept_temp_file` filed itself while the journal ran, no segment
        having room (the slow path: file fsync, rename, folder fsync and index commit before the
        answer); logged when the journal stops. Many means the journal is too small or has too
        few segments for the load."""
        with suppress(BlockingIOError):
            # Only when no receiver is running: its in-flight writes live in tmp/.
            self.lock_for_receiver()
            self.unlock_receiver()
        with self._connect() as connection:
            connection.executescript(_SCHEMA)
            connection.executescript(duplicates.SCHEMA)
            connection.execute(
                "INSERT OR IGNORE INTO spool_meta (key, value) VALUES ('spool_id', ?)",
                (str(uuid.uuid4()),),
            )
            (spool_id,) = connection.execute(
                "SELECT value FROM spool_meta WHERE key = 'spool_id'"
            ).fetchone()
        self.spool_id: str = str(spool_id)
        """This spool's identity (a UUID made with its index): scopes cycle ids and the
        idempotency keys of processing runs, so the same study in another spool is processed
        there."""

    def lock_for_receiver(self) -> None:
        """Take the spool's exclusive receiver lock, then drop partial writes in ``tmp/``.

        One receiver per spool: a second would deliver completion events twice and could drop
        the first one's in-flight writes.

        Raises:
            BlockingIOError: another process (or another :class:`Spool`) holds the lock.
        """
        fd = os.open(self.root / RECEIVER_LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise
        self._receiver_lock_fd = fd
        for leftover in self.tmp_dir.glob("*.part"):
            leftover.unlink(missing_ok=True)  # its journal record, if acknowledged, has the bytes
        self._recover_journal()

    def _recover_journal(self) -> None:
        """File every valid journal record not yet indexed, then invalidate them (start-up).

        Batches of :data:`RECOVERY_BATCH`; when the disk (or the index) refuses one, the rest
        stays valid in the journal: the receiver's :meth:`start_journal` hands it to the filing
        thread (filed once space returns), a reader leaves it for the next start.
        """
        folder = self.root / JOURNAL_DIRNAME
        if not folder.is_dir():
            return
        journal = Journal(folder)
        waiting: list[JournalRecord] = []
        filed = 0
        refused: Exception | None = None
        try:
            records = list(journal.records())
            for start in range(0, len(records), RECOVERY_BATCH):
                batch = records[start : start + RECOVERY_BATCH]
                if refused is not None:
                    waiting.extend(batch)
                    continue
                items: list[_Unfiled] = []
                try:
                    for record in batch:
                        item = _Unfiled.from_meta(record.meta, self.new_temp_path())
                        items.append(item)
                        fd = os.open(item.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                        try:
                            copy_out(record, fd)
                        finally:
                            os.close(fd)
                    self._file(items, journal_backed=True)
                    filed += len(items)
                except (OSError, sqlite3.Error) as exc:
                    refused = exc
                    for item in items:
                        item.temp_path.unlink(missing_ok=True)
                    waiting.extend(batch)
            if filed:
                LOG.info("filed %d journaled instance(s) left by a stopped receiver", filed)
            if not waiting:
                journal.recycle_all()
        except BaseException:
            journal.close()
            raise
        if not waiting:
            journal.close()
            return
        LOG.error(
            "%d journaled instance(s) (%.1f MB) cannot be filed yet (%s); they stay in the "
            "journal and are filed once space is freed",
            len(waiting),
            sum(record.data_bytes for record in waiting) / (1 << 20),
            refused,
        )
        self._backlog = (journal, waiting)

    def unlock_receiver(self) -> None:
        """Release the receiver lock (no-op if not held)."""
        if self._backlog is not None:  # left in the journal for the next start
            self._backlog[0].close()
            self._backlog = None
        if self._receiver_lock_fd is not None:
            fcntl.flock(self._receiver_lock_fd, fcntl.LOCK_UN)
            os.close(self._receiver_lock_fd)
            self._receiver_lock_fd = None

    @classmethod
    def open_existing(cls, root: Path) -> Spool:
        """Open a spool that must already exist (for readers), with a clear error if not."""
        if not (root / INDEX_FILENAME).is_file():
            raise SpoolNotFoundError(root)
        return cls(root)

    @staticmethod
    def exists_at(root: Path) -> bool:
        """True when ``root`` holds a spool index."""
        return (root / INDEX_FILENAME).is_file()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """The spool's one connection, inside a transaction, under the lock (committed on exit).

        One long-lived connection: opening one per operation cost more than the fsync of the
        instance itself. ``synchronous=FULL`` makes each commit durable (WAL fsync'ed).
        """
        with self._lock:
            if self._connection is None:
                connection = sqlite3.connect(
                    self.root / INDEX_FILENAME, timeout=30.0, check_same_thread=False
                )
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")
                self._connection = connection
            with self._connection:
                yield self._connection

    def close(self) -> None:
        """Close the index connection (reopened on next use)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def store(
        self,
        identity: InstanceIdentity,
        data: bytes,
        calling_ae_title: str,
        summary: InstanceSummary | None = None,
        *,
        now: datetime | None = None,
    ) -> Path:
        """Make one instance durable and indexed; idempotent for a repeated SOP Instance UID
        with the same bytes (a copy with other bytes is kept in the quarantine:
        :mod:`.duplicates`).

        The instance row and its time point's row are committed in one transaction, so after a
        crash the index never lists an instance its time point does not count.

        Args:
            identity: validated UIDs of the instance.
            data: the complete DICOM Part 10 file (preamble, file meta, dataset) as received.
            calling_ae_title: the AE title of the sender.
            summary: header facts for study assembly (``None``: filed under its study only).
            now: the receive time (UTC); default the current time.

        Returns:
            The path of the stored file (the filed first copy for a repeat with the same
            bytes, the quarantined copy for one with other bytes).

        Raises:
            OSError: the disk refused the write (e.g. ENOSPC); nothing is indexed then.
        """
        with self._lock:
            temp_path = self.new_temp_path()
            try:
                with open(temp_path, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                return self.store_temp_file(
                    identity, temp_path, len(data), calling_ae_title, summary, now=now
                )
            finally:
                temp_path.unlink(missing_ok=True)

    def new_temp_path(self) -> Path:
        """A fresh name in ``tmp/`` for an instance being written (dropped at start-up if left)."""
        return self.tmp_dir / f"{uuid.uuid4().hex}.part"

    def _filed_copy(self, sop_instance_uid: str) -> tuple[Path, str, str] | None:
        """The indexed copy of a SOP Instance UID whose file exists: (path, study UID,
        relative path), else ``None``."""
        with self._connect() as connection:
            row = connection.execute(
                "SELECT relative_path, study_uid FROM instances WHERE sop_instance_uid = ?",
                (sop_instance_uid,),
            ).fetchone()
        if row is None:
            return None
        existing = self.instances_dir / str(row[0])
        return (existing, str(row[1]), str(row[0])) if existing.is_file() else None

    def store_temp_file(
        self,
        identity: InstanceIdentity,
        temp_path: Path,
        size_bytes: int,
        calling_ae_title: str,
        summary: InstanceSummary | None = None,
        *,
        now: datetime | None = None,
    ) -> Path:
        """Rename an already fsync'ed file from ``tmp/`` into place and index it.

        The receiver streams each instance into :meth:`new_temp_path` as it arrives and fsyncs
        it; this is the rest of :meth:`store`'s contract: atomic rename, folder fsync, index
        commit (instance and time point rows in one transaction). A repeated SOP Instance UID
        leaves the first copy: ``temp_path`` is deleted (same bytes) or quarantined (other
        bytes, :mod:`.duplicates`).

        Returns:
            The path of the stored file (or of the quarantined copy).

        Raises:
            OSError: the disk refused the rename or the folder fsync; nothing is indexed then.
        """
        item = _Unfiled(
            identity,
            temp_path,
            size_bytes,
            calling_ae_title,
            summary or InstanceSummary(None, None, None, None),
            now or datetime.now(UTC),
            synced=True,
        )
        self._file([item])
        kept = item.quarantine_path or item.final_path
        assert kept is not None
        return kept

    def _file(self, items: list[_Unfiled], *, journal_backed: bool = False) -> None:
        """File instances durably: fsync each temp file (unless done), rename it into place,
        fsync each folder once, then one index transaction for all. A SOP Instance UID already
        filed (or earlier in ``items``) keeps its first copy: the same bytes are dropped, other
        bytes are kept in the quarantine and recorded in ``duplicates`` (:mod:`.duplicates`).

        ``journal_backed``: every item's journal record stays valid until this returns (the
        filing thread, start-up recovery), so the files need not be durable before their
        renames: all are renamed, then one ``syncfs`` of the spool's file system makes files
        and folder entries durable before the index commit (:mod:`.file_system_sync`; per-file
        fsyncs where it is unavailable). A crash before it loses nothing: the restart files
        the records again, and ``os.replace`` overwrites whatever a rename left.

        Raises:
            OSError, sqlite3.Error: a disk or index error (e.g. full); nothing of ``items`` is
            indexed then (renamed or quarantined files are harmless: filing the same items
            again is idempotent).
        """
        with self._lock:
            fresh: list[_Unfiled] = []
            flagged: list[_Unfiled] = []
            first_of: dict[str, _Unfiled] = {}
            kept_keys: set[tuple[str, str]] = set()
            for item in items:
                if not item.dropped and item.duplicate is None:
                    self._compare_with_first(item, first_of, kept_keys)
                if item.dropped:
                    continue
                if item.duplicate is not None:
                    assert item.sha256 is not None
                    kept_keys.add((item.identity.sop_instance_uid, item.sha256))
                    flagged.append(item)
                    continue
                first_of[item.identity.sop_instance_uid] = item
                fresh.append(item)
            batch_sync = journal_backed and self._syncfs_works
            for item in fresh if not batch_sync else ():
                if not item.synced and item.temp_path.exists():
                    fsync_path(item.temp_path)
                    item.synced = True
            folders: set[Path] = set()
            for item in fresh:
                _relative, final_path = self._relative(item.identity)
                if item.final_path is not None and not item.temp_path.exists():
                    folders.add(final_path.parent)  # renamed by an attempt that failed later
                    continue
                if batch_sync:  # the batch's syncfs makes the new folders durable too
                    final_path.parent.mkdir(parents=True, exist_ok=True)
                else:
                    _make_dirs_durably(final_path.parent)
                os.replace(item.temp_path, final_path)
                item.final_path = final_path
                folders.add(final_path.parent)
            flushed = False
            if batch_sync:
                flushed = self._syncfs_works = sync_file_system(self.root)
                if not flushed:  # the new folders were made without fsyncs
                    folders |= {folder.parent for folder in folders} | {self.instances_dir}
            if not flushed:
                for item in fresh:  # syncfs unavailable: each renamed file, then its folder
                    if not item.synced and item.final_path is not None:
                        fsync_path(item.final_path)
                        item.synced = True
                for folder in folders:
                    fsync_folder(folder)
            for item in flagged:
                if item.quarantine_path is None:
                    self._keep_duplicate(item)
            with self._connect() as connection:
                for item in fresh:
                    relative, _final = self._relative(item.identity)
                    identity = item.identity
                    connection.execute(
                        "INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            identity.sop_instance_uid,
                            identity.sop_class_uid,
                            identity.study_uid,
                            identity.series_uid,
                            identity.transfer_syntax,
                            item.calling_ae_title,
                            relative.as_posix(),
                            item.size_bytes,
                            _stamp(item.received_at),
                        ),
                    )
                    _upsert_timepoint(
                        connection,
                        identity.study_uid,
                        item.summary,
                        calling_ae_title=item.calling_ae_title,
                        size_bytes=item.size_bytes,
                        now=item.received_at,
                    )
                for item in flagged:
                    assert item.quarantine_path is not None
                    assert item.duplicate is not None
                    connection.execute(
                        "INSERT OR IGNORE INTO duplicates VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            item.identity.sop_instance_uid,
                            item.sha256,
                            item.duplicate.value,
                            item.identity.study_uid,
                            self._first_study(item),
                            item.calling_ae_title,
                            item.quarantine_path.name,
                            _stamp(item.received_at),
                        ),
                    )
            for item in flagged:  # logged once committed (a refused attempt is retried)
                assert item.quarantine_path is not None
                assert item.duplicate is not None
                duplicates.log_kept(
                    item.duplicate,
                    item.identity.sop_instance_uid,
                    item.calling_ae_title,
                    item.quarantine_path.name,
                )

    def _first_study(self, item: _Unfiled) -> str:
        assert item.first_relative is not None
        return item.first_relative.split("/", 1)[0]

    def _compare_with_first(
        self, item: _Unfiled, first_of: dict[str, _Unfiled], kept_keys: set[tuple[str, str]]
    ) -> None:
        """Mark ``item`` dropped (same bytes as the filed copy, or a different copy already
        kept) or flagged (other bytes: :attr:`_Unfiled.duplicate`); leave it fresh when its SOP
        Instance UID has no filed copy. Lock held."""
        uid = item.identity.sop_instance_uid
        if not item.temp_path.exists():
            return  # renamed into place by an attempt that failed later: still to be indexed
        earlier = first_of.get(uid)
        if earlier is not None:
            first_path = earlier.temp_path if earlier.temp_path.exists() else earlier.final_path
            assert first_path is not None
            first_study, first_relative = (
                earlier.identity.study_uid,
                self._relative(earlier.identity)[0].as_posix(),
            )
        else:
            filed = self._filed_copy(uid)
            if filed is None:
                return
            first_path, first_study, first_relative = filed
        if duplicates.same_bytes(first_path, item.temp_path):
            item.dropped = True
        else:
            sha256 = duplicates.sha256_of(item.temp_path)
            if (uid, sha256) in kept_keys or self._duplicate_kept(uid, sha256):
                item.dropped = True  # this different copy is already kept
                item.quarantine_path = self.quarantine_dir / duplicates.quarantine_name(sha256)
            else:
                item.duplicate = duplicates.classify(first_study, item.identity.study_uid)
                item.sha256 = sha256
                item.first_relative = first_relative
                return
        item.temp_path.unlink(missing_ok=True)
        if item.quarantine_path is None:
            item.final_path = first_path

    def _duplicate_kept(self, sop_instance_uid: str, sha256: str) -> bool:
        with self._connect() as connection:
            row = connection.execute(
                "SELECT 1 FROM duplicates WHERE sop_instance_uid = ? AND sha256 = ?",
                (sop_instance_uid, sha256),
            ).fetchone()
        return row is not None

    def _keep_duplicate(self, item: _Unfiled) -> None:
        """Move a flagged copy into the quarantine with its reason (lock held)."""
        assert item.duplicate is not None
        assert item.sha256 is not None
        assert item.first_relative is not None
        name = duplicates.quarantine_name(item.sha256)
        reason = duplicates.reason(item.duplicate, item.calling_ae_title, item.first_relative)
        item.quarantine_path = self.quarantine_temp_file(item.temp_path, reason, name=name)

    def _relative(self, identity: InstanceIdentity) -> tuple[Path, Path]:
        relative = Path(identity.study_uid, identity.series_uid, f"{identity.sop_instance_uid}.dcm")
        return relative, self.instances_dir / relative

    # -- the journaled acknowledgement path (the receiver) ---------------------------------------

    def start_journal(
        self,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        segment_count: int = DEFAULT_SEGMENT_COUNT,
        prefill: bool = False,
    ) -> None:
        """Journal accepted instances (:meth:`accept_temp_file`) and file them in a thread.

        ``prefill``: write the segments' blocks once now (see :meth:`Journal.open_for_append`);
        refused with one clear error, before anything is written, when the volume lacks that
        space plus the free-space reserve (a restart over an allocated journal needs none).

        Call with the receiver lock held (:meth:`lock_for_receiver` has already filed what an
        earlier receiver left in the journal; what did not fit is filed by the thread once
        space returns).

        Raises:
            JournalDoesNotFitError: the journal to allocate does not fit (nothing left behind).
        """
        if self._receiver_lock_fd is None:
            raise ConcordoseError(f"spool {self.root}: the journal needs the receiver lock")
        backlog, self._backlog = self._backlog, None
        journal, kept = backlog or (
            Journal(
                self.root / JOURNAL_DIRNAME,
                segment_bytes=segment_bytes,
                segment_count=segment_count,
            ),
            [],
        )
        journal.segment_bytes, journal.segment_count = segment_bytes, segment_count
        journal_bytes = segment_bytes * segment_count
        try:
            allocate = journal.bytes_to_allocate(prefill=prefill)
            check_journal_fits(
                self.root,
                journal_bytes=journal_bytes,
                allocate_bytes=allocate,
                reserve_bytes=self.free_reserve_bytes,
            )
            try:
                journal.open_for_append(prefill=prefill, keep=kept)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                raise JournalDoesNotFitError(
                    self.root,
                    journal_bytes=journal_bytes,
                    allocate_bytes=allocate,
                    free=free_bytes(self.root),
                    reserve=self.free_reserve_bytes,
                ) from None
        except BaseException:
            journal.close()
            raise
        self._journal = journal
        with self._unfiled_changed:
            for record in kept:
                item = _Unfiled.from_meta(record.meta, self.new_temp_path())
                item.entry = record.entry()
                self._needs_copy(item)
                self._unfiled.append(item)
        self._stop_filer = False
        self._filer = threading.Thread(target=self._filer_loop, name="spool-filer", daemon=True)
        self._filer.start()

    def stop_journal(self) -> None:
        """File everything journaled, stop the filing thread, close the journal (what the disk
        still refuses stays valid in the journal: filed at the next start)."""
        if self._journal is None:
            return
        with self._unfiled_changed:
            self._stop_filer = True
            self._unfiled_changed.notify_all()
        if self._filer is not None:
            self._filer.join()
            self._filer = None
        try:
            self.file_journaled()
        except (OSError, sqlite3.Error) as exc:
            LOG.error(
                "%d journaled instance(s) not filed (%s); they stay in the journal and are "
                "filed at the next start",
                len(self._unfiled),
                exc,
            )
            with self._unfiled_changed:
                self._unfiled.clear()
                self._journal_only_bytes = 0
        if self.filed_before_acknowledgement:
            LOG.info(
                "%d instance(s) filed before their answer: no journal segment had room "
                "(CONCORDOSE_SPOOL_JOURNAL_MB)",
                self.filed_before_acknowledgement,
            )
        self._journal.close()
        self._journal = None

    def ensure_room(self, incoming_bytes: int) -> None:
        """Refuse (before acknowledging) while the volume's free space, less the bytes of
        instances still only in the journal and ``incoming_bytes``, is below the reserve.

        Raises:
            SpoolFullError: an ``OSError`` with ``errno.ENOSPC`` (the receiver answers 0xA700).
        """
        pending = self.journal_only_bytes()
        check_room(
            self.root, to_file_bytes=pending + incoming_bytes, reserve_bytes=self.free_reserve_bytes
        )

    def journal_only_bytes(self) -> int:
        """Bytes of acknowledged instances held only by the journal: what filing them will
        still write (the free-space check keeps room for it)."""
        with self._unfiled_changed:
            return self._journal_only_bytes

    def unfiled_study_uids(self) -> set[str]:
        """Studies with acknowledged instances not yet filed (never completed meanwhile)."""
        with self._unfiled_changed:
            return {
                item.identity.study_uid
                for item in (*self._unfiled, *self._filing)
                if not item.dropped and item.duplicate is None
            }

    # --- read-only backlog counts for the metrics (issue 19, concordose/observability/) ---
    def unfiled_instance_count(self) -> int:
        """Acknowledged instances not yet filed and indexed (journaled or fsync'ed temp files)."""
        with self._unfiled_changed:
            return len(self._unfiled) + len(self._filing)

    def journal_depth(self) -> int:
        """Instances held in the journal (their records not yet released)."""
        with self._unfiled_changed:
            return sum(item.entry is not None for item in (*self._unfiled, *self._filing))

    # --- end backlog counts ---

    def accept_temp_file(
        self,
        identity: InstanceIdentity,
        temp_path: Path,
        size_bytes: int,
        data_crc32: int,
        *,
        calling_ae_title: str,
        summary: InstanceSummary | None = None,
        now: datetime | None = None,
    ) -> None:
        """Make a received instance durable so that it may be acknowledged.

        With the journal started: one journal record (instance bytes + index record, one
        ``fdatasync``); the instance is filed and indexed shortly after by the filing thread,
        or at the next start-up after a crash. Otherwise, or when the journal has no room: the
        contract of :meth:`store` (file fsync, rename, folder fsync, index commit).

        Args:
            temp_path: the Part 10 file in ``tmp/`` (see :meth:`new_temp_path`), not yet synced.
            data_crc32: ``zlib.crc32`` of its ``size_bytes`` bytes.

        Raises:
            free_space.SpoolFullError: free space below the reserve (:meth:`ensure_room`);
                nothing kept.
            OSError: the disk refused; nothing is durable or indexed then.
        """
        self.ensure_room(0)  # its bytes are on disk already (the temp file)
        item = _Unfiled(
            identity,
            temp_path,
            size_bytes,
            calling_ae_title,
            summary or InstanceSummary(None, None, None, None),
            now or datetime.now(UTC),
        )
        journal = self._journal
        if journal is not None:
            fd = os.open(temp_path, os.O_RDONLY)
            try:
                item.entry = journal.append(item.meta(), fd, size_bytes, data_crc32)
            finally:
                os.close(fd)
            if item.entry is not None:
                with self._unfiled_changed:
                    self._unfiled.append(item)
                    self._last_accept = time.monotonic()
                    self._unfiled_changed.notify_all()
                return
            with self._unfiled_changed:
                self.filed_before_acknowledgement += 1
        try:
            self._file([item])
        finally:
            temp_path.unlink(missing_ok=True)  # gone already unless the filing failed

    def journal_writer(self) -> JournalWriter | None:
        """A journal record to stream a received instance into (``None``: journal off, or no
        segment free: write a temp file and :meth:`accept_temp_file` it)."""
        journal = self._journal
        return None if journal is None else journal.begin()

    def commit_journaled(
        self,
        writer: JournalWriter,
        identity: InstanceIdentity,
        data_crc32: int,
        *,
        calling_ae_title: str,
        summary: InstanceSummary | None = None,
        now: datetime | None = None,
    ) -> None:
        """Complete a streamed record (its index record, one ``fdatasync``): the instance may
        be acknowledged; the filing thread files it from the journal.

        Raises:
            free_space.SpoolFullError: free space below the reserve (:meth:`ensure_room`; the caller
                aborts the writer).
            OSError: the write or the flush failed (the caller aborts the writer).
            JournalOverflowError: no room for the index record (the caller spills).
        """
        self.ensure_room(writer.size)  # to be copied out of the journal when filed
        item = _Unfiled(
            identity,
            self.new_temp_path(),  # written by the filer from the journal
            writer.size,
            calling_ae_title,
            summary or InstanceSummary(None, None, None, None),
            now or datetime.now(UTC),
        )
        item.entry = writer.commit(item.meta(), data_crc32)
        with self._unfiled_changed:
            self._needs_copy(item)
            self._unfiled.append(item)
            self._last_accept = time.monotonic()
            self._unfiled_changed.notify_all()

    def _filer_loop(self) -> None:
        """File journaled instances when the receiver pauses or the journal is over half full.

        Filing while instances keep arriving puts its fsyncs in the disk queue in front of the
        acknowledgement's ``fdatasync`` (measured: 9.5 instead of ≈ 2–3 ms per 0.5 MB instance
        on the loaded shared disk), so a burst is filed after it, within the journal's room.
        """
        while True:
            with self._unfiled_changed:
                while not self._stop_filer:
                    if self._unfiled:
                        journal = self._journal
                        idle_s = time.monotonic() - self._last_accept
                        if idle_s >= FILE_AFTER_IDLE_S or (
                            journal is not None and journal.half_full()
                        ):
                            break
                        self._unfiled_changed.wait(FILE_AFTER_IDLE_S - idle_s)
                    else:
                        self._unfiled_changed.wait()
                if self._stop_filer:
                    return
            try:
                self.file_journaled()
            except (OSError, sqlite3.Error):
                # Still durable in the journal and still pending (file_journaled put the batch
                # back); the free-space check refuses new instances meanwhile.
                with self._unfiled_changed:
                    self._unfiled_changed.wait(timeout=FILING_RETRY_S)

    def file_journaled(self) -> int:
        """File and index every journaled instance not yet filed; returns how many.

        Instances are filed in arrival order, :data:`FILING_BATCH` at a time, each batch's
        journal records released once it is filed. They are copied out of the journal in order
        until the disk refuses one; those copied are filed (so a nearly full disk files what
        fits), the rest stays pending.

        Raises:
            OSError, sqlite3.Error: the disk or the index refused (e.g. full): what was not
            filed stays pending (journaled) and is retried; logged once per run of refusals.
        """
        with self._filing_lock:
            with self._unfiled_changed:
                pending, self._unfiled = self._unfiled, []
                self._filing = pending
            filed = 0
            while pending:
                batch, pending = pending[:FILING_BATCH], pending[FILING_BATCH:]
                filed += self._file_batch(batch, pending)
            if self._filing_failures:
                LOG.info(
                    "filed %d journaled instance(s) after %d refused attempt(s)",
                    filed,
                    self._filing_failures,
                )
                self._filing_failures = 0
            return filed

    def _file_batch(self, batch: list[_Unfiled], later: list[_Unfiled]) -> int:
        """File ``batch`` (``later``: the rest of what :meth:`file_journaled` took), release its
        journal records; filing lock held. On a refusal what was not filed and ``later`` go
        back in front of the pending instances, and the error is raised."""
        journal = self._journal
        ready: list[_Unfiled] = []
        refused: OSError | sqlite3.Error | None = None
        for item in batch:
            try:
                self._copy_out_of_journal(item, journal)
            except OSError as exc:
                refused = exc
                break
            ready.append(item)
        try:
            if ready:
                self._file(ready, journal_backed=True)
        except (OSError, sqlite3.Error) as exc:
            refused, ready = exc, []
        waiting = batch[len(ready) :]
        with self._unfiled_changed:
            if refused is not None:
                self._unfiled[:0] = waiting + later
                self._filing = []
            else:
                self._filing = later
            for item in ready:  # filed: no longer waiting for room to be copied out
                self._copied(item)
        for item in ready:
            if item.entry is not None and journal is not None:
                journal.release(item.entry)
        if refused is not None:
            self._filing_failures += 1
            if self._filing_failures == 1:
                LOG.error(
                    "could not file %d journaled instance(s), they stay pending and filing "
                    "is retried every %.0f s: %s: %s",
                    len(waiting) + len(later),
                    FILING_RETRY_S,
                    type(refused).__name__,
                    refused,
                )
            raise refused
        return len(ready)

    def _copy_out_of_journal(self, item: _Unfiled, journal: Journal | None) -> None:
        """Write a journaled instance's temp file from its record, unless it has one (or is
        filed, quarantined or dropped already); a partial copy is removed, never filed."""
        if (
            item.final_path is not None
            or item.quarantine_path is not None
            or item.dropped
            or item.entry is None
            or journal is None
            or item.temp_path.exists()
        ):
            return
        fd = os.open(item.temp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            journal.copy_entry(item.entry, fd)
        except OSError:
            item.temp_path.unlink()
            raise
        finally:
            os.close(fd)
        with self._unfiled_changed:
            self._copied(item)

    def _needs_copy(self, item: _Unfiled) -> None:
        """``item``'s bytes are only in the journal (``_unfiled_changed`` held)."""
        if not item.needs_copy:
            item.needs_copy = True
            self._journal_only_bytes += item.size_bytes

    def _copied(self, item: _Unfiled) -> None:
        """``item``'s bytes are out of the journal, or it is filed (``_unfiled_changed``
        held)."""
        if item.needs_copy:
            item.needs_copy = False
            self._journal_only_bytes -= item.size_bytes

    def _drain(self) -> None:
        """Before answering from the index: file what this process has journaled (waiting for
        a batch the filing thread is filing: it holds the filing lock). A refusal is logged
        by :meth:`file_journaled`; what stays pending is excluded from completion."""
        if self._unfiled or self._journal is not None:
            with suppress(OSError, sqlite3.Error):
                self.file_journaled()

    # -- time points ----------------------------------------------------------------------------

    def timepoints(self) -> list[TimePointRecord]:
        """Every time point, oldest activity first."""
        self._drain()
        with self._connect() as connection:
            rows = connection.execute(
                f"SELECT {_TIMEPOINT_COLUMNS} FROM timepoints ORDER BY last_activity_at, study_uid"
            ).fetchall()
        return [_timepoint_from_row(row) for row in rows]

    def timepoint(self, study_uid: str) -> TimePointRecord:
        """The time point of ``study_uid``.

        Raises:
            TimePointNotFoundError: no instance of that study was ever received.
        """
        self._drain()
        with self._connect() as connection:
            row = connection.execute(
                f"SELECT {_TIMEPOINT_COLUMNS} FROM timepoints WHERE study_uid = ?", (study_uid,)
            ).fetchone()
        if row is None:
            raise TimePointNotFoundError(
                f"spool {self.root} has received no instance of study {study_uid!r}; "
                "`concordose spool status` lists the studies it holds"
            )
        return _timepoint_from_row(row)

    def touch_timepoints(self, study_uids: set[str], now: datetime) -> None:
        """Record activity (an association touching these studies was released) at ``now``."""
        self._drain()
        if not study_uids:
            return
        with self._connect() as connection:
            connection.executemany(
                "UPDATE timepoints SET last_activity_at = ? WHERE study_uid = ? AND state = ?",
                [(_stamp(now), uid, TimePointState.RECEIVING.value) for uid in study_uids],
            )

    def complete_quiet_timepoints(
        self, quiet_since: datetime, busy_study_uids: set[str], now: datetime
    ) -> list[str]:
        """Mark complete every receiving time point idle since ``quiet_since`` and not busy.

        Args:
            quiet_since: ``now − quiet period``; time points with activity after it stay open.
            busy_study_uids: studies an open association has sent to (never completed).
            now: completion time recorded (UTC).

        Returns:
            The study UIDs that became complete.
        """
        self._drain()
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT study_uid FROM timepoints WHERE state = ? AND last_activity_at <= ?",
                (TimePointState.RECEIVING.value, _stamp(quiet_since)),
            ).fetchall()
            # A study with acknowledged instances not yet filed (disk full) waits for them.
            waiting = busy_study_uids | self.unfiled_study_uids()
            ready = [str(row[0]) for row in rows if str(row[0]) not in waiting]
            connection.executemany(
                "UPDATE timepoints SET state = ?, completed_at = ?, completion_reason = ?"
                " WHERE study_uid = ? AND state = ?",
                [
                    (
                        TimePointState.COMPLETE.value,
                        _stamp(now),
                        "quiet period",
                        uid,
                        TimePointState.RECEIVING.value,
                    )
                    for uid in ready
                ],
            )
        return ready

    def mark_complete(self, study_uid: str, reason: str, now: datetime) -> bool:
        """Explicit trigger: complete ``study_uid`` now, whatever its quiet period.

        Returns:
            ``True`` if it was receiving, ``False`` if it was already complete or processed.

        Raises:
            TimePointNotFoundError: the spool never received that study.
        """
        self._drain()
        self.timepoint(study_uid)
        with self._connect() as connection:
            cursor = connection.execute(
                "UPDATE timepoints SET state = ?, completed_at = ?, completion_reason = ?"
                " WHERE study_uid = ? AND state = ?",
                (
                    TimePointState.COMPLETE.value,
                    _stamp(now),
                    reason,
                    study_uid,
                    TimePointState.RECEIVING.value,
                ),
            )
            return cursor.rowcount == 1

    def pending_events(self) -> list[TimePointEvent]:
        """Completion events not yet delivered (complete, ``notified_at`` unset), oldest first."""
        self._drain()
        with self._connect() as connection:
            rows = connection.execute(
                f"SELECT {_TIMEPOINT_COLUMNS} FROM timepoints WHERE state = ?"
                " AND notified_at IS NULL ORDER BY completed_at, study_uid",
                (TimePointState.COMPLETE.value,),
            ).fetchall()
        events = []
        unfiled = self.unfiled_study_uids()  # filing them reopens the time point: wait
        for row in rows:
            record = _timepoint_from_row(row)
            if record.study_uid in unfiled:
                continue
            events.append(TimePointEvent(record.event_id, str(self.root), record))
        return events

    def mark_notified(self, event: TimePointEvent, now: datetime) -> bool:
        """Record that ``event`` was delivered; ``False`` if that revision is no longer current."""
        with self._connect() as connection:
            cursor = connection.execute(
                "UPDATE timepoints SET notified_at = ? WHERE study_uid = ? AND revision = ?"
                " AND notified_at IS NULL",
                (_stamp(now), event.timepoint.study_uid, event.timepoint.revision),
            )
            return cursor.rowcount == 1

    def mark_processed(self, study_uid: str, revision: int, now: datetime) -> bool:
        """Record that the pipeline finished ``study_uid`` at ``revision``.

        Returns:
            ``False`` when late instances reopened it meanwhile (the newer revision stays).
        """
        with self._connect() as connection:
            cursor = connection.execute(
                "UPDATE timepoints SET state = ?, processed_at = ? WHERE study_uid = ?"
                " AND revision = ? AND state = ?",
                (
                    TimePointState.PROCESSED.value,
                    _stamp(now),
                    study_uid,
                    revision,
                    TimePointState.COMPLETE.value,
                ),
            )
            return cursor.rowcount == 1

    # -- cycles ---------------------------------------------------------------------------------

    def cycles(self) -> list[CycleRecord]:
        """Every treatment cycle with its state (grouping rule: :mod:`.cycles`), by injection."""
        records = self.timepoints()
        members = group_cycles(
            (
                StudyMembership(
                    study_uid=record.study_uid,
                    patient_id=record.patient_id,
                    injection_datetime=record.injection_datetime,
                    revision=record.revision,
                    receiving=record.state is TimePointState.RECEIVING,
                    pretherapy=is_pretherapy_study(record.modalities),
                )
                for record in records
            ),
            self.spool_id,
        )
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT cycle_id, state, content_revision, reason, run_id, attempts, updated_at"
                " FROM cycles"
            ).fetchall()
        outcomes = {
            str(row[0]): CycleOutcome(
                state=CycleState(row[1]),
                content_revision=str(row[2]),
                reason=None if row[3] is None else str(row[3]),
                run_id=None if row[4] is None else str(row[4]),
                attempts=int(row[5]),
                updated_at=datetime.fromisoformat(str(row[6])),
            )
            for row in rows
        }
        return [CycleRecord(member, outcomes.get(member.cycle_id)) for member in members]

    def cycle(self, cycle_id: str) -> CycleRecord:
        """The cycle ``cycle_id``.

        Raises:
            CycleNotFoundError: this spool holds no such cycle.
        """
        return find_cycle(self.cycles(), cycle_id, self.root)

    def cycles_of_study(self, study_uid: str) -> list[CycleRecord]:
        """The cycles a time point belongs to: its own (through its patient and injection), or
        — a visit without injection data — every cycle of its patient; empty while its
        patient has no cycle yet (only a CT or SEG arrived).

        Raises:
            TimePointNotFoundError: the spool never received that study.
        """
        self.timepoint(study_uid)
        return [r for r in self.cycles() if study_uid in r.members.all_study_uids]

    def cycle_number(self, members: CycleMembers) -> int | None:
        """The cycle's number (:func:`.cycles.cycle_number`: its rank by injection among its
        patient's cycles in this spool), from one query over that patient's time points only;
        ``None`` for a cycle without a PatientID."""
        if members.patient_id is None:
            return None
        self._drain()
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT DISTINCT injection_datetime, modalities FROM timepoints"
                " WHERE patient_id = ? AND injection_datetime IS NOT NULL",
                (members.patient_id,),
            ).fetchall()
        return cycle_number(
            members.injection_datetime,
            (
                datetime.fromisoformat(str(row[0]))
                for row in rows
                if not is_pretherapy_study(m for m in str(row[1]).split(",") if m)
            ),
        )

    def pretherapy_studies(self) -> list[TimePointRecord]:
        """The pre-therapy PET studies received (:func:`.cycles.is_pretherapy_study`, issue 20):
        filed under their patient, in no treatment cycle; by patient, PET injection, study."""
        records = [r for r in self.timepoints() if is_pretherapy_study(r.modalities)]
        records.sort(
            key=lambda r: (r.patient_id or "", r.injection_datetime or datetime.min, r.study_uid)
        )
        return records

    def cycle_instances(self, members: CycleMembers) -> list[SpooledInstance]:
        """The indexed instances of a cycle's studies (own and shared), in order of arrival;
        nothing else in the spool is read."""
        return self.study_instances(members.all_study_uids)

    def study_instances(self, study_uids: Sequence[str]) -> list[SpooledInstance]:
        """The indexed instances of ``study_uids`` (e.g. a pre-therapy PET study), in order of
        arrival; nothing else in the spool is read."""
        self._drain()
        uids = tuple(study_uids)
        if not uids:
            return []
        placeholders = ",".join("?" for _ in uids)
        with self._connect() as connection:
            rows = connection.execute(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE study_uid IN ({placeholders})"
                " ORDER BY received_at, sop_instance_uid",
                uids,
            ).fetchall()
        return [self._instance_from_row(row) for row in rows]

    def record_cycle_outcome(
        self,
        members: CycleMembers,
        state: CycleState,
        now: datetime,
        *,
        reason: str | None = None,
        run_id: str | None = None,
    ) -> None:
        """Record a run's outcome for the cycle at ``members.content_revision``; a processed
        outcome also marks its time points processed (at the revisions it covered).

        Raises:
            ValueError: ``state`` is not an outcome (processed, held, failed).
        """
        if state not in OUTCOME_STATES:
            raise ValueError(f"expected an outcome state {OUTCOME_STATES}, found {state!r}")
        with self._connect() as connection:
            connection.execute(
                "INSERT INTO cycles (cycle_id, state, content_revision, reason, run_id, attempts,"
                " updated_at) VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (cycle_id) DO UPDATE SET"
                " state = excluded.state, content_revision = excluded.content_revision,"
                " reason = excluded.reason, run_id = excluded.run_id,"
                " attempts = cycles.attempts + 1, updated_at = excluded.updated_at",
                (
                    members.cycle_id,
                    state.value,
                    members.content_revision,
                    reason,
                    run_id,
                    _stamp(now),
                ),
            )
        if state is CycleState.PROCESSED:
            by_uid = {record.study_uid: record for record in self.timepoints()}
            for uid in members.all_study_uids:
                record = by_uid.get(uid)
                if record is not None:
                    self.mark_processed(uid, record.revision, now)

    def quarantined(self) -> list[Path]:
        """Files in the quarantine (each with its ``.reason.txt``)."""
        return sorted(self.quarantine_dir.glob("*.dcm"))

    def status(self) -> SpoolStatus:
        """Counts of what is received, complete, processed and quarantined."""
        self._drain()
        with self._connect() as connection:
            count, size = connection.execute(
                "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM instances"
            ).fetchone()
            states = dict(
                connection.execute(
                    "SELECT state, COUNT(*) FROM timepoints GROUP BY state"
                ).fetchall()
            )
            (pending,) = connection.execute(
                "SELECT COUNT(*) FROM timepoints WHERE state = ? AND notified_at IS NULL",
                (TimePointState.COMPLETE.value,),
            ).fetchone()
            flagged = dict(
                connection.execute("SELECT kind, COUNT(*) FROM duplicates GROUP BY kind").fetchall()
            )
        return SpoolStatus(
            instances=int(count),
            size_bytes=int(size),
            receiving=int(states.get(TimePointState.RECEIVING.value, 0)),
            complete=int(states.get(TimePointState.COMPLETE.value, 0)),
            processed=int(states.get(TimePointState.PROCESSED.value, 0)),
            pending_events=int(pending),
            quarantined=len(self.quarantined()),
            cycles=dict(Counter(record.state.value for record in self.cycles())),
            duplicates_conflicting=int(flagged.get(DuplicateKind.CONFLICTING.value, 0)),
            duplicates_other_study=int(flagged.get(DuplicateKind.OTHER_STUDY.value, 0)),
        )

    def _quarantine_path(self) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        return self.quarantine_dir / f"{stamp}-{uuid.uuid4().hex[:8]}.dcm"

    def quarantine(self, data: bytes, reason: str) -> Path:
        """Keep bytes we could not accept, with the reason beside them; never raises on content."""
        path = self._quarantine_path()
        _write_durably(path, data, self.tmp_dir)
        _write_durably(path.with_suffix(".reason.txt"), reason.encode("utf-8"), self.tmp_dir)
        return path

    def quarantine_temp_file(
        self, temp_path: Path, reason: str, *, name: str | None = None
    ) -> Path:
        """Move a received file from ``tmp/`` into the quarantine with its reason beside it.

        The file is fsync'ed first (the receiver does not fsync what it will not index).
        ``name``: its file name there (default: a timestamp and a random suffix).
        """
        path = self._quarantine_path() if name is None else self.quarantine_dir / name
        fsync_path(temp_path)
        _write_durably(path.with_suffix(".reason.txt"), reason.encode("utf-8"), self.tmp_dir)
        os.replace(temp_path, path)
        fsync_folder(self.quarantine_dir)
        return path

    def instances(self) -> list[SpooledInstance]:
        """All indexed instances, in order of arrival."""
        self._drain()
        with self._connect() as connection:
            rows = connection.execute(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances ORDER BY received_at, sop_instance_uid"
            ).fetchall()
        return [self._instance_from_row(row) for row in rows]

    def _instance_from_row(self, row: tuple[Any, ...]) -> SpooledInstance:
        return SpooledInstance(
            identity=InstanceIdentity(
                sop_instance_uid=row[0],
                sop_class_uid=row[1],
                study_uid=row[2],
                series_uid=row[3],
                transfer_syntax=row[4],
            ),
            calling_ae_title=row[5],
            path=self.instances_dir / row[6],
            size_bytes=int(row[7]),
            received_at=datetime.fromisoformat(row[8]),
        )
