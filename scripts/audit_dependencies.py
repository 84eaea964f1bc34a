"""Audit the installed dependencies for known vulnerabilities, offline (issue 18, item 7).

Run: ``.venv/bin/python scripts/audit_dependencies.py [pip-audit arguments]`` (the test command
runs it with none: the virtual environment's packages, concordose itself skipped as editable).

pip-audit does the audit; it asks an OSV service, for each package and version, which
advisories affect it. This machine reaches package registries only, so this script serves the
vendored PyPA advisory database (``scripts/advisories``, OSV records) through OSV's
``POST /v1/query`` on loopback and points pip-audit at it with ``--osv-url``. The service
answers with the advisories whose ``affected`` entry for the package lists the version, or whose
``ECOSYSTEM`` range holds it (OSV schema 1.x: ``introduced`` / ``fixed`` / ``last_affected``
events, in order). Exit status: pip-audit's (0 none found, 1 vulnerabilities found).

The audit is as new as the snapshot, printed first; ``scripts/update_advisories.py`` refreshes it.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ADVISORIES = Path(__file__).resolve().parent / "advisories"


def load_advisories(folder: Path = ADVISORIES) -> dict[str, list[dict[str, Any]]]:
    """Canonical PyPI package name → the advisories that name it."""
    by_package: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with gzip.open(folder / "pypa-advisory-database.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            advisory = json.loads(line)
            names = {
                canonicalize_name(entry["package"]["name"])
                for entry in advisory.get("affected", [])
                if entry.get("package", {}).get("ecosystem") == "PyPI"
            }
            for name in names:
                by_package[name].append(advisory)
    return dict(by_package)


def _in_ranges(version: Version, ranges: Iterable[Mapping[str, Any]]) -> bool:
    """Whether ``version`` lies in an OSV ``ECOSYSTEM`` range. Events come in version order:
    ``introduced`` opens an affected span at or below ``version``, ``fixed`` (at or below it) and
    ``last_affected`` (below it) close it."""
    for entry in ranges:
        if entry.get("type") != "ECOSYSTEM":
            continue
        affected = False
        for event in entry.get("events", []):
            try:
                if "introduced" in event:
                    affected = affected or version >= Version(str(event["introduced"]))
                elif "fixed" in event:
                    affected = affected and version < Version(str(event["fixed"]))
                elif "last_affected" in event:
                    affected = affected and version <= Version(str(event["last_affected"]))
            except InvalidVersion:
                continue
        if affected:
            return True
    return False


def affecting(
    advisories: Mapping[str, Sequence[dict[str, Any]]], package: str, version: str
) -> list[dict[str, Any]]:
    """The advisories that affect ``package`` at ``version``."""
    name = canonicalize_name(package)
    try:
        parsed = Version(version)
    except InvalidVersion:
        parsed = None
    found = []
    for advisory in advisories.get(name, ()):
        for entry in advisory.get("affected", []):
            if canonicalize_name(entry.get("package", {}).get("name", "")) != name:
                continue
            listed = version in {str(v) for v in entry.get("versions", [])}
            if listed or (parsed is not None and _in_ranges(parsed, entry.get("ranges", []))):
                found.append(advisory)
                break
    return found


def serve(advisories: Mapping[str, Sequence[dict[str, Any]]]) -> ThreadingHTTPServer:
    """A loopback OSV query service (``POST /v1/query``) over ``advisories``, started."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            package = query.get("package", {})
            vulns = (
                affecting(advisories, package.get("name", ""), str(query.get("version", "")))
                if package.get("ecosystem") == "PyPI"
                else []
            )
            body = json.dumps({"vulns": vulns} if vulns else {}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: pip-audit reports what matters."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: Sequence[str]) -> int:
    """Serve the advisories, run pip-audit against them, return its exit status."""
    snapshot = json.loads((ADVISORIES / "SNAPSHOT.json").read_text(encoding="utf-8"))
    print(
        f"dependency audit: pip-audit against {snapshot['advisories']} PyPA advisories of "
        f"{snapshot['date'][:10]} (commit {snapshot['commit'][:12]}, vendored; "
        "scripts/update_advisories.py refreshes them)",
        flush=True,
    )
    server = serve(load_advisories())
    port = server.server_address[1]
    try:
        return subprocess.run(
            [
                sys.executable, "-m", "pip_audit",
                "--vulnerability-service", "osv",
                "--osv-url", f"http://127.0.0.1:{port}/v1/query",
                "--progress-spinner", "off",
                "--skip-editable",
                *(argv or ["--local"]),
            ],
            check=False,
        ).returncode  # fmt: skip
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
