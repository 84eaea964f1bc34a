"""Typed dose results and the contract of a dose method.

Method contract:

* in: a :class:`DoseInput` — per VOI: TIA (MBq·h), mass (g), VOI type; arrays of one length;
* out: a :class:`DoseBatch` — mean absorbed dose per VOI in Gy, and a status per VOI (``"ok"``
  or the reason the method does not apply, then NaN). A method never raises for one VOI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class DoseInput:
    """What a VOI-level dose method needs, per VOI."""

    labels: tuple[str, ...]
    tia_mbq_h: npt.NDArray[np.float64]
    mass_g: npt.NDArray[np.float64]


@dataclass(frozen=True)
class DoseBatch:
    """Mean absorbed dose per VOI by one method."""

    method: str
    method_version: str
    parameters_hash: str
    mean_dose_gy: npt.NDArray[np.float64]
    status: tuple[str, ...]


class DoseMethod(Protocol):
    """A named dose method (see the module contract)."""

    name: str
    version: str

    def settings(self) -> dict[str, object]:
        """The method's parameters, JSON-serialisable."""
        ...

    def compute(self, dose_input: DoseInput) -> DoseBatch:
        """Mean absorbed dose for every VOI."""
        ...
