"""Why the platform draws lesions the wrong size: the threshold each lesion needed, against the
one the rule used.

Run: ``.venv/bin/python -m benchmarks.diagnose_lesion_threshold --run DIR [--json FILE]``, ``DIR``
a realistic run kept by the harmonisation benchmark (``benchmarks.harmonisation --imaging
realistic --keep KEEP``: ``KEEP/realistic``).

Not a timing. ``gtm_platform_voi`` re-delineates each lesion by the mean-referenced iterative
threshold g(V, K) calibrated on the site's NEMA spheres at two contrasts
(``quant.delineation.ThresholdSurface``, a line in ln K followed two spans beyond the
phantoms' contrasts), bracketed by the same surface held at the measured contrasts (module
``quant.delineation``, "Beyond the phantoms' contrasts"); where the site's protocol says its
reconstruction does not model resolution, the surface does not follow contrast and there is
no bracket ("Contrast dependence follows resolution modelling"). For the first time point of every
site's first cycle this re-reads the image and the site's VOIs as the pipeline does and
writes, per lesion:

* ``g_needed`` and ``contrast``: the level (as a fraction of the region's mean over the local
  background) whose region holds the lesion's **true** volume, and that region's contrast
  K = C_mean / C_B (``quant.delineation.sphere_threshold_point``, with the generator's truth);
* ``g_used``, ``volume_over_true``, ``volume_sd_over_true``: what the platform's rule chose and
  drew (the published volume, reproduced), with its volume SD;
* ``g_held`` and ``volume_over_true_held``: the same with the held surface alone — the
  alternative rule, measured;
* the lesion's structure from the generator: necrotic core, breathing amplitude;
* ``seed_cnr``: the seed voxel's height over the local background in the background's SDs
  (the detection criterion's measure, ``quant.delineation.DETECTION_CNR``);
* ``status``, ``central_peak_only`` and ``site_volume_over_true``: the rule's status, whether
  it found only the lesion's central peak (``quant.delineation.CENTRAL_PEAK_ONLY``: the site's
  VOI then the other end of the volume SD) and the site's own volume;
* ``other_fixed_points_over_true``: the volumes of the threshold's other stable fixed points at
  the lesion's scale (``quant.delineation.SEVERAL_FIXED_POINTS``: ends of the volume SD).

The summary counts the lesions drawn at their central peak only, those with several fixed
points and of these the ones whose true volume lies between their smallest fixed point and the
drawn one (``several_fixed_points``, ``several_fixed_points_span_truth``), and groups lesions
by structure (breathing; else necrotic core; else neither) and gives, per group, the median of
g_needed − g_used and of g_needed − g_held and the median volume ratio both ways, and per site
the same.
(≈ 20 s per cycle.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from concordose.calibration.protocol import load_protocol
from concordose.calibration.records import CalibrationRecord
from concordose.calibration.registry import SiteRegistry
from concordose.dicom.seg import VoiMask
from concordose.pipeline.alignment import align_time_points
from concordose.pipeline.assembly import CycleStudy
from concordose.pipeline.catalogue import CycleSource
from concordose.pipeline.preparation import prepare_cycle
from concordose.pipeline.quantify import (
    held_contrast_threshold,
    record_threshold_surface,
    threshold_curve,
    threshold_curve_sd,
)
from concordose.pipeline.time_point_activity import time_point_activity_mbq
from concordose.quant.delineation import (
    DELINEATED,
    LesionDelineation,
    delineate_lesions,
    search_exclusions,
    sphere_threshold_point,
)
from concordose.quant.voi import resample_vois, voi_shapes
from concordose.reconstruction.protocol import SiteReconstruction

GROUPS = ("breathing", "necrotic core", "neither")
"""Structure groups, in precedence: a breathing lesion (the generator moves the liver's) is
blurred beyond any phantom's resolution whatever is inside it."""


def structure_group(necrotic_core_fraction: float, breathing_mm: float) -> str:
    """The lesion's group of :data:`GROUPS`."""
    if breathing_mm > 0:
        return "breathing"
    return "necrotic core" if necrotic_core_fraction > 0 else "neither"


@dataclasses.dataclass(frozen=True)
class _FirstCycle:
    site_id: str
    study: CycleStudy
    vois: tuple[VoiMask, ...]
    calibration: CalibrationRecord
    truth: dict[str, Any]
    reconstruction: SiteReconstruction | None


def _first_cycles(run: Path) -> Iterator[_FirstCycle]:
    """Each site's and patient's first prepared cycle of ``run`` with its ground truth."""
    registry = SiteRegistry.load(run / "config" / "harmonised_pvc" / "sites.yaml")
    source = CycleSource(run / "spool")
    seen: set[tuple[str, str]] = set()
    for record in source.cycles():
        prepared = prepare_cycle(source.instances(record.members), registry, site_id=None)
        study, verdict = prepared.study, prepared.verdict
        if prepared.held or study is None or verdict is None:
            continue
        if verdict.site is None or verdict.calibration is None:
            continue
        site, subject = verdict.site.site_id, study.patient_id.split("-")[-1]
        truth_path = run / "input" / "sites" / site / "patients" / subject / "ground_truth.json"
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
        injected = study.injection_datetime.replace(tzinfo=None).isoformat()
        if (site, subject) in seen or truth["cycles"][0]["injection_datetime"] != injected:
            continue  # not the first cycle
        seen.add((site, subject))
        reconstruction = load_protocol(site, registry.protocol_dir).reconstruction
        yield _FirstCycle(site, study, prepared.vois, verdict.calibration, truth, reconstruction)


def lesion_rows(run: Path) -> list[dict[str, Any]]:
    """One row per lesion of every site's and patient's first cycle (module docstring)."""
    rows: list[dict[str, Any]] = []
    for first in _first_cycles(run):
        calibration, cycle, vois, truth = first.calibration, first.study, first.vois, first.truth
        surface = record_threshold_surface(calibration, first.reconstruction)
        fwhm_mm = calibration.psf_fwhm_mm
        if surface is None or fwhm_mm is None:
            continue  # one contrast (the curve: no extrapolation to diagnose), or no PSF
        acquisition = cycle.time_points[0].acquisition
        activity, _ = time_point_activity_mbq(acquisition, calibration)
        image = activity / acquisition.geometry.voxel_volume_ml
        alignment = align_time_points(cycle)[0]
        masks = resample_vois(voi_shapes(vois), acquisition.geometry, alignment.mask_transform())
        spacing = acquisition.geometry.spacing_mm[::-1]
        zyx = (spacing[0], spacing[1], spacing[2])
        lesion = [voi.voi_type == "lesion" for voi in vois]
        drawn = {}
        for name, (primary, bracket) in {
            "": (surface.at, held_contrast_threshold(calibration, first.reconstruction)),
            "_held": (surface.held().at, None),
        }.items():
            drawn[name] = delineate_lesions(
                image,
                masks.masks,
                lesion,
                spacing_mm_zyx=zyx,
                fwhm_mm=fwhm_mm,
                threshold=threshold_curve(calibration),
                threshold_sd=threshold_curve_sd(calibration),  # as the pipeline: the same SD
                contrast_threshold=primary,
                bracket_threshold=bracket,
            )
        shapes = {v["label"]: v for v in truth["vois"]}
        for k, others in enumerate(search_exclusions(masks.masks, lesion)):
            label = vois[k].label
            used, held = drawn[""][k], drawn["_held"][k]
            if others is None or used is None or held is None or label not in shapes:
                continue
            true_ml = float(shapes[label]["volume_ml"])
            shape = shapes[label]["shape"]
            needed = sphere_threshold_point(
                image,
                masks.masks[k],
                others,
                true_ml,
                spacing_mm_zyx=zyx,
                fwhm_mm=fwhm_mm,
            )
            core = float(shape.get("necrotic_core_fraction", 0.0))
            breathing = float(truth["respiratory_amplitude_mm"].get(label, 0.0))
            rows.append(
                {
                    "site": first.site_id,
                    "subject": truth["patient"]["subject"],
                    "lesion": label,
                    "true_volume_ml": round(true_ml, 2),
                    "necrotic_core_fraction": round(core, 2),
                    "breathing_mm": breathing,
                    "group": structure_group(core, breathing),
                    "delineated": used.status == DELINEATED,
                    "status": used.status,
                    "central_peak_only": used.central_peak_only,
                    "seed_cnr": _seed_cnr(used),
                    "site_volume_over_true": round(used.site_volume_ml / true_ml, 3),
                    "g_needed": None if needed is None else round(needed[0], 3),
                    "contrast": None if needed is None else round(needed[1], 1),
                    "g_used": round(used.threshold_fraction, 3),
                    "g_held": round(held.threshold_fraction, 3),
                    "volume_over_true": round(used.volume_ml / true_ml, 3),
                    "volume_over_true_held": round(held.volume_ml / true_ml, 3),
                    "volume_sd_over_true": round(used.volume_sd_ml / true_ml, 3),
                    "other_fixed_points_over_true": [
                        round(v / true_ml, 3) for v in used.other_fixed_point_volumes_ml
                    ],
                }
            )
    return rows


def _seed_cnr(drawn: LesionDelineation) -> float:
    """The seed's height over the background in the background's SDs (NaN where either is
    not measured or the background shell has no spread)."""
    if not drawn.background_sd_mbq_per_ml > 0:
        return math.nan
    excess = drawn.peak_mbq_per_ml - drawn.background_mbq_per_ml
    return round(excess / drawn.background_sd_mbq_per_ml, 1)


def _median(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return round(float(np.median(finite)), 3) if finite else None


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per structure group and per site, the medians of the module docstring."""
    delineated = [r for r in rows if r["delineated"]]

    def medians(group: list[dict[str, Any]]) -> dict[str, Any]:
        solved = [r for r in group if r["g_needed"] is not None]
        return {
            "lesions": len(group),
            "g_needed_minus_used_median": _median([r["g_needed"] - r["g_used"] for r in solved]),
            "g_needed_minus_held_median": _median([r["g_needed"] - r["g_held"] for r in solved]),
            "contrast_median": _median([r["contrast"] for r in solved]),
            "volume_over_true_median": _median([r["volume_over_true"] for r in group]),
            "volume_over_true_held_median": _median([r["volume_over_true_held"] for r in group]),
        }

    several = [r for r in delineated if r["other_fixed_points_over_true"]]
    return {
        "central_peak_only": sum(bool(r["central_peak_only"]) for r in rows),
        "several_fixed_points": len(several),
        "several_fixed_points_span_truth": sum(
            min(r["other_fixed_points_over_true"]) <= 1.0 <= r["volume_over_true"] for r in several
        ),
        "by_structure": {
            name: medians([r for r in delineated if r["group"] == name]) for name in GROUPS
        },
        "by_site": {
            site: medians([r for r in delineated if r["site"] == site])
            for site in sorted({r["site"] for r in delineated})
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a kept realistic run folder")
    parser.add_argument("--json", type=Path, help="write rows and summary here")
    args = parser.parse_args()
    if not (args.run / "spool").is_dir():
        parser.error(f"--run {args.run}: expected a kept run folder with a spool/, found none")
    rows = lesion_rows(args.run)
    for row in rows:
        print(
            f"{row['site']:12s} {row['subject']} {row['lesion']:9s} {row['true_volume_ml']:7.1f} mL"
            f"  {row['group']:13s} g needed {row['g_needed']} (K {row['contrast']}), used"
            f" {row['g_used']}, held {row['g_held']}; volume/true {row['volume_over_true']}"
            f" ± {row['volume_sd_over_true']} (held {row['volume_over_true_held']})",
            flush=True,
        )
    document = {"run": args.run.name, "summary": summary(rows), "lesions": rows}
    print(json.dumps(document["summary"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        print(f"written {args.json}")


if __name__ == "__main__":
    main()
