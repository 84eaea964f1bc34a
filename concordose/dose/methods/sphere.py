"""Unit-density sphere model: each VOI treated as an isolated sphere of its own mass.

D̄ [Gy] = TIA [MBq·h] · S(m) [mGy/(MBq·h)] / 1000, self-dose only (no cross-dose from other
VOIs), S from the OLINDA/EXM sphere table interpolated log-log. Used by LUMEN and LUTADOSE for
lesions. Masses outside the table (0.01–6000 g) are refused, not extrapolated.
"""

from __future__ import annotations

import numpy as np

from concordose.dose.models import DoseBatch, DoseInput
from concordose.dose.sphere_svalues import lu177_sphere_table
from concordose.dose.uncertainty import dose_sd_gy
from concordose.kinetics.models import STATUS_OK, settings_hash

MGY_PER_GY = 1000.0


class SphereModel:
    """Registry entry ``sphere``."""

    name = "sphere"
    version = "1"

    def settings(self) -> dict[str, object]:
        """Table and interpolation used."""
        return {"table": "lu177_sphere_svalues_unit_density", "interpolation": "log-log"}

    def compute(self, dose_input: DoseInput) -> DoseBatch:
        """Sphere-model mean dose per VOI; NaN with a reason outside the table."""
        table = lu177_sphere_table()
        s_values = table.s_value_mgy_per_mbq_h(dose_input.mass_g)
        dose_gy = dose_input.tia_mbq_h * s_values / MGY_PER_GY
        low, high = table.mass_range_g
        status = []
        for mass, tia in zip(dose_input.mass_g, dose_input.tia_mbq_h, strict=True):
            if not np.isfinite(tia):
                status.append("no TIA (kinetics failed)")
            elif not low <= mass <= high:
                status.append(f"mass {mass:.4g} g outside the sphere table ({low:g}–{high:g} g)")
            else:
                status.append(STATUS_OK)
        return DoseBatch(
            method=self.name,
            method_version=self.version,
            parameters_hash=settings_hash(self.settings()),
            mean_dose_gy=dose_gy,
            status=tuple(status),
            mean_dose_sd_gy=(
                None
                if dose_input.tia_sd_mbq_h is None
                else dose_sd_gy(dose_gy, dose_input.tia_mbq_h, dose_input.tia_sd_mbq_h)
            ),
        )
