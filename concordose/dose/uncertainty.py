"""Uncertainty of absorbed dose, carried from TIA (and RC, S-value where known).

First-order propagation for a dose of the form D = TIA · S (or TIA · k / m), with independent
relative uncertainties (EANM guidance, Gear et al. 2018, EJNMMI 45:2456, eq. for products):

    (σ_D / D)² = (σ_TIA / TIA)² + (σ_S / S)² + (σ_RC / RC)²

The RC term is only for a TIA whose own uncertainty does not already include the recovery
coefficient's (activity A = C / (CF · RC), so TIA ∝ 1/RC and the relative terms are equal).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def dose_sd_gy(
    dose_gy: npt.ArrayLike,
    tia_mbq_h: npt.ArrayLike,
    tia_sd_mbq_h: npt.ArrayLike,
    s_value_relative_sd: npt.ArrayLike = 0.0,
    rc_relative_sd: npt.ArrayLike = 0.0,
) -> npt.NDArray[np.float64]:
    """Standard deviation of each dose, Gy (NaN where dose or TIA is not finite or TIA is 0).

    Args:
        dose_gy: doses, Gy.
        tia_mbq_h, tia_sd_mbq_h: TIA and its standard deviation, MBq·h.
        s_value_relative_sd: relative standard deviation of the S-value (dimensionless).
        rc_relative_sd: relative standard deviation of the recovery coefficient, when not
            already in ``tia_sd_mbq_h``.
    """
    dose = np.asarray(dose_gy, dtype=np.float64)
    tia = np.asarray(tia_mbq_h, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative_tia = np.asarray(tia_sd_mbq_h, dtype=np.float64) / tia
    relative = np.sqrt(
        relative_tia**2
        + np.asarray(s_value_relative_sd, dtype=np.float64) ** 2
        + np.asarray(rc_relative_sd, dtype=np.float64) ** 2
    )
    return np.where(np.isfinite(relative) & np.isfinite(dose), np.abs(dose) * relative, np.nan)
