"""Unit-density sphere self-dose S-values for Lu-177 (OLINDA/EXM sphere model grid).

Interpolation is linear in log(mass)–log(S), as the table's own header asks; masses outside the
table's range are refused rather than extrapolated.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import numpy as np
import numpy.typing as npt

_TABLE = "lu177_sphere_svalues_unit_density.tsv"


@dataclass(frozen=True)
class SphereSValueTable:
    """S(m) on a mass grid.

    Attributes:
        mass_g: sphere masses (g), increasing.
        s_mgy_per_mbq_h: self-dose S-values, mGy per MBq·h of TIA.
    """

    mass_g: npt.NDArray[np.float64]
    s_mgy_per_mbq_h: npt.NDArray[np.float64]

    @property
    def mass_range_g(self) -> tuple[float, float]:
        """Smallest and largest tabulated mass, g."""
        return float(self.mass_g[0]), float(self.mass_g[-1])

    def s_value_mgy_per_mbq_h(self, mass_g: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Log-log interpolated S for each mass; NaN where the mass is outside the table."""
        masses = np.asarray(mass_g, dtype=np.float64)
        low, high = self.mass_range_g
        inside = (masses >= low) & (masses <= high)
        log_s = np.interp(
            np.log(np.where(inside, masses, low)), np.log(self.mass_g), np.log(self.s_mgy_per_mbq_h)
        )
        return np.where(inside, np.exp(log_s), np.nan)


@cache
def lu177_sphere_table() -> SphereSValueTable:
    """The packaged Lu-177 table (see ``concordose/data/PROVENANCE.md``)."""
    text = files("concordose.data").joinpath(_TABLE).read_text(encoding="utf-8")
    rows = [
        line.split("\t")
        for line in text.splitlines()
        if line and not line.startswith("#") and not line.startswith("mass_g")
    ]
    table = np.array([[float(mass), float(s)] for mass, s in rows], dtype=np.float64)
    if np.any(np.diff(table[:, 0]) <= 0):
        raise ValueError(f"{_TABLE}: masses must increase")
    return SphereSValueTable(mass_g=table[:, 0], s_mgy_per_mbq_h=table[:, 1])
