"""Published dose thresholds for [177Lu]Lu-DOTATATE (GEP-NET) and flags against them.

Each threshold names the metric it applies to (see :mod:`concordose.dose.metrics`), the cycle
scope, the direction, and its source. The numbers were derived with each study's own method
(sphere model with RC for LUMEN and LUTADOSE, PLANET Dose for Hebert; Serani & Maccauro 2026,
Table 1), so a flag computed with another method is indicative only: that difference is what
this platform measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from concordose.dose.metrics import CumulativeDose, CycleDoseSummary


class Direction(StrEnum):
    """Whether the threshold is a favourable minimum (tumour) or a limit (organ at risk)."""

    AT_LEAST = "at_least"
    AT_MOST = "at_most"


@dataclass(frozen=True)
class Threshold:
    """A published absorbed-dose threshold."""

    name: str
    metric: str
    scope: str  # "cycle 1" or "cumulative"
    threshold_gy: float
    direction: Direction
    source: str


THRESHOLDS: tuple[Threshold, ...] = (
    Threshold(
        name="LUMEN minimal lesion dose",
        metric="min_lesion_dose_gy",
        scope="cycle 1",
        threshold_gy=35.0,
        direction=Direction.AT_LEAST,
        source=(
            "Mileva et al. 2024, J Nucl Med 65:236-244, doi:10.2967/jnumed.123.265987 "
            "(minimal lesion dose >= 35 Gy after cycle 1: median PFS 48.1 vs 26.2 months)"
        ),
    ),
    Threshold(
        name="LUTADOSE GTD1",
        metric="gtd_gy",
        scope="cycle 1",
        threshold_gy=10.6,
        direction=Direction.AT_LEAST,
        source=(
            "Maccauro et al. 2024, Eur J Nucl Med Mol Imaging, doi:10.1007/s00259-024-06863-y "
            "(global mean tumour dose after cycle 1 >= 10.6 Gy: PFS not reached vs 21 months)"
        ),
    ),
    Threshold(
        name="Hebert mean lesion dose",
        metric="mean_lesion_dose_gy",
        scope="cumulative",
        threshold_gy=91.36,
        direction=Direction.AT_LEAST,
        source=(
            "Hebert et al. 2024, J Nucl Med 65:923-930, doi:10.2967/jnumed.123.267023 "
            "(mean total absorbed dose per target lesion > 91.36 Gy: PFS 39.4 vs 23.6 months)"
        ),
    ),
    Threshold(
        name="Hebert minimal cumulative lesion dose",
        metric="min_lesion_dose_gy",
        scope="cumulative",
        threshold_gy=52.52,
        direction=Direction.AT_LEAST,
        source=(
            "Hebert et al. 2024, J Nucl Med 65:923-930, doi:10.2967/jnumed.123.267023 "
            "(minimum total absorbed dose > 52.52 Gy: longer PFS and OS)"
        ),
    ),
    Threshold(
        name="kidney cumulative limit",
        metric="oar_dose_gy.kidneys",
        scope="cumulative",
        threshold_gy=23.0,
        direction=Direction.AT_MOST,
        source=(
            "Sundlöv et al. 2017, Eur J Nucl Med Mol Imaging 44:1480-1489, "
            "doi:10.1007/s00259-017-3678-4 (cycles continued to a cumulative kidney dose of 23 Gy)"
        ),
    ),
)


@dataclass(frozen=True)
class ThresholdFlag:
    """One threshold evaluated: ``met`` is None when the metric is unknown (NaN)."""

    threshold: Threshold
    value_gy: float
    met: bool | None


def _value(summary: CycleDoseSummary | CumulativeDose, metric: str) -> float:
    if metric.startswith("oar_dose_gy."):
        return summary.oar_dose_gy.get(metric.split(".", 1)[1], float("nan"))
    value: float = getattr(summary, metric)
    return value


def evaluate_thresholds(
    cycle_1: CycleDoseSummary, cumulative: CumulativeDose | None = None
) -> list[ThresholdFlag]:
    """Flag every threshold; cumulative ones only when ``cumulative`` is given."""
    flags = []
    for threshold in THRESHOLDS:
        summary = cycle_1 if threshold.scope == "cycle 1" else cumulative
        if summary is None:
            continue
        value = _value(summary, threshold.metric)
        met: bool | None
        if not np.isfinite(value):
            met = None
        elif threshold.direction is Direction.AT_LEAST:
            met = value >= threshold.threshold_gy
        else:
            met = value <= threshold.threshold_gy
        flags.append(ThresholdFlag(threshold=threshold, value_gy=value, met=met))
    return flags
