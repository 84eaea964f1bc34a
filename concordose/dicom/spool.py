"""The spool: where received instances are made durable and indexed before they are acknowledged.

Layout under the spool root::

    index.sqlite3                       one row per stored instance (crash-safe, WAL)
    instances/<study>/<series>/<sop>.dcm  the bytes as received (Part 10 file, original syntax)
    quarantine/<timestamp>-<n>.dcm      bytes we could not accept, with ``.reason.txt`` beside
    tmp/                                partial writes; never read, cleaned at start-up
    receiver.lock                       held (flock) by the one receiver serving the spool

Contract of :meth:`Spool.store`: when it returns, the file is fsync'ed, atomically renamed into
place, its folder entry fsync'ed, and its index row committed. Only then may the receiver answer
the C-STORE with success. Path components are validated UIDs only (see :mod:`.uids`).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from concordose.dicom.timepoints import (
    InstanceSummary,
    TimePointEvent,
    TimePointRecord,
    TimePointState,
)
from concordose.dicom.uids import is_valid_uid
from concordose.errors import ConcordoseError, SpoolNotFoundError

INDEX_FILENAME = "index.sqlite3"
RECEIVER_LOCK_FILENAME = "receiver.lock"

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
"""


class InvalidInstanceError(ValueError):
    """The instance cannot be stored because its identifying UIDs are missing or malformed."""


class TimePointNotFoundError(ConcordoseError):
    """An explicit trigger named a study the spool has never received."""


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
    """

    instances: int
    size_bytes: int
    receiving: int
    complete: int
    processed: int
    pending_events: int
    quarantined: int


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs_durably(folder: Path) -> None:
    """Create ``folder`` and missing parents, fsync'ing each new entry's parent folder (a file
    renamed into a folder whose own entry is not durable could vanish with it)."""
    if folder.is_dir():
        return
    _make_dirs_durably(folder.parent)
    folder.mkdir(exist_ok=True)
    _fsync_dir(folder.parent)


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
        _fsync_dir(final_path.parent)
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


class Spool:
    """A durable, indexed store of received DICOM instances (thread-safe)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.instances_dir = root / "instances"
        self.quarantine_dir = root / "quarantine"
        self.tmp_dir = root / "tmp"
        for folder in (self.instances_dir, self.quarantine_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # guards the shared connection and the write path
        self._connection: sqlite3.Connection | None = None
        self._receiver_lock_fd: int | None = None
        with suppress(BlockingIOError):
            # Only when no receiver is running: its in-flight writes live in tmp/.
            self.lock_for_receiver()
            self.unlock_receiver()
        with self._connect() as connection:
            connection.executescript(_SCHEMA)

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
            leftover.unlink(missing_ok=True)  # a crash mid-write: never acknowledged, so drop it

    def unlock_receiver(self) -> None:
        """Release the receiver lock (no-op if not held)."""
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
        """Make one instance durable and indexed; idempotent for a repeated SOP Instance UID.

        The instance row and its time point's row are committed in one transaction, so after a
        crash the index never lists an instance its time point does not count.

        Args:
            identity: validated UIDs of the instance.
            data: the complete DICOM Part 10 file (preamble, file meta, dataset) as received.
            calling_ae_title: the AE title of the sender.
            summary: header facts for study assembly (``None``: filed under its study only).
            now: the receive time (UTC); default the current time.

        Returns:
            The path of the stored file.

        Raises:
            OSError: the disk refused the write (e.g. ENOSPC); nothing is indexed then.
        """
        relative = Path(identity.study_uid, identity.series_uid, f"{identity.sop_instance_uid}.dcm")
        final_path = self.instances_dir / relative
        with self._lock:
            with self._connect() as connection:
                row = connection.execute(
                    "SELECT relative_path FROM instances WHERE sop_instance_uid = ?",
                    (identity.sop_instance_uid,),
                ).fetchone()
            if row is not None:
                existing = self.instances_dir / str(row[0])
                if existing.is_file():
                    return existing  # duplicate: already durable and indexed
            _write_durably(final_path, data, self.tmp_dir)
            received_at = now or datetime.now(UTC)
            with self._connect() as connection:
                connection.execute(
                    "INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        identity.sop_instance_uid,
                        identity.sop_class_uid,
                        identity.study_uid,
                        identity.series_uid,
                        identity.transfer_syntax,
                        calling_ae_title,
                        relative.as_posix(),
                        len(data),
                        _stamp(received_at),
                    ),
                )
                _upsert_timepoint(
                    connection,
                    identity.study_uid,
                    summary or InstanceSummary(None, None, None, None),
                    calling_ae_title=calling_ae_title,
                    size_bytes=len(data),
                    now=received_at,
                )
        return final_path

    # -- time points ----------------------------------------------------------------------------

    def timepoints(self) -> list[TimePointRecord]:
        """Every time point, oldest activity first."""
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
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT study_uid FROM timepoints WHERE state = ? AND last_activity_at <= ?",
                (TimePointState.RECEIVING.value, _stamp(quiet_since)),
            ).fetchall()
            ready = [str(row[0]) for row in rows if str(row[0]) not in busy_study_uids]
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
        with self._connect() as connection:
            rows = connection.execute(
                f"SELECT {_TIMEPOINT_COLUMNS} FROM timepoints WHERE state = ?"
                " AND notified_at IS NULL ORDER BY completed_at, study_uid",
                (TimePointState.COMPLETE.value,),
            ).fetchall()
        events = []
        for row in rows:
            record = _timepoint_from_row(row)
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

    def quarantined(self) -> list[Path]:
        """Files in the quarantine (each with its ``.reason.txt``)."""
        return sorted(self.quarantine_dir.glob("*.dcm"))

    def status(self) -> SpoolStatus:
        """Counts of what is received, complete, processed and quarantined."""
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
        return SpoolStatus(
            instances=int(count),
            size_bytes=int(size),
            receiving=int(states.get(TimePointState.RECEIVING.value, 0)),
            complete=int(states.get(TimePointState.COMPLETE.value, 0)),
            processed=int(states.get(TimePointState.PROCESSED.value, 0)),
            pending_events=int(pending),
            quarantined=len(self.quarantined()),
        )

    def quarantine(self, data: bytes, reason: str) -> Path:
        """Keep bytes we could not accept, with the reason beside them; never raises on content."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        path = self.quarantine_dir / f"{stamp}-{uuid.uuid4().hex[:8]}.dcm"
        _write_durably(path, data, self.tmp_dir)
        _write_durably(path.with_suffix(".reason.txt"), reason.encode("utf-8"), self.tmp_dir)
        return path

    def instances(self) -> list[SpooledInstance]:
        """All indexed instances, in order of arrival."""
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT sop_instance_uid, sop_class_uid, study_uid, series_uid, transfer_syntax,"
                " calling_ae_title, relative_path, size_bytes, received_at"
                " FROM instances ORDER BY received_at, sop_instance_uid"
            ).fetchall()
        return [
            SpooledInstance(
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
            for row in rows
        ]
