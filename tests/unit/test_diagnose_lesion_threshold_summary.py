"""The lesion-threshold diagnosis's summary (``benchmarks/diagnose_lesion_threshold.py``): the
groups by structure and the medians its DESIGN and README figures are read from."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.diagnose_lesion_threshold import structure_group, summary


def _row(
    site: str, core: float, breathing: float, needed: float | None, **extra: Any
) -> dict[str, Any]:
    row = {
        "site": site,
        "group": structure_group(core, breathing),
        "delineated": True,
        "status": "delineated",
        "central_peak_only": False,
        "g_needed": needed,
        "contrast": None if needed is None else 20.0,
        "g_used": 0.45,
        "g_held": 0.30,
        "volume_over_true": 1.0,
        "volume_over_true_held": 1.5,
        "other_fixed_points_over_true": [],
    }
    row.update(extra)
    return row


def test_lesions_group_by_structure_breathing_first_and_medians_skip_the_unsolved() -> None:
    rows = [
        _row("milan", 0.4, 0.0, 0.47),
        _row("milan", 0.4, 16.0, 0.60, volume_over_true=1.6, volume_over_true_held=1.8),
        _row("brussels", 0.0, 0.0, None, volume_over_true=0.9),
        _row("brussels", 0.4, 0.0, 0.43, delineated=False, volume_over_true=9.0),
        _row("montpellier", 0.0, 0.0, None, central_peak_only=True, volume_over_true=0.9),
    ]
    result = summary(rows)
    assert result["central_peak_only"] == 1
    groups = result["by_structure"]
    assert groups["breathing"]["lesions"] == 1  # a breathing lesion with a core is breathing's
    assert groups["breathing"]["g_needed_minus_used_median"] == pytest.approx(0.15)
    assert groups["necrotic core"]["lesions"] == 1  # the one kept as the site drew it is left out
    assert groups["necrotic core"]["g_needed_minus_held_median"] == pytest.approx(0.17)
    assert groups["neither"]["g_needed_minus_used_median"] is None  # no level reproduced it
    assert groups["neither"]["volume_over_true_median"] == pytest.approx(0.9)
    assert result["by_site"]["milan"]["volume_over_true_median"] == pytest.approx(1.3)
    assert result["by_site"]["milan"]["volume_over_true_held_median"] == pytest.approx(1.65)


def test_lesions_with_several_fixed_points_are_counted_with_those_that_span_the_truth() -> None:
    rows = [
        _row(
            "grandrapids", 0.0, 0.0, 0.7, volume_over_true=2.4, other_fixed_points_over_true=[1.2]
        ),
        _row(
            "grandrapids", 0.0, 0.0, 0.6, volume_over_true=1.1, other_fixed_points_over_true=[0.4]
        ),
        _row("milan", 0.0, 0.0, 0.6, volume_over_true=1.1),
        _row("milan", 0.0, 0.0, 0.6, delineated=False, other_fixed_points_over_true=[0.5]),
    ]
    result = summary(rows)
    assert result["several_fixed_points"] == 2  # a lesion kept as the site drew it is left out
    assert result["several_fixed_points_span_truth"] == 1  # 0.4–1.1× does, 1.2–2.4× does not
