"""Recovery coefficients from a NEMA IEC body phantom and the fitted RC(V) curve.

RC of a sphere = mean measured concentration in a VOI of the sphere's true volume / true
concentration; it includes the spill-in of the phantom's own warm background. The
background-independent (contrast) recovery RC0 = (C_meas − C_B)/(C_sphere − C_B) removes it with
the known background concentration C_B (:func:`contrast_recovery`). The curve
RC(V) = 1 / (1 + (a/V)^b) (V in mL; a in mL, b dimensionless) is fitted by weighted non-linear
least squares; the parameter covariance is returned for uncertainty propagation (EANM, Gear et
al. 2018).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import curve_fit

from concordose.dicom.geometry import VolumeGeometry
from concordose.errors import OutOfRangeError


@dataclass(frozen=True)
class RecoveryCurve:
    """RC(V) = 1 / (1 + (a/V)^b) with parameter covariance.

    Attributes:
        a_ml: volume at which RC = 0.5, mL.
        b: steepness.
        covariance: 2×2 covariance of (a_ml, b).
    """

    a_ml: float
    b: float
    covariance: npt.NDArray[np.float64]

    def rc(self, volume_ml: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Recovery coefficient at each volume (mL)."""
        volumes = np.asarray(volume_ml, dtype=np.float64)
        return 1.0 / (1.0 + (self.a_ml / volumes) ** self.b)


def contrast_recovery(
    recovery: npt.ArrayLike, sphere_to_background_ratio: float
) -> npt.NDArray[np.float64]:
    """Background-independent recovery RC0 from the plain RC of spheres in a warm background.

    With C_meas = RC0·C_S + (1 − RC0)·C_B (the sphere's own signal kept in its VOI plus the
    background's spill-in through the same geometry), RC0 = (C_meas − C_B)/(C_S − C_B)
    = (RC − 1/r)/(1 − 1/r), r = C_S/C_B the true sphere-to-background ratio. This is the NEMA
    NU 2 hot-sphere contrast recovery, (C_H/C_B − 1)/(r − 1), with the background known from
    the fill rather than measured.

    Raises:
        OutOfRangeError: ratio ≤ 1 (no contrast to recover).
    """
    if not sphere_to_background_ratio > 1.0:
        raise OutOfRangeError(
            f"contrast recovery needs a sphere-to-background ratio > 1, got "
            f"{sphere_to_background_ratio}"
        )
    inverse = 1.0 / sphere_to_background_ratio
    result: npt.NDArray[np.float64] = (np.asarray(recovery, dtype=np.float64) - inverse) / (
        1.0 - inverse
    )
    return result


def _rc_model(volume_ml: npt.NDArray[np.float64], a_ml: float, b: float) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + (a_ml / volume_ml) ** b)


def fit_recovery_curve(
    volumes_ml: npt.ArrayLike,
    recovery: npt.ArrayLike,
    recovery_sigma: npt.ArrayLike | None = None,
) -> RecoveryCurve:
    """Fit RC(V) to measured recovery coefficients.

    Raises:
        OutOfRangeError: fewer than 3 spheres, or RCs not in (0, 1.5].
    """
    volumes = np.asarray(volumes_ml, dtype=np.float64)
    values = np.asarray(recovery, dtype=np.float64)
    if volumes.size < 3 or volumes.shape != values.shape:
        raise OutOfRangeError(
            f"need ≥ 3 spheres with one RC each, got {volumes.size} and {values.size}"
        )
    if np.any((values <= 0) | (values > 1.5)):
        raise OutOfRangeError(f"recovery coefficients must lie in (0, 1.5], got {values}")
    sigma = None if recovery_sigma is None else np.asarray(recovery_sigma, dtype=np.float64)
    initial_a = float(np.interp(0.5, np.sort(values), volumes[np.argsort(values)]))
    params, covariance = curve_fit(
        _rc_model,
        volumes,
        values,
        p0=(max(initial_a, 1e-3), 1.0),
        sigma=sigma,
        absolute_sigma=sigma is not None,
        bounds=((1e-6, 0.05), (1e3, 10.0)),
    )
    return RecoveryCurve(a_ml=float(params[0]), b=float(params[1]), covariance=covariance)


def sphere_recovery(
    concentration: npt.NDArray[np.float64],
    geometry: VolumeGeometry,
    *,
    centres_mm: Sequence[tuple[float, float, float]],
    diameters_mm: Sequence[float],
    true_concentration: float,
) -> npt.NDArray[np.float64]:
    """RC of each sphere: mean in a VOI of its true size, over the true concentration.

    The VOI is every voxel whose centre lies within the sphere (patient coordinates, mm).
    ``concentration`` is (slices, rows, columns) in any unit that ``true_concentration`` shares.
    """
    direction = np.asarray(geometry.direction).reshape(3, 3)
    spacing = np.asarray(geometry.spacing_mm)
    k, j, i = np.indices(geometry.shape)
    index_xyz = np.stack([i, j, k], axis=-1).reshape(-1, 3).astype(np.float64)
    positions = np.asarray(geometry.origin_mm) + (index_xyz * spacing) @ direction.T
    flat = concentration.reshape(-1)
    result = []
    for centre, diameter in zip(centres_mm, diameters_mm, strict=True):
        inside = np.sum((positions - np.asarray(centre)) ** 2, axis=1) <= (diameter / 2.0) ** 2
        if not inside.any():
            raise OutOfRangeError(f"sphere at {centre} (Ø {diameter} mm) holds no voxel centre")
        result.append(flat[inside].mean() / true_concentration)
    return np.asarray(result)
