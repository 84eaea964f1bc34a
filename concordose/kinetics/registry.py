"""Kinetics methods by name. Adding a method: one module in ``methods/`` and one line here."""

from __future__ import annotations

from concordose.kinetics.methods.aicc_best_fit import AICC_BEST_FIT
from concordose.kinetics.methods.exponential_models import FULL_DATA_FITS
from concordose.kinetics.methods.hanscheid_stp import HanscheidStp
from concordose.kinetics.methods.hebert_4tp import HEBERT_4TP
from concordose.kinetics.methods.lumen_3tp import LUMEN_3TP
from concordose.kinetics.methods.lutadose_2tp import LUTADOSE_2TP
from concordose.kinetics.methods.madsen_stp import MadsenStp
from concordose.kinetics.methods.mono_exponential import MonoExponential
from concordose.kinetics.methods.spectacular_6tp import SPECTACULAR_6TP
from concordose.kinetics.methods.trapezoid import Trapezoid
from concordose.kinetics.models import KineticsMethod
from concordose.method_registry import MethodRegistry

KINETICS_METHODS: MethodRegistry[KineticsMethod] = MethodRegistry(
    "kinetics",
    [
        MonoExponential(),
        *FULL_DATA_FITS,
        AICC_BEST_FIT,
        Trapezoid(),
        HanscheidStp(),
        MadsenStp(),
        LUTADOSE_2TP,
        LUMEN_3TP,
        HEBERT_4TP,
        SPECTACULAR_6TP,
    ],
)
