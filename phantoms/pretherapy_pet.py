"""A virtual patient's pre-therapy [68Ga]Ga-DOTATATE PET/CT (issue 20, item 3a).

Model (documented in ``DESIGN.md``, "Pre-therapy PET dose prediction"): the PET sees the same
receptors as the therapy, so each VOI's PET uptake fraction equals its *post-therapy* peak uptake
fraction (the maximum over 0–168 h of the cycle-1 curve's A(t)/IA), times a per-VOI lognormal
factor (median 1, σ_ln :data:`SUV_LOGNORMAL_SIGMA`) standing for what the PET does not share
with the therapy (peptide mass, receptor saturation, timing, test–retest). The true SUVmean of a
VOI is therefore

    SUV = u_peak × W_g / V_mL × ε,   ε ~ LogNormal(0, σ_ln),

and the body remainder has a uniform :data:`BODY_SUV`. The PET cannot see the VOI's retention
(effective half-life), which the dose also depends on: with that and ε, the SUVmean–dose
relation is positive but imperfect, as Violet et al. found for [68Ga]Ga-PSMA-11 SUVmean against
[177Lu]Lu-PSMA-617 mean tumour dose (J Nucl Med 2019;60:517–523: significant correlation in
soft-tissue and bone metastases, considerable scatter). σ_ln = 0.35 is our assumption, not a
fitted value.

Image formation: the SUV map sampled at voxel centres on a PET grid of :data:`PET_VOXEL_MM`
covering the SPECT field of view, converted to Bq/mL decay-corrected to the scan start
(SUV × A_inj·exp(−λ·Δt) / W_g), blurred with a Gaussian of :data:`PET_FWHM_MM` (the resolution of
current PET/CT, 5–6 mm FWHM for Ga-68 with its positron range) and given multiplicative Gaussian
noise of :data:`PET_NOISE_COV` per voxel (off with ``noise=False``). The patient lies shifted by
up to :data:`PET_SHIFT_MAX_MM` per axis against the anatomy frame (its own PET/CT session, its
own frame of reference), so the PET's CT must be registered to the therapy's CT.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from concordose.phantoms.anatomy import (
    BODY_VALUE,
    OUTSIDE_VALUE,
    Ellipsoid,
    VoiType,
    sample_label_map,
    shape_volume_ml,
)
from concordose.phantoms.dicom_ct import hu_map, write_ct_series
from concordose.phantoms.dicom_pt import write_pt_series
from concordose.phantoms.dicom_seg import write_seg
from concordose.phantoms.dicom_study import PatientInfo, TimePointStudy
from concordose.phantoms.grid import VoxelGrid
from concordose.phantoms.lesion_shapes import IrregularLesion
from concordose.phantoms.presets import ct_grid_for, nm_grid_for
from concordose.phantoms.site_profiles import SiteProfile
from concordose.phantoms.uids import reproducible_uid
from concordose.phantoms.virtual_patient import INJECTED_ACTIVITY_MBQ, VirtualPatient

PET_RADIOPHARMACEUTICAL = "Ga-68 DOTATATE"
"""Radiopharmaceutical (0018,0031) of the pre-therapy PET."""
PET_NUCLIDE = "Ga-68"
"""The PET's radionuclide (radioactivedecay's spelling)."""
GA68_HALF_LIFE_S = 4062.6
"""Ga-68 half-life, s: 67.71 min (NNDC/ENSDF; ICRP-107 and radioactivedecay carry the same);
checked against :func:`concordose.nuclides.nuclide` in the tests."""
PET_INJECTED_ACTIVITY_MBQ = 150.0
"""[68Ga]Ga-DOTA-peptide activity, MBq (EANM guideline, Virgolini et al. Eur J Nucl Med Mol
Imaging 2010;37:2004–10: 100–200 MBq)."""
PET_UPTAKE_TIME_MIN = 60.0
"""Injection to scan start, min (same guideline: 45–90 min)."""
PET_DAYS_BEFORE_THERAPY = 14
"""The PET is acquired this many days before the first cycle's injection."""
PET_VOXEL_MM = 4.0
"""PET voxel edge, mm (a 4 mm reconstruction grid)."""
PET_FWHM_MM = 5.5
"""PET system resolution for Ga-68, FWHM mm (5–6 mm on current PET/CT; brief of issue 20)."""
PET_NOISE_COV = 0.10
"""Per-voxel noise, coefficient of variation (a 2-min-per-bed Ga-68 OSEM image, assumption)."""
SUV_LOGNORMAL_SIGMA = 0.35
"""σ of ln ε, the PET-vs-therapy uptake mismatch per VOI (module docstring; an assumption)."""
BODY_SUV = 1.0
"""SUV of the body remainder (soft-tissue/blood-pool background, assumption)."""
PET_SHIFT_MAX_MM = 8.0
"""Per-axis bound of the PET session's patient translation, mm."""
PEAK_SEARCH_TIMES_H = np.linspace(0.0, 168.0, 673)
"""Times over which a curve's peak uptake is taken, h (0.25 h steps)."""
PET_TRUTH_FORMAT = "concordose.pretherapy_pet"
PET_TRUTH_FORMAT_VERSION = 1


@dataclass(frozen=True)
class PetTruth:
    """What the generator put in one pre-therapy PET.

    Attributes:
        suv_by_label: true SUVmean (bw) per VOI label, before blur and noise.
        peak_uptake_fraction_by_label: post-therapy peak A(t)/IA per VOI (cycle 1).
        shift_mm: the patient's translation in the PET session (x, y, z), mm.
        injection_datetime, acquisition_datetime: Ga-68 injection and scan start (local).
        injected_activity_bq: Ga-68 activity at injection, Bq.
        weight_kg: patient weight, kg.
        grid: the PET grid (anatomy frame, before the shift).
    """

    suv_by_label: Mapping[str, float]
    peak_uptake_fraction_by_label: Mapping[str, float]
    shift_mm: tuple[float, float, float]
    injection_datetime: dt.datetime
    acquisition_datetime: dt.datetime
    injected_activity_bq: float
    weight_kg: float
    grid: VoxelGrid


@dataclass(frozen=True)
class GeneratedPet:
    """Files of one pre-therapy PET/CT: the PT slices, its CT slices, a SEG on its CT (only for a
    patient without therapy images), the truth sidecar, and the SUV map written (the truth the
    reader must reproduce; decay-corrected Bq/mL ÷ (A_inj·decay / W_g))."""

    pt_files: tuple[Path, ...]
    ct_files: tuple[Path, ...]
    seg_path: Path | None
    truth_path: Path
    truth: PetTruth
    suv_map: NDArray[np.float64]


def pet_grid_for(nm_grid: VoxelGrid, voxel_mm: float = PET_VOXEL_MM) -> VoxelGrid:
    """The PET grid: :data:`PET_VOXEL_MM` voxels covering ``nm_grid``'s field of view, same
    centre."""
    fov = nm_grid.field_of_view_mm_xyz
    columns, rows, slices = (max(1, math.ceil(extent / voxel_mm)) for extent in fov)
    return VoxelGrid.around(nm_grid.centre_mm_xyz, (slices, rows, columns), (voxel_mm,) * 3)


def true_suv_by_label(
    patient: VirtualPatient, rng: np.random.Generator, sigma: float = SUV_LOGNORMAL_SIGMA
) -> tuple[dict[str, float], dict[str, float]]:
    """The model's SUVmean per VOI and the peak uptake fraction it came from (module
    docstring). Draws one lognormal factor per VOI in segment order from ``rng``."""
    curves = patient.curves[min(patient.curves)]
    weight_g = patient.weight_kg * 1000.0
    suv: dict[str, float] = {}
    fractions: dict[str, float] = {}
    for voi in patient.anatomy.vois:
        peak_mbq = float(np.max(curves[voi.label].activity_mbq(PEAK_SEARCH_TIMES_H)))
        fraction = peak_mbq / INJECTED_ACTIVITY_MBQ
        volume_ml = _volume_ml(patient, voi.label)
        epsilon = float(np.exp(rng.normal(0.0, sigma)))
        fractions[voi.label] = fraction
        suv[voi.label] = fraction * weight_g / volume_ml * epsilon
    return suv, fractions


def _volume_ml(patient: VirtualPatient, label: str) -> float:
    shape = patient.anatomy.voi(label).shape
    if not isinstance(shape, Ellipsoid | IrregularLesion):
        raise TypeError(f"VOI {label!r}: expected a bounded shape, found {shape!r}")
    return float(shape_volume_ml(shape))


def suv_image(labels: NDArray[np.uint8], suv_by_value: Mapping[int, float]) -> NDArray[np.float64]:
    """SUV per voxel from a label map (outside: 0)."""
    lookup = np.zeros(256)
    for value, suv in suv_by_value.items():
        lookup[value] = suv
    lookup[OUTSIDE_VALUE] = 0.0
    image: NDArray[np.float64] = lookup[labels]
    return image


def generate_pretherapy_pet(
    patient: VirtualPatient,
    site: SiteProfile,
    folder: Path,
    *,
    seed: int,
    grid_preset: str,
    patient_info: PatientInfo,
    hu_by_value: Mapping[int, float],
    ct_noise_sd_hu: float,
    with_seg: bool,
    blur: bool = True,
    noise: bool = True,
    voxel_mm: float = PET_VOXEL_MM,
) -> GeneratedPet:
    """Write ``patient``'s pre-therapy PET/CT at ``site`` under ``folder``:
    ``dicom/pet/pt/NNNN.dcm``, ``dicom/pet/ct/NNNN.dcm`` (one study, one frame of reference),
    ``dicom/pet/seg.dcm`` when ``with_seg`` (a patient with no therapy images: the site draws
    its VOIs on the PET's CT) and ``pretherapy_pet.json`` (format :data:`PET_TRUTH_FORMAT`).
    Same arguments → same files.

    Args:
        patient: the virtual patient (its cycle-1 curves set the uptake).
        site: the site (equipment attributes; the PET is not the SPECT camera).
        seed: consortium seed: with the subject it seeds the uptake mismatch (the same at every
            site), with the site too the shift, noise and UIDs.
        grid_preset: the SPECT grid preset whose field of view the PET covers.
        patient_info: DICOM patient attributes (the same PatientID as the therapy images).
        hu_by_value: mean HU per label value for the PET's CT.
        ct_noise_sd_hu: Gaussian noise of that CT, HU (the therapy CTs').
        with_seg: also write a SEG of the VOIs on the PET's CT.
        blur, noise: switch the PET resolution and the voxel noise (tests of the SUV chain).
        voxel_mm: PET voxel edge, mm.
    """
    # The uptake mismatch is the patient's (the same at every site); shift and noise the site's.
    suv_by_label, fractions = true_suv_by_label(
        patient, np.random.default_rng([seed, int(patient.subject[1:]), 20])
    )
    rng = np.random.default_rng(
        [seed, zlib.crc32(site.site_id.encode()), int(patient.subject[1:]), 20]
    )
    shift = tuple(float(v) for v in rng.uniform(-1.0, 1.0, size=3) * PET_SHIFT_MAX_MM)
    shift_mm = (shift[0], shift[1], shift[2])
    minus_shift = (-shift_mm[0], -shift_mm[1], -shift_mm[2])
    nm_grid = nm_grid_for(site, grid_preset)
    pet_grid = pet_grid_for(nm_grid, voxel_mm)
    ct_grid = ct_grid_for(nm_grid, grid_preset)
    anatomy = patient.anatomy
    labels = sample_label_map(anatomy, pet_grid.translated(minus_shift))
    by_value = {voi.value: suv_by_label[voi.label] for voi in anatomy.vois}
    by_value[BODY_VALUE] = BODY_SUV
    suv = suv_image(labels, by_value)
    if blur:
        sigma_vox = [
            PET_FWHM_MM / (2.0 * math.sqrt(2.0 * math.log(2.0))) / s
            for s in (pet_grid.spacing_mm_zyx)
        ]
        suv = ndimage.gaussian_filter(suv, sigma=sigma_vox, mode="constant")
    if noise:
        suv = np.clip(suv * (1.0 + rng.normal(0.0, PET_NOISE_COV, size=suv.shape)), 0.0, None)

    first_injection = patient.injection_datetimes[min(patient.injection_datetimes)]
    injection = (first_injection - dt.timedelta(days=PET_DAYS_BEFORE_THERAPY)).replace(
        hour=8, minute=45, second=0, microsecond=0
    )
    acquired = injection + dt.timedelta(minutes=PET_UPTAKE_TIME_MIN)
    injected_bq = PET_INJECTED_ACTIVITY_MBQ * 1e6
    decay = math.exp(-math.log(2.0) * (acquired - injection).total_seconds() / GA68_HALF_LIFE_S)
    weight_g = patient.weight_kg * 1000.0
    bq_per_ml = suv * injected_bq * decay / weight_g

    key = f"concordose-consortium-pet|{site.site_id}|{seed}|{grid_preset}|{patient.subject}"
    study = TimePointStudy(
        index=1,
        time_h=PET_UPTAKE_TIME_MIN / 60.0,
        acquisition_datetime=acquired,
        study_instance_uid=reproducible_uid(key, "study"),
        frame_of_reference_uid=reproducible_uid(key, "frame-of-reference"),
        accession_number=f"G{seed % 10**8:08d}{int(patient.subject[1:]):03d}",
    )
    description = f"{PET_RADIOPHARMACEUTICAL} pre-therapy PET/CT"
    pet_dir = folder / "dicom" / "pet"
    pt_files = write_pt_series(
        pet_dir / "pt",
        bq_per_ml=bq_per_ml,
        grid=pet_grid,
        site=site,
        patient=patient_info,
        study=study,
        radiopharmaceutical=PET_RADIOPHARMACEUTICAL,
        injection_datetime=injection,
        injected_activity_bq=injected_bq,
        half_life_s=GA68_HALF_LIFE_S,
        series_instance_uid=reproducible_uid(key, "pt-series"),
        sop_instance_uids=[
            reproducible_uid(key, "pt-instance", k) for k in range(pet_grid.n_slices)
        ],
        study_description=description,
        series_description=f"PET {PET_RADIOPHARMACEUTICAL} AC",
    )
    ct_labels = sample_label_map(anatomy, ct_grid.translated(minus_shift))
    ct_written = write_ct_series(
        pet_dir / "ct",
        hu=hu_map(ct_labels, hu_by_value, noise_sd_hu=ct_noise_sd_hu, rng=rng),
        grid=ct_grid,
        site=site,
        patient=patient_info,
        study=study,
        series_instance_uid=reproducible_uid(key, "ct-series"),
        sop_instance_uids=[
            reproducible_uid(key, "ct-instance", k) for k in range(ct_grid.n_slices)
        ],
        study_description=description,
        series_description="CT AC low dose (PET)",
    )
    seg_path: Path | None = None
    if with_seg:
        seg_path = pet_dir / "seg.dcm"
        write_seg(
            seg_path,
            ct_slices=[ds for _, ds in ct_written],
            ct_labels=ct_labels,
            vois=anatomy.vois,
            series_instance_uid=reproducible_uid(key, "seg-series"),
            sop_instance_uid=reproducible_uid(key, "seg-instance"),
            content_datetime=acquired,
            uid_for_tracking=[reproducible_uid(key, "tracking", v.label) for v in anatomy.vois],
            dimension_organization_uid=reproducible_uid(key, "seg-dimension-org"),
        )
    truth = PetTruth(
        suv_by_label=suv_by_label,
        peak_uptake_fraction_by_label=fractions,
        shift_mm=shift_mm,
        injection_datetime=injection,
        acquisition_datetime=acquired,
        injected_activity_bq=injected_bq,
        weight_kg=patient.weight_kg,
        grid=pet_grid,
    )
    truth_path = folder / "pretherapy_pet.json"
    truth_path.write_text(json.dumps(pet_truth_document(truth, patient), indent=2) + "\n")
    return GeneratedPet(
        pt_files=tuple(pt_files),
        ct_files=tuple(path for path, _ in ct_written),
        seg_path=seg_path,
        truth_path=truth_path,
        truth=truth,
        suv_map=suv,
    )


def pet_truth_document(truth: PetTruth, patient: VirtualPatient) -> dict[str, Any]:
    """The ``pretherapy_pet.json`` sidecar (format :data:`PET_TRUTH_FORMAT` v1)."""
    types = {voi.label: voi.voi_type for voi in patient.anatomy.vois}
    return {
        "format": PET_TRUTH_FORMAT,
        "format_version": PET_TRUTH_FORMAT_VERSION,
        "subject": patient.subject,
        "radiopharmaceutical": PET_RADIOPHARMACEUTICAL,
        "injected_activity_bq": truth.injected_activity_bq,
        "injection_datetime": truth.injection_datetime.isoformat(),
        "acquisition_datetime": truth.acquisition_datetime.isoformat(),
        "weight_kg": truth.weight_kg,
        "shift_mm": list(truth.shift_mm),
        "model": {
            "suv": "peak post-therapy uptake fraction x weight_g / volume_ml x lognormal",
            "lognormal_sigma": SUV_LOGNORMAL_SIGMA,
            "body_suv": BODY_SUV,
            "fwhm_mm": PET_FWHM_MM,
            "noise_cov": PET_NOISE_COV,
        },
        "vois": [
            {
                "label": label,
                "voi_type": str(types[label]),
                "suv_mean": suv,
                "peak_uptake_fraction": truth.peak_uptake_fraction_by_label[label],
                "is_lesion": types[label] is VoiType.LESION,
            }
            for label, suv in truth.suv_by_label.items()
        ],
    }
