"""The consortium dashboard's figures (matplotlib ``Figure`` objects, Agg, no pyplot), each
returned as a PNG data URI by :func:`concordose.report.figures.png_data_uri`.

Same rules as the cycle report's figures: every axis names its quantity and unit; a kinetics
method keeps its colour and line style from :mod:`concordose.report.palette` in every plot;
what is not a method (calibration quantities, processing variants) is drawn in black and grey
and told apart by line style or position, so no colour means two things.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from concordose.report.figures import png_data_uri
from concordose.report.palette import method_style

__all__ = [
    "BlandAltmanSeries",
    "CalibrationSpan",
    "ConcordancePoint",
    "PredictionPoint",  # issue 20 item 3
    "SinkLine",
    "SinkPanel",
    "VariantValues",
    "bland_altman_figure",
    "calibration_history_figure",
    "dose_prediction_figure",  # issue 20 item 3
    "harmonisation_figure",
    "sink_effect_figure",
    "threshold_concordance_figure",
]

FloatArray = npt.NDArray[np.float64]

INK = "#000000"
GUIDE = "#777777"
"""Reference lines (zero difference, cut-offs, identity): grey, so they never read as a method."""

PANEL_WIDTH_IN = 1.9
PANEL_HEIGHT_IN = 1.45
LEFT_MARGIN_IN = 1.0
RIGHT_MARGIN_IN = 0.15
TOP_MARGIN_IN = 0.6
BOTTOM_MARGIN_IN = 0.5
"""Bland–Altman grid: each panel's size and the figure's margins (inches)."""


@dataclass(frozen=True)
class CalibrationSpan:
    """One calibration record of a site over its validity window.

    Attributes:
        record_id: ``calibration_record_id``.
        valid_from: first day of validity; valid_to: last day (None: open-ended).
        cf_cps_per_mbq: calibration factor; cf_relative_uncertainty: its relative SD (or None).
        recovery_a_ml, contrast_recovery_a_ml: volume where RC(V) / RC0(V) = 0.5 (mL) or None.
        psf_fwhm_mm, psf_fwhm_sd_mm: the NEMA spheres' fitted FWHM and its SD (mm) or None.
        psf_large_object_fwhm_mm: the large-object FWHM (mm) or None.
    """

    record_id: str
    valid_from: date
    valid_to: date | None
    cf_cps_per_mbq: float
    cf_relative_uncertainty: float | None
    recovery_a_ml: float | None
    contrast_recovery_a_ml: float | None
    psf_fwhm_mm: float | None
    psf_fwhm_sd_mm: float | None
    psf_large_object_fwhm_mm: float | None


def _span(
    axes: Axes,
    window: tuple[float, float],
    value: float | None,
    style: str,
    label: str,
    *,
    labelled: set[str],
) -> bool:
    """A value over a validity window (matplotlib date numbers), labelled for the legend the
    first time ``label`` is drawn; False when not recorded."""
    if value is None or not np.isfinite(value):
        return False
    start, end = window
    shown = "_" if label in labelled else label
    labelled.add(label)
    axes.plot([start, end], [value, value], color=INK, linestyle=style, linewidth=1.6, label=shown)
    axes.plot([start], [value], color=INK, marker="|", markersize=8)
    return True


def calibration_history_figure(
    site_id: str, spans: Sequence[CalibrationSpan], *, today: date
) -> str:
    """A site's calibration records over time: CF (± its relative uncertainty), the recovery
    curves' half-recovery volumes and the PSF FWHM, each as a segment over its validity
    window; an open window runs to ``today`` and ends in an arrow."""
    figure = Figure(figsize=(7.2, 5.4), layout="constrained")
    cf_axes, recovery_axes, psf_axes = figure.subplots(3, 1, sharex=True)
    labelled: set[str] = set()

    def once(label: str) -> str:
        shown = label if label not in labelled else "_"
        labelled.add(label)
        return shown

    for span in spans:
        start = float(date2num(span.valid_from))  # type: ignore[no-untyped-call]
        end = float(date2num(span.valid_to or today))  # type: ignore[no-untyped-call]
        window = (start, end)
        _span(cf_axes, window, span.cf_cps_per_mbq, "-", "CF", labelled=labelled)
        if span.cf_relative_uncertainty is not None and np.isfinite(span.cf_relative_uncertainty):
            sd = span.cf_cps_per_mbq * span.cf_relative_uncertainty
            cf_axes.fill_between(
                [start, end],
                span.cf_cps_per_mbq - sd,
                span.cf_cps_per_mbq + sd,
                color=GUIDE,
                alpha=0.25,
                linewidth=0,
                label=once("± 1 SD"),
            )
        cf_axes.annotate(
            span.record_id,
            (start, span.cf_cps_per_mbq),
            textcoords="offset points",
            xytext=(2, 4),
            fontsize=6,
        )
        _span(recovery_axes, window, span.recovery_a_ml, "-", "RC(V) = 0.5", labelled=labelled)
        _span(
            recovery_axes,
            window,
            span.contrast_recovery_a_ml,
            "--",
            "RC0(V) = 0.5",
            labelled=labelled,
        )
        if _span(psf_axes, window, span.psf_fwhm_mm, "-", "NEMA spheres", labelled=labelled):
            sd_mm = span.psf_fwhm_sd_mm
            if sd_mm is not None and np.isfinite(sd_mm) and span.psf_fwhm_mm is not None:
                psf_axes.fill_between(
                    [start, end],
                    span.psf_fwhm_mm - sd_mm,
                    span.psf_fwhm_mm + sd_mm,
                    color=GUIDE,
                    alpha=0.25,
                    linewidth=0,
                )
        _span(
            psf_axes,
            window,
            span.psf_large_object_fwhm_mm,
            "--",
            "large object",
            labelled=labelled,
        )
        if span.valid_to is None:
            for axes, value in (
                (cf_axes, span.cf_cps_per_mbq),
                (recovery_axes, span.recovery_a_ml),
                (psf_axes, span.psf_fwhm_mm),
            ):
                if value is not None and np.isfinite(value):
                    axes.plot([end], [value], color=INK, marker=">", markersize=5)
    cf_axes.set_ylabel("CF (cps/MBq)")
    recovery_axes.set_ylabel("half-recovery\nvolume (mL)")
    psf_axes.set_ylabel("PSF FWHM (mm)")
    psf_axes.set_xlabel("validity window (date; ▸ open-ended, drawn to today)")
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    psf_axes.xaxis.set_major_locator(locator)
    psf_axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    for axes in (cf_axes, recovery_axes, psf_axes):
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7, frameon=False, loc="best")
        else:
            axes.text(0.5, 0.5, "not recorded", transform=axes.transAxes, ha="center", color=GUIDE)
    cf_axes.set_title(f"site {site_id}: calibration history", fontsize=10)
    return png_data_uri(figure)


@dataclass(frozen=True)
class BlandAltmanSeries:
    """One simplified method against the reference in one VOI class (one panel).

    Attributes:
        method: kinetics method compared (its palette colour).
        voi_class: the VOI class (organ label or lesion volume bin).
        mean_mbq_h: each pair's mean TIA (MBq·h).
        difference_percent: each pair's relative difference, 100·(method − ref)/mean (%).
        bias_percent, loa_lower_percent, loa_upper_percent: the published statistics (None
            when not computable, e.g. one pair).
    """

    method: str
    voi_class: str
    mean_mbq_h: FloatArray
    difference_percent: FloatArray
    bias_percent: float | None
    loa_lower_percent: float | None
    loa_upper_percent: float | None


def bland_altman_figure(
    title: str, series: Sequence[BlandAltmanSeries], *, reference_method: str
) -> str:
    """Bland–Altman plots, one row per method and one column per VOI class: each pair's
    relative difference against its mean TIA, the bias (solid) and the 95 % limits
    of agreement (dashed) in the method's colour, zero in grey."""
    methods = list(dict.fromkeys(s.method for s in series))
    classes = list(dict.fromkeys(s.voi_class for s in series))
    # Fixed margins (inches), no constrained layout: a grid of tens of panels would otherwise
    # be laid out twice; a few ticks per axis for the same reason.
    width_in = PANEL_WIDTH_IN * len(classes) + LEFT_MARGIN_IN + RIGHT_MARGIN_IN
    height_in = PANEL_HEIGHT_IN * len(methods) + TOP_MARGIN_IN + BOTTOM_MARGIN_IN
    figure = Figure(figsize=(width_in, height_in))
    panels = figure.subplots(len(methods), len(classes), squeeze=False, sharex="col", sharey="row")
    figure.subplots_adjust(
        left=LEFT_MARGIN_IN / width_in,
        right=1.0 - RIGHT_MARGIN_IN / width_in,
        bottom=BOTTOM_MARGIN_IN / height_in,
        top=1.0 - TOP_MARGIN_IN / height_in,
        wspace=0.08,
        hspace=0.12,
    )
    by_cell = {(s.method, s.voi_class): s for s in series}
    for row, method in enumerate(methods):
        colour = method_style(method).colour
        for column, voi_class in enumerate(classes):
            axes: Axes = panels[row][column]
            axes.axhline(0.0, color=GUIDE, linewidth=0.8)
            found = by_cell.get((method, voi_class))
            if found is not None:
                finite = np.isfinite(found.mean_mbq_h) & np.isfinite(found.difference_percent)
                finite &= found.mean_mbq_h > 0
                axes.scatter(
                    found.mean_mbq_h[finite],
                    found.difference_percent[finite],
                    s=9,
                    color=colour,
                    edgecolors="none",
                    alpha=0.8,
                )
                for value, dash in (
                    (found.bias_percent, "-"),
                    (found.loa_lower_percent, "--"),
                    (found.loa_upper_percent, "--"),
                ):
                    if value is not None and np.isfinite(value):
                        axes.axhline(value, color=colour, linestyle=dash, linewidth=1.1)
            axes.margins(x=0.12)
            axes.xaxis.set_major_locator(MaxNLocator(3))
            axes.yaxis.set_major_locator(MaxNLocator(4))
            axes.tick_params(labelsize=6)
            axes.grid(alpha=0.25)
            if row == 0:
                axes.set_title(voi_class, fontsize=7)
            if column == 0:
                axes.set_ylabel(f"{method}\nΔ (%)", fontsize=7, color=colour)
            if row == len(methods) - 1:
                axes.set_xlabel("mean TIA (MBq·h)", fontsize=7)
    figure.suptitle(
        f"{title}: 100·(method − {reference_method}) / mean, % "
        "(solid: bias; dashed: 95 % limits of agreement)",
        fontsize=8,
    )
    return png_data_uri(figure, tight=False)


@dataclass(frozen=True)
class VariantValues:
    """A processing variant's values in one VOI type: each reference-object VOI's relative
    error against its truth at each site, and each group's cross-site CoV (both %)."""

    variant: str
    voi_type: str
    relative_error_percent: FloatArray
    cross_site_cov_percent: FloatArray


def _strip(axes: Axes, position: int, values: FloatArray) -> None:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return
    offsets = np.linspace(-0.22, 0.22, finite.size) if finite.size > 1 else np.zeros(1)
    axes.scatter(position + offsets, finite, s=10, facecolors="none", edgecolors=INK, alpha=0.7)
    axes.plot([position - 0.3, position + 0.3], [np.median(finite)] * 2, color=INK, linewidth=2)


def harmonisation_figure(
    title: str, values: Sequence[VariantValues], *, variants: Sequence[str]
) -> str:
    """Per VOI type (columns): the reference objects' error against truth (top) and the
    cross-site CoV (bottom) for each variant side by side; a bar marks the median."""
    voi_types = list(dict.fromkeys(v.voi_type for v in values))
    figure = Figure(figsize=(3.4 * len(voi_types) + 0.6, 5.0), layout="constrained")
    panels = figure.subplots(2, len(voi_types), squeeze=False, sharex=True)
    by_cell = {(v.variant, v.voi_type): v for v in values}
    for column, voi_type in enumerate(voi_types):
        error_axes: Axes = panels[0][column]
        cov_axes: Axes = panels[1][column]
        error_axes.axhline(0.0, color=GUIDE, linewidth=0.8)
        for position, variant in enumerate(variants):
            found = by_cell.get((variant, voi_type))
            if found is not None:
                _strip(error_axes, position, found.relative_error_percent)
                _strip(cov_axes, position, found.cross_site_cov_percent)
        error_axes.set_title(f"{voi_type}s", fontsize=9)
        error_axes.set_ylabel("error vs truth (%)", fontsize=8)
        cov_axes.set_ylabel("cross-site CoV (%)", fontsize=8)
        cov_axes.set_ylim(bottom=0.0)
        cov_axes.set_xticks(range(len(variants)), list(variants), fontsize=8)
        cov_axes.set_xlabel("processing variant", fontsize=8)
        for axes in (error_axes, cov_axes):
            axes.grid(alpha=0.3, axis="y")
            axes.tick_params(labelsize=7)
    figure.suptitle(title, fontsize=9)
    return png_data_uri(figure)


@dataclass(frozen=True)
class ConcordancePoint:
    """A cycle's (or patient's) dose by a study's methodology and by the reference."""

    threshold_name: str
    study_kinetics_method: str
    study_value_gy: float
    reference_value_gy: float
    flipped: bool


def threshold_concordance_figure(
    points: Sequence[ConcordancePoint],
    cut_offs_gy: dict[str, float],
    *,
    reference_method: str,
) -> str:
    """One panel per threshold: the reference's dose against the study methodology's, the
    cut-off on both axes (grey dashed), identity (grey dotted); a point in the study method's
    colour, a cross where the two classifications differ."""
    names = list(cut_offs_gy)
    columns = min(2, len(names))
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(3.6 * columns, 3.2 * rows), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False)
    for index, name in enumerate(names):
        axes: Axes = panels[index // columns][index % columns]
        mine = [p for p in points if p.threshold_name == name]
        cut_off = cut_offs_gy[name]
        top = max([cut_off, *(max(p.study_value_gy, p.reference_value_gy) for p in mine)]) * 1.1
        axes.plot([0, top], [0, top], color=GUIDE, linestyle=":", linewidth=0.8)
        axes.axvline(cut_off, color=GUIDE, linestyle="--", linewidth=0.8)
        axes.axhline(cut_off, color=GUIDE, linestyle="--", linewidth=0.8)
        for method in dict.fromkeys(p.study_kinetics_method for p in mine):
            colour = method_style(method).colour
            for flipped, marker in ((False, "o"), (True, "X")):
                chosen = [
                    p for p in mine if p.study_kinetics_method == method and p.flipped == flipped
                ]
                if chosen:
                    axes.scatter(
                        [p.study_value_gy for p in chosen],
                        [p.reference_value_gy for p in chosen],
                        color=colour,
                        marker=marker,
                        s=36 if flipped else 16,
                        label=f"{method}{', flipped' if flipped else ''}",
                    )
        axes.set_xlim(0.0, top)
        axes.set_ylim(0.0, top)
        axes.set_title(f"{name} (cut-off {cut_off:g} Gy)", fontsize=8)
        axes.set_xlabel("dose, study methodology (Gy)", fontsize=8)
        axes.set_ylabel(f"dose, reference {reference_method} (Gy)", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
        if mine:
            axes.legend(fontsize=6, frameon=False, loc="upper left")
        else:
            axes.text(0.5, 0.5, "no classified pair", transform=axes.transAxes, ha="center")
    for index in range(len(names), rows * columns):
        panels[index // columns][index % columns].set_axis_off()
    return png_data_uri(figure)


# --- issue 20, item 2: the tumour-sink effect ------------------------------------------------

SITE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")
"""A site's marker in the sink-effect plot (sites are not methods: black, told apart by shape)."""
SITE_LINE_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))
"""A site's fit line style (grey); the pooled fit is solid black."""


@dataclass(frozen=True)
class SinkLine:
    """A fitted line y = intercept_h + slope × burden, drawn over the panel's burden range."""

    label: str
    slope_h_per_unit: float
    intercept_h: float
    pooled: bool


@dataclass(frozen=True)
class SinkPanel:
    """One OAR against one burden metric: each site's cycle points and the fitted lines.

    Attributes:
        oar: kidneys, spleen or salivary_glands.
        burden_label: the burden axis' label with its unit.
        points: site → (burden values, OAR TIA/IA values in h).
        lines: the site fits and the pooled fit.
        highlight: one cycle's point (burden, OAR TIA/IA), drawn as a large open circle
            (the cycle report's patient), or None.
    """

    oar: str
    burden_label: str
    points: dict[str, tuple[FloatArray, FloatArray]]
    lines: tuple[SinkLine, ...]
    highlight: tuple[float, float] | None = None


def sink_effect_figure(panels: Sequence[SinkPanel]) -> str:
    """One panel per OAR (rows) and burden metric (columns): OAR TIA per injected activity
    against tumour burden, sites as black markers, each site's fit grey (its own line style),
    the pooled fit (site fixed effects) solid black."""
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(3.8 * columns, 3.0 * rows), layout="constrained")
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    for index, panel in enumerate(panels):
        axes: Axes = axes_grid[index // columns][index % columns]
        sites = sorted(panel.points)
        for number, site in enumerate(sites):
            x, y = panel.points[site]
            axes.scatter(
                x,
                y,
                s=12,
                facecolors="none",
                edgecolors=INK,
                linewidths=0.7,
                marker=SITE_MARKERS[number % len(SITE_MARKERS)],
                label=site,
            )
        every_x = np.concatenate([xy[0] for xy in panel.points.values()] or [np.zeros(1)])
        finite = every_x[np.isfinite(every_x)]
        span = np.array([0.0, float(finite.max()) if finite.size else 1.0])
        site_lines = [line for line in panel.lines if not line.pooled]
        for number, line in enumerate(site_lines):
            axes.plot(
                span,
                line.intercept_h + line.slope_h_per_unit * span,
                color=GUIDE,
                linestyle=SITE_LINE_STYLES[number % len(SITE_LINE_STYLES)],
                linewidth=1.0,
                label=f"fit {line.label}",
            )
        for line in panel.lines:
            if line.pooled:
                axes.plot(
                    span,
                    line.intercept_h + line.slope_h_per_unit * span,
                    color=INK,
                    linewidth=1.6,
                    label=f"fit {line.label}",
                )
        if panel.highlight is not None:
            axes.scatter(
                [panel.highlight[0]],
                [panel.highlight[1]],
                s=90,
                facecolors="none",
                edgecolors=INK,
                linewidths=1.8,
                label="this cycle",
                zorder=5,
            )
        axes.set_title(panel.oar.replace("_", " "), fontsize=8)
        axes.set_xlabel(panel.burden_label, fontsize=8)
        axes.set_ylabel("OAR TIA per injected activity (h)", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=5.5, frameon=False, loc="upper right")
    for index in range(len(panels), rows * columns):
        axes_grid[index // columns][index % columns].set_axis_off()
    return png_data_uri(figure)


# --- issue 20 item 3: pre-therapy PET dose prediction ----------------------------------------


@dataclass(frozen=True)
class PredictionPoint:
    """One VOI of a held-out site: measured and predicted dose per GBq, and the baseline.

    Attributes:
        site_id: the held-out site (the panel).
        voi_type: organ (circle) or lesion (triangle).
        measured_gy_per_gbq, predicted_gy_per_gbq: the leave-one-site-out pair.
        baseline_gy_per_gbq: the organ-level population baseline (None when the training sites
            lack the VOI class).
    """

    site_id: str
    voi_type: str
    measured_gy_per_gbq: float
    predicted_gy_per_gbq: float
    baseline_gy_per_gbq: float | None


def dose_prediction_figure(points: Sequence[PredictionPoint]) -> str:
    """One panel per held-out site: predicted (black, filled) and baseline (grey, open) dose
    per GBq against the measured one, log-log, identity dotted; organs circles, lesions
    triangles. Neither is a kinetics method, so black and grey (module docstring)."""
    sites = sorted({p.site_id for p in points})
    columns = min(3, max(1, len(sites)))
    rows = max(1, -(-len(sites) // columns))
    figure = Figure(figsize=(3.0 * columns, 2.9 * rows), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False)
    values = [
        v
        for p in points
        for v in (p.measured_gy_per_gbq, p.predicted_gy_per_gbq, p.baseline_gy_per_gbq)
        if v is not None and v > 0
    ]
    low, high = (min(values) / 1.5, max(values) * 1.5) if values else (0.01, 100.0)
    for index, site in enumerate(sites):
        axes: Axes = panels[index // columns][index % columns]
        mine = [p for p in points if p.site_id == site]
        axes.plot([low, high], [low, high], color=GUIDE, linestyle=":", linewidth=0.8)
        for kind, marker in (("organ", "o"), ("lesion", "^")):
            chosen = [p for p in mine if p.voi_type == kind]
            if not chosen:
                continue
            axes.scatter(
                [p.measured_gy_per_gbq for p in chosen],
                [p.predicted_gy_per_gbq for p in chosen],
                color=INK,
                marker=marker,
                s=16,
                label=f"PET model, {kind}",
            )
            with_baseline = [
                (p.measured_gy_per_gbq, p.baseline_gy_per_gbq)
                for p in chosen
                if p.baseline_gy_per_gbq is not None
            ]
            axes.scatter(
                [measured for measured, _ in with_baseline],
                [baseline for _, baseline in with_baseline],
                facecolors="none",
                edgecolors=GUIDE,
                marker=marker,
                s=16,
                label=f"population baseline, {kind}",
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlim(low, high)
        axes.set_ylim(low, high)
        axes.set_title(f"{site} held out", fontsize=8)
        axes.set_xlabel("measured dose (Gy/GBq)", fontsize=8)
        axes.set_ylabel("predicted dose (Gy/GBq)", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=5, frameon=False, loc="upper left")
    for index in range(len(sites), rows * columns):
        panels[index // columns][index % columns].set_axis_off()
    return png_data_uri(figure)
