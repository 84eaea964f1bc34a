"""The fitted sums of exponentials on every acquired time point, one registry entry per model.

``mono_exponential_uptake``, ``bi_exponential``, ``bi_exponential_uptake`` (three exponential
terms: the "tri-exponential" of the Lu-177 literature), ``tri_exponential`` and
``tri_exponential_uptake``: weighted least squares with bounds, analytic integral to infinity,
TIA uncertainty from the fit covariance (see ``kinetics.fitting``). The closed-form
``mono_exponential`` stays its own module (the demo's default, unchanged).
"""

from __future__ import annotations

from concordose.kinetics.fitting import BI, BI_UPTAKE, MONO_UPTAKE, TRI, TRI_UPTAKE
from concordose.kinetics.scheduled_fit import ScheduledFit

FULL_DATA_FITS: tuple[ScheduledFit, ...] = tuple(
    ScheduledFit(name=model.name, version="1", model=model)
    for model in (MONO_UPTAKE, BI, BI_UPTAKE, TRI, TRI_UPTAKE)
)
"""Registry entries, named after their model."""
