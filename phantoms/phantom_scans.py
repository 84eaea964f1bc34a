"""Per-site calibration phantom scans: DICOM NM + CT, the physicist's calibration sheet, truth.

For each site two scans are simulated with the site's own camera model (resolution, calibration
factor, acquisition time, voxel grid) exactly as its patients are:

* a uniform cylinder (for the calibration factor, CF);
* a NEMA IEC body phantom with hot spheres in a warm background (for recovery coefficients, RC).

Each scan's folder holds ``dicom/nm.dcm``, ``dicom/ct/NNNN.dcm``, ``calibration_sheet.yaml``
(what the physicist recorded: dose-calibrator readings, times, volumes; readings carry the site's
dose calibrator bias) and ``truth.json`` (what was really there). Formats: ``phantoms/README.md``.
The cylinder's sheet also records the site calibrator's traceability measurement: a certified
Lu-177 reference source read :data:`TRACEABILITY_N_READINGS` times on the calibrator the morning
of the fills (:func:`_traceability_record`), from which the library recovers the bias.
Acquisition-time decay (0.1 % over 20 min) is neglected as for the patients: counts = CF × T ×
activity at acquisition start.

Image formation follows the ``imaging`` mode exactly as the site's patients do
(:func:`phantoms.imaging.image_counts`): in ``realistic`` mode each scan is projected (μ map from
its CT's HU: water 0, lung insert −700, air −1000), acquired and reconstructed with the site's
OSEM, so ``concordose calibrate`` derives the CF and recovery of that image formation.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from concordose.calibration.phantom_geometry import (
    CYLINDER_DIAMETER_MM,
    CYLINDER_LENGTH_MM,
    PhantomKind,
    nema_iec_phantom,
    uniform_cylinder,
)
from concordose.calibration.sheet import SHEET_FORMAT, SHEET_FORMAT_VERSION
from concordose.nuclides import LU177
from concordose.phantoms.acquisition import RealisticSettings
from concordose.phantoms.attenuation import ct_hu_on_grid
from concordose.phantoms.dicom_ct import hu_map, write_ct_series
from concordose.phantoms.dicom_nm import write_nm
from concordose.phantoms.dicom_study import PatientInfo, TimePointStudy
from concordose.phantoms.grid import VoxelGrid
from concordose.phantoms.imaging import ImagingMode, analytic_sphere_recovery, image_counts
from concordose.phantoms.phantom_geometry import sphere_occupancy, voxel_centre_mask
from concordose.phantoms.presets import ct_grid_for, nm_grid_for
from concordose.phantoms.site_profiles import SiteProfile
from concordose.phantoms.uids import reproducible_uid

CALIBRATION_SHEET_FORMAT = SHEET_FORMAT
CALIBRATION_SHEET_FORMAT_VERSION = SHEET_FORMAT_VERSION
PHANTOM_TRUTH_FORMAT = "concordose.phantom_truth"
PHANTOM_TRUTH_FORMAT_VERSION = 1
PHANTOM_RADIOPHARMACEUTICAL = "Lu-177 chloride"
ACTIVITY_RELATIVE_UNCERTAINTY = 0.03
"""Stated (k=1) uncertainty of a dose-calibrator reading on the sheet (a typical 3 %)."""
SPHERE_STOCK_VOLUME_ML = 50.0
"""Volume of the sphere stock solution the spheres are filled from, mL."""
TRACEABILITY_CERTIFICATE_RELATIVE_UNCERTAINTY = 0.03
TRACEABILITY_CERTIFICATE_COVERAGE_FACTOR = 2.0
"""The reference source certificate's stated uncertainty, 3 % at k = 2 (1.5 % standard): a
modelling choice of this generator, of the order a secondary-standard laboratory states for a
Lu-177 vial. The certified activity itself is written exact (it *is* the source's true
activity): the certificate's error is not simulated, so its stated uncertainty is an upper
bound on the recovered bias's error here."""
TRACEABILITY_READING_REPEATABILITY = 0.005
"""Relative SD of one dose-calibrator reading of the reference source (0.5 %, a modelling choice
for a few hundred MBq in a well-type ionisation chamber)."""
TRACEABILITY_N_READINGS = 5
"""Repeated readings of the reference source."""
_SCAN_DAY = dt.date(2025, 12, 15)
_HU_WATER = 0.0
_HU_LUNG_INSERT = -700.0
_HU_AIR = -1000.0
_CT_NOISE_SD_HU = 5.0


@dataclass(frozen=True)
class PhantomScan:
    """One written phantom scan.

    Attributes:
        kind: which phantom.
        folder: the scan's folder.
        nm_path, ct_paths: the DICOM files.
        sheet_path: ``calibration_sheet.yaml``.
        truth_path: ``truth.json``.
        expected_counts: the noiseless reconstructed counts (shape of the NM grid), for tests; in
            ``realistic`` mode the reconstruction (noisy when the scan has noise).
        grid: the NM grid.
        sphere_to_background_ratio: the NEMA spheres' true C_S/C_B (None for the cylinder).
    """

    kind: PhantomKind
    folder: Path
    nm_path: Path
    ct_paths: tuple[Path, ...]
    sheet_path: Path
    truth_path: Path
    expected_counts: NDArray[np.float64]
    grid: VoxelGrid
    sphere_to_background_ratio: float | None = None


def _decay_factor(elapsed_h: float) -> float:
    return float(np.exp(-LU177.decay_constant_per_h * elapsed_h))


def _syringe_record(
    *,
    net_true_mbq: float,
    measured_at: dt.datetime,
    bias: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Dose-calibrator readings of a syringe (before and residual) as the physicist writes them.

    The residual is measured 10 min after the syringe; readings are true × (1 + bias).
    """
    residual_true_at_measure_mbq = float(rng.uniform(0.002, 0.01)) * net_true_mbq
    residual_at = measured_at + dt.timedelta(minutes=10)
    before_true_mbq = net_true_mbq + residual_true_at_measure_mbq / _decay_factor(1.0 / 6.0)
    scale = 1.0 + bias
    residual_reading = residual_true_at_measure_mbq * scale
    before_reading = before_true_mbq * scale
    net_reading = before_reading - residual_reading / _decay_factor(1.0 / 6.0)
    return {
        "syringe_activity_mbq": round(before_reading, 3),
        "syringe_measured_at": measured_at.isoformat(),
        "residual_activity_mbq": round(residual_reading, 3),
        "residual_measured_at": residual_at.isoformat(),
        "net_activity_mbq": round(net_reading, 3),
        "reference_datetime": measured_at.isoformat(),
        "activity_relative_uncertainty": ACTIVITY_RELATIVE_UNCERTAINTY,
    }


def _traceability_record(
    site: SiteProfile, *, seed: int, measured_at: dt.datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cylinder sheet's ``dose_calibrator_traceability`` block, and its truth.

    A Lu-177 reference source certified (300–600 MBq) at noon a week before the fills (6 d 20 h
    before ``measured_at``), read
    :data:`TRACEABILITY_N_READINGS` times one minute apart on the site's calibrator at the
    ``Lu-177`` setting: reading = true activity at that minute × (1 + bias) × (1 + ε), ε ~
    N(0, :data:`TRACEABILITY_READING_REPEATABILITY`). Its own random stream (seed, site, 4), so
    the scans' other numbers do not depend on it.
    """
    rng = np.random.default_rng([seed, zlib.crc32(site.site_id.encode()), 4])
    certified_at = measured_at - dt.timedelta(days=7, hours=-4)
    certified_mbq = round(float(rng.uniform(300.0, 600.0)), 1)
    readings = []
    for minute in range(TRACEABILITY_N_READINGS):
        at = measured_at + dt.timedelta(minutes=minute)
        true_mbq = certified_mbq * _decay_factor((at - certified_at) / dt.timedelta(hours=1))
        noise = 1.0 + TRACEABILITY_READING_REPEATABILITY * float(rng.standard_normal())
        readings.append(
            {
                "measured_at": at.isoformat(),
                "reading_mbq": round(true_mbq * (1.0 + site.dose_calibrator_bias) * noise, 2),
            }
        )
    block = {
        "method": "reference_source",
        "dose_calibrator": f"{site.institution_name} hot-lab dose calibrator",
        "calibrator_setting": "Lu-177",
        "source": {
            "source_id": f"LU177-REF-{site.site_id.upper()}",
            "certificate": "digital consortium reference laboratory, certificate "
            f"DC-{certified_at:%Y%m%d}-{site.site_id}",
            "nuclide": "Lu-177",
            "certified_activity_mbq": certified_mbq,
            "certified_at": certified_at.isoformat(),
            "certificate_relative_uncertainty": TRACEABILITY_CERTIFICATE_RELATIVE_UNCERTAINTY,
            "certificate_coverage_factor": TRACEABILITY_CERTIFICATE_COVERAGE_FACTOR,
        },
        "readings": readings,
    }
    truth = {
        "dose_calibrator_bias": site.dose_calibrator_bias,
        "reference_source_true_activity_mbq": certified_mbq,
        "reference_source_certified_at": certified_at.isoformat(),
        "certificate_error": 0.0,
        "reading_relative_repeatability": TRACEABILITY_READING_REPEATABILITY,
        "n_readings": TRACEABILITY_N_READINGS,
    }
    return block, truth


def _patient_info(site: SiteProfile, kind: PhantomKind, water_kg: float) -> PatientInfo:
    short = "CYL" if kind is PhantomKind.UNIFORM_CYLINDER else "NEMA"
    return PatientInfo(
        patient_id=f"QC-{short}-{site.site_id.upper()}",
        patient_name=f"QC^{kind.value.upper()}",
        birth_date=dt.date(2000, 1, 1),
        sex="O",
        weight_kg=round(water_kg, 1),
        height_m=0.2,
    )


def _write_dicom(
    folder: Path,
    *,
    site: SiteProfile,
    kind: PhantomKind,
    grid: VoxelGrid,
    counts: NDArray[np.uint16],
    hu: NDArray[np.int16],
    ct_grid: VoxelGrid,
    acquired: dt.datetime,
    reference: dt.datetime,
    recorded_total_mbq: float,
    water_kg: float,
    key: str,
) -> tuple[Path, tuple[Path, ...], TimePointStudy]:
    study = TimePointStudy(
        index=1,
        time_h=(acquired - reference) / dt.timedelta(hours=1),
        acquisition_datetime=acquired,
        study_instance_uid=reproducible_uid(key, "study"),
        frame_of_reference_uid=reproducible_uid(key, "frame-of-reference"),
        accession_number=f"QC{zlib.crc32(key.encode()) % 10**8:08d}",
    )
    patient = _patient_info(site, kind, water_kg)
    description = f"QC {kind.value} Lu177 SPECT [{site.recon.description} AC SC]"
    nm_path = folder / "dicom" / "nm.dcm"
    nm_path.parent.mkdir(parents=True, exist_ok=True)
    write_nm(
        nm_path,
        counts=counts,
        grid=grid,
        site=site,
        patient=patient,
        study=study,
        injection_datetime=reference,
        injected_activity_mbq=recorded_total_mbq,
        series_instance_uid=reproducible_uid(key, "nm-series"),
        sop_instance_uid=reproducible_uid(key, "nm-instance"),
        radiopharmaceutical=PHANTOM_RADIOPHARMACEUTICAL,
        series_description=description,
        study_description=f"QC {kind.value} Lu-177 calibration",
    )
    ct_written = write_ct_series(
        folder / "dicom" / "ct",
        hu=hu,
        grid=ct_grid,
        site=site,
        patient=patient,
        study=study,
        series_instance_uid=reproducible_uid(key, "ct-series"),
        sop_instance_uids=[
            reproducible_uid(key, "ct-instance", k) for k in range(ct_grid.n_slices)
        ],
        study_description=f"QC {kind.value} Lu-177 calibration",
        series_description=f"QC {kind.value} CT AC",
    )
    return nm_path, tuple(path for path, _ in ct_written), study


def _scan_block(
    site: SiteProfile, study: TimePointStudy, nm_path: Path, folder: Path
) -> dict[str, Any]:
    return {
        "nm_file": str(nm_path.relative_to(folder)),
        "ct_folder": str((nm_path.parent / "ct").relative_to(folder)),
        "study_instance_uid": str(study.study_instance_uid),
        "acquisition_start": study.acquisition_datetime.isoformat(),
        "acquisition_duration_s": site.acquisition_duration_s,
        "camera_model": site.camera_model,
        "collimator": site.collimator,
        "reconstruction": site.recon.description,
    }


def _sheet_header(site: SiteProfile, kind: PhantomKind) -> dict[str, Any]:
    return {
        "format": CALIBRATION_SHEET_FORMAT,
        "format_version": CALIBRATION_SHEET_FORMAT_VERSION,
        "site_id": site.site_id,
        "phantom": kind.value,
        "radionuclide": "Lu-177",
        "dose_calibrator_setting": "Lu-177",
    }


def _truth_header(
    site: SiteProfile,
    kind: PhantomKind,
    seed: int,
    preset: str,
    offset_mm: NDArray[np.float64],
    *,
    imaging: ImagingMode,
    live_fraction: float | None,
) -> dict[str, Any]:
    realistic = imaging is ImagingMode.REALISTIC
    return {
        "format": PHANTOM_TRUTH_FORMAT,
        "format_version": PHANTOM_TRUTH_FORMAT_VERSION,
        "site_id": site.site_id,
        "phantom": kind.value,
        "seed": seed,
        "preset": preset,
        "setup_offset_mm": [float(v) for v in offset_mm],
        "calibration_factor_cps_per_mbq": site.calibration_factor_cps_per_mbq,
        "dose_calibrator_bias": site.dose_calibrator_bias,
        # what the phantom's readings give without the traceability correction
        "calibration_factor_from_sheet_cps_per_mbq": site.calibration_factor_cps_per_mbq
        / (1.0 + site.dose_calibrator_bias),
        "effective_fwhm_mm": None if realistic else site.effective_fwhm_mm,
        "acquisition_duration_s": site.acquisition_duration_s,
        "nm_voxel_mm": None,
        "imaging": imaging.value,
        "dead_time_live_fraction": live_fraction,
    }


def _write_outputs(folder: Path, sheet: dict[str, Any], truth: dict[str, Any]) -> tuple[Path, Path]:
    sheet_path = folder / "calibration_sheet.yaml"
    sheet_path.write_text(
        yaml.safe_dump(sheet, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    truth_path = folder / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return sheet_path, truth_path


def scan_cylinder(
    site: SiteProfile,
    folder: Path,
    *,
    seed: int,
    preset: str,
    noise: bool = True,
    imaging: ImagingMode = ImagingMode.BLUR,
    realistic: RealisticSettings | None = None,
) -> PhantomScan:
    """Simulate and write the uniform-cylinder scan of ``site`` into ``folder``."""
    rng = np.random.default_rng([seed, zlib.crc32(site.site_id.encode()), 1])
    kind = PhantomKind.UNIFORM_CYLINDER
    grid = nm_grid_for(site, preset)
    ct_grid = ct_grid_for(grid, preset)
    offset = np.array([rng.uniform(-10, 10), rng.uniform(-10, 10), rng.uniform(-5, 5)])
    cylinder = uniform_cylinder((float(offset[0]), float(offset[1]), float(offset[2])))
    reference = dt.datetime.combine(_SCAN_DAY, dt.time(9, 0))
    acquired = reference + dt.timedelta(hours=2)
    net_true_mbq = float(rng.uniform(800.0, 1200.0))
    true_at_scan_mbq = net_true_mbq * _decay_factor(2.0)
    mask = voxel_centre_mask(cylinder, grid)
    activity = np.where(mask, true_at_scan_mbq / np.count_nonzero(mask), 0.0)
    formed = image_counts(
        activity,
        mode=imaging,
        site=site,
        voxel_mm_zyx=grid.spacing_mm_zyx,
        blur_fwhm_mm=site.effective_fwhm_mm,
        hu_on_grid=lambda: ct_hu_on_grid(mask.astype(np.uint8), grid, {0: _HU_AIR, 1: _HU_WATER}),
        rng=rng,
        noise=noise,
        where=f"{site.site_id} cylinder",
        realistic=realistic,
    )
    expected, counts = formed.image, formed.counts
    ct_labels = voxel_centre_mask(cylinder, ct_grid)
    hu = hu_map(
        ct_labels.astype(np.uint8),
        {0: _HU_AIR, 1: _HU_WATER},
        noise_sd_hu=_CT_NOISE_SD_HU,
        rng=rng,
    )
    folder.mkdir(parents=True, exist_ok=True)
    record = _syringe_record(
        net_true_mbq=net_true_mbq, measured_at=reference, bias=site.dose_calibrator_bias, rng=rng
    )
    traceability, traceability_truth = _traceability_record(
        site, seed=seed, measured_at=reference - dt.timedelta(hours=1)
    )
    key = f"concordose-phantom-scan|{site.site_id}|{seed}|{preset}|{kind.value}"
    nm_path, ct_paths, study = _write_dicom(
        folder,
        site=site,
        kind=kind,
        grid=grid,
        counts=counts,
        hu=hu,
        ct_grid=ct_grid,
        acquired=acquired,
        reference=reference,
        recorded_total_mbq=record["net_activity_mbq"],
        water_kg=cylinder.volume_ml / 1000.0,
        key=key,
    )
    sheet = {
        **_sheet_header(site, kind),
        "phantom_model": (
            f"flangeless uniform cylinder, {CYLINDER_DIAMETER_MM:g} mm inner diameter × "
            f"{CYLINDER_LENGTH_MM:g} mm inner length"
        ),
        "scan": _scan_block(site, study, nm_path, folder),
        "fill": {"phantom_volume_ml": round(cylinder.volume_ml, 1), **record},
        "dose_calibrator_traceability": traceability,
    }
    truth = {
        **_truth_header(
            site,
            kind,
            seed,
            preset,
            offset,
            imaging=imaging,
            live_fraction=formed.dead_time_live_fraction,
        ),
        "nm_voxel_mm": grid.spacing_mm_xyz[0],
        "phantom_volume_ml": cylinder.volume_ml,
        "true_activity_at_reference_mbq": net_true_mbq,
        "true_activity_at_scan_start_mbq": true_at_scan_mbq,
        # realistic: CF × T × activity (the reconstruction's total is a measurement, not truth)
        "expected_total_counts": float(expected.sum())
        if imaging is ImagingMode.BLUR
        else true_at_scan_mbq * site.calibration_factor_cps_per_mbq * site.acquisition_duration_s,
        "noise": noise,
        "dose_calibrator_traceability": traceability_truth,
    }
    sheet_path, truth_path = _write_outputs(folder, sheet, truth)
    return PhantomScan(
        kind=kind,
        folder=folder,
        nm_path=nm_path,
        ct_paths=ct_paths,
        sheet_path=sheet_path,
        truth_path=truth_path,
        expected_counts=expected,
        grid=grid,
    )


SPHERE_TO_BACKGROUND_RATIOS = (4.0, 5.0, 8.0, 10.0)
"""Sphere-to-background concentration ratios a site may have filled (one chosen per site)."""


def scan_nema(
    site: SiteProfile,
    folder: Path,
    *,
    seed: int,
    preset: str,
    noise: bool = True,
    imaging: ImagingMode = ImagingMode.BLUR,
    realistic: RealisticSettings | None = None,
    ratio: float | None = None,
    stream: int = 2,
) -> PhantomScan:
    """Simulate and write the NEMA IEC body phantom scan of ``site`` into ``folder``.

    The activity map uses each sphere's exact volume fraction per voxel (supersampled), the
    background fills the body minus spheres and lung insert (voxel-centre sampling).
    ``ratio``: the sphere-to-background ratio filled (None: drawn from
    :data:`SPHERE_TO_BACKGROUND_RATIOS`, the site's one scan); ``stream``: the random stream of
    this scan (a second scan of the same site draws its own noise and position).
    """
    rng = np.random.default_rng([seed, zlib.crc32(site.site_id.encode()), stream])
    kind = PhantomKind.NEMA_IEC_BODY
    grid = nm_grid_for(site, preset)
    ct_grid = ct_grid_for(grid, preset)
    offset = np.array([rng.uniform(-10, 10), rng.uniform(-10, 10), rng.uniform(-5, 5)])
    phantom = nema_iec_phantom((float(offset[0]), float(offset[1]), float(offset[2])))
    reference = dt.datetime.combine(_SCAN_DAY, dt.time(13, 0))
    acquired = reference + dt.timedelta(hours=2)
    drawn_ratio = float(rng.choice(SPHERE_TO_BACKGROUND_RATIOS))
    ratio = drawn_ratio if ratio is None else float(ratio)
    background_volume_ml = (
        phantom.body.volume_ml
        - phantom.lung_insert.volume_ml
        - sum(s.volume_ml for s in phantom.spheres)
    )
    background_true_mbq = float(rng.uniform(300.0, 450.0))
    background_conc_ref = background_true_mbq / background_volume_ml
    sphere_conc_ref = ratio * background_conc_ref
    stock_true_mbq = sphere_conc_ref * SPHERE_STOCK_VOLUME_ML
    decay = _decay_factor(2.0)

    voxel_ml = grid.voxel_volume_ml
    occupancy = np.zeros(grid.shape_zyx)
    for sphere in phantom.spheres:
        occupancy += sphere_occupancy(sphere, grid)
    body = voxel_centre_mask(phantom.body, grid) & ~voxel_centre_mask(phantom.lung_insert, grid)
    concentration = background_conc_ref * decay * np.clip(body - occupancy, 0.0, None)
    concentration += sphere_conc_ref * decay * occupancy
    activity = concentration * voxel_ml
    nm_labels = voxel_centre_mask(phantom.body, grid).astype(np.uint8)
    nm_labels[voxel_centre_mask(phantom.lung_insert, grid)] = 2
    formed = image_counts(
        activity,
        mode=imaging,
        site=site,
        voxel_mm_zyx=grid.spacing_mm_zyx,
        blur_fwhm_mm=site.effective_fwhm_mm,
        hu_on_grid=lambda: ct_hu_on_grid(
            nm_labels, grid, {0: _HU_AIR, 1: _HU_WATER, 2: _HU_LUNG_INSERT}
        ),
        rng=rng,
        noise=noise,
        where=f"{site.site_id} NEMA",
        realistic=realistic,
    )
    expected, counts = formed.image, formed.counts
    realistic_mode = imaging is ImagingMode.REALISTIC
    counts_per_mbq = site.calibration_factor_cps_per_mbq * site.acquisition_duration_s
    sphere_truth = []
    for sphere in phantom.spheres:
        mask = voxel_centre_mask(sphere, grid)
        rc_hot = analytic_sphere_recovery(sphere.diameter_mm, site.effective_fwhm_mm)
        measured_conc = (
            float(expected[mask].mean()) / counts_per_mbq / voxel_ml
            # realistic with noise: the reconstruction is noisy, so no noiseless RC
            if mask.any() and not (realistic_mode and noise)
            else None
        )
        sphere_truth.append(
            {
                "label": sphere.label,
                "diameter_mm": sphere.diameter_mm,
                "volume_ml": sphere.volume_ml,
                "centre_mm": list(sphere.centre_mm),
                "n_voxels_nm": int(mask.sum()),
                "true_concentration_at_scan_start_mbq_per_ml": sphere_conc_ref * decay,
                "rc_analytic_hot_sphere": None if realistic_mode else rc_hot,
                "rc_analytic_in_background": None
                if realistic_mode
                else rc_hot + (1.0 - rc_hot) / ratio,
                "rc_noiseless_voxel_centre_voi": None
                if measured_conc is None
                else measured_conc / (sphere_conc_ref * decay),
            }
        )

    ct_labels = voxel_centre_mask(phantom.body, ct_grid).astype(np.uint8)
    ct_labels[voxel_centre_mask(phantom.lung_insert, ct_grid)] = 2
    hu = hu_map(
        ct_labels,
        {0: _HU_AIR, 1: _HU_WATER, 2: _HU_LUNG_INSERT},
        noise_sd_hu=_CT_NOISE_SD_HU,
        rng=rng,
    )
    folder.mkdir(parents=True, exist_ok=True)
    bias = site.dose_calibrator_bias
    background_record = _syringe_record(
        net_true_mbq=background_true_mbq, measured_at=reference, bias=bias, rng=rng
    )
    stock_record = _syringe_record(
        # The stock is measured 30 min before the background reference time.
        net_true_mbq=stock_true_mbq / _decay_factor(0.5),
        measured_at=reference - dt.timedelta(minutes=30),
        bias=bias,
        rng=rng,
    )
    recorded_total = background_record["net_activity_mbq"] + stock_record["net_activity_mbq"] * (
        sum(s.volume_ml for s in phantom.spheres) / SPHERE_STOCK_VOLUME_ML
    )
    key = f"concordose-phantom-scan|{site.site_id}|{seed}|{preset}|{kind.value}"
    nm_path, ct_paths, study = _write_dicom(
        folder,
        site=site,
        kind=kind,
        grid=grid,
        counts=counts,
        hu=hu,
        ct_grid=ct_grid,
        acquired=acquired,
        reference=reference,
        recorded_total_mbq=round(recorded_total, 3),
        water_kg=phantom.body.volume_ml / 1000.0,
        key=key,
    )
    sheet = {
        **_sheet_header(site, kind),
        "phantom_model": "NEMA IEC body phantom (IEC 61675-1), six spheres, lung insert cold",
        "scan": _scan_block(site, study, nm_path, folder),
        "fill": {
            "background": {
                "volume_ml": round(background_volume_ml, 1),
                **background_record,
                "concentration_mbq_per_ml": round(
                    background_record["net_activity_mbq"] / background_volume_ml, 6
                ),
            },
            "spheres": {
                "stock_volume_ml": SPHERE_STOCK_VOLUME_ML,
                **stock_record,
                "concentration_mbq_per_ml": round(
                    stock_record["net_activity_mbq"] / SPHERE_STOCK_VOLUME_ML, 6
                ),
                "inner_diameters_mm": [s.diameter_mm for s in phantom.spheres],
                "volumes_ml": [round(s.volume_ml, 3) for s in phantom.spheres],
            },
            "sphere_to_background_ratio": ratio,
        },
    }
    truth = {
        **_truth_header(
            site,
            kind,
            seed,
            preset,
            offset,
            imaging=imaging,
            live_fraction=formed.dead_time_live_fraction,
        ),
        "nm_voxel_mm": grid.spacing_mm_xyz[0],
        "sphere_to_background_ratio": ratio,
        "background_volume_ml": background_volume_ml,
        "true_background_concentration_at_scan_start_mbq_per_ml": background_conc_ref * decay,
        "spheres": sphere_truth,
        "rc_definition": (
            "mean reconstructed concentration in the voxels whose centres lie in the sphere, "
            "divided by the true sphere concentration at scan start (no background subtraction); "
            "rc_analytic_hot_sphere is the same for a hot sphere in a cold background without "
            "voxelisation (Gaussian of the site's effective FWHM); rc_analytic_in_background adds "
            "the spill-in of an infinite uniform background, rc + (1 - rc)/ratio"
        ),
        "noise": noise,
    }
    sheet_path, truth_path = _write_outputs(folder, sheet, truth)
    return PhantomScan(
        kind=kind,
        folder=folder,
        nm_path=nm_path,
        ct_paths=ct_paths,
        sheet_path=sheet_path,
        truth_path=truth_path,
        expected_counts=expected,
        grid=grid,
        sphere_to_background_ratio=ratio,
    )


EARL_SPHERE_TO_BACKGROUND_RATIOS = (4.0, 10.0)
"""The two sphere-to-background ratios the EARL accreditation (and NEMA NU 2) fill the NEMA IEC
body phantom at: 4:1 and 10:1."""
SECOND_CONTRAST_FOLDER = f"{PhantomKind.NEMA_IEC_BODY.value}_second_contrast"
"""Folder (under ``phantoms/``) of a site's second NEMA scan."""


def second_contrast_ratio(first_ratio: float) -> float:
    """The ratio of a site's second NEMA fill: the EARL ratio farther from its first one (10:1
    after a 4:1 or 5:1 fill, 4:1 after 8:1 or 10:1), so the two span a factor ≥ 2."""
    low, high = EARL_SPHERE_TO_BACKGROUND_RATIOS
    return high if abs(first_ratio - low) < abs(first_ratio - high) else low


def scan_nema_second_contrast(
    site: SiteProfile,
    site_folder: Path,
    first: PhantomScan,
    *,
    seed: int,
    preset: str,
    noise: bool = True,
    imaging: ImagingMode = ImagingMode.BLUR,
    realistic: RealisticSettings | None = None,
) -> PhantomScan:
    """The site's NEMA phantom filled again at the other EARL ratio
    (:func:`second_contrast_ratio` of ``first``'s) and scanned with the same protocol, under
    ``site_folder/phantoms/`` :data:`SECOND_CONTRAST_FOLDER`: the second contrast from which
    calibration measures the contrast dependence of the lesion threshold
    (``quant.delineation.ThresholdSurface``)."""
    if first.sphere_to_background_ratio is None:
        raise ValueError(f"{first.folder} is not a NEMA scan (no sphere-to-background ratio)")
    return scan_nema(
        site,
        site_folder / "phantoms" / SECOND_CONTRAST_FOLDER,
        seed=seed,
        preset=preset,
        noise=noise,
        imaging=imaging,
        realistic=realistic,
        ratio=second_contrast_ratio(first.sphere_to_background_ratio),
        stream=3,
    )


def scan_site_phantoms(
    site: SiteProfile,
    site_folder: Path,
    *,
    seed: int,
    preset: str,
    noise: bool = True,
    imaging: ImagingMode = ImagingMode.BLUR,
    realistic: RealisticSettings | None = None,
) -> tuple[PhantomScan, PhantomScan]:
    """Both phantom scans of ``site`` under ``site_folder/phantoms/<phantom>/``, formed in the
    ``imaging`` mode (the patients' mode, so the calibration they give applies to them)."""
    base = site_folder / "phantoms"
    return (
        scan_cylinder(
            site,
            base / PhantomKind.UNIFORM_CYLINDER.value,
            seed=seed,
            preset=preset,
            noise=noise,
            imaging=imaging,
            realistic=realistic,
        ),
        scan_nema(
            site,
            base / PhantomKind.NEMA_IEC_BODY.value,
            seed=seed,
            preset=preset,
            noise=noise,
            imaging=imaging,
            realistic=realistic,
        ),
    )
