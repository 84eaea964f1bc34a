"""Simplified methods against the reference: ratio per VOI, Bland–Altman per cohort/site.

SPECTacular (NCT05823402) reports the accuracy and limits of agreement of simplified methods
against a full fit of six scans; here the reference is ``spectacular_6tp`` by default (its model
chosen per curve between nested models, ``methods/spectacular_6tp.py``).

Bland–Altman on relative differences (Bland & Altman, Lancet 1986;1:307-10; percentage form as
in Bland & Altman, Stat Methods Med Res 1999;8:135-60): for each pair,
d = 100·(TIA_method − TIA_ref)/mean(TIA_method, TIA_ref) in %; bias = mean(d); 95 % limits of
agreement = bias ± 1.96·sd(d) (sample sd, ddof = 1). Pairs where either TIA is missing are left
out and counted.

The reference is never compared with itself: :func:`ratios_to_reference` leaves it out and
:func:`bland_altman` refuses it (a self-comparison would enter a cohort summary as a perfect
method); ``results.cycle_summary.build_method_comparison`` skips it the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.kinetics.models import KineticsBatch

FloatArray = npt.NDArray[np.float64]

LOA_Z = 1.96
"""Two-sided 95 % normal quantile for the limits of agreement."""


@dataclass(frozen=True)
class RatioToReference:
    """Per VOI: TIA of ``method`` divided by the reference's (NaN when either is missing)."""

    method: str
    reference: str
    ratio: FloatArray


@dataclass(frozen=True)
class Agreement:
    """Bland–Altman summary of one method against the reference over a group of VOIs.

    Attributes:
        method, reference: registry names.
        n_pairs: pairs with both TIAs; n_missing: pairs left out.
        bias_percent: mean relative difference, %.
        sd_percent: sample standard deviation of the relative differences, %.
        loa_lower_percent, loa_upper_percent: bias ∓ 1.96·sd, %.
    """

    method: str
    reference: str
    n_pairs: int
    n_missing: int
    bias_percent: float
    sd_percent: float
    loa_lower_percent: float
    loa_upper_percent: float


def ratios_to_reference(
    batches: Sequence[KineticsBatch], reference: str = REFERENCE_METHOD_NAME
) -> list[RatioToReference]:
    """Ratio of every other method's TIA to the reference's, per VOI (same VOI order).

    Raises:
        KeyError: when no batch has the reference's name.
    """
    by_name = {batch.method: batch for batch in batches}
    if reference not in by_name:
        raise KeyError(f"reference method {reference!r} not among {sorted(by_name)}")
    reference_tia = by_name[reference].tia_mbq_h
    with np.errstate(divide="ignore", invalid="ignore"):
        return [
            RatioToReference(
                method=batch.method,
                reference=reference,
                ratio=np.where(reference_tia > 0, batch.tia_mbq_h / reference_tia, np.nan),
            )
            for batch in batches
            if batch.method != reference
        ]


def bland_altman(
    method_tia_mbq_h: FloatArray,
    reference_tia_mbq_h: FloatArray,
    *,
    method: str,
    reference: str = REFERENCE_METHOD_NAME,
) -> Agreement:
    """Bias and 95 % limits of agreement of relative TIA differences (module docstring).

    Raises:
        ValueError: ``method`` is the reference itself.
    """
    return relative_bland_altman(
        method_tia_mbq_h, reference_tia_mbq_h, method=method, reference=reference
    )


def relative_differences_percent(values: FloatArray, reference_values: FloatArray) -> FloatArray:
    """Each pair's relative difference d = 100·(x − ref)/mean(x, ref), in %, the quantity
    :func:`relative_bland_altman` summarises (one home for it; a Bland–Altman plot draws it
    against the pair's mean). NaN where the pair is left out: either value missing or
    infinite, or both summing to ≤ 0."""
    test = np.asarray(values, dtype=np.float64)
    ref = np.asarray(reference_values, dtype=np.float64)
    total = test + ref
    valid = np.isfinite(test) & np.isfinite(ref) & (total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        differences = 100.0 * (test - ref) / (total / 2.0)
    return np.where(valid, differences, np.nan)


def relative_bland_altman(
    values: FloatArray,
    reference_values: FloatArray,
    *,
    method: str,
    reference: str,
) -> Agreement:
    """Bland–Altman of relative differences for any positive quantity in one unit (a TIA in
    MBq·h, a mean absorbed dose in Gy): d = 100·(x − ref)/mean(x, ref) in %, pairs with a
    missing, infinite or all-zero value left out and counted (see the module docstring).

    ``method`` and ``reference`` label the two sides (registry names, or e.g. a dose method
    with its kinetics); they must differ, since a method compared with itself would enter a
    cohort summary as a perfect method.

    Raises:
        ValueError: ``method`` equals ``reference``, or the arrays differ in length.
    """
    if method == reference:
        raise ValueError(
            f"method {method!r} is the reference: expected another method to compare "
            f"with {reference!r}, found the reference itself"
        )
    test = np.asarray(values, dtype=np.float64)
    ref = np.asarray(reference_values, dtype=np.float64)
    if test.shape != ref.shape:
        raise ValueError(
            f"Bland–Altman of {method!r} against {reference!r}: expected paired values, found "
            f"{test.size} and {ref.size}"
        )
    all_differences = relative_differences_percent(test, ref)
    valid = np.isfinite(all_differences)
    differences = all_differences[valid]
    n = int(differences.size)
    bias = float(differences.mean()) if n else float("nan")
    sd = float(differences.std(ddof=1)) if n > 1 else float("nan")
    return Agreement(
        method=method,
        reference=reference,
        n_pairs=n,
        n_missing=int((~valid).sum()),
        bias_percent=bias,
        sd_percent=sd,
        loa_lower_percent=bias - LOA_Z * sd,
        loa_upper_percent=bias + LOA_Z * sd,
    )


def agreement_by_group(
    groups: Sequence[str],
    method_tia_mbq_h: FloatArray,
    reference_tia_mbq_h: FloatArray,
    *,
    method: str,
    reference: str = REFERENCE_METHOD_NAME,
) -> dict[str, Agreement]:
    """Bland–Altman per group label (e.g. site id or ``site/voi_type``), sorted by group."""
    labels = np.asarray(groups)
    test = np.asarray(method_tia_mbq_h, dtype=np.float64)
    ref = np.asarray(reference_tia_mbq_h, dtype=np.float64)
    return {
        str(group): bland_altman(
            test[labels == group], ref[labels == group], method=method, reference=reference
        )
        for group in sorted(set(labels.tolist()))
    }


def agreement_statistics(agreement: Agreement) -> dict[str, int | float | None]:
    """The statistics columns of an agreement table row (``n_pairs`` … ``loa_upper_percent``;
    NaN as null): one home for them, shared by ``kinetics_agreement`` and ``dose_agreement``."""
    return {
        "n_pairs": agreement.n_pairs,
        "n_missing": agreement.n_missing,
        "bias_percent": _finite_or_none(agreement.bias_percent),
        "sd_percent": _finite_or_none(agreement.sd_percent),
        "loa_lower_percent": _finite_or_none(agreement.loa_lower_percent),
        "loa_upper_percent": _finite_or_none(agreement.loa_upper_percent),
    }


def agreement_rows(
    agreements: dict[tuple[str, str], Agreement],
) -> list[dict[str, object]]:
    """Rows of TIA agreements (without provenance columns), keyed by (site_id, voi_type)
    groups, in the columns of ``kinetics_agreement`` v1; the published table is built by
    :mod:`concordose.consortium.agreement`."""
    rows: list[dict[str, object]] = []
    for (site_id, voi_type), agreement in sorted(agreements.items()):
        rows.append(
            {
                "site_id": site_id,
                "voi_type": voi_type,
                "kinetics_method": agreement.method,
                "reference_method": agreement.reference,
                **agreement_statistics(agreement),
            }
        )
    return rows


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None
