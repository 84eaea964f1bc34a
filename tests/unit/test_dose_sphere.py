"""Sphere-model dose: the packaged S-value table, interpolation, range, and physics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from concordose.dose.methods.sphere import SphereModel
from concordose.dose.models import DoseInput
from concordose.dose.sphere_svalues import lu177_sphere_table
from concordose.kinetics.models import STATUS_OK

SHARED_TABLE = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "reference"
    / "lu177_sphere_svalues_unit_density.tsv"
)
# ICRP-107: Lu-177 mean electron energy 147.92 keV per decay; fully absorbed it deposits
# 147.92 keV · 1.602e-16 J/keV · 3.6e9 decays/(MBq·h) = 0.08532 J/(MBq·h) per kg, i.e.
# 85.32 mGy·g/(MBq·h) (local deposition).
LDM_MGY_G_PER_MBQ_H = 85.32


def test_interpolation_reproduces_every_tabulated_value() -> None:
    table = lu177_sphere_table()
    np.testing.assert_allclose(
        table.s_value_mgy_per_mbq_h(table.mass_g), table.s_mgy_per_mbq_h, rtol=1e-12
    )


@pytest.mark.skipif(not SHARED_TABLE.is_file(), reason="shared/reference not beside the checkout")
def test_packaged_table_equals_the_shared_reference() -> None:
    packaged = Path(__file__).resolve().parents[2] / "concordose" / "data" / SHARED_TABLE.name
    assert packaged.read_bytes() == SHARED_TABLE.read_bytes()


def test_log_log_interpolation_between_rows() -> None:
    table = lu177_sphere_table()
    # Between 1 g (83.9) and 2 g (42.1): at the geometric mean, S is the geometric mean.
    expected = np.sqrt(83.9 * 42.1)
    assert table.s_value_mgy_per_mbq_h(np.sqrt(2.0)) == pytest.approx(expected, rel=1e-12)


def test_inferred_units_agree_with_local_deposition_physics() -> None:
    table = lu177_sphere_table()
    masses_g = np.array([1.0, 10.0, 100.0])
    absorbed_fraction = table.s_value_mgy_per_mbq_h(masses_g) * masses_g / LDM_MGY_G_PER_MBQ_H
    # Electrons almost fully absorbed from 1 g; photons add a little in larger spheres.
    assert np.all((absorbed_fraction > 0.97) & (absorbed_fraction < 1.05))


def test_dose_is_tia_times_s_and_out_of_range_is_refused() -> None:
    batch = SphereModel().compute(
        DoseInput(
            labels=("lesion", "tiny", "huge", "failed"),
            tia_mbq_h=np.array([1000.0, 1000.0, 1000.0, np.nan]),
            mass_g=np.array([10.0, 0.005, 7000.0, 10.0]),
        )
    )
    assert batch.mean_dose_gy[0] == pytest.approx(1000.0 * 8.50 / 1000.0)
    assert batch.status[0] == STATUS_OK
    assert "outside the sphere table" in batch.status[1]
    assert "outside the sphere table" in batch.status[2]
    assert "kinetics failed" in batch.status[3]
    assert np.isnan(batch.mean_dose_gy[1:]).all()
