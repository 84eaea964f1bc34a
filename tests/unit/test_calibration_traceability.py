"""Dose-calibrator traceability (issue 15, item 2): the sheet's block, the bias, the corrected CF,
and the injected activity put on the corrected doses' scale.

The digital consortium's sites read activity × (1 + bias), bias −2.5 % … +5 %
(``phantoms.site_profiles``); each site's cylinder sheet records 5 readings of a certified Lu-177
source (0.5 % repeatability, certificate 3 % at k = 2, the certified activity exact:
``phantoms.phantom_scans``). Tolerances: the bias within its stated standard uncertainty (and,
tighter, within 3 SD of the mean reading's repeatability, which is all the simulation puts in);
the corrected CF within 2 × its stated u(CF) of the site's true CF and within 1 % (Poisson noise
0.03 % plus the repeatability 0.22 %); the uncorrected CF off by the bias within 0.5 %.
"""

from __future__ import annotations

import copy
import statistics
from datetime import date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pytest
import yaml

from concordose.calibration.calibrate import SiteCalibration, calibrate_site
from concordose.calibration.records import CalibrationRecord
from concordose.calibration.sheet import CylinderSheet, load_sheet
from concordose.calibration.traceability import SecondaryStandardMeasurement
from concordose.dicom.seg import VoiType
from concordose.errors import ConfigurationError
from concordose.nuclides import LU177
from concordose.phantoms.phantom_scans import scan_site_phantoms
from concordose.phantoms.site_profiles import CONSORTIUM_SITES, SiteProfile
from concordose.results.calibration_table import build_site_calibrations
from concordose.results.cycle_summary import build_patient_summary
from concordose.results.cycle_tables import CycleIdentity
from concordose.results.provenance import Provenance
from concordose.schemas.tables import (
    PATIENT_SUMMARY,
    SITE_CALIBRATIONS,
    VOXEL_DOSE_SUMMARY,
    upgrade_table,
)

SEED = 5


@pytest.fixture(scope="module")
def phantom_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("traceability")
    for site in CONSORTIUM_SITES:
        scan_site_phantoms(site, root / site.site_id, seed=SEED, preset="demo")
    return {site.site_id: root / site.site_id / "phantoms" for site in CONSORTIUM_SITES}


def _cylinder_sheet(folders: dict[str, Path], site_id: str) -> Path:
    return folders[site_id] / "uniform_cylinder" / "calibration_sheet.yaml"


def _content(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def _write_beside(source: Path, name: str, content: dict[str, Any]) -> Path:
    """A variant of a sheet in the same folder (its DICOM paths are relative to it)."""
    path = source.parent / name
    path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return path


def _calibrate(folder: Path, site_id: str, cylinder: Path | None = None) -> SiteCalibration:
    return calibrate_site(
        site_id=site_id,
        cylinder_sheet=cylinder or folder / "uniform_cylinder" / "calibration_sheet.yaml",
        nema_sheet=folder / "nema_iec_body" / "calibration_sheet.yaml",
        record_id=f"{site_id}-test",
        valid_from=date(2026, 1, 1),
        ledger=None,
    )


def _untraced(folders: dict[str, Path], site_id: str) -> Path:
    """The site's cylinder sheet as a version-1 sheet: no traceability block."""
    source = _cylinder_sheet(folders, site_id)
    content = _content(source)
    del content["dose_calibrator_traceability"]
    content["format_version"] = 1
    return _write_beside(source, "calibration_sheet_v1.yaml", content)


def _edited_block(folders: dict[str, Path], edit: dict[str, Any], name: str) -> Path:
    source = _cylinder_sheet(folders, "brussels")
    content = _content(source)
    content["dose_calibrator_traceability"].update(copy.deepcopy(edit))
    return _write_beside(source, name, content)


# --- the sheet ---------------------------------------------------------------------------------


def test_a_v2_sheet_with_the_block_and_a_v1_sheet_both_read(
    phantom_folders: dict[str, Path],
) -> None:
    traced = load_sheet(_cylinder_sheet(phantom_folders, "brussels"))
    assert isinstance(traced, CylinderSheet)
    assert traced.format_version == 2
    block = traced.dose_calibrator_traceability
    assert block is not None
    assert block.method == "reference_source"
    assert len(block.readings) == 5
    old = load_sheet(_untraced(phantom_folders, "brussels"))
    assert old.format_version == 1
    assert old.dose_calibrator_traceability is None
    assert old.model_dump(exclude={"format_version", "dose_calibrator_traceability"}) == (
        traced.model_dump(exclude={"format_version", "dose_calibrator_traceability"})
    )


def test_a_v1_sheet_with_the_block_is_refused(phantom_folders: dict[str, Path]) -> None:
    source = _cylinder_sheet(phantom_folders, "brussels")
    content = _content(source)
    content["format_version"] = 1
    path = _write_beside(source, "v1_with_block.yaml", content)
    with pytest.raises(ConfigurationError, match=r"expected format_version 2 .* found format_v"):
        load_sheet(path)


def test_a_reading_in_kbq_is_refused_naming_the_reading(phantom_folders: dict[str, Path]) -> None:
    source = _cylinder_sheet(phantom_folders, "brussels")
    readings = _content(source)["dose_calibrator_traceability"]["readings"]
    readings[2]["reading_mbq"] *= 1000.0
    path = _edited_block(phantom_folders, {"readings": readings}, "kbq.yaml")
    with pytest.raises(
        ConfigurationError, match=r"reading 3 .* expected within ±10%; found \+\d+.*units \(MBq\)"
    ):
        load_sheet(path)


def test_a_wrong_certificate_date_is_refused(phantom_folders: dict[str, Path]) -> None:
    source = _cylinder_sheet(phantom_folders, "brussels")
    block = _content(source)["dose_calibrator_traceability"]
    # a month off: Lu-177 decays by ~96 % in 30 days, the readings no longer match
    block["source"]["certified_at"] = "2025-11-08T12:00:00"
    path = _edited_block(phantom_folders, {"source": block["source"]}, "date.yaml")
    with pytest.raises(ConfigurationError, match=r"reading 1 .*date-times"):
        load_sheet(path)


def test_a_block_at_another_setting_is_refused(phantom_folders: dict[str, Path]) -> None:
    path = _edited_block(phantom_folders, {"calibrator_setting": "Co-57"}, "setting.yaml")
    with pytest.raises(ConfigurationError, match=r"expected the setting .*'Lu-177'.*found 'Co-57'"):
        load_sheet(path)


def test_an_unknown_nuclide_is_refused(phantom_folders: dict[str, Path]) -> None:
    source = _cylinder_sheet(phantom_folders, "brussels")
    block = _content(source)["dose_calibrator_traceability"]
    block["source"]["nuclide"] = "Lutetium"
    path = _edited_block(phantom_folders, {"source": block["source"]}, "nuclide.yaml")
    with pytest.raises(ConfigurationError, match=r"source.nuclide: expected a radionuclide name"):
        load_sheet(path)


def test_one_reading_needs_a_stated_repeatability(phantom_folders: dict[str, Path]) -> None:
    source = _cylinder_sheet(phantom_folders, "brussels")
    first = _content(source)["dose_calibrator_traceability"]["readings"][:1]
    path = _edited_block(phantom_folders, {"readings": first}, "one.yaml")
    with pytest.raises(ConfigurationError, match="one reading needs reading_relative_repeat"):
        load_sheet(path)
    stated = _edited_block(
        phantom_folders,
        {"readings": first, "reading_relative_repeatability": 0.01},
        "one_stated.yaml",
    )
    block = load_sheet(stated).dose_calibrator_traceability
    assert block is not None
    # certificate 1.5 % ⊕ the stated 1 % for one reading
    assert block.bias().bias_sd_relative == pytest.approx(
        (1 + block.bias().bias_relative) * (0.015**2 + 0.01**2) ** 0.5, rel=1e-9
    )


def test_a_cross_calibration_against_a_secondary_standard() -> None:
    standard_at = datetime(2026, 1, 10, 9, 0)
    site_at = datetime(2026, 1, 10, 11, 0)
    decay_2h = 2.0 ** (-2.0 / LU177.half_life_h)
    readings = [
        {
            "standard_measured_at": standard_at.isoformat(),
            "standard_reading_mbq": standard,
            "site_measured_at": site_at.isoformat(),
            "site_reading_mbq": standard * decay_2h * 1.04 * wobble,
        }
        for standard, wobble in ((500.0, 1.002), (480.0, 0.998), (510.0, 1.0))
    ]
    block = SecondaryStandardMeasurement.model_validate(
        {
            "method": "secondary_standard",
            "dose_calibrator": "hot-lab calibrator",
            "calibrator_setting": "Lu-177",
            "standard": {
                "standard": "regional SSDL calibrator, certificate X",
                "nuclide": "Lu-177",
                "standard_relative_uncertainty": 0.02,
                "standard_coverage_factor": 2,
            },
            "readings": readings,
        }
    )
    bias = block.bias()
    assert bias.bias_relative == pytest.approx(0.04, abs=1e-9)
    repeatability = statistics.stdev([1.002, 0.998, 1.0]) / 3**0.5
    assert bias.bias_sd_relative == pytest.approx(1.04 * (0.01**2 + repeatability**2) ** 0.5)
    assert bias.true_activity_mbq(104.0) == pytest.approx(100.0)


def test_two_different_blocks_are_refused(phantom_folders: dict[str, Path], tmp_path: Path) -> None:
    folder = phantom_folders["brussels"]
    nema_source = folder / "nema_iec_body" / "calibration_sheet.yaml"
    nema = _content(nema_source)
    block = copy.deepcopy(_content(_cylinder_sheet(phantom_folders, "brussels")))[
        "dose_calibrator_traceability"
    ]
    block["readings"] = block["readings"][:3]
    nema["dose_calibrator_traceability"] = block
    nema_path = _write_beside(nema_source, "with_block.yaml", nema)
    with pytest.raises(ConfigurationError, match=r"both sheets carry .* and they differ"):
        calibrate_site(
            site_id="brussels",
            cylinder_sheet=_cylinder_sheet(phantom_folders, "brussels"),
            nema_sheet=nema_path,
            record_id="x",
            valid_from=date(2026, 1, 1),
            ledger=None,
        )


# --- the bias and the corrected CF -------------------------------------------------------------


@pytest.mark.parametrize("site", CONSORTIUM_SITES, ids=lambda s: s.site_id)
def test_bias_recovered_and_cf_corrected(
    phantom_folders: dict[str, Path], site: SiteProfile
) -> None:
    folder = phantom_folders[site.site_id]
    traced = _calibrate(folder, site.site_id)
    untraced = _calibrate(folder, site.site_id, _untraced(phantom_folders, site.site_id))
    found = traced.calibrator
    assert found is not None
    error = found.bias_relative - site.dose_calibrator_bias
    assert abs(error) < found.bias_sd_relative
    assert abs(error) < 3 * 0.005 / 5**0.5 * (1 + site.dose_calibrator_bias)
    record = traced.record
    assert record.dose_calibrator_bias_relative == found.bias_relative
    assert record.dose_calibrator_bias_sd_relative == found.bias_sd_relative
    assert record.dose_calibrator_traceability is not None
    assert "reference_source" in record.dose_calibrator_traceability

    true_cf = site.calibration_factor_cps_per_mbq
    corrected = record.calibration_factor_cps_per_mbq / true_cf - 1.0
    u_cf = record.calibration_factor_relative_uncertainty
    assert u_cf is not None
    assert abs(corrected) < 2 * u_cf
    assert abs(corrected) < 0.01
    # Without the block: the CF carries the bias, as before, and the record says so.
    assert not untraced.record.dose_calibrator_traceable
    assert untraced.record.dose_calibrator_bias_relative is None
    uncorrected = untraced.record.calibration_factor_cps_per_mbq / true_cf - 1.0
    assert uncorrected == pytest.approx(1 / (1 + site.dose_calibrator_bias) - 1, abs=0.005)
    # u(CF) gains the bias's uncertainty in quadrature
    u_untraced = untraced.record.calibration_factor_relative_uncertainty
    assert u_untraced is not None
    assert u_cf**2 == pytest.approx(
        u_untraced**2 + (found.bias_sd_relative / (1 + found.bias_relative)) ** 2, rel=1e-9
    )
    # RC is a ratio of like with like: the correction leaves it unchanged
    assert traced.nema.recovery == pytest.approx(untraced.nema.recovery, rel=1e-9)


def test_cross_site_spread_of_the_cf_error_shrinks(phantom_folders: dict[str, Path]) -> None:
    before, after = [], []
    for site in CONSORTIUM_SITES:
        folder = phantom_folders[site.site_id]
        true_cf = site.calibration_factor_cps_per_mbq
        traced = _calibrate(folder, site.site_id)
        untraced = _calibrate(folder, site.site_id, _untraced(phantom_folders, site.site_id))
        after.append(traced.record.calibration_factor_cps_per_mbq / true_cf)
        before.append(untraced.record.calibration_factor_cps_per_mbq / true_cf)
    cov_before = statistics.stdev(before) / statistics.fmean(before)
    cov_after = statistics.stdev(after) / statistics.fmean(after)
    # the 3.3 % floor: biases −2.5 … +5 % pass straight through
    assert cov_before == pytest.approx(0.033, abs=0.003)
    assert cov_after < 0.01
    assert cov_after < cov_before / 4


# --- the record and the published table -------------------------------------------------------


def test_the_record_corrects_other_readings_of_the_calibrator() -> None:
    record = CalibrationRecord(
        record_id="r",
        calibration_factor_cps_per_mbq=9.0,
        valid_from=date(2026, 1, 1),
        dose_calibrator_bias_relative=0.05,
        dose_calibrator_bias_sd_relative=0.015,
        dose_calibrator_traceability="reference_source: …",
    )
    bias = record.dose_calibrator_bias()
    assert bias is not None
    assert bias.true_activity_mbq(7770.0) == pytest.approx(7400.0)
    plain = CalibrationRecord(
        record_id="p", calibration_factor_cps_per_mbq=9.0, valid_from=date(2026, 1, 1)
    )
    assert plain.dose_calibrator_bias() is None
    assert not plain.dose_calibrator_traceable
    with pytest.raises(ValueError, match="expected both or neither"):
        CalibrationRecord(
            record_id="x",
            calibration_factor_cps_per_mbq=9.0,
            valid_from=date(2026, 1, 1),
            dose_calibrator_bias_relative=0.05,
        )


def test_site_calibrations_publish_the_traceability(phantom_folders: dict[str, Path]) -> None:
    traced = _calibrate(phantom_folders["grandrapids"], "grandrapids").record
    plain = CalibrationRecord(
        record_id="p", calibration_factor_cps_per_mbq=9.0, valid_from=date(2026, 1, 1)
    )
    provenance = Provenance(run_id="run")
    table = build_site_calibrations([("grandrapids", traced), ("milan", plain)], provenance)
    assert table.schema == SITE_CALIBRATIONS.schema
    assert "dose_calibrator_traceable" in SITE_CALIBRATIONS.schema_of(4).names  # since v4
    rows = {row["site_id"]: row for row in table.to_pylist()}
    assert rows["grandrapids"]["dose_calibrator_traceable"] is True
    assert rows["grandrapids"]["dose_calibrator_bias_relative"] == pytest.approx(0.05, abs=0.005)
    assert rows["grandrapids"]["dose_calibrator_bias_sd_relative"] == pytest.approx(
        0.0159, abs=1e-3
    )
    assert "LU177-REF-GRANDRAPIDS" in rows["grandrapids"]["dose_calibrator_traceability"]
    assert rows["milan"]["dose_calibrator_traceable"] is False
    assert rows["milan"]["dose_calibrator_bias_relative"] is None
    # v3 rows (before traceability) read as not traceable
    v3 = SITE_CALIBRATIONS.schema_of(3)
    old = table.select(v3.names).cast(v3)
    upgraded = upgrade_table(SITE_CALIBRATIONS, old, 3).to_pylist()
    assert [r["dose_calibrator_traceable"] for r in upgraded] == [False, False]
    assert [r["dose_calibrator_bias_relative"] for r in upgraded] == [None, None]
    assert table.schema.field("dose_calibrator_traceable").type == pa.bool_()


def _summary_rows(record: CalibrationRecord, injected_mbq: float | None) -> list[dict[str, Any]]:
    """patient_summary of a one-lesion cycle (duck-typed inputs: only what the builder reads)."""
    tac = SimpleNamespace(
        mass_g=np.array([20.0]),
        voi_types=[VoiType.LESION],
        labels=["lesion_1"],
        calibration_record_id=record.record_id,
        sop_instance_uids=["1.2.3"],
    )
    kinetics = SimpleNamespace(method="mono_exponential", parameters_hash="k")
    dose = SimpleNamespace(method="sphere", parameters_hash="d", mean_dose_gy=np.array([40.0]))
    table = build_patient_summary(
        CycleIdentity(subject_key="s", cycle_key="c", site_id="grandrapids"),
        cast(Any, SimpleNamespace(injected_activity_mbq=injected_mbq)),
        cast(Any, tac),
        [(cast(Any, kinetics), cast(Any, dose))],
        Provenance(run_id="run"),
        calibration=record,
    )
    assert table.schema == PATIENT_SUMMARY.schema
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def test_patient_summary_puts_the_injected_activity_on_the_doses_scale() -> None:
    traced = CalibrationRecord(
        record_id="t",
        calibration_factor_cps_per_mbq=5.8,
        valid_from=date(2026, 1, 1),
        dose_calibrator_bias_relative=0.05,
        dose_calibrator_bias_sd_relative=0.016,
        dose_calibrator_traceability="reference_source: …",
    )
    (row,) = _summary_rows(traced, 7770.0)
    assert row["injected_activity_mbq"] == 7770.0  # as recorded (DICOM)
    assert row["injected_activity_traceable_mbq"] == pytest.approx(7400.0)
    plain = CalibrationRecord(
        record_id="p", calibration_factor_cps_per_mbq=5.8, valid_from=date(2026, 1, 1)
    )
    (row,) = _summary_rows(plain, 7770.0)
    assert row["injected_activity_traceable_mbq"] is None
    (row,) = _summary_rows(traced, None)
    assert row["injected_activity_traceable_mbq"] is None
    # v1 rows read with a null traceable activity
    v1 = PATIENT_SUMMARY.schema_of(1)
    assert "injected_activity_traceable_mbq" not in v1.names
    assert PATIENT_SUMMARY.fills_from(1) == {"injected_activity_traceable_mbq": None}
    assert VOXEL_DOSE_SUMMARY.schema == PATIENT_SUMMARY.schema
