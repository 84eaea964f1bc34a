"""Which acquired time points a simplified method uses: one rule for every schedule.

Simplified methods are defined on a nominal schedule (e.g. LUMEN 4/24/168 h). A study rarely
hits the schedule, and a trial with a denser schedule (SPECTacular: 4, 24, 48, 96, 168, 240 h)
emulates each simplified method from the points it acquired. The rule, for every method:

1. the window of a nominal time t_n is t_n·(1 ± :data:`NOMINAL_WINDOW_FRACTION`), i.e. ±40 %
   of t_n, bounds included — a tolerance that scales with the nominal time, because what
   matters for an exponential curve is where a point sits relative to the half-lives, not how
   many hours it is off (a 4 h point taken at 8 h is in another phase; a 192 h point taken at
   168 h is not);
2. each nominal time, in schedule order, takes the acquired point nearest to it (in hours) in
   its window that no earlier nominal time has taken (each acquired point serves at most one
   nominal time);
3. a tie (two points equally far, e.g. 48 h and 96 h for 72 h) goes to the **later** point:
   the window is symmetric in hours, so the later point is the nearer in ratio
   (96/72 = 1.33 against 72/48 = 1.5), and a later point constrains the slow clearance that
   dominates the extrapolation to infinity;
4. when a nominal time's window holds no free acquired point the method is not applicable, with
   a reason naming the nominal time, its window and the acquired times.

The method then records the acquired times it used and the nominal time each one served
(``KineticsBatch.time_points_used_h`` / ``time_points_nominal_h``; their difference is the
distance from nominal, published as ``kinetics.time_point_offsets_h``).

No method overrides the window: the per-method tolerances in hours this rule replaces cited no
source. A method may carry its own window only with the paper that states it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

NOMINAL_WINDOW_FRACTION = 0.4
"""Half-width of a nominal time's window, as a fraction of that time: t_n·(1 ± 0.4).

Why 0.4: it is the widest round fraction for which the windows of consecutive nominal times of
every registered schedule stay disjoint, so that no acquired point is ever a candidate for two
nominal times and the choice cannot depend on the order of the schedule. Windows of t₁ < t₂
overlap when t₂/t₁ < (1 + f)/(1 − f); the closest pair of nominal times is Hebert's 72 → 192 h
(ratio 2.67, overlap from f = 0.455); the others are 4 → 24 h (6), 24 → 168 h (7) and
20 → 162 h (8.1). It also places every SPECTacular point within reach of the schedules it
emulates: Hebert's 72 h (43.2–100.8 h) holds 48 h and 96 h, its 192 h (115.2–268.8 h) holds
168 h and 240 h; LUTADOSE's 20 h (12–28 h) holds 24 h. A narrower window (±25 %) would leave
Hebert's 72 h without a point on that schedule. For the single-point Hänscheid method a point in
its 96 h window (57.6–134.4 h) gives x = t/T_eff within the method's −10 … +6.2 % band for
T_eff between 54 h and 77 h; outside that band the error is the method's, measured against the
reference, not hidden by refusing the point.
"""

_TIE_H = 1e-9
"""Distances closer than this (h) are a tie (rule 3); guards against rounding in the times."""


def nominal_window_h(nominal_h: float) -> tuple[float, float]:
    """The acquired times (h) that may serve ``nominal_h``: nominal·(1 ∓ fraction), inclusive."""
    return (
        nominal_h * (1.0 - NOMINAL_WINDOW_FRACTION),
        nominal_h * (1.0 + NOMINAL_WINDOW_FRACTION),
    )


@dataclass(frozen=True)
class TimePointChoice:
    """Outcome of matching a schedule to acquired time points.

    Attributes:
        indices: index into the acquired time points per nominal time (empty when unmatched).
        used_h: the acquired times used, h, in schedule order.
        nominal_h: the nominal time each used point serves, h (empty when unmatched).
        problem: ``"not applicable: …"`` when the schedule could not be matched, else None.
    """

    indices: tuple[int, ...]
    used_h: tuple[float, ...]
    nominal_h: tuple[float, ...]
    problem: str | None

    @property
    def matched(self) -> bool:
        """True when every nominal time found a point."""
        return self.problem is None


def choose_time_points(
    acquired_h: npt.NDArray[np.float64], nominal_h: tuple[float, ...]
) -> TimePointChoice:
    """The acquired point serving each nominal time, by the module's rule.

    Args:
        acquired_h: acquired times after injection (h), strictly increasing.
        nominal_h: the method's schedule (h), increasing.

    Returns:
        The choice; ``problem`` says which nominal time found no point, its window and the
        acquired times, when one did not.
    """
    times = np.asarray(acquired_h, dtype=np.float64)
    free = np.ones(times.shape, dtype=bool)
    chosen: list[int] = []
    for nominal in nominal_h:
        low_h, high_h = nominal_window_h(nominal)
        candidate = free & (times >= low_h) & (times <= high_h)
        if not candidate.any():
            acquired = ", ".join(f"{t:.1f}" for t in times) or "none"
            taken = (~free) & (times >= low_h) & (times <= high_h)
            why = (
                "its points already serve earlier nominal times"
                if taken.any()
                else "no acquired time point in it"
            )
            return TimePointChoice(
                indices=(),
                used_h=(),
                nominal_h=(),
                problem=(
                    f"not applicable: nominal {nominal:g} h needs an acquired time point in "
                    f"{low_h:g}–{high_h:g} h (±{NOMINAL_WINDOW_FRACTION * 100:g} % of it), "
                    f"{why} (acquired: {acquired} h)"
                ),
            )
        distance_h = np.where(candidate, np.abs(times - nominal), np.inf)
        nearest = candidate & (distance_h <= distance_h.min() + _TIE_H)
        index = int(np.flatnonzero(nearest)[-1])  # the later of tied points (rule 3)
        free[index] = False
        chosen.append(index)
    return TimePointChoice(
        indices=tuple(chosen),
        used_h=tuple(float(times[i]) for i in chosen),
        nominal_h=tuple(float(t) for t in nominal_h),
        problem=None,
    )
