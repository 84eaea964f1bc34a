"""The spool: where received instances are made durable and indexed before they are acknowledged.

Layout under the spool root::

    index.sqlite3                       one row per stored instance (crash-safe, WAL)
    instances/<study>/<series>/<sop>.dcm  the bytes as received (Part 10 file, original syntax)
    quarantine/<timestamp>-<n>.dcm      bytes we could not accept, with ``.reason.txt`` beside
    tmp/                                partial writes; never read, cleaned at start-up

Contract of :meth:`Spool.store`: when it returns, the file is fsync'ed, atomically renamed into
place, its folder entry fsync'ed, and its index row committed. Only then may the receiver answer
the C-STORE with success. Path components are validated UIDs only (see :mod:`.uids`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from concordose.dicom.uids import is_valid_uid
from concordose.errors import SpoolNotFoundError

INDEX_FILENAME = "index.sqlite3"

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
"""


class InvalidInstanceError(ValueError):
    """The instance cannot be stored because its identifying UIDs are missing or malformed."""


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


def _write_durably(final_path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write ``data`` to ``final_path`` via temp file, fsync and atomic rename."""
    tmp_path = tmp_dir / f"{uuid.uuid4().hex}.part"
    try:
        with open(tmp_path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        final_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, final_path)
        _fsync_dir(final_path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


class Spool:
    """A durable, indexed store of received DICOM instances (thread-safe)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.instances_dir = root / "instances"
        self.quarantine_dir = root / "quarantine"
        self.tmp_dir = root / "tmp"
        for folder in (self.instances_dir, self.quarantine_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.glob("*.part"):
            leftover.unlink(missing_ok=True)  # a crash mid-write: never acknowledged, so drop it
        self._lock = threading.Lock()
        with self._connect() as connection:
            connection.executescript(_SCHEMA)

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
        connection = sqlite3.connect(self.root / INDEX_FILENAME, timeout=30.0)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            with connection:
                yield connection
        finally:
            connection.close()

    def store(self, identity: InstanceIdentity, data: bytes, calling_ae_title: str) -> Path:
        """Make one instance durable and indexed; idempotent for a repeated SOP Instance UID.

        Args:
            identity: validated UIDs of the instance.
            data: the complete DICOM Part 10 file (preamble, file meta, dataset) as received.
            calling_ae_title: the AE title of the sender.

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
                        datetime.now(UTC).isoformat(),
                    ),
                )
        return final_path

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
