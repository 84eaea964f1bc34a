"""The harmonisation benchmark's JSON keys are read by scripts outside the repository (issue 15,
item 4): their names and nesting are fixed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.harmonisation import delineation_spread, report

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


def _truth(site: str, rule: dict[str, Any], drawn: dict[str, float]) -> dict[str, Any]:
    true_ml = {"lesion_1": 10.0, "kidney_left": 150.0}
    return {
        "site": {"site_id": site, "segmentation": rule},
        "patient": {"subject": "P001"},
        "vois": [
            {"label": "lesion_1", "voi_type": "lesion", "volume_ml": 10.0},
            {"label": "kidney_left", "voi_type": "organ", "volume_ml": 150.0},
        ],
        "cycles": [
            {
                "vois": [
                    {
                        "label": label,
                        "true_ct_volume_ml": true_ml[label],
                        "segmented_volume_ml": drawn[label],
                    }
                    for label in true_ml
                ]
            }
        ],
    }


def test_delineation_spread_is_the_evidence_for_anatomy_realism(tmp_path: Path) -> None:
    """Two sites drawing the same lesion at 1.5× and 0.5× its volume: CoV 50 %; the kidney
    drawn alike: 0 %. The realistic summary's spread becomes ``targets.evidence``."""
    for site, rule, drawn in (
        ("milan", {"method": "manual_margin", "margin_mm": 3.0}, (15.0, 150.0)),
        ("grandrapids", {"method": "manual_margin", "margin_mm": -2.0}, (5.0, 150.0)),
    ):
        folder = tmp_path / "input" / "sites" / site / "patients" / "P001"
        folder.mkdir(parents=True)
        truth = _truth(site, rule, {"lesion_1": drawn[0], "kidney_left": drawn[1]})
        (folder / "ground_truth.json").write_text(json.dumps(truth), encoding="utf-8")
    spread = delineation_spread(tmp_path)
    assert spread is not None
    cov = spread["drawn_volume_cross_site_cov_pct"]
    assert cov["lesion_4_20_ml"] == {"objects": 1, "median": 50.0, "max": 50.0}
    assert cov["kidney_left"]["max"] == 0.0
    assert spread["sites"]["milan"]["rule"]["margin_mm"] == 3.0
    assert spread["sites"]["grandrapids"]["median_drawn_over_true"] == 0.75  # (0.5 + 1.0) / 2
    document = report(
        {
            "realistic": {
                "raw": _variant(30.0),
                "harmonised": _variant(9.0),
                "harmonised_pvc": _variant(4.0),
                "delineation": spread,
            }
        },
        preset="test",
    )
    assert document["targets"]["evidence"]["delineation"] is spread


def test_no_drawn_volumes_means_no_delineation_evidence(tmp_path: Path) -> None:
    folder = tmp_path / "input" / "sites" / "milan" / "patients" / "P001"
    folder.mkdir(parents=True)
    truth = _truth("milan", {}, {"lesion_1": 10.0, "kidney_left": 150.0})
    for voi in truth["cycles"][0]["vois"]:
        del voi["segmented_volume_ml"]
    (folder / "ground_truth.json").write_text(json.dumps(truth), encoding="utf-8")
    assert delineation_spread(tmp_path) is None
