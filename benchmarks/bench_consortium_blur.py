"""Resolution model of the digital consortium: ``scipy.ndimage.gaussian_filter`` (what
``phantoms.imaging`` uses) against SimpleITK's recursive Gaussian (the peer).

Run: ``.venv/bin/python -m benchmarks.bench_consortium_blur [--repeats N]``. For each consortium
site, on its own reconstruction grid, the activity map of virtual patient 1 at 24 h is blurred with
the site's effective FWHM by both; the report is the wall-time ratio (peer / ours) and the largest
voxel disagreement relative to the image maximum (both approximate the same Gaussian).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk

from concordose.phantoms.anatomy import sample_label_map
from concordose.phantoms.imaging import FWHM_PER_SIGMA, gaussian_blur, region_activity_map
from concordose.phantoms.presets import nm_grid_for
from concordose.phantoms.protocols import protocol
from concordose.phantoms.site_profiles import CONSORTIUM_SITES
from concordose.phantoms.virtual_patient import draw_virtual_patient


def main() -> None:
    """Time both blurs per site, print ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    patient = draw_virtual_patient(1, 1, protocol=protocol("spectacular"), max_cycles=1)
    regions = (*patient.anatomy.vois, patient.anatomy.body)
    header = ("site", "grid", "FWHM", "scipy s", "sitk s", "ratio", "max diff")
    widths = (-12, 12, 6, 9, 9, 6, 9)
    print(
        " ".join(
            f"{h:<{-w}}" if w < 0 else f"{h:>{w}}" for h, w in zip(header, widths, strict=True)
        )
    )
    for site in CONSORTIUM_SITES:
        grid = nm_grid_for(site, "demo")
        labels = sample_label_map(patient.anatomy, grid)
        activity, _ = region_activity_map(
            labels,
            {r.value: float(patient.curves[1][r.label].activity_mbq(24.0)) for r in regions},
        )
        voxel = grid.spacing_mm_xyz
        fwhm = site.effective_fwhm_mm

        start = time.perf_counter()
        for _ in range(args.repeats):
            ours = gaussian_blur(
                activity, fwhm_mm=fwhm, voxel_mm_zyx=(voxel[2], voxel[1], voxel[0])
            )
        ours_s = (time.perf_counter() - start) / args.repeats

        image = sitk.GetImageFromArray(activity)
        image.SetSpacing(voxel)
        start = time.perf_counter()
        for _ in range(args.repeats):
            peer = sitk.GetArrayFromImage(
                sitk.SmoothingRecursiveGaussian(image, fwhm / FWHM_PER_SIGMA)
            )
        peer_s = (time.perf_counter() - start) / args.repeats
        difference = float(np.max(np.abs(ours - peer)) / ours.max())
        shape = "×".join(str(n) for n in (grid.n_columns, grid.n_rows, grid.n_slices))
        print(
            f"{site.site_id:<12} {shape:>12} {fwhm:6.1f} {ours_s:9.4f} {peer_s:9.4f} "
            f"{peer_s / ours_s:6.2f} {difference:9.2%}"
        )


if __name__ == "__main__":
    main()
