"""Which acquired time points a method uses: the nearest to each of its nominal times.

Simplified methods are defined on a schedule (e.g. LUMEN 4/24/168 h). A study rarely hits the
schedule exactly, so each nominal time takes the nearest acquired time point within a
tolerance; the method then reports the times it actually used. Each acquired point serves at
most one nominal time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class TimePointChoice:
    """Outcome of matching a schedule to acquired time points.

    Attributes:
        indices: index into the acquired time points per nominal time (empty when unmatched).
        used_h: the acquired times used, h.
        problem: why the schedule could not be matched, or None.
    """

    indices: tuple[int, ...]
    used_h: tuple[float, ...]
    problem: str | None

    @property
    def matched(self) -> bool:
        """True when every nominal time found a point."""
        return self.problem is None


def choose_time_points(
    acquired_h: npt.NDArray[np.float64],
    nominal_h: tuple[float, ...],
    tolerance_h: tuple[float, ...],
) -> TimePointChoice:
    """Nearest acquired point to each nominal time, within that time's tolerance.

    Args:
        acquired_h: acquired times after injection (h), increasing.
        nominal_h: the method's schedule (h), increasing.
        tolerance_h: allowed |acquired − nominal| per nominal time (h).
    """
    times = np.asarray(acquired_h, dtype=np.float64)
    chosen: list[int] = []
    for nominal, tolerance in zip(nominal_h, tolerance_h, strict=True):
        distance = np.abs(times - nominal)
        distance[chosen] = np.inf
        index = int(np.argmin(distance)) if times.size else -1
        if index < 0 or distance[index] > tolerance:
            acquired = ", ".join(f"{t:.1f}" for t in times)
            return TimePointChoice(
                indices=(),
                used_h=(),
                problem=(
                    f"no acquired time point within ±{tolerance:g} h of the nominal {nominal:g} h "
                    f"(acquired: {acquired} h)"
                ),
            )
        chosen.append(index)
    return TimePointChoice(
        indices=tuple(chosen),
        used_h=tuple(float(times[i]) for i in chosen),
        problem=None,
    )
