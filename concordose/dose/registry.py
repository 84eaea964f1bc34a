"""Dose methods by name. Adding a method: one module in ``methods/`` and one line here."""

from __future__ import annotations

from concordose.dose.methods.sphere import SphereModel
from concordose.dose.models import DoseMethod
from concordose.method_registry import MethodRegistry

DOSE_METHODS: MethodRegistry[DoseMethod] = MethodRegistry(
    "dose",
    [
        SphereModel(),
    ],
)
