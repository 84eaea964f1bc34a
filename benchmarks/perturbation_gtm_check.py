"""What the platform's perturbation GTM recovers under realistic imaging, and what it leaves.

Run: ``.venv/bin/python -m benchmarks.perturbation_gtm_check [--preset harmonisation|test]
[--sites a,b] [--patient N] [--json FILE]``.

Not a timing. Patient ``N`` of the consortium at each site (anatomy realism off: true outlines,
spherical lesions, no breathing), at the first and the last time point, imaged noise-free
through the realistic chain (attenuation, depth-dependent CDR, scatter with 10 % left after
correction, dead time, the site's OSEM); the site calibrated from its own noisy realistic
phantom scans (:func:`benchmarks.diagnose_realistic_organs.site_record`). Per VOI, the activity
error against truth of:

* ``gaussian``: the GTM with the record's Gaussian PSF (``quant.gtm.gtm_correct``);
* ``perturbation``: the platform's perturbation GTM (``quant.perturbation_gtm``) with the site's
  packaged ``reconstruction:`` protocol (``phantoms.camera_model.site_reconstruction``), μ from
  the scene's CT — as ``perturbation_gtm`` runs in the pipeline, on the true outlines;
* ``perturbation_calibrated_scatter``: the same with the photopeak window's scatter and its
  correction inside OSEM in the system model, its scatter-to-primary ratio fitted on the site's
  noisy NEMA phantom (``calibration.scatter``: the record's ``scatter_to_primary``) — as
  ``perturbation_gtm`` now runs in the pipeline;
* ``perturbation_exact_scatter``: the same with the generator's own scatter (ratio, kernel and
  the 10 % its correction leaves, :mod:`phantoms.acquisition`): the system model in full.

Every perturbation variant models the generator's own projector and OSEM exactly (an inverse
crime), and the scatter variants its kernel's width: this measures the method's ceiling and
what the calibrated ratio costs against it, not robustness to a vendor's reconstruction.
(≈ 3 min per site on the ``harmonisation`` preset.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.diagnose_realistic_organs import (
    ORGAN_GROUPS,
    diagnosed_patient,
    image_of_clean,
    organ_group,
    site_record,
    time_point_number,
)
from concordose.phantoms.acquisition import GENERATOR_SCATTER
from concordose.phantoms.camera_model import site_reconstruction
from concordose.phantoms.consortium import CONSORTIUM_PRESETS, patient_scene
from concordose.phantoms.site_profiles import CONSORTIUM_SITES, consortium_site
from concordose.quant.gtm import body_outline, gtm_correct, voi_crops
from concordose.quant.perturbation_gtm import perturbation_gtm_correct
from concordose.quant.pvc import psf_from_record
from concordose.reconstruction.attenuation import mu_per_mm_from_hu
from concordose.reconstruction.protocol import ReconstructionModel

FloatArray = NDArray[np.float64]
TIME_POINTS = (1, -1)
"""The first and the last time point of the patient's first cycle."""
VARIANTS = (
    "gaussian",
    "perturbation",
    "perturbation_calibrated_scatter",
    "perturbation_exact_scatter",
)


def check_site(site_id: str, *, patient_number: int, preset: str) -> list[dict[str, Any]]:
    """Per time point of :data:`TIME_POINTS`, every VOI's error (%) per variant."""
    site = consortium_site(site_id)
    with tempfile.TemporaryDirectory(prefix="concordose-pgtm-check-") as scratch:
        record = site_record(
            site,
            CONSORTIUM_PRESETS[preset].grid_preset,
            Path(scratch),
            reconstruction=site_reconstruction(site),
        )
    calibrated = record.scatter_correction()
    fwhm_mm = psf_from_record(record)[0]
    patient, chosen, realism = diagnosed_patient(site, patient_number, preset)
    points = []
    for index in TIME_POINTS:
        number = time_point_number(patient, index)
        scene = patient_scene(patient, site, preset=chosen, realism=realism, cycle=1, index=number)
        spacing = scene.grid.spacing_mm_zyx
        voxel_ml = scene.grid.voxel_volume_ml
        mu = mu_per_mm_from_hu(scene.hu_on_grid())
        counts = image_of_clean(scene.activity_mbq, mu, site, spacing[0])
        per_record_cf = 1.0 / (
            record.calibration_factor_cps_per_mbq * site.acquisition_duration_s * voxel_ml
        )
        image = counts * per_record_cf
        labels = [voi.label for voi in patient.anatomy.vois]
        masks = np.stack([scene.labels == voi.value for voi in patient.anatomy.vois])
        vois = voi_crops(masks)
        body = body_outline(counts)
        truth = np.array([scene.region_activity_mbq[label] for label in labels])
        reconstruction = site_reconstruction(site)
        checks: dict[str, dict[str, Any]] = {}
        activities = {
            "gaussian": gtm_correct(
                image, vois, body=body, spacing_mm_zyx=spacing, fwhm_mm=fwhm_mm
            ).activity_mbq
        }
        for name, scatter in (
            ("perturbation", None),
            ("perturbation_calibrated_scatter", calibrated),
            ("perturbation_exact_scatter", GENERATOR_SCATTER),
        ):
            result = perturbation_gtm_correct(
                image,
                vois,
                body=body,
                spacing_mm_zyx=spacing,
                fwhm_mm=fwhm_mm,
                model=ReconstructionModel(reconstruction, mu, spacing, scatter=scatter),
            )
            activities[name] = result.corrected.activity_mbq
            checks[name] = {
                "fallback": result.fallback,
                "misfit_before": round(result.misfit_before, 4),
                "misfit_after": round(result.misfit_after, 4),
            }
        points.append(
            {
                "site": site_id,
                "scatter_to_primary_fitted": record.scatter_to_primary,
                "scatter_to_primary_sd": record.scatter_to_primary_sd,
                "time_h": patient.time_points_h[1][number - 1],
                "checks": checks,
                "vois": [
                    {
                        "label": label,
                        "voi_type": voi.voi_type.value,
                        "volume_ml": round(float(mask.sum()) * voxel_ml, 2),
                        **{
                            name: round(100.0 * (float(values[k]) / truth[k] - 1.0), 1)
                            for name, values in activities.items()
                        },
                    }
                    for k, (label, voi, mask) in enumerate(
                        zip(labels, patient.anatomy.vois, masks, strict=True)
                    )
                ],
            }
        )
    return points


def _group(voi: dict[str, Any]) -> str:
    if voi["voi_type"] == "organ":
        return organ_group(voi["label"])
    return "lesions_ge4ml" if voi["volume_ml"] >= 4.0 else "lesions_lt4ml"


def summary(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per time point and VOI group, each variant's error range over sites (%)."""
    result: dict[str, Any] = {}
    for hours in sorted({p["time_h"] for p in points}):
        vois = [v for p in points if p["time_h"] == hours for v in p["vois"]]
        result[f"{hours:g} h"] = {
            group: {
                name: [min(v[name] for v in members), max(v[name] for v in members)]
                for name in VARIANTS
            }
            for group in (*ORGAN_GROUPS, "lesions_ge4ml", "lesions_lt4ml")
            if (members := [v for v in vois if _group(v) == group])
        }
    return result


def main() -> None:
    """Parse arguments, check each site, print and optionally write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(CONSORTIUM_PRESETS), default="harmonisation")
    parser.add_argument("--sites", default=",".join(s.site_id for s in CONSORTIUM_SITES))
    parser.add_argument("--patient", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    points = []
    for site_id in (s.strip() for s in args.sites.split(",") if s.strip()):
        for point in check_site(site_id, patient_number=args.patient, preset=args.preset):
            print(f"{site_id} {point['time_h']:g} h", flush=True)
            for voi in point["vois"]:
                print(
                    f"  {voi['label']:<13}{voi['volume_ml']:7.1f} mL "
                    + " ".join(f"{name} {voi[name]:+6.1f}" for name in VARIANTS),
                    flush=True,
                )
            points.append(point)
    document = {"preset": args.preset, "patient": args.patient, "points": points}
    document["summary"] = summary(points)
    print(json.dumps(document["summary"], indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"written {args.json}")


if __name__ == "__main__":
    main()
