"""The append-only calibration ledger and its merge into the site registry."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from concordose.calibration.ledger import append_record, current_records, read_ledger
from concordose.calibration.records import CalibrationRecord
from concordose.calibration.registry import SiteRegistry
from concordose.errors import ConfigurationError

SITES = """
format_version: 1
calibration_ledger: calibrations.jsonl
sites:
  - site_id: milan
    ae_titles: [MILAN_SPECT]
"""


def _record(cf: float, record_id: str = "milan-2026") -> CalibrationRecord:
    return CalibrationRecord(
        record_id=record_id,
        camera_model="Symbia Intevo",
        calibration_factor_cps_per_mbq=cf,
        valid_from=date(2026, 1, 1),
    )


def test_versions_accumulate_and_the_latest_wins(tmp_path: Path) -> None:
    ledger = tmp_path / "calibrations.jsonl"
    first = append_record(
        ledger, "milan", _record(9.0), source_study_uids=("1.2.3",), created_by="physicist"
    )
    second = append_record(ledger, "milan", _record(9.2), created_by="physicist")
    other = append_record(ledger, "milan", _record(8.1, "milan-melp"), created_by="physicist")
    assert (first.version, second.version, other.version) == (1, 2, 1)
    entries = read_ledger(ledger)
    assert [e.record.calibration_factor_cps_per_mbq for e in entries] == [9.0, 9.2, 8.1]
    assert entries[0].source_study_uids == ("1.2.3",)
    current = current_records(entries)["milan"]
    assert {r.record_id: r.calibration_factor_cps_per_mbq for r in current} == {
        "milan-2026": 9.2,
        "milan-melp": 8.1,
    }


def test_an_edited_line_breaks_the_chain(tmp_path: Path) -> None:
    ledger = tmp_path / "calibrations.jsonl"
    append_record(ledger, "milan", _record(9.0))
    append_record(ledger, "milan", _record(9.2))
    lines = ledger.read_text().splitlines()
    # Edit the calibration factor itself: a bare "9.0" can also occur in the timestamp.
    edited = lines[0].replace(
        '"calibration_factor_cps_per_mbq": 9.0', '"calibration_factor_cps_per_mbq": 12.0'
    )
    assert edited != lines[0]
    ledger.write_text(edited + "\n" + lines[1] + "\n")
    with pytest.raises(ConfigurationError, match="line 2: hash chain broken"):
        read_ledger(ledger)


def test_a_removed_line_breaks_the_chain(tmp_path: Path) -> None:
    ledger = tmp_path / "calibrations.jsonl"
    for cf in (9.0, 9.1, 9.2):
        append_record(ledger, "milan", _record(cf))
    lines = ledger.read_text().splitlines()
    ledger.write_text(lines[0] + "\n" + lines[2] + "\n")
    with pytest.raises(ConfigurationError, match="hash chain broken"):
        read_ledger(ledger)


def test_registry_reads_the_ledger_named_in_sites_yaml(tmp_path: Path) -> None:
    (tmp_path / "sites.yaml").write_text(SITES)
    append_record(tmp_path / "calibrations.jsonl", "milan", _record(9.3))
    registry = SiteRegistry.load(tmp_path / "sites.yaml")
    record = registry.site("milan").calibration_on(date(2026, 5, 1))
    assert record.calibration_factor_cps_per_mbq == 9.3


def test_ledger_records_for_unknown_sites_are_refused(tmp_path: Path) -> None:
    (tmp_path / "sites.yaml").write_text(SITES)
    append_record(tmp_path / "calibrations.jsonl", "paris", _record(9.3))
    with pytest.raises(ConfigurationError, match="unknown site"):
        SiteRegistry.load(tmp_path / "sites.yaml")
