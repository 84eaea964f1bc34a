"""SPECTacular reference: six (or more) SPECT/CT time points, tri-exponential fit.

SPECTacular (NCT05823402) compares simplified methods against a comprehensive tri-exponential
fit of six scans per cycle (seed review). Its exact schedule is not published in the seed
review, so the reference uses every acquired time point and requires at least six. The model is
the bi-exponential clearance with an uptake phase — three exponential terms,
A(t) = a₁e^{−λ₁t} + a₂e^{−λ₂t} − (a₁+a₂)e^{−λᵤt} — five parameters, one residual degree of freedom
on six points. This is the reference of ``kinetics.comparison``.
"""

from __future__ import annotations

from concordose.kinetics.fitting import BI_UPTAKE
from concordose.kinetics.scheduled_fit import ScheduledFit

REFERENCE_METHOD_NAME = "spectacular_6tp"

SPECTACULAR_6TP = ScheduledFit(
    name=REFERENCE_METHOD_NAME,
    version="1",
    model=BI_UPTAKE,
    min_points=6,
    reference="SPECTacular, NCT05823402",
)
