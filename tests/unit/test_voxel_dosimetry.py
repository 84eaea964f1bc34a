"""Voxel dosimetry of a cycle from activity maps (library), its tables, and absorbed_dose v2."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from concordose.calibration.protocol import VoxelDosimetryRules, load_protocol
from concordose.dicom.seg import VoiType
from concordose.dose.methods.local_deposition import ldm_gy_per_mbq_h_per_g
from concordose.dose.voxel_dosimetry import (
    MAX_FAILED_FRACTION,
    CycleVoxelDose,
    voxel_dose_from_maps,
    voxel_kinetics_names,
)
from concordose.errors import ConfigurationError
from concordose.kinetics.models import STATUS_OK
from concordose.kinetics.voxel import VoxelKinetics, fit_voxels
from concordose.results.catalogue import read_current
from concordose.results.object_store import open_object_store
from concordose.results.publish import MANIFEST_DIR, publish_tables
from concordose.results.validation import load_rules
from concordose.schemas.tables import ABSORBED_DOSE, upgrade_table
from concordose.settings import Settings
from tests.results_rows import dose_table, provenance, provenance_columns

TIME_H = np.array([4.0, 24.0, 72.0, 168.0])
LAMBDA_PER_H = np.log(2.0) / 60.0  # T_eff 60 h
SPACING_MM = (4.0, 4.0, 4.0)  # 0.064 mL voxels
VOXEL_ML = 0.064


def _maps(a0_map_mbq: np.ndarray) -> np.ndarray:
    """Noise-free mono-exponential maps (t, z, y, x) of activity at injection ``a0_map_mbq``."""
    maps: np.ndarray = a0_map_mbq[None] * np.exp(-LAMBDA_PER_H * TIME_H)[:, None, None, None]
    return maps


def _phantom() -> tuple[np.ndarray, np.ndarray]:
    """A 24³ grid: an 'organ' cube of 10³ voxels at 0.1 MBq each, containing a 'lesion' cube of
    3³ voxels at 1 MBq; zero elsewhere. Returns A0 map and the two masks (organ ⊃ lesion)."""
    a0 = np.zeros((24, 24, 24))
    organ = np.zeros(a0.shape, dtype=bool)
    organ[7:17, 7:17, 7:17] = True
    lesion = np.zeros(a0.shape, dtype=bool)
    lesion[11:14, 11:14, 11:14] = True
    a0[organ] = 0.1
    a0[lesion] = 1.0
    return a0, np.stack([organ, lesion])


def _run(
    rules: VoxelDosimetryRules | None = None, calibration_relative_sd: float | None = None
) -> CycleVoxelDose:
    a0, masks = _phantom()
    return voxel_dose_from_maps(
        TIME_H,
        _maps(a0),
        SPACING_MM,
        masks,
        labels=("liver", "lesion_1"),
        voi_types=(VoiType.ORGAN, VoiType.LESION),
        rules=rules or VoxelDosimetryRules(methods=["ldm", "vsv_4.42mm"]),
        calibration_relative_sd=calibration_relative_sd,
    )


def test_ldm_voi_doses_equal_the_analytic_local_deposition() -> None:
    result = _run()
    a0, masks = _phantom()
    k = ldm_gy_per_mbq_h_per_g()  # 0.08532 Gy·g/(MBq·h)
    tia_voxel = a0 / LAMBDA_PER_H  # A0/λ per voxel, MBq·h
    assert result.kinetics_method == "voxel_mono_exponential"
    assert result.status == (STATUS_OK, STATUS_OK)
    # overlapping VOIs each keep all their voxels: the organ's mass includes the lesion's
    assert result.mass_g == pytest.approx([1000 * VOXEL_ML, 27 * VOXEL_ML])
    expected_tia = [tia_voxel[masks[0]].sum(), tia_voxel[masks[1]].sum()]
    assert result.tia_mbq_h == pytest.approx(expected_tia, rel=1e-6)
    ldm = result.doses[0]
    assert ldm.method == "ldm"
    expected_gy = [t * k / m for t, m in zip(expected_tia, result.mass_g, strict=True)]
    assert ldm.mean_dose_gy == pytest.approx(expected_gy, rel=1e-6)
    lesion = ldm.vois[1].metrics
    assert lesion is not None
    # uniform lesion: every statistic is the one voxel dose
    single = 1.0 / LAMBDA_PER_H * k / VOXEL_ML
    for value in (lesion.min_dose_gy, lesion.median_dose_gy, lesion.d98_gy, lesion.max_dose_gy):
        assert value == pytest.approx(single, rel=1e-6)


def test_vsv_is_below_ldm_in_a_small_lesion_and_dvh_matches_metrics() -> None:
    """VSV spreads the electrons' energy over neighbours (and the packaged kernels carry ~0.91
    of the LDM energy, vsv_kernels): a 3-voxel-wide lesion in a 10× colder organ gets less."""
    result = _run()
    ldm, vsv = result.doses
    assert vsv.method == "vsv_4.42mm"
    assert 0.3 < vsv.mean_dose_gy[1] / ldm.mean_dose_gy[1] < 1.0
    for voi in vsv.vois:
        metrics = voi.metrics
        assert metrics is not None
        dose, fraction = metrics.dvh_dose_gy, metrics.dvh_mass_fraction
        assert dose[0] == 0.0
        assert dose[-1] == pytest.approx(metrics.max_dose_gy, rel=1e-6)
        assert fraction[0] == pytest.approx(1.0)
        assert np.all(np.diff(dose) > 0)
        assert np.all(np.diff(fraction) <= 0)
        ordered = [metrics.min_dose_gy, metrics.d98_gy, metrics.d50_gy, metrics.d2_gy]
        assert ordered == sorted(ordered)
        assert metrics.d2_gy <= metrics.max_dose_gy
        assert metrics.min_dose_gy <= metrics.mean_dose_gy <= metrics.max_dose_gy
        # mean dose = ∫ F(D) dD over the cumulative DVH (trapezoids on 64 levels)
        integral = float(np.sum((fraction[1:] + fraction[:-1]) / 2 * np.diff(dose)))
        assert integral == pytest.approx(metrics.mean_dose_gy, abs=metrics.max_dose_gy / 63)


def test_uncertainty_noise_free_is_the_calibration_part_and_noise_adds_to_it() -> None:
    clean = _run(calibration_relative_sd=0.05)
    for dose in clean.doses:
        # fits of exact curves have ~0 covariance: the SD is the calibration factor's 5 %
        assert dose.mean_dose_sd_gy == pytest.approx(0.05 * dose.mean_dose_gy, rel=1e-3)
    rng = np.random.default_rng(3)
    a0, masks = _phantom()
    noisy_maps = _maps(a0) * rng.normal(1.0, 0.05, size=(len(TIME_H), *a0.shape))
    noisy = voxel_dose_from_maps(
        TIME_H,
        noisy_maps,
        SPACING_MM,
        masks,
        labels=("liver", "lesion_1"),
        voi_types=(VoiType.ORGAN, VoiType.LESION),
        rules=VoxelDosimetryRules(methods=["ldm"]),
        calibration_relative_sd=0.05,
    )
    relative = noisy.doses[0].mean_dose_sd_gy / noisy.doses[0].mean_dose_gy
    # fully correlated voxel fit errors (5 % per point, 4 points): a few % on top of the CF's 5 %
    assert np.all(relative > 0.05)
    assert np.all(relative < 0.15)
    tia_relative = noisy.tia_sd_mbq_h / noisy.tia_mbq_h
    assert np.all((tia_relative > 0.05) & (tia_relative < 0.15))


def test_voxels_outside_the_body_mask_are_not_fitted_and_count_as_zero() -> None:
    result = _run(rules=VoxelDosimetryRules(methods=["ldm"], body_threshold_fraction=0.5))
    # threshold 50 % of the 99.9th percentile (1 MBq lesion voxels): the 0.1 MBq organ is "air"
    assert sum(result.fit_status_counts.values()) == 27
    assert result.tia_mbq_h[0] == pytest.approx(result.tia_mbq_h[1], rel=1e-9)
    assert result.failed_fraction == pytest.approx([0.0, 0.0])


def test_failed_voxel_fits_refuse_the_voi_above_the_limit() -> None:
    a0, masks = _phantom()
    maps = _maps(a0)
    # the lesion's voxels have one usable time point: their mono-exponential fits fail
    # (a curve rising at every point no longer fails: the variable-projection voxel solver
    # returns the bounded optimum, physical decay only)
    maps[1:, masks[1]] = np.nan
    result = voxel_dose_from_maps(
        TIME_H,
        maps,
        SPACING_MM,
        masks,
        labels=("liver", "lesion_1"),
        voi_types=(VoiType.ORGAN, VoiType.LESION),
        rules=VoxelDosimetryRules(methods=["ldm"]),
    )
    assert result.failed_fraction[1] > MAX_FAILED_FRACTION
    assert "voxel fits failed" in result.status[1]
    assert result.doses[0].vois[1].metrics is None
    assert np.isnan(result.doses[0].mean_dose_gy[1])
    assert result.status[0] == STATUS_OK  # 27 of 1000 organ voxels: under the limit


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (VoxelDosimetryRules(model="quad_exponential"), "voxel_dosimetry.model"),
        (VoxelDosimetryRules(model="bi_exponential"), "4 parameters but the cycle has 4"),
        (VoxelDosimetryRules(methods=["vsv_9mm"]), "unknown voxel dose method"),
        (VoxelDosimetryRules(methods=["vsv_4.42mm_density"]), "CT density map"),
        (VoxelDosimetryRules(methods=[]), "is empty"),
    ],
)
def test_bad_rules_are_refused_naming_the_protocol_key(
    rules: VoxelDosimetryRules, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _run(rules=rules)


def test_protocol_defaults_and_site_override(tmp_path: Path) -> None:
    rules = load_protocol("milan").voxel_dosimetry
    assert rules.enabled
    assert rules.model == "mono_exponential"
    assert rules.methods == ["ldm", "vsv_4.42mm", "vsv_2.21mm"]
    (tmp_path / "default.yaml").write_text("voxel_mm: {min: 1, max: 8}\n")
    (tmp_path / "padua.yaml").write_text(
        "voxel_dosimetry: {enabled: false, model: bi_exponential_uptake, methods: [ldm]}\n"
    )
    padua = load_protocol("padua", tmp_path).voxel_dosimetry
    assert (padua.enabled, padua.model, padua.methods) == (False, "bi_exponential_uptake", ["ldm"])
    (tmp_path / "bad.yaml").write_text("voxel_dosimetry: {modle: mono_exponential}\n")
    with pytest.raises(ConfigurationError, match="modle"):
        load_protocol("bad", tmp_path)


def test_expectations_know_the_voxel_registries() -> None:
    rules = load_rules()
    assert rules["voxel_dose"].methods == {
        "kinetics_method": "voxel_kinetics",
        "dose_method": "voxel_dose",
    }
    assert "voxel_mono_exponential" in voxel_kinetics_names()
    assert rules["absorbed_dose"].ranges["dose_sd_gy"].unit == "Gy"


def test_absorbed_dose_v1_rows_read_as_v2_with_null_sd(tmp_path: Path) -> None:
    """A v1 object (before issue 7) and a v2 one, both current, read in the v2 schema."""
    store = open_object_store(str(tmp_path / "out"), Settings())
    new = dose_table("run-b", "c-new").to_pylist()[0] | {"dose_sd_gy": 2.5}
    publish_tables(
        store,
        {"absorbed_dose": [pa.Table.from_pylist([new], schema=ABSORBED_DOSE.schema)]},
        provenance("run-b"),
    )
    v1 = ABSORBED_DOSE.schema_of(1)
    assert "dose_sd_gy" not in v1.names
    old = {k: v for k, v in new.items() if k in v1.names} | {
        "cycle_key": "c-old",
        "schema_version": 1,
        **provenance_columns("run-old"),
    }
    path = Path(store.base) / "absorbed_dose" / "v1" / "site_id=milan" / "run-old.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([old], schema=v1), path)
    manifest = {
        "run_id": "run-old",
        "flow_run_id": None,
        "software_version": "0.1.0",
        "created_at": "2026-01-01T00:00:00+00:00",
        "objects": [{"table": "absorbed_dose", "path": str(path), "rows": 1, "schema_version": 1}],
    }
    (Path(store.base) / MANIFEST_DIR / "run-old.json").write_text(json.dumps(manifest))
    rows = {r["cycle_key"]: r for r in read_current(store, "absorbed_dose").to_pylist()}
    assert rows["c-old"]["schema_version"] == 1
    assert rows["c-old"]["dose_sd_gy"] is None
    assert rows["c-new"]["dose_sd_gy"] == 2.5
    upgraded = upgrade_table(ABSORBED_DOSE, pa.Table.from_pylist([old], schema=v1), 1)
    assert upgraded.schema.equals(ABSORBED_DOSE.schema)


def test_a_voi_with_a_voxel_sd_not_estimable_gets_an_unknown_sd() -> None:
    def fit_with_one_unknown_sd(*args: Any, **kwargs: Any) -> VoxelKinetics:
        fitted = fit_voxels(*args, **kwargs)
        sd = fitted.tia_sd_mbq_h.copy()
        sd[12, 12, 12] = np.nan  # a lesion (and organ) voxel
        return replace(fitted, tia_sd_mbq_h=sd)

    a0, masks = _phantom()
    masks = np.stack([masks[0] & ~masks[1], masks[1]])  # organ shell without the lesion
    result = voxel_dose_from_maps(
        TIME_H,
        _maps(a0),
        SPACING_MM,
        masks,
        labels=("liver", "lesion_1"),
        voi_types=(VoiType.ORGAN, VoiType.LESION),
        rules=VoxelDosimetryRules(methods=["ldm"]),
        calibration_relative_sd=0.05,
        fit=fit_with_one_unknown_sd,
    )
    assert np.isfinite(result.doses[0].mean_dose_sd_gy[0])
    assert np.isnan(result.doses[0].mean_dose_sd_gy[1])
    assert np.isnan(result.tia_sd_mbq_h[1])
    assert np.isfinite(result.doses[0].mean_dose_gy[1])  # the dose itself is still known
