"""SPECT image formation as the platform models it: camera, projector, OSEM, μ at 208 keV.

A rotation-based projector with attenuation and a depth-dependent collimator-detector response
(:mod:`.projector`, :mod:`.camera`), its matched back-projector, OSEM on it (:mod:`.osem`) and
the bilinear HU → μ conversion at the Lu-177 photopeak (:mod:`.attenuation`, a time point's
map from its CT in :mod:`.attenuation_map`); the photopeak window's scatter and a site's
correction of it inside OSEM (:mod:`.scatter`); a site's acquisition and reconstruction as its
protocol records them (:mod:`.protocol`). The
perturbation-based GTM (:mod:`concordose.quant.perturbation_gtm`) reconstructs each region's
projections through the site's OSEM with these; the digital consortium forms its realistic
images with the same (``phantoms/acquisition.py``), so the benchmark measures the method with
an exact system model — its ceiling, not its robustness to a vendor's reconstruction.
"""

from concordose.reconstruction.attenuation import MU_WATER_PER_MM, mu_per_mm_from_hu
from concordose.reconstruction.camera import COLLIMATORS, CameraModel, Collimator
from concordose.reconstruction.osem import osem
from concordose.reconstruction.projector import ProjectionGeometry, SpectProjector
from concordose.reconstruction.scatter import ScatterCorrection

__all__ = [
    "COLLIMATORS",
    "MU_WATER_PER_MM",
    "CameraModel",
    "Collimator",
    "ProjectionGeometry",
    "ScatterCorrection",
    "SpectProjector",
    "mu_per_mm_from_hu",
    "osem",
]
