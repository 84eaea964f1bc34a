"""Refresh the vendored vulnerability advisories the offline dependency audit reads.

Run: ``.venv/bin/python scripts/update_advisories.py PATH`` with PATH a checkout of the PyPA
advisory database (https://github.com/pypa/advisory-database, OSV format, one YAML file per
advisory under ``vulns/<package>/``). Writes every PyPI advisory, as JSON lines, to
``scripts/advisories/pypa-advisory-database.jsonl.gz`` and the checkout's commit and date to
``scripts/advisories/SNAPSHOT.json`` (read by ``scripts/audit_dependencies.py``, which prints them
so a reader knows how old the advisories are).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent / "advisories"


def _rfc3339(value: object) -> str:
    """OSV's timestamps (YAML reads them as datetimes) as RFC 3339 UTC, as OSV's API sends them."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def main() -> None:
    """Convert the checkout named on the command line."""
    if len(sys.argv) != 2:
        sys.exit("usage: update_advisories.py PATH-TO-pypa/advisory-database-CHECKOUT")
    checkout = Path(sys.argv[1])
    files = sorted((checkout / "vulns").glob("*/*.yaml"))
    if not files:
        sys.exit(f"{checkout}: expected vulns/<package>/<id>.yaml files, found none")
    HERE.mkdir(exist_ok=True)
    with gzip.open(HERE / "pypa-advisory-database.jsonl.gz", "wt", encoding="utf-8") as out:
        for path in files:
            record = yaml.safe_load(path.read_text(encoding="utf-8"))
            out.write(json.dumps(record, sort_keys=True, default=_rfc3339) + "\n")
    commit, date = subprocess.run(
        ["git", "-C", str(checkout), "log", "-1", "--format=%H %cI"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    snapshot = {
        "source": "https://github.com/pypa/advisory-database",
        "commit": commit,
        "date": date,
        "advisories": len(files),
    }
    (HERE / "SNAPSHOT.json").write_text(json.dumps(snapshot, indent=2) + "\n", encoding="utf-8")
    print(f"{len(files)} advisories of {date} ({commit[:12]})")


if __name__ == "__main__":
    main()
