"""Local deposition method (LDM): all electron energy absorbed where the decay happens.

D [Gy] = TIA [MBq·h] · E_e [J per decay] · 3.6e9 [decays per MBq·h] / m [kg].

E_e is the mean electron energy per decay from ICRP-107 (``icrp107-database`` package): for
Lu-177, 147.92 keV (beta 133.27, conversion 13.52, Auger 1.13 keV), giving 0.08532 Gy/h per
MBq/g. Photons (35.10 keV per decay for Lu-177) are *not* deposited locally by default: they
mostly leave a VOI of clinical size; ``photon_absorbed_fraction`` states the fraction assumed
absorbed if a site wants it (0 by default, as in the common LDM definition). No cross-dose.

Two registry entries share the physics: :class:`LocalDeposition` (VOI level, mean dose from the
VOI's TIA and mass) and :class:`VoxelLocalDeposition` (dose map from a TIA map and density).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from concordose.chunk_map import ChunkMap, serial_map
from concordose.dose.models import (
    DoseBatch,
    DoseInput,
    PlacedDose,
    VoxelDoseInput,
    VoxelDoseMap,
)
from concordose.dose.uncertainty import dose_sd_gy
from concordose.errors import ConcordoseError, ConfigurationError
from concordose.kinetics.models import STATUS_OK, settings_hash
from concordose.nuclides import emission_energies

J_PER_KEV = 1.602176634e-16  # CODATA 2018 (exact SI elementary charge)
DECAYS_PER_MBQ_H = 1e6 * 3600.0
KG_PER_G = 1e-3


def ldm_gy_per_mbq_h_per_g(nuclide: str = "Lu-177", photon_absorbed_fraction: float = 0.0) -> float:
    """Absorbed dose per TIA per mass under local deposition, Gy·g/(MBq·h).

    Lu-177 electrons only: 147.92 keV · 1.602e-16 J/keV · 3.6e9 / 1e-3 kg = 0.08532.
    """
    energies = emission_energies(nuclide)
    energy_kev = energies.electron_kev + photon_absorbed_fraction * energies.photon_kev
    return energy_kev * J_PER_KEV * DECAYS_PER_MBQ_H / KG_PER_G


class LocalDeposition:
    """Registry entry ``ldm`` (VOI level): D = TIA · k / m."""

    name = "ldm"
    version = "1"

    def __init__(self, nuclide: str = "Lu-177", photon_absorbed_fraction: float = 0.0) -> None:
        if not 0.0 <= photon_absorbed_fraction <= 1.0:
            raise ConfigurationError(
                f"LDM photon_absorbed_fraction must be in [0, 1]; found {photon_absorbed_fraction}"
            )
        self.nuclide = nuclide
        self.photon_absorbed_fraction = photon_absorbed_fraction

    def settings(self) -> dict[str, object]:
        """Nuclide, energy source and the photon assumption."""
        return {
            "nuclide": self.nuclide,
            "electron_energy": "ICRP-107 (icrp107-database)",
            "photon_absorbed_fraction": self.photon_absorbed_fraction,
        }

    def compute(self, dose_input: DoseInput) -> DoseBatch:
        """Mean dose per VOI; NaN with a reason for failed kinetics or non-positive mass."""
        k = ldm_gy_per_mbq_h_per_g(self.nuclide, self.photon_absorbed_fraction)
        mass = np.asarray(dose_input.mass_g, dtype=np.float64)
        tia = np.asarray(dose_input.tia_mbq_h, dtype=np.float64)
        valid = np.isfinite(tia) & np.isfinite(mass) & (mass > 0)
        dose_gy = np.where(valid, tia * k / np.where(valid, mass, 1.0), np.nan)
        status = tuple(
            STATUS_OK
            if ok
            else (
                "no TIA (kinetics failed)" if not np.isfinite(t) else f"mass {m!r} g not positive"
            )
            for ok, t, m in zip(valid, tia, mass, strict=True)
        )
        sd = (
            None
            if dose_input.tia_sd_mbq_h is None
            else dose_sd_gy(dose_gy, tia, dose_input.tia_sd_mbq_h)
        )
        return DoseBatch(
            method=self.name,
            method_version=self.version,
            parameters_hash=settings_hash(self.settings()),
            mean_dose_gy=dose_gy,
            status=status,
            mean_dose_sd_gy=sd,
        )


class VoxelLocalDeposition:
    """Registry entry ``ldm`` (voxel level): each voxel's dose from its own TIA and mass."""

    name = "ldm"
    version = "1"

    def __init__(self, nuclide: str = "Lu-177", photon_absorbed_fraction: float = 0.0) -> None:
        self._voi = LocalDeposition(nuclide, photon_absorbed_fraction)

    def settings(self) -> dict[str, object]:
        """As the VOI-level LDM, plus the density assumption."""
        return {**self._voi.settings(), "density": "map if given, else 1 g/mL"}

    def compute_map(
        self, dose_input: VoxelDoseInput, *, map_chunks: ChunkMap = serial_map
    ) -> VoxelDoseMap:
        """D_voxel = TIA_voxel · k / (V_voxel · ρ_voxel) (voxel by voxel: ``map_chunks`` is
        not needed).

        With an ``output_geometry`` (e.g. the CT grid): the unit-density dose on the TIA grid,
        averaged over each output voxel by exact overlap (Σ dose · mass conserved), then divided
        by the output grid's density map if given.
        """
        k = ldm_gy_per_mbq_h_per_g(self._voi.nuclide, self._voi.photon_absorbed_fraction)
        density: npt.NDArray[np.float64] | float = (
            1.0 if dose_input.density_g_per_ml is None else dose_input.density_g_per_ml
        )
        if dose_input.output_geometry is None:
            tia = np.asarray(dose_input.tia_map_mbq_h, dtype=np.float64)
            voxel_mass_g = dose_input.voxel_volume_ml * np.asarray(density, dtype=np.float64)
            dose = tia * k / voxel_mass_g
        else:
            dose = self.placed_dose(dose_input).on_grid(
                dose_input.output_geometry, dose_input.density_g_per_ml
            )
        return VoxelDoseMap(
            method=self.name,
            method_version=self.version,
            parameters_hash=settings_hash(self.settings()),
            dose_gy=dose,
            spacing_mm=dose_input.dose_spacing_mm,
            geometry=dose_input.dose_geometry,
        )

    def placed_dose(
        self, dose_input: VoxelDoseInput, *, map_chunks: ChunkMap = serial_map
    ) -> PlacedDose:
        """The unit-density dose TIA · k / V on the TIA map's own grid (divided by the output
        grid's density once placed: the energy deposits in the CT mass)."""
        if dose_input.geometry is None:
            raise ConcordoseError("a placed dose needs the TIA map's geometry")
        k = ldm_gy_per_mbq_h_per_g(self._voi.nuclide, self._voi.photon_absorbed_fraction)
        tia = np.asarray(dose_input.tia_map_mbq_h, dtype=np.float64)
        return PlacedDose(
            dose_gy=tia * (k / dose_input.voxel_volume_ml),
            geometry=dose_input.geometry,
            divide_by_density=True,
        )
