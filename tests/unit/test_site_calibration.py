"""Site calibration from the digital consortium's phantom scans: sheet, CF, RC, ledger.

Tolerances: CF, with the traceability correction undone (× 1/(1 + bias found)), within 0.5 % of
what a correct reading of the phantom's readings gives (they carry the site's dose-calibrator
bias; Poisson noise on ~10⁷ counts is 0.03 %; the correction itself is tested in
``test_calibration_traceability.py``); the phantom found within
2 mm of where it was set up; RC within 0.05 of the truth's noiseless voxel-centre RC (Poisson noise
in the small spheres' few voxels dominates), the background-independent RC0 within 0.05/(1 − 1/r).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from concordose.calibration.calibrate import calibrate_site
from concordose.calibration.ledger import read_ledger
from concordose.calibration.sheet import SHEET_SCHEMA, load_sheet
from concordose.errors import ConfigurationError
from concordose.phantoms.phantom_scans import scan_site_phantoms
from concordose.phantoms.site_profiles import CONSORTIUM_SITES

CF_TOLERANCE = 0.005
OFFSET_TOLERANCE_MM = 2.0
RC_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def phantom_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("phantoms")
    for site in CONSORTIUM_SITES:
        scan_site_phantoms(site, root / site.site_id, seed=5, preset="demo")
    return {site.site_id: root / site.site_id / "phantoms" for site in CONSORTIUM_SITES}


def _truth(folder: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / "truth.json").read_text())
    return loaded


@pytest.mark.parametrize("site_id", [site.site_id for site in CONSORTIUM_SITES])
def test_every_site_recovers_its_cf_and_rc(
    phantom_folders: dict[str, Path], site_id: str, tmp_path: Path
) -> None:
    folder = phantom_folders[site_id]
    result = calibrate_site(
        site_id=site_id,
        cylinder_sheet=folder / "uniform_cylinder" / "calibration_sheet.yaml",
        nema_sheet=folder / "nema_iec_body" / "calibration_sheet.yaml",
        record_id=f"{site_id}-test",
        valid_from=date(2026, 1, 1),
        ledger=tmp_path / "calibrations.jsonl",
    )
    cylinder_truth = _truth(folder / "uniform_cylinder")
    assert result.calibrator is not None
    assert result.record.dose_calibrator_traceable
    uncorrected = result.record.calibration_factor_cps_per_mbq / (
        1.0 + result.calibrator.bias_relative
    )
    assert uncorrected == pytest.approx(
        cylinder_truth["calibration_factor_from_sheet_cps_per_mbq"], rel=CF_TOLERANCE
    )
    nema_truth = _truth(folder / "nema_iec_body")
    for found, placed in zip(result.nema.offset_mm, nema_truth["setup_offset_mm"], strict=True):
        assert abs(found - placed) < OFFSET_TOLERANCE_MM
    for measured, sphere in zip(result.nema.recovery, nema_truth["spheres"], strict=True):
        expected = sphere["rc_noiseless_voxel_centre_voi"]
        if expected is not None:
            assert abs(measured - expected) < RC_TOLERANCE, sphere["label"]
    assert result.record.energy_window_kev is not None
    assert result.record.energy_window_kev[0] < 208.37 < result.record.energy_window_kev[1]
    assert result.record.recovery_a_ml is not None
    assert result.record.recovery_b is not None
    # Background-independent RC0 = (RC − 1/r)/(1 − 1/r): the truth's noiseless RC with the
    # phantom's spill-in removed; the tolerance scales by 1/(1 − 1/r).
    ratio = nema_truth["sphere_to_background_ratio"]
    assert result.nema.sphere_to_background_ratio == pytest.approx(ratio, rel=0.01)
    assert result.nema.contrast_recovery is not None
    for rc0, sphere in zip(result.nema.contrast_recovery, nema_truth["spheres"], strict=True):
        expected = sphere["rc_noiseless_voxel_centre_voi"]
        if expected is not None:
            expected_rc0 = (expected - 1 / ratio) / (1 - 1 / ratio)
            assert abs(rc0 - expected_rc0) < RC_TOLERANCE / (1 - 1 / ratio), sphere["label"]
            assert rc0 < expected  # the plain RC holds the background's spill-in
    assert result.record.contrast_recovery_a_ml is not None
    assert result.record.contrast_recovery_b is not None
    assert result.record.contrast_recovery_covariance is not None
    assert result.record.contrast_recovery_a_ml > result.record.recovery_a_ml
    (entry,) = read_ledger(tmp_path / "calibrations.jsonl")
    assert entry.record == result.record
    assert len(entry.source_study_uids) == 2


def test_recovery_spread_across_sites_is_visible(
    phantom_folders: dict[str, Path], tmp_path: Path
) -> None:
    rc_17mm = {}
    for site_id, folder in phantom_folders.items():
        result = calibrate_site(
            site_id=site_id,
            cylinder_sheet=folder / "uniform_cylinder" / "calibration_sheet.yaml",
            nema_sheet=folder / "nema_iec_body" / "calibration_sheet.yaml",
            record_id="x",
            valid_from=date(2026, 1, 1),
            ledger=None,
        )
        rc_17mm[site_id] = float(result.nema.curve.rc(2.57))
    assert max(rc_17mm.values()) / min(rc_17mm.values()) > 1.2, rc_17mm


def _sheet(phantom_folders: dict[str, Path], tmp_path: Path, edit: dict[str, Any]) -> Path:
    source = phantom_folders["milan"] / "uniform_cylinder" / "calibration_sheet.yaml"
    content = yaml.safe_load(source.read_text())
    content["fill"].update(edit)
    path = tmp_path / "calibration_sheet.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def test_an_inconsistent_sheet_is_refused_naming_the_entry(
    phantom_folders: dict[str, Path], tmp_path: Path
) -> None:
    path = _sheet(phantom_folders, tmp_path, {"net_activity_mbq": 500.0})
    with pytest.raises(ConfigurationError, match="net_activity_mbq 500 ≠ syringe − residual"):
        load_sheet(path)


def test_a_missing_entry_is_refused(phantom_folders: dict[str, Path], tmp_path: Path) -> None:
    source = phantom_folders["milan"] / "uniform_cylinder" / "calibration_sheet.yaml"
    content = yaml.safe_load(source.read_text())
    del content["fill"]["reference_datetime"]
    path = tmp_path / "calibration_sheet.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigurationError, match="reference_datetime"):
        load_sheet(path)


def test_sheets_of_another_site_are_refused(phantom_folders: dict[str, Path]) -> None:
    folder = phantom_folders["milan"]
    with pytest.raises(ConfigurationError, match="site 'milan''s sheet, not 'brussels''s"):
        calibrate_site(
            site_id="brussels",
            cylinder_sheet=folder / "uniform_cylinder" / "calibration_sheet.yaml",
            nema_sheet=folder / "nema_iec_body" / "calibration_sheet.yaml",
            record_id="x",
            valid_from=date(2026, 1, 1),
            ledger=None,
        )


def test_packaged_json_schema_matches_the_models() -> None:
    assert json.loads(SHEET_SCHEMA.path().read_text()) == SHEET_SCHEMA.generated()
