"""The tumour-sink effect as the reports show it (issue 20, items 2 and 5): the dashboard's plot
and table of the cohort's fits, and the cycle report's "where this patient sits on the
cohort's regression", both from the published ``sink_effect`` rows
(:mod:`concordose.consortium.sink_effect`) and nothing else.

No patient key is shown: the dashboard draws every cycle's point unlabelled; the cycle report
marks only its own cycle.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from concordose.consortium.agreement import POOLED_SITE_ID
from concordose.consortium.sink_effect import (
    BURDEN_METRICS,
    LEVEL_CYCLE,
    LEVEL_FIT,
    SINK_EFFECT_OARS,
)
from concordose.report.dashboard_figures import SinkLine, SinkPanel, sink_effect_figure
from concordose.report.html import number_text, numeric_cell

__all__ = [
    "BURDEN_LABELS",
    "SINK_EFFECT_COLUMNS",
    "cycle_sink_section",
    "dashboard_sink_section",
    "sink_effect_panels",
]

Row = dict[str, Any]

BURDEN_LABELS = {metric.name: metric.label for metric in BURDEN_METRICS}
"""Axis and table label of each burden metric (:data:`~concordose.consortium.sink_effect.
BURDEN_METRICS`)."""

SINK_EFFECT_COLUMNS = (
    "level",
    "site_id",
    "cycle_key",
    "oar",
    "kinetics_method",
    "dose_method",
    "oar_tia_per_ia_h",
    "oar_dose_per_ia_gy_per_gbq",
    "total_lesion_volume_ml",
    "total_lesion_tia_per_ia_h",
    "burden_metric",
    "burden_unit",
    "regression_method",
    "n_cycles",
    "n_patients",
    "n_sites",
    "slope_h_per_unit",
    "slope_ci_lower_h_per_unit",
    "slope_ci_upper_h_per_unit",
    "slope_p_value",
    "intercept_h",
    "relative_slope_per_unit",
    "dose_change_gy_per_gbq_per_unit",
    "dose_change_ci_lower_gy_per_gbq_per_unit",
    "dose_change_ci_upper_gy_per_gbq_per_unit",
    "run_id",
    "created_at",
)
"""The ``sink_effect`` columns the reports read."""


def _finite(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _interval(low: object, high: object) -> str:
    low_value, high_value = _finite(low), _finite(high)
    if low_value is None or high_value is None:
        return ""
    return f"[{number_text(low_value)}, {number_text(high_value)}]"


def _site_label(site_id: str) -> str:
    return "all sites (pooled)" if site_id == POOLED_SITE_ID else site_id


def _fits(rows: Iterable[Row]) -> list[Row]:
    """Fit rows, pooled first, then sites, in OAR and burden-metric order."""
    oars = {oar: index for index, oar in enumerate(SINK_EFFECT_OARS)}
    metrics = {metric.name: index for index, metric in enumerate(BURDEN_METRICS)}
    fits = [r for r in rows if r["level"] == LEVEL_FIT]
    return sorted(
        fits,
        key=lambda r: (
            oars.get(str(r["oar"]), len(oars)),
            metrics.get(str(r["burden_metric"]), len(metrics)),
            r["site_id"] != POOLED_SITE_ID,
            str(r["site_id"]),
        ),
    )


def sink_effect_panels(
    rows: Sequence[Row],
    *,
    sites: Iterable[str] | None = None,
    highlight_cycle: str | None = None,
) -> list[SinkPanel]:
    """One panel per OAR with points and burden metric: every cycle's point by site, the fits
    of ``sites`` (None: every site) and the pooled fit; ``highlight_cycle``'s point marked."""
    shown = None if sites is None else {*sites, POOLED_SITE_ID}
    panels = []
    for oar in SINK_EFFECT_OARS:
        cycles = [r for r in rows if r["level"] == LEVEL_CYCLE and r["oar"] == oar]
        if not cycles:
            continue
        for metric in BURDEN_METRICS:
            points: dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}
            for site in sorted({str(r["site_id"]) for r in cycles}):
                pairs = [
                    (_finite(r[metric.name]), _finite(r["oar_tia_per_ia_h"]))
                    for r in cycles
                    if r["site_id"] == site
                ]
                kept = [(x, y) for x, y in pairs if x is not None and y is not None]
                if kept:
                    points[site] = (
                        np.array([x for x, _ in kept], dtype=np.float64),
                        np.array([y for _, y in kept], dtype=np.float64),
                    )
            lines = tuple(
                SinkLine(
                    label=_site_label(str(r["site_id"])),
                    slope_h_per_unit=float(r["slope_h_per_unit"]),
                    intercept_h=float(r["intercept_h"]),
                    pooled=r["site_id"] == POOLED_SITE_ID,
                )
                for r in _fits(rows)
                if r["oar"] == oar
                and r["burden_metric"] == metric.name
                and (shown is None or r["site_id"] in shown)
                and _finite(r["slope_h_per_unit"]) is not None
                and _finite(r["intercept_h"]) is not None
            )
            highlight = None
            if highlight_cycle is not None:
                mine = [r for r in cycles if r["cycle_key"] == highlight_cycle]
                if mine:
                    x, y = _finite(mine[0][metric.name]), _finite(mine[0]["oar_tia_per_ia_h"])
                    highlight = None if x is None or y is None else (x, y)
            panels.append(
                SinkPanel(
                    oar=oar,
                    burden_label=BURDEN_LABELS.get(metric.name, metric.name),
                    points=points,
                    lines=lines,
                    highlight=highlight,
                )
            )
    return panels


def _fit_row(row: Row) -> dict[str, Any]:
    relative = _finite(row["relative_slope_per_unit"])
    return {
        "site_id": row["site_id"],
        "site": _site_label(str(row["site_id"])),
        "oar": row["oar"],
        "burden": BURDEN_LABELS.get(str(row["burden_metric"]), str(row["burden_metric"])),
        "burden_metric": row["burden_metric"],
        "unit": row["burden_unit"],
        "n_patients": numeric_cell(_finite(row["n_patients"])),
        "n_cycles": numeric_cell(_finite(row["n_cycles"])),
        "slope": numeric_cell(_finite(row["slope_h_per_unit"])),
        "slope_ci": _interval(row["slope_ci_lower_h_per_unit"], row["slope_ci_upper_h_per_unit"]),
        "p_value": numeric_cell(_finite(row["slope_p_value"])),
        "relative_percent": numeric_cell(None if relative is None else 100.0 * relative),
        "dose_change": numeric_cell(_finite(row["dose_change_gy_per_gbq_per_unit"])),
        "dose_change_ci": _interval(
            row["dose_change_ci_lower_gy_per_gbq_per_unit"],
            row["dose_change_ci_upper_gy_per_gbq_per_unit"],
        ),
    }


def dashboard_sink_section(rows: Sequence[Row]) -> dict[str, Any]:
    """The dashboard's ``sink-effect`` section from every current ``sink_effect`` row."""
    if not rows:
        return {"available": False}
    fits = _fits(rows)
    panels = sink_effect_panels(rows)
    first = rows[0]
    return {
        "available": True,
        "kinetics_method": first["kinetics_method"],
        "dose_method": first["dose_method"],
        "n_cycles": len({r["cycle_key"] for r in rows if r["level"] == LEVEL_CYCLE}),
        "figure": sink_effect_figure(panels) if panels else None,
        "rows": [_fit_row(r) for r in fits],
    }


def _slope_text(fit: Row) -> str:
    slope = number_text(_finite(fit["slope_h_per_unit"]))
    interval = _interval(fit["slope_ci_lower_h_per_unit"], fit["slope_ci_upper_h_per_unit"])
    return f"{slope} {interval}, p = {number_text(_finite(fit['slope_p_value']), 2)}"


def _predicted(fit: Row | None, burden: float | None) -> float | None:
    if fit is None or burden is None:
        return None
    slope, intercept = _finite(fit["slope_h_per_unit"]), _finite(fit["intercept_h"])
    return None if slope is None or intercept is None else intercept + slope * burden


def cycle_sink_section(rows: Sequence[Row], cycle_key: str) -> dict[str, Any]:
    """The cycle report's ``sink-effect`` section: for each OAR and burden metric, this cycle's
    OAR TIA/IA and burden, the value its site's fit and the pooled fit predict at that
    burden and how far the cycle lies from them (%); the plot marks the cycle's point."""
    mine = [r for r in rows if r["level"] == LEVEL_CYCLE and r["cycle_key"] == cycle_key]
    if not mine:
        return {"available": False}
    site = str(mine[0]["site_id"])
    fits = {
        (str(r["oar"]), str(r["burden_metric"]), str(r["site_id"])): r
        for r in rows
        if r["level"] == LEVEL_FIT
    }
    table = []
    for row in sorted(mine, key=lambda r: SINK_EFFECT_OARS.index(str(r["oar"]))):
        measured = _finite(row["oar_tia_per_ia_h"])
        for metric in BURDEN_METRICS:
            burden = _finite(row[metric.name])
            cells: dict[str, Any] = {}
            for name, fit_site in (("site", site), ("pooled", POOLED_SITE_ID)):
                fit = fits.get((str(row["oar"]), metric.name, fit_site))
                predicted = _predicted(fit, burden)
                cells[name] = numeric_cell(predicted)
                cells[f"{name}_residual"] = numeric_cell(
                    None
                    if predicted is None or measured is None or predicted == 0
                    else 100.0 * (measured - predicted) / predicted
                )
                cells[f"{name}_slope"] = "no fit" if fit is None else _slope_text(fit)
            table.append(
                {
                    "oar": row["oar"],
                    "burden_metric": metric.name,
                    "burden_label": BURDEN_LABELS.get(metric.name, metric.name),
                    "burden": numeric_cell(burden),
                    "measured": numeric_cell(measured),
                    "dose_per_ia": numeric_cell(_finite(row["oar_dose_per_ia_gy_per_gbq"])),
                    **cells,
                }
            )
    panels = sink_effect_panels(rows, sites=[site], highlight_cycle=cycle_key)
    return {
        "available": True,
        "site_id": site,
        "kinetics_method": mine[0]["kinetics_method"],
        "rows": table,
        "figure": sink_effect_figure(panels) if panels else None,
    }
