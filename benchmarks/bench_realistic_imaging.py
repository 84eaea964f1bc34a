"""Time of one ``realistic`` SPECT image (projection + OSEM) on the test and clinical grids.

Run: ``.venv/bin/python -m benchmarks.bench_realistic_imaging [--sites milan,grandrapids]
[--views 60,30] [--skip-clinical]``.

The activity is a virtual patient's abdomen at 24 h (``phantoms.anatomy.default_anatomy``,
7.4 GBq-like organ fractions; the kinetics do not matter for the time) with its μ map from the
CT's HU per region, on the ``test`` grid (48×48×32 at 2× the site's voxel) and the ``clinical``
grid (128×128×96 at the site's voxel). For each site and view count it reports the wall time of
:func:`phantoms.acquisition.realistic_image` (projector set-up, forward projection, noise,
OSEM with the site's iterations × subsets, post-filter) and the dead-time live fraction.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from concordose.phantoms.acquisition import RealisticSettings, realistic_image
from concordose.phantoms.anatomy import OUTSIDE_VALUE, default_anatomy, sample_label_map
from concordose.phantoms.attenuation import mu_map_from_labels
from concordose.phantoms.imaging import region_activity_map
from concordose.phantoms.presets import nm_grid_for
from concordose.phantoms.site_profiles import consortium_site

_ACTIVITY_MBQ = {
    "body": 700.0,
    "liver": 150.0,
    "kidney_left": 60.0,
    "kidney_right": 60.0,
    "spleen": 50.0,
    "lesion_1": 5.0,
    "lesion_2": 2.0,
}
_HU = {"body": 40.0, "liver": 60.0, "kidney": 35.0, "spleen": 45.0, "lesion": 50.0}


def main() -> None:
    """Time one reconstruction per site, grid and view count (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sites", default="milan,grandrapids")
    parser.add_argument("--views", default="site,30")
    parser.add_argument("--skip-clinical", action="store_true")
    args = parser.parse_args()
    anatomy = default_anatomy()
    presets = ["test"] if args.skip_clinical else ["test", "clinical"]
    for site_id in args.sites.split(","):
        site = consortium_site(site_id)
        for preset in presets:
            grid = nm_grid_for(site, preset)
            labels = sample_label_map(anatomy, grid)
            regions = (anatomy.body, *anatomy.vois)
            activity, _ = region_activity_map(
                labels, {r.value: _ACTIVITY_MBQ[r.label] for r in regions}
            )
            hu = {r.value: _HU[r.label.split("_")[0]] for r in regions}
            hu[OUTSIDE_VALUE] = -1000.0
            mu = mu_map_from_labels(labels, hu)
            for views in args.views.split(","):
                max_views = None if views == "site" else int(views)
                start = time.perf_counter()
                result = realistic_image(
                    activity,
                    mu,
                    site=site,
                    voxel_mm=grid.spacing_mm_xyz[0],
                    rng=np.random.default_rng(1),
                    noise=True,
                    settings=RealisticSettings(max_views=max_views),
                )
                wall_s = time.perf_counter() - start
                print(
                    f"{site_id:12s} {preset:9s} {grid.shape_zyx} views {result.n_views:3d} "
                    f"({site.recon.description}): {wall_s:7.1f} s, live {result.live_fraction:.4f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
