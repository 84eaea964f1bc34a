"""Biologically effective dose (BED) of an organ under a mono-exponentially decaying dose rate.

Linear-quadratic model with first-order (mono-exponential) sublethal-damage repair for a dose
rate R(t) = R0·e^(-λt) delivered to completion (Dale, Br J Radiol 1985;58:515; in the MIRD
schema: Baechler et al., Med Phys 2008;35:1123-34; MIRD Pamphlet No. 20, Wessels et al., J Nucl
Med 2008;49:1884-99)::

    BED = D · (1 + D / (α/β) · λ / (μ + λ)),   λ = ln 2 / T_eff,  μ = ln 2 / T_rep
        = D · (1 + D / (α/β) · T_rep / (T_rep + T_eff))

The kidney parameters are the ones the PRRT kidney literature uses: α/β = 2.6 Gy and a repair
half-time of 2.8 h (Thames et al. 1990 in Baechler 2008 and Wessels 2008; applied to
[177Lu]Lu-DOTATATE and [90Y]Y-DOTATOC by Bodei et al., Eur J Nucl Med Mol Imaging
2008;35:1847-56; reviewed by Strigari et al., Eur J Nucl Med Mol Imaging 2014;41:1976-88).

Assumptions: the uptake phase is neglected (the dose rate is taken as decaying from injection
with the effective half-life of the organ's time-activity curve, which slightly underestimates
BED); cycles weeks apart are fully repaired between them, so a course's BED is the sum of its
cycles' BEDs (Bodei 2008).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

KIDNEY_ALPHA_BETA_GY = 2.6
"""α/β of the kidney, Gy (Thames 1990 as used by Baechler 2008, Wessels 2008, Bodei 2008)."""
KIDNEY_REPAIR_HALF_TIME_H = 2.8
"""Repair half-time of sublethal damage in the kidney, h (same sources)."""


def relative_repair_factor(teff_h: npt.ArrayLike, repair_half_time_h: float) -> FloatArray:
    """λ/(μ+λ) = T_rep/(T_rep + T_eff) of a mono-exponential dose rate (dimensionless, in
    (0, 1]); NaN where T_eff is not finite and positive."""
    teff = np.asarray(teff_h, dtype=np.float64)
    usable = np.isfinite(teff) & (teff > 0)
    factor: FloatArray = np.where(
        usable, repair_half_time_h / (repair_half_time_h + np.where(usable, teff, 1.0)), np.nan
    )
    return factor


def bed_gy(
    dose_gy: npt.ArrayLike,
    teff_h: npt.ArrayLike,
    *,
    alpha_beta_gy: float = KIDNEY_ALPHA_BETA_GY,
    repair_half_time_h: float = KIDNEY_REPAIR_HALF_TIME_H,
) -> FloatArray:
    """BED (Gy) of one cycle's absorbed dose ``dose_gy`` (Gy) delivered mono-exponentially with
    effective half-life ``teff_h`` (h) (module docstring). Vectorised; NaN where either input is
    not finite (or T_eff not positive)."""
    dose = np.asarray(dose_gy, dtype=np.float64)
    factor = relative_repair_factor(teff_h, repair_half_time_h)
    bed: FloatArray = dose * (1.0 + dose / alpha_beta_gy * factor)
    return bed


def bed_slope(
    dose_gy: npt.ArrayLike,
    teff_h: npt.ArrayLike,
    *,
    alpha_beta_gy: float = KIDNEY_ALPHA_BETA_GY,
    repair_half_time_h: float = KIDNEY_REPAIR_HALF_TIME_H,
) -> FloatArray:
    """dBED/dD = 1 + 2·D/(α/β)·T_rep/(T_rep + T_eff): propagates a dose's SD to its BED's
    (first order)."""
    dose = np.asarray(dose_gy, dtype=np.float64)
    factor = relative_repair_factor(teff_h, repair_half_time_h)
    slope: FloatArray = 1.0 + 2.0 * dose / alpha_beta_gy * factor
    return slope
