"""VOI mass from CT density: Hounsfield units → g/mL → grams, for all VOIs at once.

HU to mass density is a piecewise-linear calibration of the site's CT (kVp, reconstruction).
The default is the water-equivalent line ρ = 1 + HU/1000 g/mL between air (−1000 HU → ~0) and
water (0 HU → 1.0), extended with the same slope above water: adequate for soft tissue (organs
and soft-tissue lesions, −100…+100 HU → 0.9…1.1 g/mL) but not for bone, for which a site should
give its measured calibration (e.g. from a density phantom) as ``HuDensityCurve``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from concordose.errors import ConfigurationError

FloatArray = npt.NDArray[np.float64]

_AIR_DENSITY_G_PER_ML = 0.0012
"""Dry air at 20 °C, 1 atm (NIST), the density floor."""


@dataclass(frozen=True)
class HuDensityCurve:
    """Piecewise-linear HU → density (g/mL); linear extrapolation beyond the last point.

    Attributes:
        hu: calibration points in HU, strictly increasing.
        density_g_per_ml: mass density at each point, > 0.
    """

    hu: tuple[float, ...] = (-1000.0, 0.0, 1000.0)
    density_g_per_ml: tuple[float, ...] = (_AIR_DENSITY_G_PER_ML, 1.0, 2.0)

    def __post_init__(self) -> None:
        hu = np.asarray(self.hu)
        rho = np.asarray(self.density_g_per_ml)
        if hu.size < 2 or hu.shape != rho.shape or np.any(np.diff(hu) <= 0) or np.any(rho <= 0):
            raise ConfigurationError(
                f"HU→density curve needs ≥ 2 points with increasing HU and density > 0, "
                f"got HU {self.hu} and density {self.density_g_per_ml}"
            )

    def density(self, hu: npt.NDArray[np.floating[Any]]) -> FloatArray:
        """Density (g/mL) of each voxel's HU value, never below that of air."""
        values = np.asarray(hu, dtype=np.float64)
        points = np.asarray(self.hu)
        rho = np.asarray(self.density_g_per_ml)
        result = np.interp(values, points, rho)
        above = values > points[-1]
        slope = (rho[-1] - rho[-2]) / (points[-1] - points[-2])
        result = np.where(above, rho[-1] + slope * (values - points[-1]), result)
        clipped: FloatArray = np.maximum(result, _AIR_DENSITY_G_PER_ML)
        return clipped


def voi_masses_g(
    hu: npt.NDArray[np.number[Any]],
    masks: npt.NDArray[np.bool_],
    voxel_volume_ml: float,
    curve: HuDensityCurve | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Mass (g) and mean density (g/mL) of every VOI on the CT grid.

    Args:
        hu: CT in HU, (slices, rows, columns).
        masks: (n_voi, slices, rows, columns) booleans on the same grid.
        voxel_volume_ml: CT voxel volume, mL.
        curve: HU → density calibration (default: water-equivalent line).

    Raises:
        ValueError: the masks are not on the CT's grid.
    """
    values = np.asarray(hu, dtype=np.float64)
    if masks.shape[1:] != values.shape:
        raise ValueError(
            f"VOI masks have grid {masks.shape[1:]} but the CT has {values.shape}; "
            "resample the VOIs onto the CT first"
        )
    density = (curve or HuDensityCurve()).density(values).reshape(-1)
    flat = masks.reshape(masks.shape[0], -1)
    # numpy's pairwise sum per VOI gives the same bits on any BLAS thread count; a matrix
    # product's split depends on it (a single-threaded Dask worker got another last bit)
    mass_g: FloatArray = np.array([density[row].sum() for row in flat]) * voxel_volume_ml
    volume_ml = flat.sum(axis=1, dtype=np.float64) * voxel_volume_ml
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_density: FloatArray = np.where(volume_ml > 0, mass_g / volume_ml, np.nan)
    return mass_g, mean_density
