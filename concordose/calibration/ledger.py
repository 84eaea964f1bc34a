"""The calibration ledger: an append-only, hash-chained history of calibration records.

One JSON object per line (``calibrations.jsonl``); a line is never rewritten. A new calibration
is a new record; a correction is a new *version* of the same ``record_id`` (the highest version
wins); a withdrawal is a version with ``valid_to`` before ``valid_from``'s day… or any earlier
date. Each line carries the SHA-256 of the previous line, so an edited or removed line is
detected when the ledger is read.

A line::

    {"version": 1, "site_id": "milan", "record": {...CalibrationRecord...},
     "created_at": "...", "created_by": "...", "source_study_uids": [...],
     "previous_sha256": "..."}
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from concordose.calibration.records import CalibrationRecord
from concordose.errors import ConfigurationError

GENESIS_SHA256 = "0" * 64


@dataclass(frozen=True)
class LedgerEntry:
    """One line of the ledger."""

    version: int
    site_id: str
    record: CalibrationRecord
    created_at: datetime
    created_by: str
    source_study_uids: tuple[str, ...]


def _sha256(line: str) -> str:
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


def read_ledger(path: Path) -> list[LedgerEntry]:
    """Every entry, in order, after checking the hash chain.

    Raises:
        ConfigurationError: unreadable line, broken chain (edited or removed line), bad record.
    """
    if not path.exists():
        return []
    entries = []
    previous = GENESIS_SHA256
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"calibration ledger {path}, line {number}"
        try:
            content: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{where}: not JSON ({exc})") from exc
        if content.get("previous_sha256") != previous:
            raise ConfigurationError(
                f"{where}: hash chain broken (a line before it was edited or removed); "
                "the ledger is append-only — restore it from backup"
            )
        try:
            entries.append(
                LedgerEntry(
                    version=int(content["version"]),
                    site_id=str(content["site_id"]),
                    record=CalibrationRecord.model_validate(content["record"]),
                    created_at=datetime.fromisoformat(content["created_at"]),
                    created_by=str(content["created_by"]),
                    source_study_uids=tuple(content.get("source_study_uids", [])),
                )
            )
        except (KeyError, ValueError, ValidationError) as exc:
            raise ConfigurationError(f"{where}: invalid entry: {exc}") from exc
        previous = _sha256(line)
    return entries


def current_records(entries: list[LedgerEntry]) -> dict[str, list[CalibrationRecord]]:
    """Site → its calibration records, each at its latest version."""
    latest: dict[tuple[str, str], LedgerEntry] = {}
    for entry in entries:
        key = (entry.site_id, entry.record.record_id)
        if key not in latest or entry.version > latest[key].version:
            latest[key] = entry
    by_site: dict[str, list[CalibrationRecord]] = {}
    for (site_id, _), entry in sorted(latest.items()):
        by_site.setdefault(site_id, []).append(entry.record)
    return by_site


def append_record(
    path: Path,
    site_id: str,
    record: CalibrationRecord,
    *,
    source_study_uids: tuple[str, ...] = (),
    created_by: str | None = None,
) -> LedgerEntry:
    """Append ``record`` (a new version if its ``record_id`` exists) durably under a file lock.

    Raises:
        ConfigurationError: the existing ledger fails its checks.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        entries = read_ledger(path)
        versions = [
            e.version
            for e in entries
            if (e.site_id, e.record.record_id) == (site_id, record.record_id)
        ]
        handle.seek(0)
        lines = handle.read().splitlines()
        entry = LedgerEntry(
            version=max(versions, default=0) + 1,
            site_id=site_id,
            record=record,
            created_at=datetime.now(UTC),
            created_by=created_by or getpass.getuser(),
            source_study_uids=source_study_uids,
        )
        line = json.dumps(
            {
                "version": entry.version,
                "site_id": site_id,
                "record": record.model_dump(mode="json"),
                "created_at": entry.created_at.isoformat(),
                "created_by": entry.created_by,
                "source_study_uids": list(source_study_uids),
                "previous_sha256": _sha256(lines[-1]) if lines else GENESIS_SHA256,
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return entry
