"""Schema fingerprints: a published version's fields never change without a version bump.

``schemas/versions.lock.json`` records, per table and version, a fingerprint of its Arrow schema
(names, types, nullability, units; docs excluded so wording can improve). A unit test compares
the live schemas with it. After deliberately adding a version, record it with
``python -m concordose.schemas.lock`` — existing entries are never rewritten, so changing the
fields of an already published version fails until its version is bumped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa

from concordose.schemas.tables import TABLES

LOCK_FILE = Path(__file__).resolve().parent / "versions.lock.json"


def fingerprint(schema: pa.Schema) -> str:
    """SHA-256 (16 hex) of each field's name, type, nullability and unit, in order."""
    parts = [
        "|".join(
            [
                f.name,
                str(f.type),
                str(f.nullable),
                (f.metadata or {}).get(b"unit", b"").decode(),
            ]
        )
        for f in schema
    ]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]


def live_fingerprints() -> dict[str, dict[str, str]]:
    """Table → version (as text) → fingerprint, for every version the code knows."""
    return {
        name: {
            str(version): fingerprint(spec.schema_of(version))
            for version in sorted([*spec.previous_schemas, spec.version])
        }
        for name, spec in sorted(TABLES.items())
    }


def locked_fingerprints() -> dict[str, dict[str, str]]:
    """The recorded fingerprints."""
    loaded: dict[str, dict[str, str]] = json.loads(LOCK_FILE.read_text(encoding="utf-8"))
    return loaded


def main() -> None:
    """Add fingerprints of new tables and versions to the lock file (never rewrite one)."""
    locked = locked_fingerprints() if LOCK_FILE.exists() else {}
    for table, versions in live_fingerprints().items():
        for version, value in versions.items():
            locked.setdefault(table, {}).setdefault(version, value)
    LOCK_FILE.write_text(json.dumps(locked, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {LOCK_FILE}")


if __name__ == "__main__":
    main()
