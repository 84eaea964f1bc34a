"""Linear attenuation coefficients at the Lu-177 208 keV photopeak from CT Hounsfield units.

A bilinear HU → μ conversion (the form of Brown et al. 2008, Appl. Radiat. Isot. 66:1206–1212,
"Investigation of the relationship between linear attenuation coefficients and CT Hounsfield
units using radionuclides for SPECT"): below 0 HU a mixture of air and water,
μ = μ_water·(1 + HU/1000); above 0 HU a mixture of water and cortical bone,
μ = μ_water + HU·(μ_bone − μ_water)/HU_bone. Air counts as μ = 0.

Coefficients (NIST XCOM / NIST Standard Reference Database 126, Hubbell & Seltzer): mass
attenuation coefficients at 200 keV are 0.1370 cm²/g for liquid water and 0.1309 cm²/g for
cortical bone (ICRU-44, ρ = 1.92 g/cm³); water's 300 keV value is 0.1186 cm²/g. Interpolated
log-log to 208 keV, water's slope d ln μ / d ln E = ln(0.1186/0.1370)/ln(1.5) = −0.356 gives the
factor (208/200)^−0.356 = 0.9862; bone is given the same factor (both are Compton-dominated at
this energy, the bone/water ratio changes by < 0.5 % between 200 and 300 keV). So μ_water =
0.1370·0.9862 cm²/g × 1.00 g/cm³ = 0.01351 /mm and μ_bone = 0.1309·0.9862 × 1.92 = 0.02479 /mm.
``HU_CORTICAL_BONE`` (+1000 HU) is the model's bone point, a typical CT value of cortical bone;
a site whose CT calibration differs should say so in its protocol (not configurable yet). The
digital consortium paints cortical bone at this HU, so its CT and μ map agree by construction.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

LU177_PHOTOPEAK_KEV = 208.37
"""Lu-177 main γ line, keV (ICRP-107: 208.37 keV)."""
MU_WATER_PER_MM = 0.1370 * 0.9862 * 1.00 / 10.0
"""Water at 208 keV, /mm (NIST XCOM 200 keV value, log-log to 208 keV; module docstring)."""
MU_CORTICAL_BONE_PER_MM = 0.1309 * 0.9862 * 1.92 / 10.0
"""ICRU-44 cortical bone (1.92 g/cm³) at 208 keV, /mm (NIST; module docstring)."""
HU_CORTICAL_BONE = 1000.0
"""HU of the bilinear model's bone point: cortical bone (module docstring)."""


def mu_per_mm_from_hu(hu: NDArray[np.floating] | NDArray[np.integer]) -> NDArray[np.float64]:
    """μ at 208 keV (/mm) from HU by the bilinear model (module docstring); never negative."""
    values = np.asarray(hu, dtype=np.float64)
    soft = MU_WATER_PER_MM * (1.0 + values / 1000.0)
    bone = MU_WATER_PER_MM + values * (MU_CORTICAL_BONE_PER_MM - MU_WATER_PER_MM) / HU_CORTICAL_BONE
    mu: NDArray[np.float64] = np.clip(np.where(values <= 0.0, soft, bone), 0.0, None)
    return mu
