"""Model selection between fits of several models, by AICc.

AICc = N·ln(χ²/N) + 2K + 2K(K+1)/(N − K − 1) with K = p + 1 (the fitted parameters and the
variance), as in Glatting et al., Med Phys 2007;34:4285-92; defined only when N > K + 1 (computed
per curve by :func:`~concordose.kinetics.fitting.engine.fit_exponential`). The rule used by
:func:`select_by_aicc` is written there.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from concordose.kinetics.fitting.model import ExponentialFit

FloatArray = npt.NDArray[np.float64]

AICC_MARGIN = 2.0
"""A richer model replaces a simpler one only when its AICc is lower by more than this
(ΔAICc > 2: "substantial" support, Burnham & Anderson 2002, ch. 2.6)."""


def select_by_aicc(fits: list[ExponentialFit]) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Per curve, the index in ``fits`` of the selected model, and its Akaike weight.

    Rule (documented for reproducibility): candidates are the fits with status ``ok`` and a
    defined AICc (N > K + 1). Walking from the fewest parameters upwards, a model replaces the
    current choice when its AICc is lower by more than :data:`AICC_MARGIN`. When no candidate has
    a defined AICc the first fit that is ``ok`` is chosen; when none is ok the index is −1.
    The Akaike weight exp(−Δ/2)/Σexp(−Δ/2) of the chosen model among the defined candidates is
    returned for reporting (NaN when AICc is undefined).
    """
    order = sorted(range(len(fits)), key=lambda i: fits[i].model.n_parameters)
    n = fits[0].tia_mbq_h.shape[0]
    chosen = np.full(n, -1, dtype=np.int64)
    chosen_aicc = np.full(n, np.inf)
    for index in order:
        fit = fits[index]
        defined = fit.ok & np.isfinite(fit.aicc)
        replace = defined & ((chosen < 0) | (fit.aicc < chosen_aicc - AICC_MARGIN))
        replace &= (chosen < 0) | np.isfinite(chosen_aicc)
        chosen = np.where(replace, index, chosen)
        chosen_aicc = np.where(replace, fit.aicc, chosen_aicc)
    for index in order:  # no defined AICc: first ok fit with the fewest parameters
        unset = (chosen < 0) & fits[index].ok
        chosen = np.where(unset, index, chosen)
    aiccs = np.stack([np.where(f.ok, f.aicc, np.nan) for f in fits], axis=1)
    with np.errstate(invalid="ignore"):
        best = np.nanmin(np.where(np.isfinite(aiccs), aiccs, np.inf), axis=1)
        relative = np.exp(-0.5 * (aiccs - best[:, None]))
        relative = np.where(np.isfinite(relative), relative, 0.0)
        total = relative.sum(axis=1)
        safe_chosen = np.maximum(chosen, 0)
        weight = np.where(
            (chosen >= 0) & (total > 0),
            relative[np.arange(n), safe_chosen] / np.where(total > 0, total, 1.0),
            np.nan,
        )
    return chosen, weight
