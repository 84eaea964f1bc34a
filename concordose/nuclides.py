"""Radionuclide physical data, taken from the maintained ``radioactivedecay`` package.

Decay data come from ICRP-107 via radioactivedecay's default dataset; nothing is hand-typed here
except where a package does not carry the number (then the source is cited).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import radioactivedecay as rd

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


LU177 = nuclide("Lu-177")
"""Lutetium-177: T½ = 159.53 h (6.647 d, ICRP-107)."""
