"""The report's figures (matplotlib ``Figure`` objects rendered by Agg; no pyplot, so no global
backend state and no window), each returned as a PNG data URI.

Readable at a glance: every axis names its quantity and unit, methods keep their colour and line
style from :mod:`concordose.report.palette` in every figure, images use a perceptually uniform
colour map (viridis family: readable in grey and by colour-blind readers). PNG rather than SVG
so that a report holds no XML namespace URL and no external reference at all.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from concordose.report.palette import method_style

__all__ = [
    "DvhCurve",
    "MethodCurve",
    "dose_slice_figure",
    "dvh_figure",
    "mip_figure",
    "png_data_uri",
    "tac_figure",
]

FloatArray = npt.NDArray[np.float64]

DPI = 96
IMAGE_COLOUR_MAP = "magma"
DOSE_COLOUR_MAP = "viridis"
MIP_GAMMA = 0.5
OUTLINE_COLOUR = "#56B4E9"  # Okabe–Ito sky blue: visible on magma's dark and bright ends
DOSE_METHOD_LINE_STYLES = ("-", "--", "-.", ":")
_PNG_METADATA: dict[str, str | None] = {"Software": None}


def png_data_uri(figure: Figure, *, tight: bool = True) -> str:
    """``figure`` as a PNG data URI (no metadata naming the software: nothing external).

    ``tight``: crop to the drawn content (one more layout pass; a figure laid out with fixed
    margins, e.g. a large grid of panels, passes False)."""
    buffer = io.BytesIO()
    figure.savefig(
        buffer,
        format="png",
        dpi=DPI,
        bbox_inches="tight" if tight else None,
        metadata=_PNG_METADATA,
    )
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass(frozen=True)
class MethodCurve:
    """One kinetics method on a VOI's time-activity plot.

    Attributes:
        method: kinetics method name (its colour and line style come from the palette).
        activity_mbq: the implied curve on the plot's time grid, or None (a TIA without a curve).
        time_points_used_h: the acquired time points the method used.
        tia_mbq_h: its TIA, for the legend (None when it has none).
    """

    method: str
    activity_mbq: FloatArray | None
    time_points_used_h: tuple[float, ...]
    tia_mbq_h: float | None


def tac_figure(
    title: str,
    time_h: FloatArray,
    activity_mbq: FloatArray,
    *,
    activity_sd_mbq: FloatArray | None,
    grid_h: FloatArray,
    curves: Sequence[MethodCurve],
) -> str:
    """A VOI's measured activities (± 1 SD) with every method's implied curve; the time points
    each method used are marked on its curve (on the measured value when it has no curve)."""
    figure = Figure(figsize=(7.2, 3.6))
    axes = figure.add_subplot()
    measured = dict(zip(np.round(time_h, 6), activity_mbq, strict=True))
    for curve in curves:
        style = method_style(curve.method)
        tia = "" if curve.tia_mbq_h is None else f" (TIA {curve.tia_mbq_h:.5g} MBq·h)"
        used = np.array(curve.time_points_used_h, dtype=np.float64)
        if curve.activity_mbq is not None:
            axes.plot(
                grid_h,
                curve.activity_mbq,
                color=style.colour,
                linestyle=style.line_style,
                linewidth=1.3,
                label=curve.method + tia,
            )
            marks = np.interp(used, grid_h, curve.activity_mbq)
        else:
            marks = np.array([measured.get(round(float(t), 6), np.nan) for t in used])
            axes.plot(
                [],
                [],
                color=style.colour,
                linestyle="none",
                marker="s",
                label=curve.method + tia + ", no curve",
            )
        axes.plot(used, marks, color=style.colour, linestyle="none", marker="s", markersize=4)
    axes.errorbar(
        time_h,
        activity_mbq,
        yerr=activity_sd_mbq,
        color="#000000",
        marker="o",
        markerfacecolor="white",
        linestyle="none",
        capsize=2,
        label="measured (± 1 SD)",
        zorder=5,
    )
    axes.set_xlabel("time after injection (h)")
    axes.set_ylabel("activity in VOI (MBq)")
    axes.set_title(title)
    axes.set_xlim(0.0, float(grid_h[-1]))
    axes.set_ylim(bottom=0.0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return png_data_uri(figure)


@dataclass(frozen=True)
class DvhCurve:
    """One cumulative DVH: a VOI by one voxel kinetics method and voxel dose method."""

    voi_label: str
    kinetics_method: str
    dose_method: str
    dose_gy: FloatArray
    mass_fraction: FloatArray


def dvh_figure(curves: Sequence[DvhCurve]) -> str:
    """Cumulative DVHs, one panel per VOI: colour and style of the kinetics method, the dose
    method by line style when the kinetics method has one entry per VOI."""
    labels = list(dict.fromkeys(curve.voi_label for curve in curves))
    dose_methods = list(dict.fromkeys(curve.dose_method for curve in curves))
    columns = min(3, len(labels))
    rows = -(-len(labels) // columns)
    figure = Figure(figsize=(3.2 * columns, 2.6 * rows), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False)
    for index, label in enumerate(labels):
        axes: Axes = panels[index // columns][index % columns]
        for curve in curves:
            if curve.voi_label != label:
                continue
            style = method_style(curve.kinetics_method)
            dash = DOSE_METHOD_LINE_STYLES[
                dose_methods.index(curve.dose_method) % len(DOSE_METHOD_LINE_STYLES)
            ]
            axes.plot(
                curve.dose_gy,
                100.0 * curve.mass_fraction,
                color=style.colour,
                linestyle=dash,
                label=f"{curve.kinetics_method} · {curve.dose_method}",
            )
        axes.set_title(label, fontsize=9)
        axes.set_xlabel("absorbed dose (Gy)", fontsize=8)
        axes.set_ylabel("mass receiving ≥ dose (%)", fontsize=8)
        axes.set_ylim(0.0, 102.0)
        axes.set_xlim(left=0.0)
        axes.grid(alpha=0.3)
        axes.tick_params(labelsize=7)
        if index == 0:
            axes.legend(fontsize=6, frameon=False)
    for index in range(len(labels), rows * columns):
        panels[index // columns][index % columns].set_axis_off()
    return png_data_uri(figure)


def _outlines(axes: Axes, masks: npt.NDArray[np.bool_], labels: Sequence[str]) -> None:
    for mask, label in zip(masks, labels, strict=True):
        if not mask.any():
            continue
        axes.contour(mask.astype(np.float32), levels=[0.5], colors=OUTLINE_COLOUR, linewidths=0.7)
        rows, cols = np.nonzero(mask)
        axes.text(float(cols.max()), float(rows.min()), label, color=OUTLINE_COLOUR, fontsize=5)


def mip_figure(
    time_h: FloatArray,
    mip_mbq: npt.NDArray[np.float32],
    voi_masks: npt.NDArray[np.bool_],
    voi_labels: Sequence[str],
    pixel_mm: tuple[float, float],
) -> str:
    """Coronal maximum-intensity projections of activity, one panel per time point, each VOI
    outlined (its projection); one shared colour scale (MBq per voxel) so decay is visible, with
    a square-root scale (:data:`MIP_GAMMA`) so organs show beside hot lesions."""
    count = len(time_h)
    figure = Figure(figsize=(1.9 * count + 0.8, 3.4), layout="constrained")
    panels = figure.subplots(1, count, squeeze=False)[0]
    top = float(np.max(mip_mbq)) or 1.0
    aspect = pixel_mm[0] / pixel_mm[1]
    image = None
    for index, axes in enumerate(panels):
        image = axes.imshow(
            mip_mbq[index],
            cmap=IMAGE_COLOUR_MAP,
            norm=PowerNorm(MIP_GAMMA, vmin=0.0, vmax=top),
            aspect=aspect,
            interpolation="nearest",
            origin="upper",
        )
        _outlines(axes, voi_masks, voi_labels)
        axes.set_title(f"{time_h[index]:.4g} h", fontsize=8)
        axes.set_axis_off()
    if image is not None:
        figure.colorbar(image, ax=list(panels), shrink=0.8, label="activity per voxel (MBq)")
    return png_data_uri(figure)


def dose_slice_figure(
    title: str,
    dose_gy: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
    pixel_mm: tuple[float, float],
) -> str:
    """An axial slice of the absorbed-dose map through a lesion, the lesion outlined."""
    figure = Figure(figsize=(3.4, 3.0), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(
        dose_gy,
        cmap=DOSE_COLOUR_MAP,
        vmin=0.0,
        aspect=pixel_mm[0] / pixel_mm[1],
        interpolation="nearest",
    )
    _outlines(axes, mask[None], [""])
    axes.set_title(title, fontsize=9)
    axes.set_axis_off()
    figure.colorbar(image, ax=axes, shrink=0.85, label="absorbed dose (Gy)")
    return png_data_uri(figure)
