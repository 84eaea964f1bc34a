"""``benchmarks.diagnose_realistic_organs``: the summary the harmonisation benchmark puts in
``targets.evidence`` (over every diagnosed time point and per time point), and the time points
it diagnoses."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.diagnose_realistic_organs import diagnosed_patient, summary, time_point_number
from concordose.phantoms.site_profiles import consortium_site


def _voi(
    label: str, voi_type: str, gtm: float, true_matrix: float, fwhm_mm: float
) -> dict[str, Any]:
    return {
        "label": label,
        "voi_type": voi_type,
        "volume_ml": 150.0 if voi_type == "organ" else 10.0,
        "raw_true_cf": -0.2,
        "gtm_pipeline": gtm,
        "gtm_true_matrix": true_matrix,
        "equivalent_fwhm_mm": fwhm_mm,
    }


def test_the_summary_says_how_the_error_and_the_chains_fwhm_move_between_time_points() -> None:
    """A kidney the GTM gets within 4 % at 4 h and 18 % low at 240 h while the true transfer
    matrix recovers both: the overall ranges span both time points, ``by_time_point`` tells them
    apart (and is None for one time point)."""
    document: dict[str, Any] = {
        "sites": {
            "grandrapids": {
                "gtm_fwhm_mm": 13.11,
                "time_points": [
                    {
                        "time_point": 1,
                        "time_h": 4.0,
                        "vois": [
                            _voi("kidney_left", "organ", -0.041, 0.009, 14.4),
                            _voi("bone_marrow", "organ", -0.171, 0.0, 23.5),
                        ],
                    },
                    {
                        "time_point": 6,
                        "time_h": 240.0,
                        "vois": [
                            _voi("kidney_left", "organ", -0.181, -0.002, 16.3),
                            _voi("bone_marrow", "organ", -0.617, -0.019, 31.5),
                        ],
                    },
                ],
            }
        }
    }
    result = summary(document)
    assert result["gtm_fwhm_mm_range"] == [13.11, 13.11]
    organs = result["kidneys_liver_spleen"]
    assert organs["vois"] == 2
    assert organs["gtm_error_pct"] == [-18.1, -4.1]
    assert organs["equivalent_fwhm_mm"] == [14.4, 16.3]
    late = result["by_time_point"]["240 h"]
    assert late["kidneys_liver_spleen"]["gtm_error_pct"] == [-18.1, -18.1]
    assert late["kidneys_liver_spleen"]["gtm_true_matrix_error_pct"] == [-0.2, -0.2]
    assert late["bone_marrow"]["equivalent_fwhm_mm"] == [31.5, 31.5]
    assert result["by_time_point"]["4 h"]["bone_marrow"]["gtm_error_pct"] == [-17.1, -17.1]
    assert result["lesions_ge4ml"]["vois"] == 0

    site = document["sites"]["grandrapids"]
    one_time = {"sites": {"grandrapids": {**site, "time_points": site["time_points"][:1]}}}
    assert summary(one_time)["by_time_point"] is None


def test_time_points_count_from_one_and_back_from_the_last() -> None:
    """The diagnosis's time points: 1-based, −1 the last of the SPECTacular schedule (six), and
    a number outside the schedule an error naming it."""
    patient, _, _ = diagnosed_patient(consortium_site("milan"), 1, "test")
    assert len(patient.time_points_h[1]) == 6
    assert [time_point_number(patient, i) for i in (1, 6, -1, -6)] == [1, 6, 6, 1]
    for outside in (0, 7, -7):
        with pytest.raises(ValueError, match=f"time point {outside}: expected 1…6"):
            time_point_number(patient, outside)
