"""Voxel dosimetry of one six-time-point study, end to end from DICOM, registration included,
with peak memory.

Run: ``.venv/bin/python -m benchmarks.bench_voxel_dosimetry [--preset demo] [--model mono]``.

A digital consortium patient (``phantoms.consortium``, one site, SPECTacular six time points,
the patient shifted by up to 5 mm per axis at each time point, blur and Poisson noise on) is
written as DICOM (untimed). Timed, each step named: cataloguing the DICOM into a cycle; rigid
CT-to-CT registration of each later time point onto the first CT
(``quant.alignment.align_time_points``); counts → activity and resampling of each time point's
activity map onto the first SPECT grid through its registration
(``quant.time_point_maps.registered_activity_maps``: linear, activity-conserving); voxel fits of
every body voxel (``kinetics.voxel.fit_voxels``); VSV convolution of the TIA map (4.42 mm
kernel); VOI masks from the SEG and per-VOI dose metrics; the same VSV dose onto the first CT's
grid (``VoxelDoseInput.output_geometry``: read the CT, convolve on the padded kernel grid,
exact-overlap averaging onto the CT voxels) with its VOI masks and metrics, when the first time
point shares the VOIs' frame of reference. Target: the total < 60 s on the
2-core development machine. Peak memory: tracemalloc (numpy + Python allocations; SimpleITK's
own buffers are not traced) and the process max RSS. Sanity: VOI mean doses against the
ground truth's ``mean_dose_gy`` (sphere/LDM-type reference on the true TIA and mass).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from concordose.calibration.registry import SiteRegistry
from concordose.dicom.ct import read_ct_series
from concordose.dicom.geometry import VolumeGeometry
from concordose.dicom.seg import read_segmentation
from concordose.dose.metrics import voi_dose_metrics
from concordose.dose.models import VoxelDoseInput
from concordose.dose.registry import VOXEL_DOSE_METHODS
from concordose.kinetics.fitting import ExponentialModel
from concordose.kinetics.voxel import fit_voxels
from concordose.phantoms.consortium import Realism, generate_consortium
from concordose.phantoms.site_profiles import DEFAULT_SITE
from concordose.pipeline.alignment import align_time_points
from concordose.pipeline.assembly import assemble_cycles
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.time_point_maps import registered_activity_maps
from concordose.quant.voi import resample_vois

MODELS = {
    "mono": ExponentialModel(1),
    "bi_uptake": ExponentialModel(2, uptake=True),
}
BODY_THRESHOLD = 0.01
"""Voxels fitted: those whose peak activity exceeds this fraction of the map's 99.9th
percentile (the body and its spill-out; air is left at TIA 0)."""


def main() -> None:
    """Generate (untimed), then time each step and print it with peak memory."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--model", default="mono", choices=sorted(MODELS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate_consortium(
            out,
            preset=args.preset,
            sites=(DEFAULT_SITE,),
            realism=Realism(ct_shift_max_mm=5.0),
            phantoms=False,
        )
        subject = sorted((out / "sites" / DEFAULT_SITE.site_id / "patients").iterdir())[0]
        truth = json.loads((subject / "ground_truth.json").read_text())
        tracemalloc.start()
        steps: dict[str, float] = {}
        start = time.perf_counter()

        (cycle,) = assemble_cycles(catalogue(subject / "dicom"))
        first = cycle.time_points[0].acquisition.acquisition_datetime
        assert first is not None
        calibration = (
            SiteRegistry.load(out / "sites.yaml")
            .site(DEFAULT_SITE.site_id)
            .calibration_on(first.date())
        )
        steps["catalogue + assemble cycle"] = time.perf_counter() - start

        mark = time.perf_counter()
        alignments = align_time_points(cycle)
        registered = sum(a.registration is not None for a in alignments)
        steps[f"register {registered} CTs onto the first"] = time.perf_counter() - mark

        mark = time.perf_counter()
        maps = registered_activity_maps(cycle, calibration, alignments)
        steps["read, calibrate, resample 6 maps"] = time.perf_counter() - mark

        mark = time.perf_counter()
        peak = maps.activity_mbq.max(axis=0)
        mask = peak > BODY_THRESHOLD * np.percentile(peak, 99.9)
        kinetics = fit_voxels(maps.time_h, maps.activity_mbq, mask, MODELS[args.model])
        tia_map = np.nan_to_num(kinetics.tia_mbq_h, nan=0.0)
        steps[f"voxel fits ({int(mask.sum()):,} voxels, {args.model})"] = time.perf_counter() - mark

        mark = time.perf_counter()
        geometry = maps.geometry
        sx, sy, sz = geometry.spacing_mm
        dose_map = (
            VOXEL_DOSE_METHODS.get("vsv_4.42mm")
            .compute_map(VoxelDoseInput(tia_map, (sz, sy, sx)))
            .dose_gy
        )
        steps["VSV convolution"] = time.perf_counter() - mark

        mark = time.perf_counter()
        vois = resample_vois(
            read_segmentation(cycle.segmentation), geometry, alignments[0].mask_transform()
        )
        label_map = np.zeros(geometry.shape, dtype=np.int16)
        for index in range(len(vois.labels)):
            label_map[vois.masks[index]] = index + 1
        metrics = voi_dose_metrics(
            dose_map,
            label_map,
            {i + 1: label for i, label in enumerate(vois.labels)},
            geometry.voxel_volume_ml,
        )
        steps["VOI masks + dose metrics"] = time.perf_counter() - mark

        ct_metrics = None
        first_point = cycle.time_points[0]
        if alignments[0].registration is None and first_point.ct_files:
            mark = time.perf_counter()
            ct_geometry = VolumeGeometry.from_sitk(read_ct_series(first_point.ct_files))
            ct_dose = (
                VOXEL_DOSE_METHODS.get("vsv_4.42mm")
                .compute_map(
                    VoxelDoseInput(
                        tia_map, (sz, sy, sx), geometry=geometry, output_geometry=ct_geometry
                    )
                )
                .dose_gy
            )
            ct_vois = resample_vois(read_segmentation(cycle.segmentation), ct_geometry)
            ct_labels = np.zeros(ct_geometry.shape, dtype=np.int16)
            for index in range(len(ct_vois.labels)):
                ct_labels[ct_vois.masks[index]] = index + 1
            ct_metrics = voi_dose_metrics(
                ct_dose,
                ct_labels,
                {i + 1: label for i, label in enumerate(ct_vois.labels)},
                ct_geometry.voxel_volume_ml,
            )
            steps[f"VSV onto the CT grid {ct_geometry.shape} + metrics"] = (
                time.perf_counter() - mark
            )
        total_s = time.perf_counter() - start
        _, peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    print(
        f"preset {args.preset}: SPECT grid {geometry.shape} at {sx:.2f} mm, "
        f"{len(maps.time_h)} time points ({', '.join(f'{t:g}' for t in maps.time_h)} h)"
    )
    for name, seconds in steps.items():
        print(f"  {name:42s} {seconds:7.2f} s")
    print(f"  {'total (registration included)':42s} {total_s:7.2f} s   (target < 60 s)")
    print(f"peak traced memory (numpy + Python): {peak_bytes / 2**20:.0f} MiB")
    print(f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    factors = ", ".join(f"{f:.4f}" for f in maps.conservation_factor)
    print(f"activity-conservation factors applied after linear resampling: {factors}")
    print(f"fit status: {kinetics.status_counts}")
    shifts = [
        a.registration.translation_mm if a.registration is not None else (0.0, 0.0, 0.0)
        for a in alignments
    ]
    true_shifts = np.asarray(truth["cycles"][0]["ct_shift_mm"])
    print("registration translation (x, y, z) mm found vs true relative shift:")
    for found, expected in zip(shifts, true_shifts - true_shifts[0], strict=True):
        print(f"  found {np.round(found, 2)}  true {np.round(expected, 2)}")
    true_dose = {v["label"]: v["mean_dose_gy"] for v in truth["cycles"][0]["vois"]}
    on_ct = {m.label: m.mean_dose_gy for m in ct_metrics} if ct_metrics is not None else {}
    print(
        "VOI mean dose, voxel VSV (SPECT grid) vs ground truth mean_dose_gy (true TIA and mass)"
        + ("; CT grid / SPECT grid:" if on_ct else ":")
    )
    for metric in metrics:
        ct_ratio = (
            f"  CT/SPECT {on_ct[metric.label] / metric.mean_dose_gy:.3f}"
            if metric.label in on_ct
            else ""
        )
        print(
            f"  {metric.label:14s} {metric.mean_dose_gy:8.2f} Gy  "
            f"ratio {metric.mean_dose_gy / true_dose[metric.label]:.3f}  "
            f"D98 {metric.d98_gy:7.2f}  D2 {metric.d2_gy:7.2f}{ct_ratio}"
        )


if __name__ == "__main__":
    main()
