"""Site registry: loading, validation messages and calibration validity."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from concordose.calibration.registry import SiteRegistry
from concordose.errors import CalibrationMissingError, ConfigurationError

VALID = """
format_version: 1
sites:
  - site_id: milan
    ae_titles: [MILAN_SPECT]
    calibrations:
      - record_id: milan-2025
        calibration_factor_cps_per_mbq: 9.0
        valid_from: 2025-01-01
        valid_to: 2025-12-31
      - record_id: milan-2026
        calibration_factor_cps_per_mbq: 9.3
        valid_from: 2026-01-01
  - site_id: padua
    ae_titles: [PADUA_NM, PADUA_NM2]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sites.yaml"
    path.write_text(text)
    return path


def test_calibration_is_chosen_by_date(tmp_path: Path) -> None:
    registry = SiteRegistry.load(_write(tmp_path, VALID))
    milan = registry.site_for_ae_title("MILAN_SPECT")
    assert milan.calibration_on(date(2025, 6, 1)).record_id == "milan-2025"
    assert milan.calibration_on(date(2026, 6, 1)).calibration_factor_cps_per_mbq == 9.3
    assert registry.ae_titles == ["MILAN_SPECT", "PADUA_NM", "PADUA_NM2"]


def test_no_valid_calibration_says_what_is_missing(tmp_path: Path) -> None:
    registry = SiteRegistry.load(_write(tmp_path, VALID))
    with pytest.raises(
        CalibrationMissingError, match="'milan' has no calibration valid on 2024-05-01"
    ):
        registry.site("milan").calibration_on(date(2024, 5, 1))
    with pytest.raises(CalibrationMissingError, match="records: none"):
        registry.site("padua").calibration_on(date(2026, 1, 1))


def test_unknown_ae_title_and_site(tmp_path: Path) -> None:
    registry = SiteRegistry.load(_write(tmp_path, VALID))
    with pytest.raises(CalibrationMissingError, match="'ROGUE' belongs to no site"):
        registry.site_for_ae_title("ROGUE")
    with pytest.raises(ConfigurationError, match="knows: milan, padua"):
        registry.site("paris")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sites: [", "not valid YAML"),
        ("sites:\n  - site_id: a\n    ae_titles: []\n", "ae_titles"),
        (
            "sites:\n  - site_id: a\n    ae_titles: [X]\n  - site_id: b\n    ae_titles: [X]\n",
            "duplicate AE title",
        ),
        (
            "sites:\n  - site_id: a\n    ae_titles: [X]\n    calibrations:\n"
            "      - {record_id: r, calibration_factor_cps_per_mbq: -1, valid_from: 2026-01-01}\n",
            "greater than 0",
        ),
    ],
)
def test_invalid_files_are_rejected_with_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SiteRegistry.load(_write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        SiteRegistry.load(tmp_path / "absent.yaml")
