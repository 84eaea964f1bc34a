"""The test command's offline dependency audit (issue 18 item 7, ``scripts/audit_dependencies.py``):
pip-audit against the vendored PyPA advisories served on loopback through OSV's query API."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "audit_dependencies.py"


def _audit_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_dependencies", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _advisory(identifier: str, events: list[dict[str, str]], versions: list[str]) -> Any:
    return {
        "id": identifier,
        "affected": [
            {
                "package": {"name": "Some_Package", "ecosystem": "PyPI"},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
                "versions": versions,
            }
        ],
    }


def test_osv_ranges_and_version_lists_decide_what_is_affected() -> None:
    audit = _audit_module()
    advisories = {
        "some-package": [
            _advisory(
                "A",
                [
                    {"introduced": "0"},
                    {"fixed": "2.3.2"},
                    {"introduced": "2.5"},
                    {"fixed": "2.5.2"},
                ],
                [],
            ),
            _advisory("B", [{"introduced": "3.0"}, {"last_affected": "3.1"}], []),
            _advisory("C", [], ["4.0.0"]),
        ]
    }

    def ids(version: str) -> list[str]:
        return [a["id"] for a in audit.affecting(advisories, "some.package", version)]

    assert ids("2.3.1") == ["A"]
    assert ids("2.4") == []  # between the two affected spans
    assert ids("2.5.1") == ["A"]
    assert ids("2.5.2") == []  # fixed
    assert ids("3.1") == ["B"]  # last_affected is inclusive
    assert ids("3.1.1") == []
    assert ids("4.0.0") == ["C"]  # listed
    assert audit.affecting(advisories, "other-package", "1.0") == []


def test_the_audit_finds_a_known_vulnerable_pin_and_passes_a_clean_one(tmp_path: Path) -> None:
    """Real pip-audit end to end, against the vendored snapshot: Pillow 2.3.0 has advisories
    in it (PYSEC-2014-10, fixed 2.3.2); a clean requirement set exits 0."""
    vulnerable, clean = tmp_path / "vulnerable.txt", tmp_path / "clean.txt"
    vulnerable.write_text("pillow==2.3.0\n")
    clean.write_text("pillow==10.4.0\n")
    runs = {
        name: subprocess.run(
            [sys.executable, str(SCRIPT), "-r", str(path), "--no-deps", "--disable-pip"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for name, path in (("vulnerable", vulnerable), ("clean", clean))
    }
    assert runs["vulnerable"].returncode == 1, runs["vulnerable"].stderr
    assert "PYSEC-2014-10" in runs["vulnerable"].stdout
    assert "PyPA advisories of 2024-10-10" in runs["vulnerable"].stdout  # the snapshot is named
    assert runs["clean"].returncode == 0, runs["clean"].stdout + runs["clean"].stderr
