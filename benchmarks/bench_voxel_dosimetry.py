"""Voxel dosimetry of one six-time-point study, end to end from DICOM, with peak memory.

Run: ``.venv/bin/python -m benchmarks.bench_voxel_dosimetry [--preset demo]``.

A digital patient (``phantoms``, site grid 80×64×48 at 4.42 mm) is imaged at six time points
(1, 4, 24, 48, 96, 168 h). Timed: reading the six NM series and their calibration, counts →
activity per voxel, a mono-exponential fit of every voxel (the batched kinetics method), VSV
convolution of the TIA map (4.42 mm kernel), VOI masks from the SEG and per-VOI dose metrics.
Not included: registration (the phantom's time points share one frame and grid; a registration
step would add its own time) — so this is a partial answer to the "< 60 s for registration,
voxel fits and VSV" target. Sanity: VOI mean doses are compared with LDM from the true TIAs.
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
from concordose.dicom.catalogue import catalogue
from concordose.dicom.nm import read_nm_counts
from concordose.dicom.seg import read_segmentation
from concordose.dicom.study import assemble_cycles
from concordose.dose.metrics import voi_dose_metrics
from concordose.dose.models import DoseInput, VoxelDoseInput
from concordose.dose.registry import DOSE_METHODS, VOXEL_DOSE_METHODS
from concordose.kinetics.methods.mono_exponential import MonoExponential
from concordose.quant.activity import counts_to_activity_mbq
from concordose.quant.voi import resample_vois
from phantoms.patient import generate_patient

TIME_POINTS_H = (1.0, 4.0, 24.0, 48.0, 96.0, 168.0)


def main() -> None:
    """Generate (untimed), then time each step and print it with peak memory."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="demo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        patient = generate_patient(Path(tmp), preset=args.preset, time_points_h=TIME_POINTS_H)
        truth = json.loads(patient.ground_truth_path.read_text())
        tracemalloc.start()
        steps: dict[str, float] = {}
        start = time.perf_counter()

        cycle = assemble_cycles(catalogue(Path(tmp) / "dicom"))[0]
        site = SiteRegistry.load(patient.sites_path).site(truth["site"]["site_id"])
        first = cycle.time_points[0].acquisition.acquisition_datetime
        assert first is not None
        calibration = site.calibration_on(first.date())
        maps = []
        for point in cycle.time_points:
            acquisition = point.acquisition
            maps.append(
                counts_to_activity_mbq(
                    read_nm_counts(acquisition),
                    calibration_factor_cps_per_mbq=calibration.calibration_factor_cps_per_mbq,
                    acquisition_duration_s=acquisition.acquisition_duration_s,
                )
            )
        geometry = cycle.time_points[0].acquisition.geometry
        activity = np.stack(maps, axis=-1)  # (z, y, x, time)
        times_h = np.array([p.time_h for p in cycle.time_points])
        steps["read + calibrate 6 NM"] = time.perf_counter() - start

        mark = time.perf_counter()
        batch = MonoExponential().fit(times_h, activity.reshape(-1, times_h.size))
        tia_map = np.nan_to_num(batch.tia_mbq_h, nan=0.0).reshape(activity.shape[:-1])
        steps[f"voxel fits ({batch.tia_mbq_h.size:,} voxels)"] = time.perf_counter() - mark

        mark = time.perf_counter()
        spacing_zyx = tuple(reversed(geometry.spacing_mm))
        assert len(spacing_zyx) == 3
        dose_map = (
            VOXEL_DOSE_METHODS.get("vsv_4.42mm")
            .compute_map(VoxelDoseInput(tia_map, (spacing_zyx[0], spacing_zyx[1], spacing_zyx[2])))
            .dose_gy
        )
        steps["VSV convolution"] = time.perf_counter() - mark

        mark = time.perf_counter()
        vois = resample_vois(read_segmentation(cycle.segmentation), geometry)
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
        total_s = time.perf_counter() - start
        _, peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    print(f"preset {args.preset}: grid {geometry.shape}, {len(TIME_POINTS_H)} time points")
    for name, seconds in steps.items():
        print(f"  {name:32s} {seconds:7.2f} s")
    print(f"  {'total (no registration)':32s} {total_s:7.2f} s")
    print(f"peak traced memory (numpy + Python): {peak_bytes / 2**20:.0f} MiB")
    print(f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    vois_truth = truth["vois"]
    ldm = DOSE_METHODS.get("ldm").compute(
        DoseInput(
            labels=tuple(v["label"] for v in vois_truth),
            tia_mbq_h=np.array([v["tia_mbq_h"] for v in vois_truth]),
            mass_g=np.array([v["mass_g"] for v in vois_truth]),
        )
    )
    true_ldm = dict(zip([v["label"] for v in vois_truth], ldm.mean_dose_gy, strict=True))
    print(
        "VOI mean dose, voxel VSV / LDM from true TIA "
        "(expected ≈ 0.87–0.95: kernel energy, edges, noise):"
    )
    for metric in metrics:
        print(
            f"  {metric.label:14s} {metric.mean_dose_gy:8.2f} Gy  "
            f"ratio {metric.mean_dose_gy / true_ldm[metric.label]:.3f}  "
            f"D98 {metric.d98_gy:7.2f}  D2 {metric.d2_gy:7.2f}"
        )


if __name__ == "__main__":
    main()
