"""A SPECT camera as the projector models it: collimator, intrinsic resolution, orbit, dead time.

**Collimator-detector response (CDR).** A Gaussian in the detector plane whose FWHM grows with
the distance d (mm) from the collimator face,
FWHM(d) = sqrt(R_int² + R_coll(d)²), R_coll(d) = D·(L_eff + d)/L_eff, L_eff = L − 2/μ_Pb
(geometric resolution of a parallel-hole collimator: Cherry, Sorenson & Phelps, *Physics in
Nuclear Medicine*, 4th ed., ch. 14, eq. 14-6, with the effective hole length for septal
penetration), D the hole diameter and L the hole length. Septal penetration and scatter in the
collimator (the tails of a real 208 keV response) are not modelled.

Hole geometry:

* GE MEGP (Discovery NM/CT 670, Optima 640): hexagonal holes 3.0 mm, length 58 mm, septa
  1.05 mm (the GE NM670 head of the OpenGATE toolkit, ``opengate.contrib.spect.ge_discovery_nm670``,
  which follows GE's data sheet).
* Siemens ME ("MELP", Symbia T / Intevo): holes 2.94 mm, length 40.64 mm, septa 1.14 mm (Siemens
  Symbia T-series data sheet values, as used in SIMIND's ``sy-me`` collimator). Siemens cameras
  have one medium-energy collimator; a Siemens site that labels it "MEGP" gets this geometry.

μ_Pb at 208 keV: 0.915 cm²/g × 11.35 g/cm³ = 1.04 /mm (NIST XCOM lead, 0.9985 cm²/g at 200 keV
and 0.4031 at 300 keV, log-log interpolated), so L_eff = L − 1.93 mm.

Intrinsic resolution: 3.8 mm FWHM at 140 keV for a 3/8" NaI(Tl) crystal (vendor data sheets;
SIMIND's Symbia model uses 0.38 cm), scaled by (140/208)^½ for the better light statistics at
208 keV (resolution ∝ E^−½): 3.12 mm. Assumed the same for GE.

**Orbit.** Circular, with the site's radius of rotation (axis to collimator face), 360° in
``n_views`` equal steps (both heads' views merged).

**Dead time.** Paralysable: observed rate m = n·exp(−n·τ) with n the true photopeak-window count
rate of a head. τ = 4.60 µs for the 208 keV window's primary photons on a Siemens Symbia T with
the ME collimator (Uribe et al. 2018, EJNMMI Phys 5:2, "Deadtime effects in quantification of
177Lu activity for radionuclide therapy": 4.60 ± 0.05 µs; 0.19 µs for the full spectrum). No GE
value was found in the sources consulted; GE cameras are given the same τ (an assumption).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

MU_LEAD_208KEV_PER_MM = 0.915 * 11.35 / 10.0
"""Lead at 208 keV, /mm (NIST XCOM, log-log between 200 and 300 keV; module docstring)."""
INTRINSIC_FWHM_208KEV_MM = 3.8 * math.sqrt(140.0 / 208.37)
"""Intrinsic resolution at 208 keV, mm (3.8 mm at 140 keV scaled by E^−½; module docstring)."""
DEAD_TIME_PARALYSABLE_S = 4.60e-6
"""Paralysable dead time of the 208 keV window, s (Uribe et al. 2018, Symbia T, ME)."""


@dataclass(frozen=True)
class Collimator:
    """A parallel-hole collimator's geometry (mm)."""

    name: str
    hole_diameter_mm: float
    hole_length_mm: float
    septal_thickness_mm: float

    @property
    def effective_length_mm(self) -> float:
        """Hole length less the penetration allowance 2/μ_Pb at 208 keV, mm."""
        return self.hole_length_mm - 2.0 / MU_LEAD_208KEV_PER_MM

    def geometric_fwhm_mm(self, distance_mm: float) -> float:
        """Geometric resolution at ``distance_mm`` from the collimator face, FWHM mm."""
        l_eff = self.effective_length_mm
        return self.hole_diameter_mm * (l_eff + max(distance_mm, 0.0)) / l_eff


GE_MEGP = Collimator("GE MEGP", hole_diameter_mm=3.0, hole_length_mm=58.0, septal_thickness_mm=1.05)
"""GE medium-energy general-purpose collimator (module docstring)."""
SIEMENS_ME = Collimator(
    "Siemens ME (MELP)", hole_diameter_mm=2.94, hole_length_mm=40.64, septal_thickness_mm=1.14
)
"""Siemens medium-energy low-penetration collimator (module docstring)."""


@dataclass(frozen=True)
class CameraModel:
    """What the projector needs of a site's camera.

    Attributes:
        collimator: the collimator's hole geometry.
        intrinsic_fwhm_mm: intrinsic (crystal + electronics) resolution at 208 keV, mm.
        radius_of_rotation_mm: circular orbit, axis to collimator face, mm.
        dead_time_s: paralysable dead time τ of the photopeak window, s.
    """

    collimator: Collimator
    intrinsic_fwhm_mm: float
    radius_of_rotation_mm: float
    dead_time_s: float

    def system_fwhm_mm(self, distance_mm: float) -> float:
        """CDR FWHM at ``distance_mm`` from the collimator face, mm (module docstring)."""
        return math.hypot(self.intrinsic_fwhm_mm, self.collimator.geometric_fwhm_mm(distance_mm))


CollimatorName = Literal["ge_megp", "siemens_me"]
"""Identifiers of the modelled collimators (:data:`COLLIMATORS`)."""
COLLIMATORS: dict[CollimatorName, Collimator] = {"ge_megp": GE_MEGP, "siemens_me": SIEMENS_ME}
"""The modelled collimators by the identifier a site protocol names them with."""
