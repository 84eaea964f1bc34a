"""Does the lesion threshold depend on contrast? Per site, on its own noise-free chain.

Run: ``.venv/bin/python -m benchmarks.threshold_contrast_dependence [--json FILE]`` (≈ 2–3 min).

Not a timing. ``gtm_platform_voi`` delineates each lesion at the mean-referenced,
background-corrected level g(V, K) calibrated on the site's NEMA spheres
(``quant.delineation``); with two fills (EARL: 4:1 and 10:1) it follows g as a line in ln K
beyond the phantoms' contrasts (``ThresholdSurface``), because OSEM with resolution modelling
is not linear: hot objects converge faster and overshoot at their edge, so the level a sphere
needs falls as its contrast rises. Whether that holds without resolution modelling, two noisy
fills cannot tell (the difference between them is within their scatter at three of the
digital consortium's four sites); the chain can, without noise.

For each site of the digital consortium this reconstructs, noise-free, one sphere at a time
(5.58, 11.49, 26.52 and 60 mL: three NEMA spheres and a larger lesion's size) 44 mm off the
axis of a warm water cylinder at 4:1, 10:1, 20:1 and 40:1 with the site's own acquisition and
OSEM (``concordose.phantoms.acquisition.realistic_image``, 60 views), and writes per site and
sphere the level that delineates the sphere's true volume and the region's contrast
(``quant.delineation.sphere_threshold_point``), and per site the change of the level from the
lowest to the highest fill (``g_change_4_to_40``), and the 11.49 mL sphere's change on the
same chain with resolution modelling switched (``resolution_modelling_switched``: the cause is
resolution modelling, not the number of iterations or the post-filter). The platform's rule
reads the result from the site protocol's ``reconstruction.resolution_recovery``
(``pipeline.quantify.record_threshold_surface``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from concordose.phantoms.acquisition import RealisticSettings, realistic_image
from concordose.phantoms.site_profiles import CONSORTIUM_SITES, SiteProfile
from concordose.quant.delineation import sphere_threshold_point
from concordose.reconstruction.attenuation import MU_WATER_PER_MM

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

SHAPE = (24, 64, 64)
"""Grid of the cylinder (z, y, x), voxels of the site's SPECT size."""
CYLINDER_RADIUS_MM = 110.0
"""The warm water cylinder's radius (a body's width)."""
OFF_AXIS_VOXELS = 10.0
"""The sphere's offset from the cylinder's axis along x, voxels (44 mm at 4.42 mm)."""
BACKGROUND_MBQ_PER_ML = 0.02
"""The cylinder's concentration (its value scales nothing here: the chain is noise-free)."""
VOLUMES_ML = (5.58, 11.49, 26.52, 60.0)
"""Spheres: three of the NEMA IEC body phantom's six and a 60 mL one (above its largest)."""
RATIOS = (4.0, 10.0, 20.0, 40.0)
"""Sphere-to-background ratios: EARL's two fills and the lesions' (digital consortium, first
time point: measured contrasts K ≈ 8–80)."""
SWITCHED_VOLUME_ML = 11.49
"""The sphere measured on each chain with resolution modelling switched (:func:`switched`)."""
SUPERSAMPLING = 3
"""Sub-voxel samples per axis of the sphere's occupancy."""


def _centre() -> tuple[float, float, float]:
    """The cylinder's axis, off the voxel grid by a fraction of a voxel (no symmetric luck)."""
    return ((SHAPE[0] - 1) / 2 + 0.3, (SHAPE[1] - 1) / 2 + 0.2, (SHAPE[2] - 1) / 2 + 0.1)


def _distance2_mm2(
    zyx: tuple[FloatArray, FloatArray, FloatArray],
    centre: tuple[float, float, float],
    voxel_mm: float,
) -> FloatArray:
    """Squared distance (mm²) of voxel coordinates ``zyx`` from ``centre`` (voxels)."""
    total = np.zeros_like(zyx[0])
    for axis, c in zip(zyx, centre, strict=True):
        total += ((axis - c) * voxel_mm) ** 2
    return total


def sphere(voxel_mm: float, volume_ml: float) -> tuple[FloatArray, BoolArray]:
    """A sphere of ``volume_ml`` off the cylinder's axis: its occupancy per voxel
    (``SUPERSAMPLING``³ sub-samples) and its voxel-centre mask (the site's VOI, drawn exactly)."""
    radius_mm = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    centre = _centre()
    centre = (centre[0], centre[1], centre[2] + OFF_AXIS_VOXELS)
    grid = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1], 0 : SHAPE[2]].astype(np.float64)
    offsets = (np.arange(SUPERSAMPLING) + 0.5) / SUPERSAMPLING - 0.5
    occupancy = np.zeros(SHAPE)
    for dz in offsets:
        for dy in offsets:
            for dx in offsets:
                shifted = (grid[0] + dz, grid[1] + dy, grid[2] + dx)
                occupancy += _distance2_mm2(shifted, centre, voxel_mm) <= radius_mm**2
    inside = _distance2_mm2((grid[0], grid[1], grid[2]), centre, voxel_mm) <= radius_mm**2
    return occupancy / SUPERSAMPLING**3, inside


def cylinder(voxel_mm: float) -> FloatArray:
    """The warm water cylinder (1 inside, 0 outside), its axis along z."""
    _, y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1], 0 : SHAPE[2]].astype(np.float64)
    centre = _centre()
    inside = np.hypot((y - centre[1]) * voxel_mm, (x - centre[2]) * voxel_mm) <= CYLINDER_RADIUS_MM
    body: FloatArray = inside.astype(np.float64)
    return body


def chain_image(site: SiteProfile, concentration: FloatArray, body: FloatArray) -> FloatArray:
    """``concentration`` (MBq/mL, on ``site``'s SPECT voxels) in the water ``body``, acquired
    and reconstructed as ``site`` does (noise-free, 60 views), MBq/mL."""
    voxel_mm = site.nm_voxel_mm
    voxel_ml = voxel_mm**3 / 1000.0
    image = realistic_image(
        concentration * voxel_ml,
        body * MU_WATER_PER_MM,
        site=site,
        voxel_mm=voxel_mm,
        rng=np.random.default_rng(0),
        noise=False,
        settings=RealisticSettings(max_views=60),
    )
    per_mbq_per_ml = site.calibration_factor_cps_per_mbq * site.acquisition_duration_s * voxel_ml
    result: FloatArray = image.counts / per_mbq_per_ml
    return result


def site_image(site: SiteProfile, occupancy: FloatArray, ratio: float) -> FloatArray:
    """Concentration image (MBq/mL) of a sphere of ``occupancy`` at ``ratio``:1 in the warm
    cylinder, acquired and reconstructed as ``site`` does (:func:`chain_image`)."""
    body = cylinder(site.nm_voxel_mm)
    concentration = BACKGROUND_MBQ_PER_ML * (body - occupancy + ratio * occupancy)
    return chain_image(site, concentration, body)


def level_needed(site: SiteProfile, volume_ml: float, ratio: float) -> tuple[float, float] | None:
    """(g, K) that delineates a ``volume_ml`` sphere at ``ratio``:1 on ``site``'s chain."""
    voxel_mm = site.nm_voxel_mm
    occupancy, mask = sphere(voxel_mm, volume_ml)
    return sphere_threshold_point(
        site_image(site, occupancy, ratio),
        mask,
        np.zeros(SHAPE, dtype=bool),
        volume_ml,
        spacing_mm_zyx=(voxel_mm, voxel_mm, voxel_mm),
        fwhm_mm=site.effective_fwhm_mm,
    )


def switched(site: SiteProfile) -> dict[str, Any]:
    """The same chain with resolution modelling switched (on where the site has none, off where
    it has it): the 11.49 mL sphere's level at the lowest and the highest fill, so that the
    cause is resolution modelling and not the site's iterations or post-filter."""
    recon = dataclasses.replace(site.recon, resolution_recovery=not site.recon.resolution_recovery)
    other = dataclasses.replace(site, recon=recon)
    first, last = (level_needed(other, SWITCHED_VOLUME_ML, r) for r in (RATIOS[0], RATIOS[-1]))
    return {
        "reconstruction": recon.description,
        "resolution_recovery": recon.resolution_recovery,
        "volume_ml": SWITCHED_VOLUME_ML,
        "g_lowest_ratio": None if first is None else round(first[0], 3),
        "g_highest_ratio": None if last is None else round(last[0], 3),
        "g_change_4_to_40": (
            None if first is None or last is None else round(last[0] - first[0], 3)
        ),
    }


def measure(site: SiteProfile) -> dict[str, Any]:
    """One site's table (module docstring)."""
    spheres: list[dict[str, Any]] = []
    changes: list[float] = []
    for volume_ml in VOLUMES_ML:
        points = {ratio: level_needed(site, volume_ml, ratio) for ratio in RATIOS}
        first, last = points[RATIOS[0]], points[RATIOS[-1]]
        change = None if first is None or last is None else round(last[0] - first[0], 3)
        if change is not None:
            changes.append(change)
        spheres.append(
            {
                "volume_ml": volume_ml,
                "by_ratio": [
                    {
                        "ratio": ratio,
                        "g": None if point is None else round(point[0], 3),
                        "contrast": None if point is None else round(point[1], 1),
                    }
                    for ratio, point in points.items()
                ],
                "g_change_4_to_40": change,
            }
        )
    return {
        "reconstruction": site.recon.description,
        "resolution_recovery": site.recon.resolution_recovery,
        "spheres": spheres,
        "g_change_4_to_40_max_abs": max((abs(c) for c in changes), default=None),
        "g_change_4_to_40_median": (round(float(np.median(changes)), 3) if changes else None),
        "resolution_modelling_switched": switched(site),
    }


def per_site_main(description: str, measure_site: Callable[[SiteProfile], dict[str, Any]]) -> None:
    """The command line of a per-site noise-free table: ``[--json FILE]``; each consortium
    site's ``measure_site`` printed as it comes, then the whole ``{"sites": …, "wall_s": …}``
    written to FILE (or printed)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", type=Path, help="write the table here")
    args = parser.parse_args()
    started = time.perf_counter()
    result: dict[str, Any] = {"sites": {}}
    for site in CONSORTIUM_SITES:
        result["sites"][site.site_id] = measure_site(site)
        print(f"{site.site_id}: {json.dumps(result['sites'][site.site_id])}", flush=True)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=1)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
        print(f"written {args.json}")
    else:
        print(text)


if __name__ == "__main__":
    per_site_main(__doc__.splitlines()[0], measure)
