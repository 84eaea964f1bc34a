"""A SOP Instance UID received again: what the spool does with the second copy.

* **Same bytes** (the Part 10 file as stored: our file meta + the data set as sent): idempotent,
  the copy is dropped silently (a sender's retry, a journal record replayed at start-up).
* **Different bytes, same study** (``conflicting``) or **another StudyInstanceUID**
  (``other_study``): the first copy stays filed and indexed — what the pipeline reads, so a
  processed cycle never changes under it — and the new copy is **kept in the quarantine**
  (``quarantine/duplicate-<sha256>.dcm``, a ``.reason.txt`` beside it naming the first copy),
  logged once at WARNING (UIDs hashed: :func:`~concordose.dicom.pseudonym.uid_hash`) and
  counted in the index table ``duplicates`` (``concordose spool status``). The same different
  copy sent again is kept once (keyed by UID and the copy's SHA-256). Nothing is replaced
  automatically: the operator decides from the reason file.

"Same bytes" compares the whole stored file, our Part 10 file meta included: a resend under
another transfer syntax (or through a receiver of another pynetdicom version, whose
implementation version is in that header) is flagged ``conflicting``, never dropped.
"""

from __future__ import annotations

import filecmp
import hashlib
import logging
from enum import StrEnum
from pathlib import Path

from concordose.dicom.pseudonym import uid_hash

LOG = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS duplicates (
    sop_instance_uid TEXT NOT NULL,
    sha256           TEXT NOT NULL,
    kind             TEXT NOT NULL,
    study_uid        TEXT NOT NULL,
    first_study_uid  TEXT NOT NULL,
    calling_ae_title TEXT NOT NULL,
    quarantine_file  TEXT NOT NULL,
    received_at      TEXT NOT NULL,
    PRIMARY KEY (sop_instance_uid, sha256)
);
"""
"""One row per different copy kept (its file in the quarantine)."""


class DuplicateKind(StrEnum):
    """Why a copy of an already-filed SOP Instance UID was flagged."""

    CONFLICTING = "conflicting"
    """Same study, different bytes."""
    OTHER_STUDY = "other_study"
    """Under another StudyInstanceUID than the filed copy."""


def same_bytes(first: Path, second: Path) -> bool:
    """True when both files hold exactly the same bytes (sizes first, then content)."""
    return filecmp.cmp(first, second, shallow=False)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def quarantine_name(sha256: str) -> str:
    """The kept copy's file name: stable for the same bytes (a replay keeps one file)."""
    return f"duplicate-{sha256[:32]}.dcm"


def classify(first_study_uid: str, study_uid: str) -> DuplicateKind:
    """The kind of a copy whose bytes differ from the filed one's."""
    return DuplicateKind.CONFLICTING if study_uid == first_study_uid else DuplicateKind.OTHER_STUDY


def reason(kind: DuplicateKind, calling_ae_title: str, first_relative_path: str) -> str:
    """The ``.reason.txt`` of a kept copy."""
    what = (
        "different content"
        if kind is DuplicateKind.CONFLICTING
        else "another StudyInstanceUID than the filed copy"
    )
    return (
        f"from {calling_ae_title}: duplicate SOP Instance UID ({kind.value}): {what}; the first "
        f"copy stays filed and indexed (instances/{first_relative_path}), this copy is kept here"
    )


def log_kept(kind: DuplicateKind, sop_instance_uid: str, calling_ae_title: str, name: str) -> None:
    """One WARNING line per kept copy, the UID hashed (no identifier in the log)."""
    LOG.warning(
        "duplicate SOP Instance UID %s from %s (%s): the first copy stays filed, this one is "
        "kept as quarantine/%s",
        uid_hash(sop_instance_uid),
        calling_ae_title,
        kind.value,
        name,
    )
