"""Imaging protocols: when a site images a patient after each cycle's injection.

Schedules follow the published study designs (as summarised in Serani & Maccauro's 2026 review,
Table 1, in ``shared/seed``): LUMEN (Mileva et al., J Nucl Med 2024;65:236) images 4, 24 and 168 h
after every cycle; LUTADOSE (Maccauro et al., EJNMMI 2024;52:291) at ~20 and ~162 h after cycles 1
and 4 only; Hebert et al. (J Nucl Med 2024;65:923) at 4, 24, 72 and 192 h after cycles 1-2 and a
single 24 h point after cycles 3-4; SPECTacular (NCT05823402) six scans per cycle for a
tri-exponential reference (times here 4, 24, 48, 96, 168, 240 h, as the concordose issue states).
Four cycles of 7.4 GBq eight weeks apart is the standard [177Lu]Lu-DOTATATE regimen (NETTER-1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ImagingProtocol:
    """An imaging schedule over the treatment course.

    Attributes:
        name: protocol key, e.g. ``"spectacular"``.
        time_points_h_by_cycle: per imaged cycle (1-based), the acquisition starts in h after that
            cycle's injection; cycles not listed are treated but not imaged.
        n_cycles: cycles given.
        cycle_interval_days: days between injections.
    """

    name: str
    time_points_h_by_cycle: Mapping[int, tuple[float, ...]]
    n_cycles: int = 4
    cycle_interval_days: int = 56

    def imaged_cycles(self, max_cycles: int | None = None) -> tuple[int, ...]:
        """Imaged cycle numbers in order, keeping those ≤ ``max_cycles`` when given."""
        return tuple(
            c for c in sorted(self.time_points_h_by_cycle) if max_cycles is None or c <= max_cycles
        )


def _every_cycle(times_h: tuple[float, ...], n_cycles: int = 4) -> dict[int, tuple[float, ...]]:
    return dict.fromkeys(range(1, n_cycles + 1), times_h)


PROTOCOLS: dict[str, ImagingProtocol] = {
    "spectacular": ImagingProtocol(
        name="spectacular",
        time_points_h_by_cycle=_every_cycle((4.0, 24.0, 48.0, 96.0, 168.0, 240.0)),
    ),
    "lumen": ImagingProtocol(name="lumen", time_points_h_by_cycle=_every_cycle((4.0, 24.0, 168.0))),
    "lutadose": ImagingProtocol(
        name="lutadose", time_points_h_by_cycle={1: (20.0, 162.0), 4: (20.0, 162.0)}
    ),
    "hebert": ImagingProtocol(
        name="hebert",
        time_points_h_by_cycle={
            1: (4.0, 24.0, 72.0, 192.0),
            2: (4.0, 24.0, 72.0, 192.0),
            3: (24.0,),
            4: (24.0,),
        },
    ),
}
"""The selectable protocols by name; ``"spectacular"`` is the default."""

DEFAULT_PROTOCOL = "spectacular"


def protocol(name: str) -> ImagingProtocol:
    """The protocol named ``name``.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    if name not in PROTOCOLS:
        raise KeyError(f"unknown imaging protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
