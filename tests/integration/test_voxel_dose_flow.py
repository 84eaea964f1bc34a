"""The flow's voxel dosimetry and dose uncertainty, published and against ground truth.

One synthetic patient (preset ``test``, four time points, Poisson noise, mono-exponential truth
kinetics) through ``process_spool`` with two kinetics methods (``mono_exponential``: no TIA
uncertainty; ``mono_exponential_uptake``: fitted, with gᵀVg) and three VOI dose methods.

The flow's voxel doses are on the first CT's grid (``voxel_dosimetry.output_grid: ct``, the
default; ``dose_grid`` = ``ct``), VOI masks from the SEG on the CT grid, masses from the CT's
HU → density (water-equivalent line, ``concordose.quant.density``).

Truth on the CT grid. The phantom has no blur: its activity is uniform in the SPECT voxels
(8.84 mm here) whose centre lies in a region, and its truth TIA and mass are of those voxels at
unit density. The SEG samples the same anatomy on the CT grid (4.42 mm in-plane, first voxel
centre shared with the SPECT grid, so CT voxels straddle SPECT voxel edges): its VOIs differ
from the SPECT voxels by a boundary layer (measured: flow LDM at 0.89–1.02 of the truth's for
organs, 0.69–0.79 for the 4–14 mL lesions). So the reference of each CT-grid row is the truth
*on the CT mask*: the truth's voxel TIAs (TIA / n_voxels_nm in each SPECT voxel of its region,
placed with the SPECT-grid VOI masks) averaged onto the CT grid by exact overlap and summed in
the CT mask, E_ref = 0.08532 Gy·g/(MBq·h) × that TIA; masses are the CT mask volume × the
phantom's HU density (``phantoms.patient.HU_BY_LABEL``) within 1 % (CT noise 5 HU).

Tolerances:

* voxel LDM energy (mean dose × mass) within 3 % of E_ref: voxel fits of the true model on
  noisy voxels sum to the VOI TIA within ~1 % (measured 0.4–0.9 % low on the demo patient),
  and exact-overlap averaging keeps the energy of the SPECT-grid dose;
* voxel VSV between 0.80 and 1.05 of the unit-density reference E_ref / CT volume (the plain
  kernels are for soft tissue at 1 g/mL): the packaged kernels carry 0.91–0.92 of the LDM energy
  (``dose/methods/voxel_s_value.py``) and a VOI of a few mL loses a few % more by cross-fire
  to its surroundings (measured 0.875–0.93 on the demo patient); the upper bound leaves room for
  a kernel that adds the conversion/Auger electrons locally (then ≈ 1) and for cross-dose from
  hotter neighbours;
* the SPECT grid (``output_grid: spect``, library call on the same DICOM) keeps the truth check
  of the SPECT voxels: LDM within 3 % of the truth's, masses within 3 % (unit density).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from concordose.calibration.protocol import VoxelDosimetryRules
from concordose.calibration.registry import CalibrationRecord, SiteRegistry
from concordose.dicom.seg import read_segmentation
from concordose.dose.methods.local_deposition import ldm_gy_per_mbq_h_per_g
from concordose.dose.resampling import average_onto_grid
from concordose.errors import ConfigurationError
from concordose.flows.sweep import SweepResult, process_spool
from concordose.phantoms import generate_patient
from concordose.phantoms.patient import HU_BY_LABEL
from concordose.pipeline.alignment import TimePointAlignment, align_time_points
from concordose.pipeline.assembly import CycleStudy, assemble_cycles
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.time_point_maps import registered_activity_maps
from concordose.pipeline.voxel_dosimetry import cycle_voxel_dosimetry, first_ct_dose_grid
from concordose.quant.voi import resample_vois
from concordose.results.catalogue import query, read_current
from concordose.results.object_store import open_object_store
from concordose.schemas.tables import ABSORBED_DOSE, VOXEL_DOSE, VOXEL_DOSE_SUMMARY
from concordose.settings import Settings

pytestmark = pytest.mark.integration

VOXEL_LDM_RELATIVE_TOLERANCE = 0.03
VSV_TO_TRUE_LDM = (0.80, 1.05)
VOXEL_METHODS = {"ldm", "vsv_4.42mm", "vsv_2.21mm"}


@pytest.fixture(scope="module")
def voxel_run(
    tmp_path_factory: pytest.TempPathFactory, prefect_server: None
) -> tuple[SweepResult, dict[str, Any], Path]:
    tmp_path = tmp_path_factory.mktemp("voxel")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-key-not-secret")
        patient = generate_patient(tmp_path / "patient", seed=7, preset="test")
        result = process_spool(
            patient.out_dir / "dicom",
            patient.sites_path,
            output_uri=str(tmp_path / "out"),
            site_id="milan",
            kinetics_methods=("mono_exponential", "mono_exponential_uptake"),
            dose_methods=("sphere", "ldm", "organ_s_am"),
        )
    truth: dict[str, Any] = json.loads(patient.ground_truth_path.read_text())
    return result, truth, tmp_path / "out"


@pytest.fixture(scope="module")
def truth_on_ct(
    voxel_run: tuple[SweepResult, dict[str, Any], Path],
) -> dict[str, tuple[float, float]]:
    """Per VOI: the truth's TIA on the CT mask (MBq·h, see the module) and the CT mask's volume
    (mL)."""
    _, truth, output = voxel_run
    cycle, calibration, alignments = _cycle(output.parent / "patient")
    geometry = registered_activity_maps(cycle, calibration, alignments).geometry
    ct_grid = first_ct_dose_grid(
        cycle, read_segmentation(cycle.segmentation), geometry, alignments[0]
    )
    assert ct_grid is not None
    spect_vois = resample_vois(
        read_segmentation(cycle.segmentation), geometry, alignments[0].mask_transform()
    )
    assert spect_vois.masks.sum(axis=0).max() == 1  # disjoint regions: one truth per voxel
    by_voi = {voi["label"]: voi for voi in truth["vois"]}
    tia_per_ml = np.zeros(geometry.shape)
    for label, mask in zip(spect_vois.labels, spect_vois.masks, strict=True):
        voi = by_voi[label]
        tia_per_ml[mask] = voi["tia_mbq_h"] / voi["n_voxels_nm"] / geometry.voxel_volume_ml
    ct_ml = ct_grid.geometry.voxel_volume_ml
    tia_on_ct = average_onto_grid(tia_per_ml, geometry, ct_grid.geometry) * ct_ml
    return {
        label: (float(tia_on_ct[crop.box][crop.mask].sum()), float(crop.mask.sum() * ct_ml))
        for label, crop in zip(spect_vois.labels, ct_grid.voi_masks, strict=True)
    }


def _cycle(patient_dir: Path) -> tuple[CycleStudy, CalibrationRecord, list[TimePointAlignment]]:
    (cycle,) = assemble_cycles(catalogue(patient_dir / "dicom"))
    first = cycle.time_points[0].acquisition.acquisition_datetime
    assert first is not None
    calibration = (
        SiteRegistry.load(patient_dir / "sites.yaml").site("milan").calibration_on(first.date())
    )
    return cycle, calibration, align_time_points(cycle)


def test_voxel_method_rows_match_ground_truth_on_the_ct_grid(
    voxel_run: tuple[SweepResult, dict[str, Any], Path],
    truth_on_ct: dict[str, tuple[float, float]],
) -> None:
    result, truth, _ = voxel_run
    rows = result.tables["voxel_dose"].to_pylist()
    by_voi = {voi["label"]: voi for voi in truth["vois"]}
    assert {(r["voi_label"], r["dose_method"]) for r in rows} == {
        (label, method) for label in by_voi for method in VOXEL_METHODS
    }
    k = ldm_gy_per_mbq_h_per_g()
    for row in rows:
        label = row["voi_label"]
        voi = by_voi[label]
        assert row["status"] == "ok", row
        assert row["kinetics_method"] == "voxel_mono_exponential"
        assert row["schema_version"] == VOXEL_DOSE.version
        assert row["voxel_fit_failed_fraction"] == 0.0
        assert row["dose_grid"] == "ct"
        tia_ct_mbq_h, volume_ct_ml = truth_on_ct[label]
        density = 1.0 + HU_BY_LABEL[label] / 1000.0
        assert row["mass_g"] == pytest.approx(volume_ct_ml * density, rel=0.01), label
        # the TIA sum stays on the SPECT grid, where the voxels were fitted
        assert row["tia_mbq_h"] == pytest.approx(voi["tia_mbq_h"], rel=0.03)
        energy_ref = k * tia_ct_mbq_h  # Gy·g
        if row["dose_method"] == "ldm":
            energy = row["mean_dose_gy"] * row["mass_g"]
            assert energy / energy_ref == pytest.approx(1.0, abs=VOXEL_LDM_RELATIVE_TOLERANCE), (
                label
            )
        else:
            ratio = row["mean_dose_gy"] / (energy_ref / volume_ct_ml)
            assert VSV_TO_TRUE_LDM[0] < ratio < VSV_TO_TRUE_LDM[1], (label, ratio)


def test_spect_grid_and_density_variants_on_the_same_study(
    voxel_run: tuple[SweepResult, dict[str, Any], Path],
) -> None:
    """Library calls on the flow's DICOM: ``output_grid: spect`` against the SPECT-voxel truth,
    and the ``_density`` VSV on the CT grid (D · ρ_water / ρ, ρ of the VOI's CT)."""
    _, truth, output = voxel_run
    cycle, calibration, alignments = _cycle(output.parent / "patient")
    by_voi = {voi["label"]: voi for voi in truth["vois"]}
    k = ldm_gy_per_mbq_h_per_g()
    spect = cycle_voxel_dosimetry(
        cycle, calibration, alignments, rules=VoxelDosimetryRules(output_grid="spect")
    )
    assert spect.dose_grid == "spect"
    (ldm,) = [d for d in spect.doses if d.method == "ldm"]
    for index, label in enumerate(spect.labels):
        voi = by_voi[label]
        assert spect.mass_g[index] == pytest.approx(voi["mass_g"], rel=0.03), label
        true_ldm_gy = k * voi["tia_mbq_h"] / voi["mass_g"]
        assert ldm.mean_dose_gy[index] / true_ldm_gy == pytest.approx(
            1.0, abs=VOXEL_LDM_RELATIVE_TOLERANCE
        ), label
    on_ct = cycle_voxel_dosimetry(
        cycle,
        calibration,
        alignments,
        rules=VoxelDosimetryRules(methods=["vsv_4.42mm", "vsv_4.42mm_density"]),
    )
    assert on_ct.dose_grid == "ct"
    plain, corrected = (d.mean_dose_gy for d in on_ct.doses)
    # HU noise (5 HU, ~0.5 % of ρ) and the few body/air voxels at a VOI's edge: 1 %
    expected = [1.0 / (1.0 + HU_BY_LABEL[label] / 1000.0) for label in on_ct.labels]
    np.testing.assert_allclose(corrected / plain, expected, rtol=0.01)
    # a first time point without its CT: the SPECT grid (said in dose_grid), no density method
    first, *later = cycle.time_points
    without_ct = replace(cycle, time_points=(replace(first, ct_files=()), *later))
    fallback = cycle_voxel_dosimetry(
        without_ct, calibration, alignments, rules=VoxelDosimetryRules(methods=["ldm"])
    )
    assert fallback.dose_grid == "spect"
    np.testing.assert_allclose(fallback.mass_g, spect.mass_g)
    with pytest.raises(ConfigurationError, match="no CT at the first time point"):
        cycle_voxel_dosimetry(
            without_ct,
            calibration,
            alignments,
            rules=VoxelDosimetryRules(methods=["vsv_4.42mm_density"]),
        )


def test_dvh_is_monotone_and_consistent_with_the_metrics(
    voxel_run: tuple[SweepResult, dict[str, Any], Path],
) -> None:
    result, _, _ = voxel_run
    for row in result.tables["voxel_dose"].to_pylist():
        dose = np.asarray(row["dvh_dose_gy"])
        fraction = np.asarray(row["dvh_mass_fraction"])
        assert dose.size == fraction.size == 64
        assert dose[0] == 0.0
        assert dose[-1] == pytest.approx(row["max_dose_gy"], rel=1e-6)  # float32 levels
        assert np.all(np.diff(dose) > 0)
        assert np.all(np.diff(fraction) <= 0)
        assert fraction[0] == pytest.approx(1.0)
        ordered = [row[c] for c in ("min_dose_gy", "d98_gy", "d50_gy", "d2_gy", "max_dose_gy")]
        assert ordered == sorted(ordered), row["voi_label"]
        assert row["min_dose_gy"] <= row["mean_dose_gy"] <= row["max_dose_gy"]
        # D_x is the lowest dose of the hottest x % of mass: the DVH is ≥ x up to D_x and < x
        # above it (float32 levels and fractions: 1e-6 relative slack)
        for column, x in (("d98_gy", 0.98), ("d50_gy", 0.50), ("d2_gy", 0.02)):
            d_x = row[column]
            assert np.all(fraction[dose < d_x * (1 - 1e-6)] >= x - 1e-6), column
            assert np.all(fraction[dose > d_x * (1 + 1e-6)] < x + 1e-6), column
        # its integral is the mean dose (trapezoids on 64 levels: within one level's width)
        integral = float(np.sum((fraction[1:] + fraction[:-1]) / 2 * np.diff(dose)))
        assert integral == pytest.approx(row["mean_dose_gy"], abs=row["max_dose_gy"] / 63)


def test_dose_uncertainty_is_published_where_known(
    voxel_run: tuple[SweepResult, dict[str, Any], Path],
) -> None:
    result, _, _ = voxel_run
    doses = result.tables["absorbed_dose"].to_pylist()
    assert {row["schema_version"] for row in doses} == {ABSORBED_DOSE.version}
    kinetics = {
        (row["voi_label"], row["kinetics_method"]): row
        for row in result.tables["kinetics"].to_pylist()
    }
    fitted = [row for row in doses if row["kinetics_method"] == "mono_exponential_uptake"]
    assert {row["dose_method"] for row in fitted} == {"sphere", "ldm", "organ_s_am"}
    for row in doses:
        if row["status"] != "ok":  # no dose, no SD
            assert row["dose_sd_gy"] is None, row
            continue
        assert 0 < row["dose_sd_gy"] < 0.5 * row["mean_dose_gy"], row
        if row["dose_method"] in ("sphere", "ldm"):  # D ∝ TIA: same relative SD (no S-value SD)
            tia = kinetics[(row["voi_label"], row["kinetics_method"])]
            assert row["dose_sd_gy"] / row["mean_dose_gy"] == pytest.approx(
                tia["tia_sd_mbq_h"] / tia["tia_mbq_h"], rel=1e-9
            )
    assert any(row["dose_method"] == "organ_s_am" and row["dose_sd_gy"] for row in fitted)
    for row in result.tables["voxel_dose"].to_pylist():
        assert 0 < row["dose_sd_gy"] < 0.5 * row["mean_dose_gy"], row
        assert 0 < row["tia_sd_mbq_h"] < 0.5 * row["tia_mbq_h"], row


def test_voxel_summary_is_published_and_consistent(
    voxel_run: tuple[SweepResult, dict[str, Any], Path],
) -> None:
    result, truth, output = voxel_run
    store = open_object_store(str(output), Settings())
    (run,) = result.processed
    assert run.published is not None
    published = {obj.table for obj in run.published.objects}
    assert {"voxel_dose", "voxel_dose_summary", "absorbed_dose"} <= published
    current = read_current(store, "voxel_dose")
    assert current.num_rows == len(truth["vois"]) * len(VOXEL_METHODS)
    summary = read_current(store, "voxel_dose_summary").to_pylist()
    assert {row["dose_method"] for row in summary} == VOXEL_METHODS
    assert {row["schema_version"] for row in summary} == {VOXEL_DOSE_SUMMARY.version}
    lesions = query(
        store,
        "SELECT dose_method, min(mean_dose_gy) AS min_gy, count(*) AS n, "
        "sum(mean_dose_gy * mass_g) / sum(mass_g) AS gtd_gy "
        "FROM voxel_dose WHERE voi_type = 'lesion' GROUP BY dose_method",
    ).to_pylist()
    by_method = {row["dose_method"]: row for row in lesions}
    for row in summary:
        expected = by_method[row["dose_method"]]
        assert row["n_lesions"] == expected["n"]
        assert row["lesion_min_dose_gy"] == pytest.approx(expected["min_gy"])
        assert row["lesion_mean_dose_gy"] == pytest.approx(expected["gtd_gy"])
        assert row["meets_min_lesion_35gy"] == (expected["min_gy"] >= 35.0)
