"""Single-time-point dose from a dose rate (voxel or VOI): Hänscheid and Madsen variants.

A dose-rate map at time t comes from any voxel method applied to the *activity* map at t (MBq
per voxel): kernels and LDM are linear, Gy per MBq·h of TIA equals Gy/h per MBq of activity, so
``VOXEL_DOSE_METHODS.get(name).compute_map(VoxelDoseInput(activity_map_mbq, spacing))`` is the
dose rate in Gy/h. The dose then follows by assuming mono-exponential clearance after t:

* Hänscheid et al. 2018, J Nucl Med 59:75-81: D ≈ Ḋ(t) · 2t / ln 2 (exact when Teff = t or
  t/2; at most +6.15 % for Teff = t·ln 2; needs no Teff);
* Madsen et al. 2018, Med Phys 45:2318-2324: D = Ḋ(t) · e^{kt} / k, k = ln 2 / Teff with a
  population effective half-life (one number, or a map: e.g. each organ's population Teff
  painted into its VOI).

The dose-rate map can be put on another grid (the CT's) as any voxel method's output: pass the
activity map's ``geometry`` and the ``output_geometry``; both formulas are per voxel and linear in
Ḋ, so they commute with the (linear) resampling when Teff is one number.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from concordose.dicom.geometry import VolumeGeometry
from concordose.dose.models import VoxelDoseInput, VoxelDoseMethod
from concordose.errors import ConcordoseError


def _check_time(time_h: float) -> None:
    if not (math.isfinite(time_h) and time_h > 0):
        raise ConcordoseError(f"scan time must be a positive number of hours; found {time_h}")


def hanscheid_dose_gy(dose_rate_gy_per_h: npt.ArrayLike, time_h: float) -> npt.NDArray[np.float64]:
    """Absorbed dose (Gy) from the dose rate at ``time_h`` hours after injection (Hänscheid)."""
    _check_time(time_h)
    return np.asarray(dose_rate_gy_per_h, dtype=np.float64) * 2.0 * time_h / math.log(2.0)


def madsen_dose_gy(
    dose_rate_gy_per_h: npt.ArrayLike, time_h: float, effective_half_life_h: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Absorbed dose (Gy) from the dose rate at ``time_h`` with a population Teff (Madsen)."""
    _check_time(time_h)
    teff = np.asarray(effective_half_life_h, dtype=np.float64)
    bad = ~np.isfinite(teff) | (teff <= 0)
    if np.any(bad):
        raise ConcordoseError(
            "effective half-life must be positive hours; found "
            f"{int(bad.sum())} of {teff.size} value(s) not, e.g. {teff[bad].ravel()[0]!r}"
        )
    k = math.log(2.0) / teff
    return np.asarray(dose_rate_gy_per_h, dtype=np.float64) * np.exp(k * time_h) / k


def single_time_point_dose_map_gy(
    activity_map_mbq: npt.NDArray[np.float64],
    spacing_mm: tuple[float, float, float],
    time_h: float,
    method: VoxelDoseMethod,
    *,
    effective_half_life_h: float | npt.NDArray[np.float64] | None = None,
    density_g_per_ml: npt.NDArray[np.float64] | None = None,
    geometry: VolumeGeometry | None = None,
    output_geometry: VolumeGeometry | None = None,
) -> npt.NDArray[np.float64]:
    """Absorbed dose map (Gy) from one activity map at ``time_h`` h after injection.

    The voxel ``method`` (e.g. ``VOXEL_DOSE_METHODS.get("vsv_4.42mm")``) turns the activity map
    (MBq per voxel) into a dose-rate map (Gy/h); then Madsen's formula when
    ``effective_half_life_h`` (h; a number or a map on the dose grid) is given, else
    Hänscheid's. With ``geometry`` and ``output_geometry`` the dose is on the output grid
    (e.g. the CT's; ``density_g_per_ml`` then on that grid too).

    Raises:
        ConcordoseError: non-positive time or half-life, or inputs the voxel method refuses.
    """
    dose_rate = method.compute_map(
        VoxelDoseInput(
            activity_map_mbq,
            spacing_mm,
            density_g_per_ml,
            geometry=geometry,
            output_geometry=output_geometry,
        )
    ).dose_gy
    if effective_half_life_h is None:
        return hanscheid_dose_gy(dose_rate, time_h)
    return madsen_dose_gy(dose_rate, time_h, effective_half_life_h)
