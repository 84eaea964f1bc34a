"""Cohen's kappa for two binary classifications of the same cases.

κ = (p_o − p_e) / (1 − p_e), p_o the observed agreement and p_e the agreement expected by chance
from each rater's marginal rates (Cohen J, A coefficient of agreement for nominal scales, Educ
Psychol Meas 1960;20:37-46). Undefined (NaN) when p_e = 1: both classifications put every case
in the same class.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def cohen_kappa(first: npt.ArrayLike, second: npt.ArrayLike) -> float:
    """Cohen's kappa of two boolean classifications (same cases, same order).

    Raises:
        ValueError: different lengths, or no case.
    """
    a = np.asarray(first, dtype=bool)
    b = np.asarray(second, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"Cohen's kappa: expected two classifications of the same cases, found {a.size} "
            f"and {b.size}"
        )
    observed = float(np.mean(a == b))
    p_a, p_b = float(a.mean()), float(b.mean())
    expected = p_a * p_b + (1.0 - p_a) * (1.0 - p_b)
    if expected == 1.0:
        return float("nan")
    return (observed - expected) / (1.0 - expected)
