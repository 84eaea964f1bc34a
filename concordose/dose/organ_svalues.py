"""OpenDose organ S-values for Lu-177 in the ICRP-110 adult male (AM) and female (AF) phantoms.

The packaged JSON files (``concordose/data/opendose_icrp110/``, provenance in
``concordose/data/PROVENANCE.md``) hold, per source organ, rows ``[target, S, standard error,
target mass g]`` with S in mGy/(MBq·s). This module keeps the four source organs shipped (liver,
spleen, left and right kidney) as a 4 × 4 target-by-source matrix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib.resources import files

import numpy as np
import numpy.typing as npt

from concordose.errors import ConfigurationError


class Phantom(StrEnum):
    """ICRP-110 reference adult phantoms."""

    ADULT_MALE = "AM"
    ADULT_FEMALE = "AF"


# organ key → (file stem of the source, the OpenDose target name of the same organ)
ORGANS: dict[str, tuple[str, str]] = {
    "liver": ("liver", "Liver"),
    "spleen": ("spleen", "Spleen"),
    "kidney_left": ("left_kidney_c_m_p", "Left kidney C+M+P"),
    "kidney_right": ("right_kidney_c_m_p", "Right kidney C+M+P"),
}

# VOI labels (lower case, "-" and " " read as "_") recognised for each organ key.
LABEL_ALIASES: dict[str, str] = {
    "liver": "liver",
    "spleen": "spleen",
    "kidney_left": "kidney_left",
    "left_kidney": "kidney_left",
    "kidney_l": "kidney_left",
    "l_kidney": "kidney_left",
    "kidney_right": "kidney_right",
    "right_kidney": "kidney_right",
    "kidney_r": "kidney_right",
    "r_kidney": "kidney_right",
}


def organ_key(label: str) -> str | None:
    """The organ key of a VOI label, or ``None`` when the tables do not cover it."""
    return LABEL_ALIASES.get(label.strip().lower().replace("-", "_").replace(" ", "_"))


@dataclass(frozen=True)
class OrganSValueTable:
    """S(target ← source) between the packaged organs of one phantom.

    Attributes:
        organs: organ keys, the order of both matrix axes.
        s_mgy_per_mbq_s: (target, source) S-values, mGy/(MBq·s).
        s_se_mgy_per_mbq_s: their standard errors (Monte Carlo), same units.
        mass_g: phantom mass of each organ, g.
    """

    phantom: Phantom
    organs: tuple[str, ...]
    s_mgy_per_mbq_s: npt.NDArray[np.float64]
    s_se_mgy_per_mbq_s: npt.NDArray[np.float64]
    mass_g: npt.NDArray[np.float64]


@cache
def opendose_table(phantom: Phantom) -> OrganSValueTable:
    """The packaged OpenDose matrix for ``phantom``.

    Raises:
        ConfigurationError: a packaged file lacks an organ's target row (corrupt data).
    """
    organs = tuple(ORGANS)
    n = len(organs)
    s = np.empty((n, n))
    se = np.empty((n, n))
    mass = np.empty(n)
    folder = files("concordose.data").joinpath("opendose_icrp110")
    for j, source in enumerate(organs):
        stem = ORGANS[source][0]
        name = f"{phantom.value}_lu-177_{stem}.json"
        rows = json.loads(folder.joinpath(name).read_text(encoding="utf-8"))
        by_target = {row[0]: row for row in rows}
        for i, target in enumerate(organs):
            target_name = ORGANS[target][1]
            if target_name not in by_target:
                raise ConfigurationError(
                    f"packaged OpenDose file {name} has no target {target_name!r}"
                )
            _, s_value, s_error, target_mass = by_target[target_name]
            s[i, j] = float(s_value)
            se[i, j] = float(s_error)
            mass[i] = float(target_mass)
    return OrganSValueTable(
        phantom=phantom, organs=organs, s_mgy_per_mbq_s=s, s_se_mgy_per_mbq_s=se, mass_g=mass
    )
