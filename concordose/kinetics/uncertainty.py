"""Uncertainty of activities and TIAs, after the EANM guidance (Gear et al. EJNMMI 2018).

Reference: Gear JI et al., EJNMMI 2018;45:2456-74.

Activity of a VOI at one time point, A = C / (CF·T_acq·RC), with relative standard deviations
added in quadrature (independent sources, first-order propagation):

    (σ_A/A)² = (σ_C/C)² + (σ_CF/CF)² + (σ_RC/RC)²

Counting: σ_C/C = 1/√C for C counts (Poisson). The calibration factor is common to every time
point of a cycle, so its error is fully correlated between points: it must not be fed to the
fit as if independent. :func:`activity_sd_mbq` therefore gives the per-point (independent) part
for the fit weights, and :func:`tia_sd_with_calibration_mbq_h` adds the correlated CF part to the
TIA's fit uncertainty afterwards: a common scale error moves the TIA by the same fraction.
The TIA's fit part is gᵀVg from the fit covariance (``kinetics.fitting``).

The partial-volume correction's uncertainty (the PSF's FWHM SD and the PSF-model term of the
geometric transfer matrix, ``quant.gtm``) is of the same kind: the same PSF and the same VOI
masks correct every time point, so an error in them scales every point of a curve alike. It is
added to the TIA like the calibration part, as the activity-weighted mean of the per-point
relative SDs (:func:`correlated_relative_sd`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def activity_sd_mbq(
    activity_mbq: FloatArray,
    counts: FloatArray,
    *,
    recovery_relative_sd: float | FloatArray = 0.0,
    other_relative_sd: float | FloatArray = 0.0,
) -> FloatArray:
    """Independent per-point standard deviation of VOI activities, MBq.

    Args:
        activity_mbq: (n_curves, n_points) activities.
        counts: the VOIs' total counts at each point, same shape (Poisson part 1/√C).
        recovery_relative_sd: σ_RC/RC of the partial-volume recovery applied (per curve or
            scalar); 0 when no PVC.
        other_relative_sd: any further independent relative part (e.g. VOI delineation).
    """
    counts_array = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore"):
        counting = np.where(counts_array > 0, 1.0 / np.sqrt(counts_array), np.inf)
    relative = np.sqrt(
        counting**2
        + np.broadcast_to(np.asarray(recovery_relative_sd, dtype=np.float64), counting.shape) ** 2
        + np.broadcast_to(np.asarray(other_relative_sd, dtype=np.float64), counting.shape) ** 2
    )
    with np.errstate(invalid="ignore"):  # no counts and no activity: the SD is NaN, not 0
        result: FloatArray = np.abs(np.asarray(activity_mbq, dtype=np.float64)) * relative
    return result


def correlated_relative_sd(activity_mbq: FloatArray, relative_sd: FloatArray) -> FloatArray:
    """Relative SD of each curve's TIA from a per-point relative error correlated across points.

    A relative error ε_t common in cause to every time point (the same PSF and masks correct each
    one) moves the TIA by Σ w_t·ε_t, with w_t each point's share of the integral. The shares are
    taken as the activities' shares (points equally weighted in time: an approximation that is
    exact when the relative SD is the same at every point, the usual case).

    Args:
        activity_mbq: (n_curves, n_points) activities.
        relative_sd: same shape, each point's relative SD; NaN (no correction) counts as 0.

    Returns:
        (n_curves,) relative SDs; 0 for a curve with no positive activity.
    """
    weights = np.clip(np.asarray(activity_mbq, dtype=np.float64), 0.0, None)
    parts = np.nan_to_num(np.asarray(relative_sd, dtype=np.float64), nan=0.0)
    total = weights.sum(axis=1)
    mean: FloatArray = np.divide(
        (weights * parts).sum(axis=1), total, out=np.zeros_like(total), where=total > 0
    )
    return mean


def tia_sd_with_calibration_mbq_h(
    tia_mbq_h: FloatArray,
    tia_fit_sd_mbq_h: FloatArray,
    calibration_relative_sd: float,
    partial_volume_relative_sd: float | FloatArray = 0.0,
) -> FloatArray:
    """Total TIA standard deviation: fit part ⊕ the fully correlated calibration part ⊕ the
    correlated partial-volume part (per curve, from :func:`correlated_relative_sd`)."""
    tia = np.asarray(tia_mbq_h)
    total: FloatArray = np.sqrt(
        np.asarray(tia_fit_sd_mbq_h) ** 2
        + (tia * calibration_relative_sd) ** 2
        + (tia * np.asarray(partial_volume_relative_sd, dtype=np.float64)) ** 2
    )
    return total


def total_tia_sd_mbq_h(
    tia_mbq_h: FloatArray,
    tia_fit_sd_mbq_h: FloatArray | None,
    calibration_relative_sd: float | None,
    partial_volume_relative_sd: float | FloatArray = 0.0,
) -> FloatArray | None:
    """The TIA uncertainty a dose is computed with: fit part ⊕ calibration part ⊕
    partial-volume part (per curve; 0 without a correction).

    None when the kinetics method gives no fit uncertainty (the dose's is then unknown); the
    calibration part is left out (taken as 0) when the site's record states none.
    """
    if tia_fit_sd_mbq_h is None:
        return None
    return tia_sd_with_calibration_mbq_h(
        tia_mbq_h, tia_fit_sd_mbq_h, calibration_relative_sd or 0.0, partial_volume_relative_sd
    )
