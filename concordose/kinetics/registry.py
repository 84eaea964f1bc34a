"""Kinetics methods by name. Adding a method: one module in ``methods/`` and one line here."""

from __future__ import annotations

from concordose.kinetics.methods.mono_exponential import MonoExponential
from concordose.kinetics.models import KineticsMethod
from concordose.method_registry import MethodRegistry

KINETICS_METHODS: MethodRegistry[KineticsMethod] = MethodRegistry(
    "kinetics",
    [
        MonoExponential(),
    ],
)
