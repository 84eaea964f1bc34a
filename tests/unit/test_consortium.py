"""Tests of the digital consortium (``phantoms.consortium`` and the modules it composes).

Fast ``test`` preset throughout, except the NEMA recovery check, which needs each site's own grid.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import yaml
from scipy import integrate
from typer.testing import CliRunner

from concordose.calibration.phantom_geometry import NEMA_SPHERE_DIAMETERS_MM
from concordose.calibration.registry import SiteRegistry
from concordose.cli import app
from concordose.dicom.nm import read_nm_header
from concordose.dose.sphere_svalues import lu177_sphere_table
from concordose.errors import ConcordoseError
from concordose.flows.consortium import run_consortium
from concordose.nuclides import LU177
from concordose.phantoms.anatomy import BODY_VALUE, sample_label_map
from concordose.phantoms.consortium import (
    GeneratedConsortium,
    GeneratedSite,
    Realism,
    consortium_units,
    generate_consortium,
)
from concordose.phantoms.imaging import analytic_sphere_recovery, gaussian_blur
from concordose.phantoms.kinetics import UptakeMultiExponential
from concordose.phantoms.phantom_scans import scan_cylinder, scan_nema
from concordose.phantoms.presets import nm_grid_for
from concordose.phantoms.protocols import PROTOCOLS, protocol
from concordose.phantoms.site_profiles import CONSORTIUM_SITES, consortium_site
from concordose.phantoms.virtual_patient import draw_virtual_patient
from concordose.pipeline.assembly import assemble_cycles
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.quantify import quantify_cycle

SEED = 31


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> GeneratedConsortium:
    """Every site, one patient, SPECTacular schedule, blur + noise + shifts (the default)."""
    return generate_consortium(tmp_path_factory.mktemp("consortium"), seed=SEED, preset="test")


@pytest.fixture(scope="module")
def ideal(tmp_path_factory: pytest.TempPathFactory) -> GeneratedConsortium:
    """Two sites, no blur, no shift (noise on): regions' counts are exactly checkable."""
    return generate_consortium(
        tmp_path_factory.mktemp("ideal"),
        seed=SEED,
        preset="test",
        sites=(consortium_site("milan"), consortium_site("grandrapids")),
        protocol="lumen",
        realism=Realism(blur=False, noise=True, ct_shift_max_mm=0.0),
        phantoms=False,
    )


# --- 1. sites differ the way real ones do ---------------------------------------------------


def test_sites_span_the_published_spread() -> None:
    sites = CONSORTIUM_SITES
    assert len(sites) >= 4
    assert len({s.calling_ae_title for s in sites}) == len(sites)
    assert all(len(s.calling_ae_title) <= 16 for s in sites)  # DICOM AE title length
    cfs = [s.calibration_factor_cps_per_mbq for s in sites]
    assert all(5.5 <= cf <= 11.0 for cf in cfs)
    assert max(cfs) / min(cfs) > 1.2  # calibration spread ≥ 20 %
    fwhms = [s.effective_fwhm_mm for s in sites]
    assert all(7.5 <= f <= 16.0 for f in fwhms)
    assert max(fwhms) - min(fwhms) > 5.0
    assert {3.9, 4.42, 4.7952} <= {s.nm_voxel_mm for s in sites}
    assert {"MEGP", "MELP"} <= {s.collimator for s in sites}
    assert {s.recon.resolution_recovery for s in sites} == {True, False}
    biases = [s.dose_calibrator_bias for s in sites]
    assert all(abs(b) <= 0.05 for b in biases)
    assert max(biases) - min(biases) >= 0.05
    assert any(s.extra_energy_windows_kev for s in sites)
    # Recovery of the 17 mm sphere differs by more than 36 % between the sharpest and the
    # blurriest site (multicentre surveys report up to 36 %).
    rc = [analytic_sphere_recovery(17.0, f) for f in fwhms]
    assert max(rc) / min(rc) > 1.36


def test_more_updates_with_resolution_recovery_sharpen_and_saturate() -> None:
    site = consortium_site("milan")
    few = site.recon.__class__(iterations=1, subsets=4, resolution_recovery=True)
    many = site.recon.__class__(iterations=20, subsets=16, resolution_recovery=True)
    off = site.recon.__class__(iterations=20, subsets=16, resolution_recovery=False)
    assert many.effective_fwhm_mm(12.0) < few.effective_fwhm_mm(12.0) < 12.0
    assert many.effective_fwhm_mm(12.0) == pytest.approx(12.0 * 0.55, rel=0.01)
    assert off.effective_fwhm_mm(12.0) == 12.0


# --- 2. phantom scans --------------------------------------------------------------------------


def test_cylinder_counts_give_the_calibration_factor(tmp_path: Path) -> None:
    site = consortium_site("brussels")
    scan = scan_cylinder(site, tmp_path / "cyl", seed=SEED, preset="test")
    truth = _load(scan.truth_path)
    sheet = yaml.safe_load(scan.sheet_path.read_text(encoding="utf-8"))
    assert sheet["format"] == "concordose.calibration_sheet"
    assert sheet["phantom"] == "uniform_cylinder"
    counts = pydicom.dcmread(scan.nm_path).pixel_array.astype(np.float64)
    expected = truth["true_activity_at_scan_start_mbq"] * site.calibration_factor_cps_per_mbq
    expected *= site.acquisition_duration_s
    assert abs(counts.sum() - expected) <= 4.0 * math.sqrt(expected) + 1e-3 * expected

    # What a physicist derives from the sheet: the site's CF scaled by its dose-calibrator bias.
    fill = sheet["fill"]
    reference = np.datetime64(fill["reference_datetime"])
    start = np.datetime64(sheet["scan"]["acquisition_start"])
    elapsed_h = float((start - reference) / np.timedelta64(1, "h"))
    recorded_mbq = fill["net_activity_mbq"] * math.exp(-LU177.decay_constant_per_h * elapsed_h)
    cf_from_sheet = counts.sum() / (sheet["scan"]["acquisition_duration_s"] * recorded_mbq)
    assert cf_from_sheet == pytest.approx(
        truth["calibration_factor_from_sheet_cps_per_mbq"], rel=0.005
    )
    assert truth["calibration_factor_from_sheet_cps_per_mbq"] == pytest.approx(10.8 / 1.03)
    # The sheet is internally consistent: net = syringe − residual decayed back 10 min.
    decay_10_min = math.exp(-LU177.decay_constant_per_h / 6.0)
    assert fill["net_activity_mbq"] == pytest.approx(
        fill["syringe_activity_mbq"] - fill["residual_activity_mbq"] / decay_10_min, abs=2e-3
    )


def test_noiseless_nema_recovery_follows_each_sites_resolution(tmp_path: Path) -> None:
    corrected_by_site = {}
    for site in CONSORTIUM_SITES:
        scan = scan_nema(site, tmp_path / site.site_id, seed=SEED, preset="demo", noise=False)
        truth = _load(scan.truth_path)
        ratio = truth["sphere_to_background_ratio"]
        spheres = truth["spheres"]
        assert [s["diameter_mm"] for s in spheres] == list(NEMA_SPHERE_DIAMETERS_MM)
        measured = [s["rc_noiseless_voxel_centre_voi"] for s in spheres]
        # The truth file's RC is what the noiseless image shows in the voxel-centre sphere VOI.
        grid = scan.grid
        counts_per_mbq = site.calibration_factor_cps_per_mbq * site.acquisition_duration_s
        x, y, z = grid.axis_coordinates_mm()
        for sphere, rc in zip(spheres, measured, strict=True):
            cx, cy, cz = sphere["centre_mm"]
            mask = (x[None, None, :] - cx) ** 2 + (y[None, :, None] - cy) ** 2 + (
                z[:, None, None] - cz
            ) ** 2 <= (sphere["diameter_mm"] / 2) ** 2
            concentration = scan.expected_counts[mask].mean() / counts_per_mbq
            concentration /= grid.voxel_volume_ml
            true = sphere["true_concentration_at_scan_start_mbq_per_ml"]
            assert concentration / true == pytest.approx(rc, rel=1e-9)
            # …and it follows the analytic recovery of a Gaussian of the site's FWHM.
            assert rc == pytest.approx(sphere["rc_analytic_in_background"], abs=0.04)
        assert np.all(np.diff(measured) > 0), site.site_id
        corrected_by_site[site.effective_fwhm_mm] = [
            (rc - 1 / ratio) / (1 - 1 / ratio) for rc in measured
        ]
    # Background-corrected recovery of every sphere falls as the effective FWHM grows.
    by_fwhm = [corrected_by_site[f] for f in sorted(corrected_by_site)]
    for sharper, blurrier in itertools.pairwise(by_fwhm):
        assert all(a > b for a, b in zip(sharper[1:], blurrier[1:], strict=True))


# --- 3. virtual patients and image formation --------------------------------------------------


def test_region_counts_equal_activity_times_cf_times_time(ideal: GeneratedConsortium) -> None:
    for generated in ideal.sites:
        truth = _load(generated.ground_truth_paths[0])
        site = generated.site
        counts_per_mbq = site.calibration_factor_cps_per_mbq * site.acquisition_duration_s
        assert truth["site"]["counts_per_mbq"] == pytest.approx(counts_per_mbq)
        grid = nm_grid_for(site, "test")
        patient = draw_virtual_patient(
            SEED,
            1,
            protocol=protocol("lumen"),
            max_cycles=1,
            n_lesions_range=(3, 4),
            lesion_volume_range_ml=(4.0, 60.0),
        )
        labels = sample_label_map(patient.anatomy, grid)
        (cycle,) = truth["cycles"]
        nm_files = sorted(
            (generated.folder / "patients" / "P001" / "dicom" / "cycle01").glob("tp*/nm.dcm")
        )
        assert len(nm_files) == len(cycle["time_points_h"]) == 3
        regions = [*cycle["vois"], cycle["body_remainder"]]
        segment = {v["label"]: v["segment_number"] for v in truth["vois"]}
        for index, path in enumerate(nm_files):
            counts = pydicom.dcmread(path).pixel_array.astype(np.float64)
            for region in regions:
                value = segment.get(region["label"], BODY_VALUE)
                expected = region["activity_mbq"][index] * counts_per_mbq
                measured = counts[labels == value].sum()
                assert abs(measured - expected) <= 4.0 * math.sqrt(expected) + 1.0, region
                assert region["n_voxels_nm"][index] == int((labels == value).sum())


def test_blur_keeps_the_total_and_spreads_counts(realistic: GeneratedConsortium) -> None:
    for generated in realistic.sites:
        truth = _load(generated.ground_truth_paths[0])
        (cycle,) = truth["cycles"]
        total_mbq = [
            sum(r["activity_mbq"][i] for r in [*cycle["vois"], cycle["body_remainder"]])
            for i in range(len(cycle["time_points_h"]))
        ]
        nm_files = sorted(
            (generated.folder / "patients" / "P001" / "dicom" / "cycle01").glob("tp*/nm.dcm")
        )
        for path, activity in zip(nm_files, total_mbq, strict=True):
            counts = pydicom.dcmread(path).pixel_array.astype(np.float64)
            expected = activity * truth["site"]["counts_per_mbq"]
            assert counts.sum() == pytest.approx(expected, rel=0.005)


def test_gaussian_blur_has_the_requested_fwhm() -> None:
    image = np.zeros((41, 41, 41))
    image[20, 20, 20] = 1.0
    blurred = gaussian_blur(image, fwhm_mm=10.0, voxel_mm_zyx=(1.0, 1.0, 1.0))
    profile = blurred[20, 20, :]
    above_half = np.flatnonzero(profile >= profile.max() / 2)
    assert above_half.size in (9, 10, 11)  # 10 mm FWHM on 1 mm voxels
    assert blurred.sum() == pytest.approx(1.0)


def test_ct_shift_moves_the_anatomy_by_the_recorded_translation(
    realistic: GeneratedConsortium,
) -> None:
    generated = realistic.sites[0]
    truth = _load(generated.ground_truth_paths[0])
    (cycle,) = truth["cycles"]
    shifts = np.asarray(cycle["ct_shift_mm"])
    assert shifts.shape == (6, 3)
    assert np.abs(shifts).max() <= 5.0
    assert np.abs(shifts).max() > 0.5
    marrow = next(v for v in truth["vois"] if v["label"] == "bone_marrow")
    centre = np.asarray(marrow["shape"]["centre_mm"])
    for index in (0, 3):
        ct_dir = (
            generated.folder
            / "patients"
            / "P001"
            / "dicom"
            / "cycle01"
            / f"tp{index + 1:02d}"
            / "ct"
        )
        slices = [pydicom.dcmread(p) for p in sorted(ct_dir.glob("*.dcm"))]
        hu = np.stack([s.pixel_array for s in slices]).astype(np.float64) - 1024.0
        # the vertebral column (250 HU) alone: above soft tissue, below the ribs (600 HU)
        k, j, i = np.nonzero((hu > 150.0) & (hu < 450.0))
        spacing = [float(v) for v in slices[0].PixelSpacing]
        x0, y0, _ = (float(v) for v in slices[0].ImagePositionPatient)
        z = np.array([float(s.ImagePositionPatient[2]) for s in slices])
        centroid = np.array(
            [(x0 + i * spacing[1]).mean(), (y0 + j * spacing[0]).mean(), z[k].mean()]
        )
        assert centroid == pytest.approx(centre + shifts[index], abs=1.5)


def test_the_same_patient_is_imaged_at_every_site(realistic: GeneratedConsortium) -> None:
    truths = [_load(g.ground_truth_paths[0]) for g in realistic.sites]
    first = truths[0]
    assert len({t["patient"]["patient_id"] for t in truths}) == len(truths)
    for other in truths[1:]:
        assert other["vois"] == first["vois"]
        for a, b in zip(other["cycles"], first["cycles"], strict=True):
            for key in ("injection_datetime", "time_points_h", "ct_shift_mm"):
                assert a[key] == b[key]
            for voi_a, voi_b in zip(a["vois"], b["vois"], strict=True):
                for key in ("kinetics", "activity_mbq", "tia_mbq_h", "mean_dose_gy"):
                    assert voi_a[key] == voi_b[key]
        assert other["site"]["site_id"] != first["site"]["site_id"]


# --- 5. ground truth ----------------------------------------------------------------------


def _curve(kinetics: dict[str, Any]) -> UptakeMultiExponential:
    uptake = kinetics["uptake"]
    return UptakeMultiExponential(
        amplitudes_mbq=tuple(p["amplitude_mbq"] for p in kinetics["phases"]),
        lambdas_eff_per_h=tuple(p["lambda_eff_per_h"] for p in kinetics["phases"]),
        uptake_lambda_per_h=None if uptake is None else uptake["lambda_per_h"],
    )


def test_ground_truth_is_consistent_and_analytic(realistic: GeneratedConsortium) -> None:
    truth = _load(realistic.sites[0].ground_truth_paths[0])
    assert (truth["format"], truth["format_version"]) == ("concordose.ground_truth", 2)
    assert truth["protocol"] == "spectacular"
    (cycle,) = truth["cycles"]
    assert cycle["time_points_h"] == [4.0, 24.0, 48.0, 96.0, 168.0, 240.0]
    table = lu177_sphere_table()
    masses = {v["label"]: v["mass_g"] for v in truth["vois"]}
    lesions = [v for v in truth["vois"] if v["voi_type"] == "lesion"]
    assert 3 <= len(lesions) <= 4
    assert {"kidney_left", "kidney_right", "liver", "spleen", "bone_marrow"} <= set(masses)
    for region in [*cycle["vois"], cycle["body_remainder"]]:
        kinetics = region["kinetics"]
        assert 1 <= len(kinetics["phases"]) <= 3
        curve = _curve(kinetics)
        numeric, _ = integrate.quad(
            lambda t, c=curve: float(c.activity_mbq(t)), 0, np.inf, limit=200
        )
        assert region["tia_mbq_h"] == pytest.approx(numeric, rel=1e-6)
        assert region["activity_mbq"] == pytest.approx(
            list(curve.activity_mbq(np.asarray(cycle["time_points_h"])))
        )
        if kinetics["uptake"] is not None:
            assert float(curve.activity_mbq(0.0)) == pytest.approx(0.0, abs=1e-9)
        if region["label"] != "body":
            expected_gy = region["tia_mbq_h"] * float(
                table.s_value_mgy_per_mbq_h(masses[region["label"]])
            )
            assert region["mean_dose_gy"] == pytest.approx(expected_gy / 1000.0)
        if region["label"].startswith("kidney"):
            assert 40.0 <= max(p["teff_h"] for p in kinetics["phases"]) <= 60.0
        if region["label"].startswith("lesion"):
            assert 70.0 <= max(p["teff_h"] for p in kinetics["phases"]) <= 120.0


def test_cycles_follow_the_protocol_and_tumour_uptake_declines() -> None:
    assert PROTOCOLS["lutadose"].imaged_cycles() == (1, 4)
    assert PROTOCOLS["hebert"].time_points_h_by_cycle[3] == (24.0,)
    assert PROTOCOLS["lumen"].time_points_h_by_cycle[2] == (4.0, 24.0, 168.0)
    patient = draw_virtual_patient(SEED, 2, protocol=protocol("lutadose"))
    assert sorted(patient.curves) == [1, 2, 3, 4]
    assert patient.imaged_cycles == (1, 4)
    decline = patient.tumour_decline_per_cycle
    assert 0.8 <= decline <= 0.95
    lesion = next(v.label for v in patient.anatomy.vois if v.label.startswith("lesion"))
    first = patient.curves[1][lesion].tia_mbq_h
    for cycle in (2, 3, 4):
        assert patient.curves[cycle][lesion].tia_mbq_h == pytest.approx(
            first * decline ** (cycle - 1)
        )
    days = (patient.injection_datetimes[4] - patient.injection_datetimes[1]).days
    assert days == 3 * 56


def test_virtual_anatomy_has_3_to_10_lesions_of_0_5_to_200_ml() -> None:
    volumes = []
    for number in range(1, 9):
        patient = draw_virtual_patient(SEED, number, protocol=protocol("lumen"), max_cycles=1)
        lesions = [v for v in patient.anatomy.vois if v.label.startswith("lesion")]
        assert 3 <= len(lesions) <= 10
        volumes += [4 / 3 * math.pi * v.shape.semi_axes_mm[0] ** 3 / 1000 for v in lesions]  # type: ignore[union-attr]
    assert min(volumes) >= 0.5 - 1e-9
    assert max(volumes) <= 200.0 + 1e-9


# --- 6. determinism, presets, command line ------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    def run(folder: str, seed: int) -> dict[str, bytes]:
        generate_consortium(
            tmp_path / folder,
            seed=seed,
            preset="test",
            sites=(consortium_site("montpellier"),),
            protocol="lutadose",
        )
        return _tree(tmp_path / folder)

    first, again, other = run("a", 5), run("b", 5), run("c", 6)
    assert first == again
    assert first.keys() == other.keys()
    assert (
        first["sites/montpellier/patients/P001/dicom/cycle01/tp01/nm.dcm"]
        != other["sites/montpellier/patients/P001/dicom/cycle01/tp01/nm.dcm"]
    )


def test_index_registry_and_units(realistic: GeneratedConsortium) -> None:
    index = _load(realistic.index_path)
    assert index["format"] == "concordose.consortium"
    assert [s["site_id"] for s in index["sites"]] == [s.site_id for s in CONSORTIUM_SITES]
    registry = SiteRegistry.load(realistic.sites_path)
    assert {s.site_id for s in registry.sites} == {s.site_id for s in CONSORTIUM_SITES}
    for generated in realistic.sites:
        for scan in generated.phantom_scans:
            assert (realistic.out_dir / scan.folder.relative_to(realistic.out_dir)).is_dir()
    units = consortium_units(
        sites=CONSORTIUM_SITES, n_patients=1, protocol="spectacular", preset="test"
    )
    assert units == 32
    # Per site: lutadose 2 + lumen 3 + hebert 4 + spectacular 6 points, plus 2 scans each.
    units = consortium_units(
        sites=CONSORTIUM_SITES, n_patients=1, protocol="per-site", preset="test"
    )
    assert units == 8 + 2 + 3 + 4 + 6


def test_nm_files_carry_what_readers_and_validators_need(realistic: GeneratedConsortium) -> None:
    required = (
        "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
        "PatientID", "PatientName", "StudyDate", "ImageType", "NumberOfFrames",
        "FrameIncrementPointer", "SliceVector", "NumberOfSlices", "PixelSpacing",
        "SpacingBetweenSlices", "EnergyWindowInformationSequence", "DetectorInformationSequence",
        "RotationInformationSequence", "RadiopharmaceuticalInformationSequence",
        "FrameOfReferenceUID", "CorrectedImage", "Manufacturer", "ManufacturerModelName",
        "PatientOrientationCodeSequence", "PixelData",
    )  # fmt: skip
    for generated in realistic.sites:
        site = generated.site
        nm_paths = [p for p in generated.dicom_files if p.name == "nm.dcm"]
        nm_paths += [s.nm_path for s in generated.phantom_scans]
        for path in nm_paths:
            ds = pydicom.dcmread(path)
            missing = [k for k in required if k not in ds]
            assert not missing, (path, missing)
            assert ds.NumberOfEnergyWindows == len(ds.EnergyWindowInformationSequence)
            assert ds.NumberOfEnergyWindows == 1 + len(site.extra_energy_windows_kev)
            assert ds.DetectorInformationSequence[0].CollimatorGridName == site.collimator
            header = read_nm_header(path)
            assert header.is_recon_tomo
            assert header.acquisition_duration_s == pytest.approx(site.acquisition_duration_s)
            grid = nm_grid_for(site, "test")
            assert header.geometry.shape == grid.shape_zyx
            assert site.recon.description in ds.SeriesDescription
            pydicom.dcmread(path).pixel_array  # noqa: B018 - pixel data decodes


def test_the_library_recovers_activity_from_an_ideal_site(
    ideal: GeneratedConsortium, tmp_path: Path
) -> None:
    generated = ideal.sites[0]
    truth = _load(generated.ground_truth_paths[0])
    (cycle_study,) = assemble_cycles(catalogue(generated.folder / "patients" / "P001" / "dicom"))
    registry = SiteRegistry.load(ideal.sites_path)
    first = cycle_study.time_points[0].acquisition.acquisition_datetime
    assert first is not None
    calibration = registry.site(generated.site.site_id).calibration_on(first.date())
    activity = quantify_cycle(cycle_study, calibration)
    (cycle,) = truth["cycles"]
    by_label = {v["label"]: v for v in cycle["vois"]}
    assert set(activity.labels) == set(by_label)
    for row, label in enumerate(activity.labels):
        assert activity.activity_mbq[row] == pytest.approx(
            by_label[label]["activity_mbq"], rel=0.05
        )


def test_cli_generates_a_consortium_and_rejects_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(
        app,
        [
            "generate", "--out", str(out), "--consortium", "--preset", "test",
            "--site-ids", "milan", "--protocol", "lumen", "--seed", "3",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "consortium.json").is_file()
    assert (
        len(list((out / "sites" / "milan" / "patients" / "P001" / "dicom" / "cycle01").glob("tp*")))
        == 3
    )
    bad: Callable[[list[str]], Any] = lambda extra: runner.invoke(  # noqa: E731
        app, ["generate", "--out", str(tmp_path / "bad"), "--consortium", *extra]
    )
    for extra, message in (
        (["--site-ids", "atlantis"], "unknown consortium site"),
        (["--protocol", "weekly"], "unknown imaging protocol"),
        (["--preset", "huge"], "unknown consortium preset"),
    ):
        result = bad(extra)
        assert result.exit_code == 2, extra
        assert message in result.output


def test_partial_volume_loss_of_a_small_lesion_grows_with_the_sites_fwhm(
    realistic: GeneratedConsortium,
) -> None:
    recovered_by_fwhm = {}
    for generated in realistic.sites:
        site = generated.site
        truth = _load(generated.ground_truth_paths[0])
        (cycle,) = truth["cycles"]
        patient = draw_virtual_patient(
            SEED,
            1,
            protocol=protocol("spectacular"),
            max_cycles=1,
            n_lesions_range=(3, 4),
            lesion_volume_range_ml=(4.0, 60.0),
            ct_shift_max_mm=5.0,
        )
        smallest = min(
            (v for v in truth["vois"] if v["voi_type"] == "lesion"), key=lambda v: v["volume_ml"]
        )
        activity = next(v for v in cycle["vois"] if v["label"] == smallest["label"])
        index = 2  # 48 h
        dx, dy, dz = cycle["ct_shift_mm"][index]
        labels = sample_label_map(
            patient.anatomy, nm_grid_for(site, "test").translated((-dx, -dy, -dz))
        )
        mask = labels == smallest["segment_number"]
        assert int(mask.sum()) == activity["n_voxels_nm"][index]
        path = generated.folder / "patients" / "P001" / "dicom" / "cycle01" / "tp03" / "nm.dcm"
        counts = pydicom.dcmread(path).pixel_array.astype(np.float64)
        measured_mbq = counts[mask].sum() / truth["site"]["counts_per_mbq"]
        recovered_by_fwhm[site.effective_fwhm_mm] = measured_mbq / activity["activity_mbq"][index]
    ordered = [recovered_by_fwhm[f] for f in sorted(recovered_by_fwhm)]
    assert all(r < 1.0 for r in ordered)  # spill-out exceeds spill-in for a hot lesion
    assert ordered[0] > ordered[-1] + 0.1  # sharpest site recovers clearly more than blurriest


def test_per_site_protocols_image_the_same_patient_at_different_times(tmp_path: Path) -> None:
    generated = generate_consortium(
        tmp_path,
        seed=SEED,
        preset="test",
        sites=(consortium_site("milan"), consortium_site("brussels")),
        protocol="per-site",
        phantoms=False,
    )
    milan, brussels = (_load(g.ground_truth_paths[0]) for g in generated.sites)
    assert (milan["protocol"], brussels["protocol"]) == ("lutadose", "lumen")
    assert milan["cycles"][0]["time_points_h"] == [20.0, 162.0]
    assert brussels["cycles"][0]["time_points_h"] == [4.0, 24.0, 168.0]
    assert milan["vois"] == brussels["vois"]
    for a, b in zip(milan["cycles"][0]["vois"], brussels["cycles"][0]["vois"], strict=True):
        assert a["kinetics"] == b["kinetics"]
        assert a["tia_mbq_h"] == b["tia_mbq_h"]
    index = _load(generated.index_path)
    assert [s["protocol"] for s in index["sites"]] == ["lutadose", "lumen"]


def test_nema_sheet_concentrations_give_the_stated_ratio(tmp_path: Path) -> None:
    site = consortium_site("grandrapids")
    scan = scan_nema(site, tmp_path / "nema", seed=SEED, preset="test", noise=False)
    sheet = yaml.safe_load(scan.sheet_path.read_text(encoding="utf-8"))
    truth = _load(scan.truth_path)
    fill = sheet["fill"]
    background, spheres = fill["background"], fill["spheres"]
    assert spheres["inner_diameters_mm"] == list(NEMA_SPHERE_DIAMETERS_MM)
    assert spheres["volumes_ml"] == pytest.approx(
        [4 / 3 * math.pi * (d / 2) ** 3 / 1000 for d in NEMA_SPHERE_DIAMETERS_MM], abs=1e-3
    )
    elapsed_h = float(
        (
            np.datetime64(background["reference_datetime"])
            - np.datetime64(spheres["reference_datetime"])
        )
        / np.timedelta64(1, "h")
    )
    sphere_at_background_time = spheres["concentration_mbq_per_ml"] * math.exp(
        -LU177.decay_constant_per_h * elapsed_h
    )
    ratio = sphere_at_background_time / background["concentration_mbq_per_ml"]
    assert ratio == pytest.approx(fill["sphere_to_background_ratio"], rel=1e-3)
    # Recorded concentrations carry the dose-calibrator bias; the truth does not.
    start = np.datetime64(sheet["scan"]["acquisition_start"])
    to_scan_h = float(
        (start - np.datetime64(background["reference_datetime"])) / np.timedelta64(1, "h")
    )
    recorded_at_scan = background["concentration_mbq_per_ml"] * math.exp(
        -LU177.decay_constant_per_h * to_scan_h
    )
    assert recorded_at_scan / truth[
        "true_background_concentration_at_scan_start_mbq_per_ml"
    ] == pytest.approx(1.0 + site.dose_calibrator_bias, rel=1e-4)


def test_the_consortium_asks_for_the_sink_effect_and_records_it(tmp_path: Path) -> None:
    """issue 20, item 2: ``Realism(sink_effect=True)`` gives every patient the tumour-sink
    effect (kidneys and spleen scaled by the known coefficient) and writes it in the truth."""
    from concordose.phantoms.kinetics import SINK_EFFECT_PER_LITRE  # noqa: PLC0415

    common: dict[str, Any] = {
        "seed": SEED,
        "preset": "test",
        "sites": (consortium_site("milan"),),
        "protocol": "lutadose",
        "phantoms": False,
    }
    plain = generate_consortium(tmp_path / "plain", **common)
    sink = generate_consortium(tmp_path / "sink", realism=Realism(sink_effect=True), **common)
    before = _load(plain.sites[0].ground_truth_paths[0])
    after = _load(sink.sites[0].ground_truth_paths[0])
    assert "sink_effect" not in before["cycles"][0]
    recorded = after["cycles"][0]["sink_effect"]
    assert recorded["coefficient_per_litre"] == SINK_EFFECT_PER_LITRE
    factor = recorded["oar_factor"]
    assert 0.0 < factor < 1.0
    tia = {
        label: (
            {v["label"]: v for v in before["cycles"][0]["vois"]}[label]["tia_mbq_h"],
            {v["label"]: v for v in after["cycles"][0]["vois"]}[label]["tia_mbq_h"],
        )
        for label in ("kidney_left", "spleen", "liver", "lesion_1")
    }
    assert tia["kidney_left"][1] == pytest.approx(tia["kidney_left"][0] * factor, rel=1e-12)
    assert tia["spleen"][1] == pytest.approx(tia["spleen"][0] * factor, rel=1e-12)
    assert tia["liver"][1] == tia["liver"][0]
    assert tia["lesion_1"][1] == tia["lesion_1"][0]


def test_a_repeat_scan_differs_from_the_first_by_count_noise_alone(tmp_path: Path) -> None:
    """``noise_seed``: the same patient at the same site scanned again. Its truth and
    segmentation are the first scan's; its SPECT counts are another Poisson draw of the same
    expectation (different pixels, totals within noise), under its own UIDs; the first scan is
    unchanged by the option's existence (no ``noise_seed`` in its truth)."""
    scans = [
        generate_consortium(
            tmp_path / name,
            seed=SEED,
            preset="test",
            sites=(consortium_site("milan"),),
            protocol="lumen",
            phantoms=False,
            noise_seed=noise_seed,
        ).sites[0]
        for name, noise_seed in (("first", None), ("repeat", 7))
    ]
    first_truth, repeat_truth = (_load(site.ground_truth_paths[0]) for site in scans)
    assert "noise_seed" not in first_truth
    assert repeat_truth.pop("noise_seed") == 7
    assert repeat_truth == first_truth

    def by_kind(site: GeneratedSite) -> dict[str, list[Path]]:
        files: dict[str, list[Path]] = {"nm.dcm": [], "seg": [], "ct": []}
        for path in sorted(site.dicom_files, key=lambda p: p.relative_to(site.folder)):
            kind = "nm.dcm" if path.name == "nm.dcm" else "seg" if "seg" in path.name else "ct"
            files[kind].append(path)
        return files

    first, repeat = (by_kind(site) for site in scans)
    assert len(first["nm.dcm"]) == len(repeat["nm.dcm"]) > 0
    for a_path, b_path in zip(first["nm.dcm"], repeat["nm.dcm"], strict=True):
        a, b = pydicom.dcmread(a_path), pydicom.dcmread(b_path)
        assert a.StudyInstanceUID != b.StudyInstanceUID
        counts_a = a.pixel_array.astype(float) * float(getattr(a, "RescaleSlope", 1.0))
        counts_b = b.pixel_array.astype(float) * float(getattr(b, "RescaleSlope", 1.0))
        assert not np.array_equal(counts_a, counts_b)
        # totals agree within Poisson noise (5 SD of the difference of two draws)
        assert abs(counts_a.sum() - counts_b.sum()) < 5 * math.sqrt(2 * counts_a.sum())
    assert len(first["seg"]) == len(repeat["seg"]) > 0
    for a_path, b_path in zip(first["seg"], repeat["seg"], strict=True):
        assert np.array_equal(
            pydicom.dcmread(a_path).pixel_array, pydicom.dcmread(b_path).pixel_array
        )


def test_a_consortium_run_with_no_variant_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    class _Silent:
        def start(self, total: int) -> None: ...

        def advance(self, description: str) -> None: ...

        def advance_by(self, units: int, description: str) -> None: ...

    with pytest.raises(ConcordoseError, match="no processing variant to run"):
        run_consortium(
            tmp_path / "run",
            sites=(consortium_site("milan"),),
            n_patients=1,
            preset="test",
            progress=_Silent(),
            variants=(),
        )
    assert not (tmp_path / "run").exists()
