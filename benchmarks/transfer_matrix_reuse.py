"""Can one transfer matrix serve a whole cycle? The perturbation-based GTM at two distributions.

Run: ``.venv/bin/python -m benchmarks.transfer_matrix_reuse [--preset harmonisation|test]
[--sites a,b] [--patient N] [--json FILE]``.

Not a timing. The realistic chain's transfer matrix (:func:`benchmarks.diagnose_realistic_organs.
chain_response`: each region's response by perturbation, noise-free, the pGTM of Du, Tsui & Frey,
IEEE TMI 2005;24:969) is what recovers every VOI where the platform's Gaussian GTM does not
(``targets.evidence.by_time_point`` of the harmonisation benchmark). Computing it costs one
reconstruction per region, so it matters whether it depends on the activity distribution: if
not, one matrix per cycle would do for every time point. At the last time point's geometry
(patient ``N``, anatomy realism off, noise-free) this solves the image with the matrix taken
around the last time point's own activity and with the matrix taken around the first time
point's region concentrations on the same geometry, and prints each region's activity error.
OSEM is not linear in the activity, so the second is expected to be worse; by how much is the
question. (≈ 1.5 min per site on the ``harmonisation`` preset.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.diagnose_realistic_organs import (
    chain_response,
    diagnosed_patient,
    image_of_clean,
    time_point_number,
)
from concordose.phantoms.consortium import CONSORTIUM_PRESETS, patient_scene
from concordose.phantoms.imaging import region_activity_map
from concordose.phantoms.site_profiles import CONSORTIUM_SITES, consortium_site
from concordose.reconstruction.attenuation import mu_per_mm_from_hu


def matrix_reuse(site_id: str, *, patient_number: int, preset: str) -> dict[str, Any]:
    """Per region, the activity error (%) at the last time point with the transfer matrix taken
    around its own activity (``own``) and around the first time point's concentrations on the
    same geometry (``first_time_point``)."""
    site = consortium_site(site_id)
    patient, chosen, realism = diagnosed_patient(site, patient_number, preset)
    last = time_point_number(patient, -1)
    first_scene = patient_scene(patient, site, preset=chosen, realism=realism, cycle=1, index=1)
    scene = patient_scene(patient, site, preset=chosen, realism=realism, cycle=1, index=last)
    voxel_mm, voxel_ml = scene.grid.spacing_mm_zyx[0], scene.grid.voxel_volume_ml
    mu = mu_per_mm_from_hu(scene.hu_on_grid())
    regions = [*patient.anatomy.vois, patient.anatomy.body]
    masks = [scene.labels == region.value for region in regions]
    volumes_ml = np.array([float(mask.sum()) * voxel_ml for mask in masks])
    early, _ = region_activity_map(
        scene.labels, {r.value: first_scene.region_activity_mbq[r.label] for r in regions}
    )
    image = image_of_clean(scene.activity_mbq, mu, site, voxel_mm)
    measured = np.array([float(image[mask].mean()) for mask in masks])
    truth_mbq = np.array([scene.region_activity_mbq[r.label] for r in regions])
    errors: dict[str, dict[str, float]] = {}
    for name, activity in (("own", scene.activity_mbq), ("first_time_point", early)):
        concentrations = [
            float(activity[mask].sum()) / ml for mask, ml in zip(masks, volumes_ml, strict=True)
        ]
        clean = (
            image
            if activity is scene.activity_mbq
            else image_of_clean(activity, mu, site, voxel_mm)
        )
        response = chain_response(
            activity, masks, concentrations, mu=mu, site=site, voxel_mm=voxel_mm, clean=clean
        )
        solved_mbq = np.linalg.solve(response.matrix, measured) * volumes_ml
        errors[name] = {
            region.label: round(100.0 * (float(a) / float(t) - 1.0), 1)
            for region, a, t in zip(regions, solved_mbq, truth_mbq, strict=True)
        }
    return {
        "site": site_id,
        "patient": patient_number,
        "time_h": [patient.time_points_h[1][0], patient.time_points_h[1][last - 1]],
        "activity_error_pct": errors,
    }


def main() -> None:
    """Parse arguments, run each site, print and optionally write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(CONSORTIUM_PRESETS), default="harmonisation")
    parser.add_argument("--sites", default=",".join(s.site_id for s in CONSORTIUM_SITES))
    parser.add_argument("--patient", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for site_id in (s.strip() for s in args.sites.split(",") if s.strip()):
        result = matrix_reuse(site_id, patient_number=args.patient, preset=args.preset)
        for name, errors in result["activity_error_pct"].items():
            print(
                site_id,
                f"{name:17s}",
                " ".join(f"{k} {v:+.1f}" for k, v in errors.items()),
                flush=True,
            )
        results.append(result)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"written {args.json}")


if __name__ == "__main__":
    main()
