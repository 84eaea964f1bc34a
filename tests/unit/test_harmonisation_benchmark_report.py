"""The harmonisation benchmark's JSON keys are read by scripts outside the repository (issue 15,
item 4): their names and nesting are fixed."""

from __future__ import annotations

from typing import Any

from benchmarks.harmonisation import report

FIXED_BY_VARIANT = (
    "lesion_ge4ml_cov_median_pct",
    "lesion_ge4ml_cov_max_pct",
    "lesion_lt4ml_cov_median_pct",
    "organ_tia_error_max_abs_pct",
)


def _variant(scale: float) -> dict[str, Any]:
    return {key: scale for key in (*FIXED_BY_VARIANT, "organ_cov_max_pct")}


def test_each_fixed_key_has_blur_and_realistic_with_harmonised_and_pvc() -> None:
    summaries = {
        "blur": {
            "raw": _variant(30.0),
            "harmonised": _variant(10.0),
            "harmonised_pvc": _variant(4.0),
        }
    }
    document = report(summaries, preset="test")
    for key in FIXED_BY_VARIANT:
        assert set(document[key]) == {"blur", "realistic"}
        assert document[key]["blur"] == {"harmonised": 10.0, "harmonised_pvc": 4.0}
        assert document[key]["realistic"] is None  # not run
    assert document["raw_lesion_ge4ml_cov_median_pct"] == {"blur": 30.0, "realistic": None}


def test_targets_are_judged_on_realistic_imaging() -> None:
    summaries = {
        mode: {"raw": _variant(30.0), "harmonised": _variant(9.0), "harmonised_pvc": _variant(4.0)}
        for mode in ("blur", "realistic")
    }
    targets = report(summaries, preset="full")["targets"]
    assert targets["lesion_ge4ml_cov_median_pct"]["met_realistic"] == {
        "harmonised": False,
        "harmonised_pvc": True,
    }
