"""The digital patient: one Lu-177 DOTATATE patient at one site, from anatomy to DICOM files.

What is simulated: a uniform activity concentration per region (organs, lesions, body remainder)
following each region's true mono-exponential kinetics, sampled on the SPECT grid, converted to
expected counts with the site's calibration factor and Poisson-sampled. What is NOT (yet): camera
resolution (no blur, so no partial-volume effect), attenuation and scatter (the counts stand for a
fully corrected reconstruction), dead time. Truth is therefore exact on the SPECT voxel grid.
That is the default ``imaging="blur"`` mode here (the single patient is never blurred); with
``imaging="realistic"`` the activity map is projected with attenuation, depth-dependent
collimator response, scatter, dead time and Poisson noise, and reconstructed with the site's
OSEM (:mod:`phantoms.acquisition`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from concordose.phantoms.anatomy import (
    BODY_VALUE,
    OUTSIDE_VALUE,
    Anatomy,
    EllipticCylinder,
    Voi,
    default_anatomy,
    sample_label_map,
)
from concordose.phantoms.attenuation import ct_hu_on_grid
from concordose.phantoms.dicom_ct import anatomical_hu_slices, hu_map, write_ct_series
from concordose.phantoms.dicom_nm import RADIOPHARMACEUTICAL, write_nm
from concordose.phantoms.dicom_seg import write_seg
from concordose.phantoms.dicom_study import PatientInfo, TimePointStudy
from concordose.phantoms.imaging import ImagingMode, image_counts, region_activity_map
from concordose.phantoms.kinetics import MonoExponential, draw_truth_kinetics
from concordose.phantoms.presets import ct_grid_for, nm_grid_for, preset_named
from concordose.phantoms.site_profiles import DEFAULT_SITE, SiteProfile, sites_registry_document
from concordose.phantoms.uids import reproducible_uid
from concordose.phantoms.virtual_patient import INJECTED_ACTIVITY_MBQ, TISSUE_DENSITY_G_PER_ML

MAX_STORED_COUNTS = 65535
"""Largest count a uint16 NM pixel holds."""
GROUND_TRUTH_FORMAT = "concordose.ground_truth"
GROUND_TRUTH_FORMAT_VERSION = 1
CT_NOISE_SD_HU = 5.0
"""Gaussian CT noise, HU."""
HU_BY_LABEL: dict[str, float] = {
    "outside": -1000.0,
    "body": 40.0,
    "liver": 60.0,
    "kidney_left": 35.0,
    "kidney_right": 35.0,
    "spleen": 45.0,
    "lesion_1": 50.0,
    "lesion_2": 50.0,
}
"""Mean HU per region (soft-tissue values of a non-contrast low-dose CT)."""

_BASE_INJECTION = dt.datetime(2026, 3, 2, 9, 30, 0)
_DEFAULT_TIME_POINTS_H = (4.0, 24.0, 72.0, 168.0)


@dataclass(frozen=True)
class GeneratedPatient:
    """What :func:`generate_patient` wrote.

    Attributes:
        out_dir: the output folder.
        dicom_files: every DICOM file written: per time point the NM then its CT slices, then SEG.
        ground_truth_path: ``ground_truth.json`` (format in ``phantoms/README.md``).
        sites_path: ``sites.yaml`` holding this site's calibration record.
        site: the site profile used.
        patient_id: DICOM PatientID of the patient.
        nm_files: the NM file of each time point, in time order.
        seg_path: the SEG file (on the first time point's CT).
    """

    out_dir: Path
    dicom_files: tuple[Path, ...]
    ground_truth_path: Path
    sites_path: Path
    site: SiteProfile
    patient_id: str
    nm_files: tuple[Path, ...]
    seg_path: Path


def _validate(preset: str, time_points_h: Sequence[float]) -> tuple[float, ...]:
    preset_named(preset)
    times_h = tuple(float(t) for t in time_points_h)
    if not times_h:
        raise ValueError("time_points_h is empty; give at least one time point (h after injection)")
    if any(not np.isfinite(t) or t <= 0.0 for t in times_h):
        raise ValueError(
            f"time points must be positive finite hours after injection, got {times_h}"
        )
    if any(later <= earlier for earlier, later in itertools.pairwise(times_h)):
        raise ValueError(f"time points must be strictly increasing, got {times_h}")
    return times_h


def _expected_counts(
    labels: NDArray[np.uint8],
    *,
    anatomy: Anatomy,
    curves: dict[str, MonoExponential],
    n_voxels: dict[str, int],
    time_h: float,
    counts_per_mbq: float,
) -> NDArray[np.float64]:
    """Expected counts per voxel: A_region(t)/n_voxels_region × CF × acquisition duration."""
    counts_per_voxel_by_value = np.zeros(256)
    for region in (anatomy.body, *anatomy.vois):
        activity_mbq = float(curves[region.label].activity_mbq(time_h))
        counts_per_voxel_by_value[region.value] = (
            activity_mbq / n_voxels[region.label] * counts_per_mbq
        )
    expected: NDArray[np.float64] = counts_per_voxel_by_value[labels]
    return expected


def _voi_truth(
    region: Voi, curve: MonoExponential, n_voxels: int, voxel_ml: float, times_h: Sequence[float]
) -> dict[str, Any]:
    volume_ml = n_voxels * voxel_ml
    return {
        "label": region.label,
        "voi_type": str(region.voi_type),
        "segment_number": None if region.value == BODY_VALUE else region.value,
        "n_voxels_nm": n_voxels,
        "volume_ml": volume_ml,
        "mass_g": volume_ml * TISSUE_DENSITY_G_PER_ML,
        "kinetics": {
            "model": "mono_exponential",
            "a0_mbq": curve.a0_mbq,
            "lambda_eff_per_h": curve.lambda_eff_per_h,
            "teff_h": curve.teff_h,
        },
        "activity_mbq": [float(a) for a in curve.activity_mbq(np.asarray(times_h))],
        "tia_mbq_h": curve.tia_mbq_h,
    }


def _write_sites_yaml(path: Path, site: SiteProfile) -> None:
    document = sites_registry_document([site])
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def generate_patient(
    out_dir: Path,
    *,
    seed: int = 20261124,
    preset: str = "demo",
    site: SiteProfile = DEFAULT_SITE,
    time_points_h: Sequence[float] = _DEFAULT_TIME_POINTS_H,
    ct_slice_mm: float | None = None,
    imaging: ImagingMode = ImagingMode.BLUR,
) -> GeneratedPatient:
    """Generate one patient's SPECT/CT study at ``site`` and its ground truth under ``out_dir``.

    Writes ``dicom/tpNN/nm.dcm``, ``dicom/tpNN/ct/NNNN.dcm``, ``dicom/seg.dcm``,
    ``ground_truth.json`` and ``sites.yaml``. Same arguments → byte-identical files.

    Args:
        out_dir: output folder (created if missing).
        seed: seeds kinetics, patient attributes, CT noise, Poisson noise and UIDs.
        preset: grid size, ``"test"`` (48×48×32 SPECT, 2× voxels), ``"demo"`` (site's grid) or
            ``"clinical"`` (128×128×96 SPECT, 512×512 CT with ribs, spine, lungs; ≤ 3 mm slices).
        site: the site whose camera and calibration are simulated.
        time_points_h: acquisition starts in h after injection, positive and increasing.
        ct_slice_mm: ``clinical`` only: largest CT slice spacing instead of 3 mm (more, thinner
            slices over the same field of view: 1.415 → 300 slices). ``None`` (default) leaves
            the files exactly as without it.
        imaging: ``blur`` (default: the unblurred image above, Poisson per voxel) or
            ``realistic`` (projection, attenuation, CDR, scatter, dead time, OSEM).

    Raises:
        ValueError: on an unknown preset, no time point, a non-positive or non-increasing time
            point, counts that overflow uint16, or ``ct_slice_mm`` for a preset other than
            ``clinical`` or not positive.
    """
    times_h = _validate(preset, time_points_h)
    nm_grid = nm_grid_for(site, preset)
    ct_grid = ct_grid_for(nm_grid, preset, max_slice_mm=ct_slice_mm)
    anatomical_ct = preset_named(preset).anatomical_ct
    anatomy = default_anatomy()
    kinetics_seq, patient_seq, noise_seq = np.random.SeedSequence(seed).spawn(3)
    patient_rng = np.random.default_rng(patient_seq)
    curves = draw_truth_kinetics(
        anatomy, INJECTED_ACTIVITY_MBQ, np.random.default_rng(kinetics_seq)
    )
    noise_rng = np.random.default_rng(noise_seq)

    patient_key = f"concordose-phantom|{site.site_id}|{seed}|{preset}|{times_h}"
    if ct_slice_mm is not None:  # other UIDs than the default CT's; the default's unchanged
        patient_key += f"|ct_slice_mm={ct_slice_mm}"
    if imaging is ImagingMode.REALISTIC:
        patient_key += f"|imaging={imaging.value}"
    patient_id = f"{site.site_id.upper()}-{seed}"
    patient = PatientInfo(
        patient_id=patient_id,
        patient_name=f"PHANTOM^{site.site_id.upper()}{seed}",
        birth_date=dt.date(1955, 1, 1) + dt.timedelta(days=int(patient_rng.integers(0, 20 * 365))),
        sex=str(patient_rng.choice(["M", "F"])),
        weight_kg=round(float(patient_rng.uniform(60.0, 90.0)), 1),
        height_m=round(float(patient_rng.uniform(1.60, 1.85)), 2),
    )
    injection_datetime = _BASE_INJECTION + dt.timedelta(days=int(patient_rng.integers(0, 180)))

    nm_labels = sample_label_map(anatomy, nm_grid)
    ct_labels = sample_label_map(anatomy, ct_grid)
    value_by_label = {region.label: region.value for region in (anatomy.body, *anatomy.vois)}
    hu_by_value = {value_by_label[k]: v for k, v in HU_BY_LABEL.items() if k in value_by_label}
    hu_by_value[OUTSIDE_VALUE] = HU_BY_LABEL["outside"]
    n_voxels = {
        region.label: int(np.count_nonzero(nm_labels == region.value))
        for region in (anatomy.body, *anatomy.vois)
    }
    empty = [label for label, n in n_voxels.items() if n == 0]
    if empty:
        raise ValueError(f"regions {empty} contain no SPECT voxel centre on the {preset!r} grid")
    counts_per_mbq = site.calibration_factor_cps_per_mbq * site.acquisition_duration_s
    body_outline = anatomy.body.shape if isinstance(anatomy.body.shape, EllipticCylinder) else None

    out_dir.mkdir(parents=True, exist_ok=True)
    dicom_dir = out_dir / "dicom"
    dicom_files: list[Path] = []
    nm_files: list[Path] = []
    acquisition_datetimes: list[dt.datetime] = []
    first_ct: list[Any] = []
    for index, time_h in enumerate(times_h, start=1):
        acquired = injection_datetime + dt.timedelta(hours=time_h)
        acquired = acquired.replace(microsecond=0)
        acquisition_datetimes.append(acquired)
        study = TimePointStudy(
            index=index,
            time_h=time_h,
            acquisition_datetime=acquired,
            study_instance_uid=reproducible_uid(patient_key, "study", index),
            frame_of_reference_uid=reproducible_uid(patient_key, "frame-of-reference", index),
            accession_number=f"A{seed % 10**8:08d}{index:02d}",
        )
        counts: NDArray[np.integer[Any]]
        if imaging is ImagingMode.REALISTIC:
            activity, _ = region_activity_map(
                nm_labels,
                {
                    region.value: float(curves[region.label].activity_mbq(time_h))
                    for region in (anatomy.body, *anatomy.vois)
                },
            )
            counts = image_counts(
                activity,
                mode=imaging,
                site=site,
                voxel_mm_zyx=nm_grid.spacing_mm_zyx,
                blur_fwhm_mm=0.0,
                hu_on_grid=lambda: ct_hu_on_grid(
                    nm_labels,
                    nm_grid,
                    hu_by_value,
                    body=body_outline,
                    paint_over=(BODY_VALUE,),
                    anatomical=anatomical_ct,
                ),
                rng=noise_rng,
                noise=True,
                where=f"time point {time_h} h",
            ).counts
        else:
            expected = _expected_counts(
                nm_labels,
                anatomy=anatomy,
                curves=curves,
                n_voxels=n_voxels,
                time_h=time_h,
                counts_per_mbq=counts_per_mbq,
            )
            counts = noise_rng.poisson(expected)
        if int(counts.max()) > MAX_STORED_COUNTS:
            raise ValueError(
                f"time point {time_h} h: a SPECT voxel holds {int(counts.max())} counts, more than "
                f"uint16 stores ({MAX_STORED_COUNTS}); use a smaller voxel or shorter acquisition"
            )
        tp_dir = dicom_dir / f"tp{index:02d}"
        tp_dir.mkdir(parents=True, exist_ok=True)
        nm_path = tp_dir / "nm.dcm"
        write_nm(
            nm_path,
            counts=counts.astype(np.uint16),
            grid=nm_grid,
            site=site,
            patient=patient,
            study=study,
            injection_datetime=injection_datetime,
            injected_activity_mbq=INJECTED_ACTIVITY_MBQ,
            series_instance_uid=reproducible_uid(patient_key, "nm-series", index),
            sop_instance_uid=reproducible_uid(patient_key, "nm-instance", index),
        )
        nm_files.append(nm_path)
        dicom_files.append(nm_path)
        if anatomical_ct and isinstance(anatomy.body.shape, EllipticCylinder):
            ct_hu: Iterable[NDArray[np.int16]] = anatomical_hu_slices(
                ct_labels,
                ct_grid,
                hu_by_value,
                body=anatomy.body.shape,
                paint_over=(BODY_VALUE,),
                noise_sd_hu=CT_NOISE_SD_HU,
                rng=noise_rng,
            )
        else:
            ct_hu = hu_map(ct_labels, hu_by_value, noise_sd_hu=CT_NOISE_SD_HU, rng=noise_rng)
        ct_written = write_ct_series(
            tp_dir / "ct",
            hu=ct_hu,
            grid=ct_grid,
            site=site,
            patient=patient,
            study=study,
            series_instance_uid=reproducible_uid(patient_key, "ct-series", index),
            sop_instance_uids=[
                reproducible_uid(patient_key, "ct-instance", index, k)
                for k in range(ct_grid.n_slices)
            ],
        )
        dicom_files.extend(path for path, _ in ct_written)
        if index == 1:
            first_ct = [ds for _, ds in ct_written]

    seg_path = dicom_dir / "seg.dcm"
    write_seg(
        seg_path,
        ct_slices=first_ct,
        ct_labels=ct_labels,
        vois=anatomy.vois,
        series_instance_uid=reproducible_uid(patient_key, "seg-series"),
        sop_instance_uid=reproducible_uid(patient_key, "seg-instance"),
        content_datetime=acquisition_datetimes[0],
        uid_for_tracking=[reproducible_uid(patient_key, "tracking", v.label) for v in anatomy.vois],
        dimension_organization_uid=reproducible_uid(patient_key, "seg-dimension-organization"),
        omit_empty_frames=anatomical_ct,
    )
    dicom_files.append(seg_path)

    voxel_ml = nm_grid.voxel_volume_ml
    ground_truth = {
        "format": GROUND_TRUTH_FORMAT,
        "format_version": GROUND_TRUTH_FORMAT_VERSION,
        "seed": seed,
        "preset": preset,
        "imaging": imaging.value,
        "site": {
            "site_id": site.site_id,
            "calling_ae_title": site.calling_ae_title,
            "calibration_factor_cps_per_mbq": site.calibration_factor_cps_per_mbq,
            "acquisition_duration_s": site.acquisition_duration_s,
        },
        "patient": {
            "patient_id": patient.patient_id,
            "patient_name": patient.patient_name,
            "weight_kg": patient.weight_kg,
        },
        "radiopharmaceutical": RADIOPHARMACEUTICAL,
        "injected_activity_mbq": INJECTED_ACTIVITY_MBQ,
        "injection_datetime": injection_datetime.isoformat(),
        "time_points_h": list(times_h),
        "acquisition_datetimes": [a.isoformat() for a in acquisition_datetimes],
        "nm_voxel_mm": nm_grid.spacing_mm_xyz[0],
        "mass_density_g_per_ml": TISSUE_DENSITY_G_PER_ML,
        "vois": [
            _voi_truth(v, curves[v.label], n_voxels[v.label], voxel_ml, times_h)
            for v in anatomy.vois
        ],
        "body_remainder": _voi_truth(
            anatomy.body,
            curves[anatomy.body.label],
            n_voxels[anatomy.body.label],
            voxel_ml,
            times_h,
        ),
        "reference_method": (
            "tia_mbq_h is the analytic integral from injection to infinity of each region's true "
            "mono-exponential kinetics, A0/lambda_eff; activity_mbq is A0*exp(-lambda_eff*t) at "
            "each time point; volumes are voxel counts on the SPECT grid times the voxel volume."
        ),
    }
    ground_truth_path = out_dir / "ground_truth.json"
    ground_truth_path.write_text(json.dumps(ground_truth, indent=2) + "\n", encoding="utf-8")
    sites_path = out_dir / "sites.yaml"
    _write_sites_yaml(sites_path, site)

    return GeneratedPatient(
        out_dir=out_dir,
        dicom_files=tuple(dicom_files),
        ground_truth_path=ground_truth_path,
        sites_path=sites_path,
        site=site,
        patient_id=patient_id,
        nm_files=tuple(nm_files),
        seg_path=seg_path,
    )
