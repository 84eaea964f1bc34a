"""VOI mass from CT density."""

from __future__ import annotations

import numpy as np
import pytest

from concordose.errors import ConfigurationError
from concordose.quant.density import HuDensityCurve, voi_masses_g


def test_default_curve_is_water_equivalent_and_floored_at_air() -> None:
    curve = HuDensityCurve()
    np.testing.assert_allclose(
        curve.density(np.array([-3000.0, -1000.0, 0.0, 50.0, 1500.0])),
        [0.0012, 0.0012, 1.0, 1.05, 2.5],
    )


def test_masses_are_density_weighted_volumes() -> None:
    hu = np.zeros((2, 3, 4))
    hu[1] = 60.0  # second slice: 1.06 g/mL
    masks = np.zeros((2, 2, 3, 4), dtype=bool)
    masks[0, 0] = True  # 12 voxels of water
    masks[1, 1, :2] = True  # 8 voxels at 60 HU
    mass_g, density = voi_masses_g(hu, masks, voxel_volume_ml=0.5)
    np.testing.assert_allclose(mass_g, [12 * 0.5 * 1.0, 8 * 0.5 * 1.06])
    np.testing.assert_allclose(density, [1.0, 1.06])
    with pytest.raises(ValueError, match="resample the VOIs"):
        voi_masses_g(hu[:1], masks, voxel_volume_ml=0.5)


def test_site_curve_must_be_increasing() -> None:
    with pytest.raises(ConfigurationError, match="increasing HU"):
        HuDensityCurve(hu=(0.0, -100.0), density_g_per_ml=(1.0, 0.9))
