"""Radionuclide physical data, taken from the maintained ``radioactivedecay`` package.

Decay data come from ICRP-107 via radioactivedecay's default dataset; nothing is hand-typed here
except where a package does not carry the number (then the source is cited).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import radioactivedecay as rd
from icrp107_database import get_icrp107_spectrum

from concordose.errors import ConcordoseError


@dataclass(frozen=True)
class Nuclide:
    """Physical data of one radionuclide.

    Attributes:
        name: canonical name as radioactivedecay spells it, e.g. ``"Lu-177"``.
        half_life_h: physical half-life in hours.
    """

    name: str
    half_life_h: float

    @property
    def half_life_s(self) -> float:
        """Physical half-life in seconds."""
        return self.half_life_h * 3600.0

    @property
    def decay_constant_per_h(self) -> float:
        """Physical decay constant λ = ln2 / T½ in 1/h."""
        return math.log(2.0) / self.half_life_h


@cache
def nuclide(name: str) -> Nuclide:
    """Return physical data for ``name`` (e.g. ``"Lu-177"``, ``"Lu177"``).

    Raises:
        ConcordoseError: when radioactivedecay does not know the nuclide.
    """
    try:
        rd_nuclide = rd.Nuclide(name)
    except ValueError as exc:
        raise ConcordoseError(f"unknown radionuclide {name!r}: {exc}") from exc
    return Nuclide(name=rd_nuclide.nuclide, half_life_h=float(rd_nuclide.half_life("h")))


# ICRP-107 emission groups: electrons (beta- mean energies per branch, internal conversion,
# Auger) and photons (gamma, X-rays). The package stores energies in MeV per emission with the
# yield per decay.
_ELECTRON_EMISSIONS = ("beta-", "IE", "auger")
_PHOTON_EMISSIONS = ("gamma", "X")
KEV_PER_MEV = 1000.0


@dataclass(frozen=True)
class EmissionEnergies:
    """Mean energy emitted per decay, keV (ICRP-107, via the ``icrp107-database`` package).

    Attributes:
        electron_kev: beta (mean energies), internal-conversion and Auger electrons.
        photon_kev: gamma and X-ray photons.
        beta_kev: the beta part of ``electron_kev`` (mean energy per decay of the beta spectra).
        conversion_electron_kev: the internal-conversion part of ``electron_kev``.
        auger_kev: the Auger part of ``electron_kev``.
    """

    electron_kev: float
    photon_kev: float
    beta_kev: float
    conversion_electron_kev: float
    auger_kev: float


@cache
def emission_energies(name: str) -> EmissionEnergies:
    """Mean electron and photon energy per decay of ``name`` (e.g. ``"Lu-177"``), keV.

    Raises:
        ConcordoseError: when the ICRP-107 package has no entry for the nuclide.
    """
    canonical = nuclide(name).name
    try:
        spectra = {
            kind: get_icrp107_spectrum(canonical, kind)
            for kind in _ELECTRON_EMISSIONS + _PHOTON_EMISSIONS
        }
    except Exception as exc:  # the package raises bare Exception for unknown nuclides
        raise ConcordoseError(f"no ICRP-107 emission data for {canonical!r}: {exc}") from exc

    def _sum_kev(kinds: tuple[str, ...]) -> float:
        return KEV_PER_MEV * sum(
            float(np.sum(np.asarray(spectra[k]["energies"]) * np.asarray(spectra[k]["weights"])))
            for k in kinds
        )

    return EmissionEnergies(
        electron_kev=_sum_kev(_ELECTRON_EMISSIONS),
        photon_kev=_sum_kev(_PHOTON_EMISSIONS),
        beta_kev=_sum_kev(("beta-",)),
        conversion_electron_kev=_sum_kev(("IE",)),
        auger_kev=_sum_kev(("auger",)),
    )


LU177 = nuclide("Lu-177")
"""Lutetium-177: T½ = 159.53 h (6.647 d, ICRP-107)."""
