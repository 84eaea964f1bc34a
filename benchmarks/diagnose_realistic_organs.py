"""Why organs miss their truth under realistic imaging: quantification, PSF model or background.

Run: ``.venv/bin/python -m benchmarks.diagnose_realistic_organs [--preset test|demo]
[--sites a,b] [--patients 1,2] [--time-points 1,3] [--noise] [--json FILE]``.

Not a timing. For each site it calibrates as the platform does (the site's realistic phantom
scans, noisy, through ``calibration.calibrate.calibrate_site``: CF from the cylinder, the
effective Gaussian PSF from the NEMA spheres), then re-forms each patient time point of the
consortium (:func:`phantoms.consortium.patient_scene`: the exact activity map, labels and μ map
the generator images; anatomy realism off, so the VOIs are the true outlines) through the
realistic chain without noise (unless ``--noise``), and prints per VOI:

* ``truth``: the true activity at acquisition (MBq);
* ``raw/trueCF``, ``raw/recCF``: the activity measured over the true outline with the true CF
  and with the record's CF, as % error (a large organ's raw error is a quantification bias, not
  a partial-volume one: its spill-out is a thin shell);
* ``gtm``: the GTM as the pipeline runs it (record CF, the record's PSF as
  ``quant.pvc.psf_from_record`` reads it, body outline from the image), % error;
* ``gtm/body``: the same with the true body as background region (isolates the outline);
* ``gtm/true``: the GTM with the *true* transfer matrix of the imaging chain, % error. Ω's
  column j is the chain's response to region j, by perturbation: (image(A + ε·A_j) −
  image(A))/ε, ε = :data:`PERTURBATION` (noise-free). The reconstruction is homogeneous of
  degree 1 in the data (MLEM is scale-free; the scatter estimate scales with the primary), so
  the responses sum to the image up to dead time and OSEM's non-linearity; the difference
  between ``gtm/body`` and ``gtm/true`` is the error of the Gaussian PSF model alone;
* ``ω_self``: the VOI's self-recovery (spread of itself averaged over itself), true chain vs
  the record's Gaussian;
* ``ω_bg``: the background's spill-in into the VOI per unit background concentration, true vs
  Gaussian;
* ``FWHM≡``: the Gaussian FWHM whose self-recovery of the VOI equals the true chain's (the
  chain's resolution for that object, one number), to set against the record's fitted FWHM.

The whole-body line compares the image total with the true total (true CF): a global
quantification bias shows there.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq

from concordose.calibration.calibrate import calibrate_site
from concordose.calibration.records import CalibrationRecord
from concordose.phantoms.acquisition import realistic_image
from concordose.phantoms.anatomy import OUTSIDE_VALUE
from concordose.phantoms.consortium import (
    CONSORTIUM_PRESETS,
    ConsortiumPreset,
    Realism,
    patient_scene,
    site_protocol,
)
from concordose.phantoms.imaging import ImagingMode
from concordose.phantoms.phantom_scans import scan_site_phantoms
from concordose.phantoms.protocols import DEFAULT_PROTOCOL
from concordose.phantoms.protocols import protocol as protocol_named
from concordose.phantoms.site_profiles import CONSORTIUM_SITES, SiteProfile, consortium_site
from concordose.phantoms.virtual_patient import VirtualPatient, draw_virtual_patient
from concordose.quant.gtm import (
    RegionWeights,
    body_outline,
    gtm_correct,
    sigma_voxels,
    spread_matrix,
)
from concordose.quant.pvc import psf_from_record
from concordose.quant.voi import CroppedMask
from concordose.reconstruction.attenuation import mu_per_mm_from_hu
from concordose.reconstruction.protocol import SiteReconstruction

SEED = 20261124
"""The consortium's default seed (``phantoms.consortium.generate_consortium``)."""
PERTURBATION = 0.05
"""Relative activity added to one region to measure the chain's response to it."""

FloatArray = NDArray[np.float64]


def site_record(
    site: SiteProfile,
    grid_preset: str,
    folder: Path,
    *,
    reconstruction: SiteReconstruction | None = None,
) -> CalibrationRecord:
    """The site's calibration record from its realistic, noisy phantom scans (with the window's
    scatter fitted through ``reconstruction`` when given, as ``concordose calibrate`` does for
    a protocol whose model images through it)."""
    cylinder, nema = scan_site_phantoms(
        site, folder, seed=SEED, preset=grid_preset, noise=True, imaging=ImagingMode.REALISTIC
    )
    calibration = calibrate_site(
        site_id=site.site_id,
        cylinder_sheet=cylinder.sheet_path,
        nema_sheet=nema.sheet_path,
        record_id=f"{site.site_id}-diagnosis",
        valid_from=date(2026, 1, 1),
        ledger=None,
        reconstruction=reconstruction,
    )
    return calibration.record


def _crop(mask: NDArray[np.bool_]) -> CroppedMask:
    where = np.nonzero(mask)
    box = tuple(slice(int(w.min()), int(w.max()) + 1) for w in where)
    return CroppedMask((box[0], box[1], box[2]), mask[box].copy())


@dataclass(frozen=True)
class VoiDiagnosis:
    """One VOI at one time point (errors relative to truth)."""

    label: str
    voi_type: str
    volume_ml: float
    truth_mbq: float
    raw_true_cf: float
    raw_record_cf: float
    gtm_pipeline: float
    gtm_true_body: float
    gtm_true_matrix: float
    omega_self_true: float
    omega_self_gauss: float
    omega_background_true: float
    omega_background_gauss: float
    equivalent_fwhm_mm: float


def diagnose_time_point(
    site: SiteProfile,
    record: CalibrationRecord,
    *,
    number: int,
    index: int,
    preset: str,
    noise: bool,
) -> tuple[list[VoiDiagnosis], dict[str, float]]:
    """Every VOI of patient ``number`` at time point ``index`` (cycle 1, 1-based; negative counts
    from the last, ``-1`` the last) at ``site``; the totals say which time point it was.

    Raises:
        ValueError: ``index`` names no time point of the patient's schedule.
    """
    patient, chosen, realism = diagnosed_patient(site, number, preset)
    index = time_point_number(patient, index)
    scene = patient_scene(patient, site, preset=chosen, realism=realism, cycle=1, index=index)
    voxel_mm = scene.grid.spacing_mm_zyx[0]
    voxel_ml = scene.grid.voxel_volume_ml
    mu = mu_per_mm_from_hu(scene.hu_on_grid())
    rng = np.random.default_rng([SEED, zlib.crc32(site.site_id.encode()), number, index])

    def image_of(activity: FloatArray) -> FloatArray:
        result = realistic_image(activity, mu, site=site, voxel_mm=voxel_mm, rng=rng, noise=noise)
        counts: FloatArray = result.counts
        return counts

    base = image_of(scene.activity_mbq)
    duration_s = site.acquisition_duration_s
    per_true_cf = 1.0 / (site.calibration_factor_cps_per_mbq * duration_s * voxel_ml)
    per_record_cf = 1.0 / (record.calibration_factor_cps_per_mbq * duration_s * voxel_ml)
    regions = [*patient.anatomy.vois, patient.anatomy.body]
    masks = {r.label: scene.labels == r.value for r in regions}
    truth = scene.region_activity_mbq
    true_conc = {r.label: truth[r.label] / (masks[r.label].sum() * voxel_ml) for r in regions}
    # The chain's response to each region (perturbation; module docstring). With noise on,
    # responses are taken noise-free all the same (the expectation is what Ω describes).
    clean = base if not noise else image_of_clean(scene.activity_mbq, mu, site, voxel_mm)
    labels = [r.label for r in regions]
    response = chain_response(
        scene.activity_mbq,
        [masks[label] for label in labels],
        [true_conc[label] for label in labels],
        mu=mu,
        site=site,
        voxel_mm=voxel_mm,
        clean=clean,
    )
    omega_true = response.matrix * per_true_cf
    measured_true_cf = np.array([float(base[masks[i]].mean()) * per_true_cf for i in labels])
    solved = np.linalg.solve(omega_true, measured_true_cf)
    vois = [_crop(masks[r.label]) for r in patient.anatomy.vois]
    spacing = scene.grid.spacing_mm_zyx
    fwhm = psf_from_record(record)[0]
    pipeline = gtm_correct(
        base * per_record_cf, vois, body=body_outline(base), spacing_mm_zyx=spacing, fwhm_mm=fwhm
    )
    true_body = gtm_correct(
        base * per_record_cf,
        vois,
        body=scene.labels != OUTSIDE_VALUE,
        spacing_mm_zyx=spacing,
        fwhm_mm=fwhm,
    )
    body_region = _crop(masks[patient.anatomy.body.label])
    gauss = spread_matrix(
        [RegionWeights.from_mask(v) for v in (*vois, body_region)],
        [*vois, body_region],
        base.shape,
        sigma_voxels(fwhm, spacing),
    )
    rows = []
    for k, voi in enumerate(patient.anatomy.vois):
        a = truth[voi.label]
        n = float(masks[voi.label].sum())
        rows.append(
            VoiDiagnosis(
                label=voi.label,
                voi_type=voi.voi_type.value,
                volume_ml=n * voxel_ml,
                truth_mbq=a,
                raw_true_cf=float(base[masks[voi.label]].sum()) * per_true_cf * voxel_ml / a - 1,
                raw_record_cf=float(base[masks[voi.label]].sum()) * per_record_cf * voxel_ml / a
                - 1,
                gtm_pipeline=float(pipeline.activity_mbq[k]) / a - 1,
                gtm_true_body=float(true_body.activity_mbq[k]) / a - 1,
                gtm_true_matrix=float(solved[k]) * n * voxel_ml / a - 1,
                omega_self_true=float(omega_true[k, k]),
                omega_self_gauss=float(gauss[k, k]),
                omega_background_true=float(omega_true[k, -1]),
                omega_background_gauss=float(gauss[k, -1]),
                equivalent_fwhm_mm=equivalent_fwhm_mm(
                    vois[k], base.shape, spacing, float(omega_true[k, k])
                ),
            )
        )
    total = {
        "image_total_over_truth_true_cf": float(base.sum())
        * per_true_cf
        * voxel_ml
        / float(scene.activity_mbq.sum()),
        "responses_sum_over_image": response.total_counts / float(clean.sum()),
        "record_cf_over_true_cf": record.calibration_factor_cps_per_mbq
        / site.calibration_factor_cps_per_mbq,
        "psf_fwhm_mm": fwhm,
        "time_point": index,
        "time_h": patient.time_points_h[1][index - 1],
    }
    return rows, total


def diagnosed_patient(
    site: SiteProfile, number: int, preset: str
) -> tuple[VirtualPatient, ConsortiumPreset, Realism]:
    """Patient ``number`` of the consortium (seed :data:`SEED`) as ``site`` images it, with
    anatomy realism off (true outlines, spheres, no breathing), its consortium preset and the
    realistic imaging's realism."""
    chosen = CONSORTIUM_PRESETS[preset]
    imaging = Realism.of_imaging(ImagingMode.REALISTIC)
    realism = Realism(
        blur=imaging.blur,
        noise=imaging.noise,
        ct_shift_max_mm=imaging.ct_shift_max_mm,
        imaging=ImagingMode.REALISTIC,
        anatomy_realism=False,
    )
    patient = draw_virtual_patient(
        SEED,
        number,
        protocol=protocol_named(site_protocol(site, DEFAULT_PROTOCOL)),
        max_cycles=chosen.max_cycles,
        n_lesions_range=chosen.n_lesions_range,
        lesion_volume_range_ml=chosen.lesion_volume_range_ml,
        ct_shift_max_mm=realism.ct_shift_max_mm,
        lesion_volume_sampling=chosen.lesion_volume_sampling,
        anatomy_realism=False,
    )
    return patient, chosen, realism


def time_point_number(patient: VirtualPatient, index: int) -> int:
    """``index`` as a 1-based time point of ``patient``'s first cycle (negative counts from the
    last, ``-1`` the last).

    Raises:
        ValueError: ``index`` names no time point of the schedule.
    """
    schedule_h = patient.time_points_h[1]
    number = index + len(schedule_h) + 1 if index < 0 else index
    if not 1 <= number <= len(schedule_h):
        raise ValueError(
            f"time point {index}: expected 1…{len(schedule_h)} (or −1…−{len(schedule_h)} from "
            f"the last), found none such in the schedule {schedule_h} h"
        )
    return number


@dataclass(frozen=True)
class ChainResponse:
    """The imaging chain's transfer matrix around one activity distribution.

    Attributes:
        matrix: R[i, j], the image's response to region j averaged over region i, per unit of
            region j's concentration (image units per MBq/mL).
        total_counts: the responses summed over the image (to set against the image's total:
            the linearisation holds when they agree).
    """

    matrix: FloatArray
    total_counts: float


def chain_response(
    activity_mbq: FloatArray,
    masks: Sequence[NDArray[np.bool_]],
    concentrations_mbq_per_ml: Sequence[float],
    *,
    mu: FloatArray,
    site: SiteProfile,
    voxel_mm: float,
    clean: FloatArray,
) -> ChainResponse:
    """The realistic chain's noise-free response to each region of ``masks``, by perturbation
    around ``activity_mbq`` (whose noise-free image is ``clean``): each region's activity
    raised by :data:`PERTURBATION`, imaged, less ``clean``, over the perturbation — the
    perturbation-based GTM of Du, Tsui & Frey (IEEE TMI 2005;24:969), which an iterative
    reconstruction needs because it is not linear in the activity."""
    responses = []
    for mask in masks:
        bumped = activity_mbq + PERTURBATION * activity_mbq * mask
        responses.append((image_of_clean(bumped, mu, site, voxel_mm) - clean) / PERTURBATION)
    matrix = np.array(
        [
            [
                float(response[mask].mean()) / concentration
                for response, concentration in zip(
                    responses, concentrations_mbq_per_ml, strict=True
                )
            ]
            for mask in masks
        ]
    )
    return ChainResponse(matrix, sum(float(r.sum()) for r in responses))


def equivalent_fwhm_mm(
    voi: CroppedMask,
    shape: tuple[int, ...],
    spacing_mm_zyx: tuple[float, float, float],
    self_recovery: float,
) -> float:
    """The Gaussian FWHM (mm) whose self-recovery of ``voi`` equals ``self_recovery`` (NaN when
    none in 0.5-80 mm does): how wide the chain's response to that VOI is, as one number."""
    grid = (int(shape[0]), int(shape[1]), int(shape[2]))

    def gap(fwhm_mm: float) -> float:
        omega = spread_matrix(
            [RegionWeights.from_mask(voi)], [voi], grid, sigma_voxels(fwhm_mm, spacing_mm_zyx)
        )
        return float(omega[0, 0]) - self_recovery

    try:
        return float(brentq(gap, 0.5, 80.0, xtol=0.01))
    except ValueError:
        return math.nan


def image_of_clean(
    activity: FloatArray, mu: FloatArray, site: SiteProfile, voxel_mm: float
) -> FloatArray:
    """The realistic chain's noise-free reconstruction of ``activity`` (counts)."""
    result = realistic_image(
        activity, mu, site=site, voxel_mm=voxel_mm, rng=np.random.default_rng(0), noise=False
    )
    counts: FloatArray = result.counts
    return counts


def diagnose(
    *,
    preset: str,
    sites: Sequence[str],
    patients: Sequence[int],
    time_points: Sequence[int],
    noise: bool = False,
    show: bool = False,
) -> dict[str, Any]:
    """Every site's record and every VOI's diagnosis (the JSON document); ``show`` prints the
    tables of the module docstring as it goes."""
    grid_preset = CONSORTIUM_PRESETS[preset].grid_preset
    document: dict[str, Any] = {"preset": preset, "noise": noise, "sites": {}}
    with tempfile.TemporaryDirectory(prefix="concordose-diagnosis-") as scratch:
        for site_id in sites:
            site = consortium_site(site_id)
            record = site_record(site, grid_preset, Path(scratch) / site_id)
            if show:
                print(
                    f"\n{site_id}: record CF {record.calibration_factor_cps_per_mbq:.3f} "
                    f"(true {site.calibration_factor_cps_per_mbq}), PSF FWHM spheres "
                    f"{record.psf_fwhm_mm:.2f} ± {record.psf_fwhm_sd_mm or 0:.2f} mm, large "
                    f"object {record.psf_large_object_fwhm_mm or math.nan:.2f} ± "
                    f"{record.psf_large_object_fwhm_sd_mm or 0:.2f} mm; the GTM uses "
                    f"{psf_from_record(record)[0]:.2f} mm (blur-mode effective "
                    f"{site.effective_fwhm_mm:.2f} mm)"
                )
            site_doc = []
            for number in patients:
                for index in time_points:
                    rows, total = diagnose_time_point(
                        site, record, number=number, index=index, preset=preset, noise=noise
                    )
                    if show:
                        _print_time_point(number, rows, total)
                    site_doc.append(
                        {
                            "patient": number,
                            **total,
                            "vois": [r.__dict__ for r in rows],
                        }
                    )
            document["sites"][site_id] = {
                "record_cf": record.calibration_factor_cps_per_mbq,
                "true_cf": site.calibration_factor_cps_per_mbq,
                "psf_fwhm_mm": record.psf_fwhm_mm,
                "psf_fwhm_sd_mm": record.psf_fwhm_sd_mm,
                "psf_large_object_fwhm_mm": record.psf_large_object_fwhm_mm,
                "psf_large_object_fwhm_sd_mm": record.psf_large_object_fwhm_sd_mm,
                "gtm_fwhm_mm": psf_from_record(record)[0],
                "time_points": site_doc,
            }
    document["summary"] = summary(document)
    return document


def _print_time_point(number: int, rows: Sequence[VoiDiagnosis], total: dict[str, float]) -> None:
    print(
        f"  P{number:03d} tp{total['time_point']:g} ({total['time_h']:g} h): image total / truth "
        f"{total['image_total_over_truth_true_cf']:.4f} (true CF); Σ responses / image "
        f"{total['responses_sum_over_image']:.4f}"
    )
    print(
        "    VOI            mL     truth  raw/trueCF raw/recCF   gtm gtm/body gtm/true  "
        "ω_self t/g     ω_bg t/g  FWHM≡"
    )
    for r in rows:
        print(
            f"    {r.label:<13}{r.volume_ml:6.0f}{r.truth_mbq:9.1f}"
            f"{100 * r.raw_true_cf:+10.1f}{100 * r.raw_record_cf:+10.1f}"
            f"{100 * r.gtm_pipeline:+7.1f}{100 * r.gtm_true_body:+9.1f}"
            f"{100 * r.gtm_true_matrix:+9.1f}"
            f"  {r.omega_self_true:.3f}/{r.omega_self_gauss:.3f}"
            f"  {r.omega_background_true:.3f}/{r.omega_background_gauss:.3f}"
            f"  {r.equivalent_fwhm_mm:5.1f}"
        )


def _range_pct(values: Sequence[float]) -> list[float] | None:
    finite = [v for v in values if np.isfinite(v)]
    return [round(100 * min(finite), 1), round(100 * max(finite), 1)] if finite else None


def summary(document: dict[str, Any]) -> dict[str, Any]:
    """Per VOI group (kidneys/liver/spleen, bone marrow, lesions < 4 mL and ≥ 4 mL): the range
    over sites of the raw error (true CF), of the GTM as run and of the GTM with the chain's
    true transfer matrix, and of the Gaussian FWHM the chain behaves as (``FWHM≡``), beside the
    range of FWHMs the GTM used: the evidence of what limits the correction."""
    points = [point for site in document["sites"].values() for point in site["time_points"]]
    used = [site["gtm_fwhm_mm"] for site in document["sites"].values()]
    times_h = sorted({float(point["time_h"]) for point in points})
    return {
        "gtm_fwhm_mm_range": [round(min(used), 2), round(max(used), 2)] if used else None,
        **_group_ranges([voi for point in points for voi in point["vois"]]),
        "by_time_point": (
            {
                f"{hours:g} h": _group_ranges(
                    [voi for point in points if point["time_h"] == hours for voi in point["vois"]]
                )
                for hours in times_h
            }
            if len(times_h) > 1
            else None
        ),
    }


ORGAN_GROUPS = ("kidneys_liver_spleen", "bone_marrow")
"""The organ groups of every summary (the marrow apart: thin and faint, it behaves unlike the
kidneys, liver and spleen)."""


def organ_group(label: str) -> str:
    """The :data:`ORGAN_GROUPS` member an organ VOI named ``label`` belongs to."""
    return "bone_marrow" if label == "bone_marrow" else "kidneys_liver_spleen"


def _group_ranges(vois: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """:func:`summary`'s ranges per VOI group over ``vois`` (diagnosed VOIs as documented)."""
    organs = [v for v in vois if v["voi_type"] == "organ"]
    groups = {
        **{
            group: [v for v in organs if organ_group(v["label"]) == group] for group in ORGAN_GROUPS
        },
        "lesions_lt4ml": [v for v in vois if v["voi_type"] == "lesion" and v["volume_ml"] < 4.0],
        "lesions_ge4ml": [v for v in vois if v["voi_type"] == "lesion" and v["volume_ml"] >= 4.0],
    }
    return {
        name: {
            "vois": len(members),
            "raw_error_pct": _range_pct([v["raw_true_cf"] for v in members]),
            "gtm_error_pct": _range_pct([v["gtm_pipeline"] for v in members]),
            "gtm_true_matrix_error_pct": _range_pct([v["gtm_true_matrix"] for v in members]),
            "equivalent_fwhm_mm": (
                [
                    round(min(v["equivalent_fwhm_mm"] for v in members), 1),
                    round(max(v["equivalent_fwhm_mm"] for v in members), 1),
                ]
                if members
                else None
            ),
        }
        for name, members in groups.items()
    }


def main() -> None:
    """Parse arguments, diagnose, print tables, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(CONSORTIUM_PRESETS), default="test")
    parser.add_argument("--sites", default=",".join(s.site_id for s in CONSORTIUM_SITES))
    parser.add_argument("--patients", default="1")
    parser.add_argument("--time-points", default="1")
    parser.add_argument("--noise", action="store_true", help="Poisson noise in the patient image")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    document = diagnose(
        preset=args.preset,
        sites=[s.strip() for s in args.sites.split(",") if s.strip()],
        patients=[int(p) for p in args.patients.split(",")],
        time_points=[int(t) for t in args.time_points.split(",")],
        noise=args.noise,
        show=True,
    )
    print("\nsummary:", json.dumps(document["summary"], indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"written {args.json}")


if __name__ == "__main__":
    main()
