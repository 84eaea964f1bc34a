"""Kinetics methods by name. Adding a method: one module in ``methods/`` and one line here."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from concordose.kinetics.fitting import shared_fits
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
from concordose.kinetics.models import KineticsBatch, KineticsMethod
from concordose.kinetics.plausibility import refuse_beyond_injected
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


def fit_methods(
    names: Sequence[str],
    time_h: npt.NDArray[np.float64],
    activity_mbq: npt.NDArray[np.float64],
    *,
    voi_types: Sequence[str] | None = None,
    activity_sd_mbq: npt.NDArray[np.float64] | None = None,
    injected_activity_mbq: float | None = None,
) -> list[KineticsBatch]:
    """Every named method on the same curves (one cycle's VOIs), one batch per method, in order.

    Each method fits all curves at once; a model fitted to the same points with the same
    settings by two methods (the reference's ``bi_exponential`` candidate and the
    ``bi_exponential`` method) is fitted once (:func:`~concordose.kinetics.fitting.shared_fits`).
    Arguments as the method contract (:mod:`concordose.kinetics.models`). With the cycle's
    ``injected_activity_mbq`` (MBq), a curve a method fits with more activity at injection than
    was injected is refused (:func:`~concordose.kinetics.plausibility.refuse_beyond_injected`).

    Raises:
        ConfigurationError: an unknown name (before any fit).
    """
    methods = [KINETICS_METHODS.get(name) for name in names]
    with shared_fits():
        return [
            refuse_beyond_injected(
                method.fit(
                    time_h, activity_mbq, voi_types=voi_types, activity_sd_mbq=activity_sd_mbq
                ),
                injected_activity_mbq,
            )
            for method in methods
        ]
