"""Fits that describe no patient: a curve holding more at injection than was injected.

A clearance model's A(0) (``a0_mbq``, the sum of its clearance amplitudes;
:mod:`concordose.kinetics.scheduled_fit`'s row convention) is the activity the fitted curve puts
in the VOI at injection. No VOI can hold more than the patient was given, so a fit whose A(0)
exceeds the injected activity has extrapolated a fast term before the first time point that the
data do not support, and its TIA carries that impossible area (seen on a noisy bone-marrow curve
with the ``bi_exponential`` method: A(0) 57 GBq for 7.4 GBq injected, a TIA 40× that of every
other method). Such a curve is refused — its status says why, its TIA, SD and parameters are
NaN — rather than published as ``ok`` or made to fail the whole cycle's validation. Models with
uptake have A(0) = 0 and are never refused here.

Assumption: the recorded injected activity (RadionuclideTotalDose) is within
:data:`INJECTED_ACTIVITY_MARGIN` of the truth, together with the image's calibration; a VOI
that is most of the body at injection could otherwise be refused wrongly.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt

from concordose.calibration.traceability import MAX_ABS_BIAS
from concordose.kinetics.models import KineticsBatch

FloatArray = npt.NDArray[np.float64]

INJECTED_ACTIVITY_MARGIN = MAX_ABS_BIAS
"""Relative margin over the recorded injected activity before an A(0) is impossible: the
largest dose-calibrator bias the platform accepts (:data:`concordose.calibration.traceability.
MAX_ABS_BIAS`), which the recorded value may carry."""


def refuse_beyond_injected(
    batch: KineticsBatch, injected_activity_mbq: float | None
) -> KineticsBatch:
    """``batch`` with every fitted curve whose A(0) exceeds the injected activity (MBq, plus
    :data:`INJECTED_ACTIVITY_MARGIN`) refused; unchanged without an injected activity (not
    recorded, not finite or ≤ 0), without ``a0_mbq`` or when no curve exceeds it."""
    a0_mbq = batch.fit_parameters.get("a0_mbq")
    if (
        a0_mbq is None
        or injected_activity_mbq is None
        or not math.isfinite(injected_activity_mbq)
        or injected_activity_mbq <= 0
    ):
        return batch
    limit_mbq = injected_activity_mbq * (1.0 + INJECTED_ACTIVITY_MARGIN)
    with np.errstate(invalid="ignore"):
        refused = batch.ok & (a0_mbq > limit_mbq)
    if not refused.any():
        return batch

    def blanked(values: FloatArray) -> FloatArray:
        out: FloatArray = np.array(values, dtype=np.float64, copy=True)
        out[refused] = np.nan
        return out

    status = tuple(
        f"refused: the fit puts {a0:.0f} MBq in the VOI at injection, more than the "
        f"{injected_activity_mbq:.0f} MBq injected (a fast term extrapolated before the "
        "first time point)"
        if refuse
        else reason
        for reason, a0, refuse in zip(batch.status, a0_mbq, refused, strict=True)
    )
    return dataclasses.replace(
        batch,
        tia_mbq_h=blanked(batch.tia_mbq_h),
        tia_sd_mbq_h=None if batch.tia_sd_mbq_h is None else blanked(batch.tia_sd_mbq_h),
        fit_parameters={name: blanked(values) for name, values in batch.fit_parameters.items()},
        covariance=None if batch.covariance is None else blanked(batch.covariance),
        status=status,
    )


__all__ = ["INJECTED_ACTIVITY_MARGIN", "refuse_beyond_injected"]
