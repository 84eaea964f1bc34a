"""What the report pages share: the template environment, numeric cells and method chips.

A numeric cell shows 4 significant digits and carries the full-precision value in
``data-value`` (so a test, or a reader's script, compares the published number, not its
rounding); a method chip is the method's name with its palette colour
(:mod:`concordose.report.palette`). Templates (``report/templates/``) are autoescaped and share
one inline style sheet (``_style.css.j2``), so every page is self-contained.
"""

from __future__ import annotations

import math

import jinja2

from concordose.report.palette import method_style

__all__ = ["TEMPLATES", "method_chip", "number_text", "numeric_cell"]

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("concordose.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
"""The report templates (autoescaped; an undefined name is an error, not an empty string)."""


def number_text(value: float | None, digits: int = 4) -> str:
    """``value`` to ``digits`` significant digits; "–" for a missing or non-finite one."""
    if value is None or not math.isfinite(value):
        return "–"
    if 10**digits <= abs(value) < 1e7:
        return f"{value:.0f}"  # 10440, not 1.044e+04
    return f"{value:.{digits}g}"


def numeric_cell(value: float | None, sd: float | None = None) -> dict[str, str]:
    """A numeric cell: shown to 4 significant digits (± its SD to 2), full precision in
    ``value`` (the template's ``data-value``; empty when None)."""
    text = number_text(value) + ("" if sd is None or value is None else f" ± {number_text(sd, 2)}")
    return {"text": text, "value": "" if value is None else repr(float(value))}


def method_chip(name: str) -> dict[str, str]:
    """A method's name with its palette colour (the template draws a coloured square)."""
    return {"name": name, "colour": method_style(name).colour}
