"""One home for method colours: every kinetics method has a fixed colour and line style.

Colours are the Okabe–Ito palette (Okabe M, Ito K. *Color Universal Design (CUD): how to make
figures and presentations that are friendly to colorblind people*, 2008, https://jfly.uni-koeln.de/color/
— the eight colours distinguishable under protanopia, deuteranopia and tritanopia). Yellow is not
used for lines: it has too little contrast on white. Eight colours are fewer than the methods, so a
method is its (colour, line style) pair: full-data fits share the colour of their model family
(solid without uptake, dashed with uptake), the simplified methods of one kind share one (single
time point orange, few-point schedules vermillion), and a voxel method ``voxel_<model>`` takes
its model's colour, dotted (dash-dot with uptake). A test keeps every registered method's pair
distinct.
"""

from __future__ import annotations

from dataclasses import dataclass

from concordose.dose.voxel_dosimetry import VOXEL_KINETICS_PREFIX

__all__ = [
    "METHOD_STYLES",
    "OKABE_ITO",
    "UNKNOWN_METHOD_STYLE",
    "MethodStyle",
    "method_style",
]

OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
"""The Okabe–Ito colours (hex sRGB, as published by Okabe & Ito 2008)."""

SOLID = "-"
DASHED = "--"
DASH_DOT = "-."
DOTTED = ":"


@dataclass(frozen=True)
class MethodStyle:
    """How a method is drawn in every plot: a colour (hex) and a matplotlib line style."""

    colour: str
    line_style: str


METHOD_STYLES: dict[str, MethodStyle] = {
    # the reference: black, solid, drawn last so it is on top
    "spectacular_6tp": MethodStyle(OKABE_ITO["black"], SOLID),
    "aicc_best_fit": MethodStyle(OKABE_ITO["black"], DASHED),
    "mono_exponential": MethodStyle(OKABE_ITO["blue"], SOLID),
    "mono_exponential_uptake": MethodStyle(OKABE_ITO["blue"], DASHED),
    "bi_exponential": MethodStyle(OKABE_ITO["bluish_green"], SOLID),
    "bi_exponential_uptake": MethodStyle(OKABE_ITO["bluish_green"], DASHED),
    "tri_exponential": MethodStyle(OKABE_ITO["reddish_purple"], SOLID),
    "tri_exponential_uptake": MethodStyle(OKABE_ITO["reddish_purple"], DASHED),
    "trapezoid": MethodStyle(OKABE_ITO["sky_blue"], SOLID),
    "hanscheid_stp": MethodStyle(OKABE_ITO["orange"], SOLID),
    "madsen_stp": MethodStyle(OKABE_ITO["orange"], DASHED),
    "lutadose_2tp": MethodStyle(OKABE_ITO["vermillion"], SOLID),
    "lumen_3tp": MethodStyle(OKABE_ITO["vermillion"], DASHED),
    "hebert_4tp": MethodStyle(OKABE_ITO["vermillion"], DASH_DOT),
}
"""Kinetics method name (``concordose.kinetics.registry.KINETICS_METHODS``) → its style."""

UNKNOWN_METHOD_STYLE = MethodStyle("#999999", DOTTED)
"""A method without an entry (published by a newer release): grey, dotted."""


def method_style(name: str) -> MethodStyle:
    """The style of a kinetics method; ``voxel_<model>`` takes ``<model>``'s colour, dotted
    (dash-dot for a model with uptake, whose VOI fit is dashed)."""
    if name in METHOD_STYLES:
        return METHOD_STYLES[name]
    if name.startswith(VOXEL_KINETICS_PREFIX):
        base = METHOD_STYLES.get(name.removeprefix(VOXEL_KINETICS_PREFIX))
        if base is not None:
            return MethodStyle(base.colour, DOTTED if base.line_style == SOLID else DASH_DOT)
    return UNKNOWN_METHOD_STYLE
