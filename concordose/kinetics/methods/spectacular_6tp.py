"""SPECTacular reference: six (or more) SPECT/CT time points, model selected per curve.

SPECTacular (NCT05823402) compares simplified methods against a comprehensive fit of six scans
per cycle (seed review), there a tri-exponential: the bi-exponential clearance with an uptake
phase. Its exact schedule is not published in the seed review, so the reference uses every
acquired time point and requires at least six.

Why not one fixed model: the bi-exponential with uptake has five parameters, one residual degree
of freedom on six points; on a curve without an uptake phase its uptake term (held at least
ln2/24 h faster than clearance) biases the TIA (−0.2 % on a noise-free kidney curve with 10 h and
60 h components) and on a noisy mono-exponential curve it is unstable (+4 ± 28 % at 3 % noise).
A fixed mono-exponential misses a fast component (−7 %). So the reference chooses, per curve,
between nested models — mono-, bi- and tri-exponential clearance, each with and without an
uptake phase — starting from the simplest and taking a richer model that contains the current
one only when the F-test of its χ² reduction is significant at 5 %
(``kinetics.fitting.selection``, which also says why not AICc at six points; Glatting et al.,
Med Phys 2007;34:4285-92, compare both criteria). A model is a candidate only with a residual
degree of freedom left (N > p): on six points the mono-exponential, with and without uptake, the
bi-exponential and the bi-exponential with uptake; the tri-exponential from seven points, with
uptake from eight. The chosen model is published per row (``kinetics.model``).

This is the reference of ``kinetics.comparison`` and of the ``method_comparison`` table, which
never compare it with itself.
"""

from __future__ import annotations

from concordose.kinetics.fitting import ALL_MODELS, SelectionRule
from concordose.kinetics.selected_fit import SelectedFit

REFERENCE_METHOD_NAME = "spectacular_6tp"

SPECTACULAR_6TP = SelectedFit(
    name=REFERENCE_METHOD_NAME,
    version="2",  # 2: model chosen per curve (nested F-tests); 1 fitted bi_exponential_uptake
    candidates=ALL_MODELS,
    rule=SelectionRule.NESTED_F_TEST,
    min_points=6,
    reference="SPECTacular, NCT05823402",
)
