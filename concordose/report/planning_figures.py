"""Figures of cumulative dosimetry, kidney-limited planning and whole-body tumour dose (issue
20, items 1, 4, 5), for the cycle report and the consortium dashboard.

Each figure has a ``draw_*`` function returning the matplotlib ``Figure`` (Agg, no pyplot), so
a test can read back what it plots, and a ``*_figure`` function returning it as a PNG data URI
(:func:`concordose.report.figures.png_data_uri`). Same rules as the other figures: every axis
names its quantity and unit; limits and guides are grey; no colour is a kinetics method's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from concordose.report.figures import png_data_uri
from concordose.report.palette import OKABE_ITO

__all__ = [
    "CumulativeKidneyBar",
    "WholeBodyPoint",
    "cumulative_kidney_figure",
    "draw_cumulative_kidney",
    "draw_whole_body_tumour",
    "whole_body_tumour_figure",
]

GUIDE = "#777777"
MEASURED = OKABE_ITO["blue"]
PROJECTED = OKABE_ITO["sky_blue"]
WHOLE_BODY = OKABE_ITO["bluish_green"]
LESION_VOIS = OKABE_ITO["reddish_purple"]


@dataclass(frozen=True)
class CumulativeKidneyBar:
    """One patient's kidney doses: published cycles and the planned next one.

    Attributes:
        label: what names the bar (a cycle report: the cycle numbers; the dashboard: an
            anonymous ``site #n``, never a patient key).
        cycle_dose_gy: each published cycle's kidney dose, Gy.
        expected_next_dose_gy: the next cycle's expected kidney dose at the recommended
            activity, Gy (None: no recommendation).
        next_activity_gbq: the recommended activity, GBq (None: none).
        limit_gy: the cumulative kidney dose limit, Gy.
    """

    label: str
    cycle_dose_gy: tuple[float, ...]
    expected_next_dose_gy: float | None
    next_activity_gbq: float | None
    limit_gy: float


def draw_cumulative_kidney(bars: Sequence[CumulativeKidneyBar]) -> Figure:
    """Stacked bars of the kidneys' cumulative dose (one segment per published cycle, then the
    planned cycle hatched) against the limit (grey dashed line)."""
    figure = Figure(figsize=(max(3.6, 0.9 * len(bars) + 2.0), 3.4))
    axes = figure.add_subplot()
    positions = np.arange(len(bars), dtype=np.float64)
    for position, bar in zip(positions, bars, strict=True):
        bottom = 0.0
        for index, dose in enumerate(bar.cycle_dose_gy):
            axes.bar(
                position,
                dose,
                bottom=bottom,
                color=MEASURED,
                alpha=1.0 if index % 2 == 0 else 0.75,
                edgecolor="white",
                width=0.6,
            )
            bottom += dose
        if bar.expected_next_dose_gy is not None:
            axes.bar(
                position,
                bar.expected_next_dose_gy,
                bottom=bottom,
                color=PROJECTED,
                hatch="//",
                edgecolor=MEASURED,
                width=0.6,
            )
            if bar.next_activity_gbq is not None:
                axes.annotate(
                    f"{bar.next_activity_gbq:.3g} GBq",
                    (position, bottom + bar.expected_next_dose_gy),
                    textcoords="offset points",
                    xytext=(0, 3),
                    ha="center",
                    fontsize=8,
                )
    limits = sorted({bar.limit_gy for bar in bars})
    for limit in limits:
        axes.axhline(limit, color=GUIDE, linestyle="--", linewidth=1.0)
    axes.set_xticks(positions, [bar.label for bar in bars], fontsize=8)
    axes.set_ylabel("cumulative kidney dose (Gy)")
    axes.legend(
        handles=[
            Patch(color=MEASURED, label="published cycles"),
            Patch(facecolor=PROJECTED, edgecolor=MEASURED, hatch="//", label="next cycle"),
            Patch(color=GUIDE, label=f"limit ({', '.join(f'{v:g}' for v in limits)} Gy)"),
        ],
        fontsize=8,
        loc="upper left",
    )
    axes.set_ylim(0, max([*limits, *(sum(b.cycle_dose_gy) for b in bars)]) * 1.25)
    return figure


def cumulative_kidney_figure(bars: Sequence[CumulativeKidneyBar]) -> str:
    """:func:`draw_cumulative_kidney` as a PNG data URI."""
    return png_data_uri(draw_cumulative_kidney(bars))


@dataclass(frozen=True)
class WholeBodyPoint:
    """One cycle's whole-body tumour dose by one voxel dose method.

    Attributes:
        label: x-axis label (a cycle report: the dose method; the dashboard: site and cycle).
        tumour_volume_ml: total tumour volume above the threshold, mL.
        mean_dose_gy: its mean dose, Gy (None: no tumour voxel).
        lesion_voi_gtd_gy: the lesion VOIs' mass-weighted mean dose by the same method, Gy.
    """

    label: str
    tumour_volume_ml: float
    mean_dose_gy: float | None
    lesion_voi_gtd_gy: float | None


def draw_whole_body_tumour(points: Sequence[WholeBodyPoint], threshold_gy: float) -> Figure:
    """Two panels: whole-body tumour volume (mL), and its mean dose next to the lesion VOIs'
    GTD (Gy), per point."""
    figure = Figure(figsize=(max(5.0, 0.8 * len(points) + 3.0), 3.2))
    volume_axes, dose_axes = figure.subplots(1, 2)
    positions = np.arange(len(points), dtype=np.float64)
    labels = [p.label for p in points]
    volume_axes.bar(positions, [p.tumour_volume_ml for p in points], color=WHOLE_BODY, width=0.6)
    volume_axes.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
    volume_axes.set_ylabel(f"tumour volume ≥ {threshold_gy:g} Gy (mL)")
    width = 0.38
    dose_axes.bar(
        positions - width / 2,
        [np.nan if p.mean_dose_gy is None else p.mean_dose_gy for p in points],
        width=width,
        color=WHOLE_BODY,
        label="whole-body tumour",
    )
    dose_axes.bar(
        positions + width / 2,
        [np.nan if p.lesion_voi_gtd_gy is None else p.lesion_voi_gtd_gy for p in points],
        width=width,
        color=LESION_VOIS,
        label="lesion VOIs (GTD)",
    )
    dose_axes.axhline(threshold_gy, color=GUIDE, linestyle="--", linewidth=1.0)
    dose_axes.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
    dose_axes.set_ylabel("mean absorbed dose (Gy)")
    dose_axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def whole_body_tumour_figure(points: Sequence[WholeBodyPoint], threshold_gy: float) -> str:
    """:func:`draw_whole_body_tumour` as a PNG data URI."""
    return png_data_uri(draw_whole_body_tumour(points, threshold_gy))
