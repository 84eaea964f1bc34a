"""Which Gaussian FWHM makes the GTM exact for a lesion, per site, on its own noise-free chain?

Run: ``.venv/bin/python -m benchmarks.gtm_exact_fwhm [--json FILE]`` (≈ 4 min).

Not a timing. The GTM (``quant.gtm``) models each site's reconstruction as one isotropic
Gaussian, whose FWHM the site's calibration record holds twice: fitted on the NEMA spheres
(4–10:1) and across the phantom body's surface (the large-object fit); the platform uses the
smaller (``quant.pvc.chosen_psf_fwhm``). Which one a lesion at patient contrast behaves as, the
noisy phantom cannot say; the chain can, without noise.

For each site of the digital consortium this reconstructs one sphere at a time 44 mm off the
axis of a warm water cylinder, with the site's own acquisition and OSEM (noise-free, 60 views;
``benchmarks.threshold_contrast_dependence.site_image``), and finds by bisection the FWHM at
which the GTM with the sphere's true (voxel-centre) mask and the cylinder as background
recovers the sphere's true activity exactly (``exact_fwhm_mm``). Cases: the NEMA spheres'
sizes at the phantom's fills (5.58–26.52 mL at 4:1 and 10:1) and lesions at a first time
point's contrast (26.52, 60 and 150 mL at 40:1). The sites' fitted FWHMs are not computed here
(they come from noisy phantom scans: ``benchmarks/harmonisation.py`` runs keep them in their
calibration ledgers).
"""

from __future__ import annotations

from typing import Any

from scipy.optimize import brentq

from benchmarks.threshold_contrast_dependence import (
    BACKGROUND_MBQ_PER_ML,
    cylinder,
    per_site_main,
    site_image,
    sphere,
)
from concordose.phantoms.site_profiles import SiteProfile
from concordose.quant.gtm import gtm_correct, voi_crops

CASES = (
    (5.58, 4.0),
    (11.49, 4.0),
    (26.52, 4.0),
    (5.58, 10.0),
    (11.49, 10.0),
    (26.52, 10.0),
    (26.52, 40.0),
    (60.0, 40.0),
    (150.0, 40.0),
)
"""(sphere volume mL, sphere-to-background ratio): the phantom's spheres at its two fills, then
lesions at a first time point's contrast."""
FWHM_SEARCH_MM = (3.0, 30.0)
"""Bisection bracket, mm."""
FWHM_TOLERANCE_MM = 0.05
"""Bisection tolerance, mm."""


def exact_fwhm_mm(site: SiteProfile, volume_ml: float, ratio: float) -> float | None:
    """The FWHM (mm) at which the GTM recovers a ``volume_ml`` sphere at ``ratio``:1 exactly on
    ``site``'s noise-free chain; None when no FWHM in :data:`FWHM_SEARCH_MM` does."""
    voxel_mm = site.nm_voxel_mm
    occupancy, mask = sphere(voxel_mm, volume_ml)
    image = site_image(site, occupancy, ratio)
    body = cylinder(voxel_mm) > 0.5
    true_mbq = BACKGROUND_MBQ_PER_ML * ratio * float(occupancy.sum()) * voxel_mm**3 / 1000.0

    def excess(fwhm_mm: float) -> float:
        corrected = gtm_correct(
            image,
            voi_crops(mask[None]),
            body=body,
            spacing_mm_zyx=(voxel_mm, voxel_mm, voxel_mm),
            fwhm_mm=fwhm_mm,
        )
        return float(corrected.activity_mbq[0]) / true_mbq - 1.0

    try:
        return float(brentq(excess, *FWHM_SEARCH_MM, xtol=FWHM_TOLERANCE_MM))
    except ValueError:  # no sign change in the bracket
        return None


def measure(site: SiteProfile) -> dict[str, Any]:
    """One site's table (module docstring)."""
    rows = []
    for volume_ml, ratio in CASES:
        value = exact_fwhm_mm(site, volume_ml, ratio)
        rows.append(
            {
                "volume_ml": volume_ml,
                "ratio": ratio,
                "exact_fwhm_mm": None if value is None else round(value, 2),
            }
        )
    lesions = [r["exact_fwhm_mm"] for r in rows if r["ratio"] == CASES[-1][1]]
    known = [value for value in lesions if value is not None]
    return {
        "reconstruction": site.recon.description,
        "resolution_recovery": site.recon.resolution_recovery,
        "cases": rows,
        "lesions_at_highest_ratio_mm": [min(known), max(known)] if known else None,
    }


if __name__ == "__main__":
    per_site_main(__doc__.splitlines()[0], measure)
