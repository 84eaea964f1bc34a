"""Per-curve model selection by AICc among the fitted sums of exponentials.

Candidates: mono-exponential, mono-exponential with uptake, bi-exponential, bi-exponential with
uptake, fitted on every acquired time point (``kinetics.selected_fit``). The rule is
:func:`~concordose.kinetics.fitting.select_by_aicc`'s (lowest AICc, a richer model only when
ΔAICc > 2; models whose AICc is undefined for the number of points are not candidates — with N
points a model with p parameters needs N > p + 2). Each row says which model was chosen
(``models``) and its Akaike weight (``goodness["akaike_weight"]``).
"""

from __future__ import annotations

from concordose.kinetics.fitting import BI, BI_UPTAKE, MONO, MONO_UPTAKE, SelectionRule
from concordose.kinetics.selected_fit import SelectedFit

AICC_BEST_FIT = SelectedFit(
    name="aicc_best_fit",
    version="1",
    candidates=(MONO, MONO_UPTAKE, BI, BI_UPTAKE),
    rule=SelectionRule.AICC,
)
"""Registry entry ``aicc_best_fit``."""
