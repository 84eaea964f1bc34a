"""The harmonisation benchmark's JSON keys are read by scripts outside the repository (issue 15,
item 4): their names and nesting are fixed."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from benchmarks import harmonisation
from benchmarks.harmonisation import (
    RUN_RECORD,
    anatomy_realism_flag,
    delineation_floor,
    delineation_spread,
    organ_errors_by_time_point,
    per_site_errors,
    report,
    summarise_kept,
)
from concordose.dicom.seg import VoiType
from concordose.phantoms.virtual_patient import true_mean_dose_gy
from concordose.quant.delineation import DELINEATED, LesionDelineation
from concordose.results.cycle_summary import with_partial_volume_findings
from concordose.results.provenance import Provenance
from concordose.schemas.tables import QC_FINDINGS
from tests.unit.test_cycle_summary import IDENTITY, TAC

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
    """Two sites drawing the same lesion at 1.5× and 0.5× its volume: CoV 71 % (sample SD over
    the mean, as ``harmonisation_agreement``); the kidney drawn alike: 0 %. The realistic
    summary's spread becomes ``targets.evidence``."""
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
    assert cov["lesion_4_20_ml"] == {"objects": 1, "median": 70.71, "max": 70.71}
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
    assert delineation_floor(tmp_path) is None


def _truth_with_uptake(site: str, overlaps: dict[str, dict[str, float]]) -> dict[str, Any]:
    """A lesion (10 mL, 100 MBq·h), a kidney (150 mL, 300 MBq·h) and the body remainder
    (10 L, 1000 MBq·h: 0.1 MBq·h/mL), the site's VOIs split over them by ``overlaps``."""
    truth = _truth(site, {}, {label: sum(o.values()) for label, o in overlaps.items()})
    tia = {"lesion_1": 100.0, "kidney_left": 300.0}
    for voi in truth["cycles"][0]["vois"]:
        voi["tia_mbq_h"] = tia[voi["label"]]
        voi["mean_dose_gy"] = true_mean_dose_gy(tia[voi["label"]], voi["true_ct_volume_ml"])
        voi["segmented_overlap_ml"] = overlaps[voi["label"]]
    truth["cycles"][0]["body_remainder"] = {
        "label": "body",
        "tia_mbq_h": 1000.0,
        "true_ct_volume_ml": 10_000.0,
    }
    return truth


def test_the_delineation_floor_is_a_perfect_cameras_spread_over_the_sites_vois(
    tmp_path: Path,
) -> None:
    """milan's +margin takes in 5 mL of body (lesion) and 30 mL (kidney); grandrapids draws
    half the lesion and the kidney as it is. A perfect camera then reports, per site, the sphere
    dose of the TIA inside the drawn VOI at the drawn mass, and the organ's TIA inside it."""
    sites = {
        "milan": {
            "lesion_1": {"lesion_1": 10.0, "body": 5.0},
            "kidney_left": {"kidney_left": 150.0, "body": 30.0},
        },
        "grandrapids": {"lesion_1": {"lesion_1": 5.0}, "kidney_left": {"kidney_left": 150.0}},
    }
    for site, overlaps in sites.items():
        folder = tmp_path / "input" / "sites" / site / "patients" / "P001"
        folder.mkdir(parents=True)
        truth = _truth_with_uptake(site, overlaps)
        (folder / "ground_truth.json").write_text(json.dumps(truth), encoding="utf-8")
    floor = delineation_floor(tmp_path)
    assert floor is not None
    milan_gy, grandrapids_gy = true_mean_dose_gy(100.0 + 0.5, 15.0), true_mean_dose_gy(50.0, 5.0)
    assert milan_gy is not None
    assert grandrapids_gy is not None
    doses = [milan_gy, grandrapids_gy]
    lesion_cov = statistics.stdev(doses) / statistics.mean(doses)
    assert floor["lesion_ge4ml_cov_median_pct"] == pytest.approx(100 * lesion_cov, abs=0.01)
    assert floor["lesion_ge4ml_cov_median_pct"] > 5.0  # the drawn volumes alone miss the target
    kidney_cov = statistics.stdev([303.0, 300.0]) / 301.5
    assert floor["organ_cov_max_pct"] == pytest.approx(100 * kidney_cov, abs=0.01)
    assert floor["organ_tia_error_max_abs_pct"] == pytest.approx(1.0)  # milan: 303 / 300
    assert floor["floor_within_target"] == {
        "lesion_ge4ml_cov_median_pct": False,
        "lesion_ge4ml_cov_max_pct": False,
        "organ_cov_max_pct": True,
        "organ_tia_error_max_abs_pct": True,
    }


def _agreement_row(
    site: str, variant: str, label: str, kind: str, *, error: float, volume_ml: float
) -> dict[str, Any]:
    organ = kind == "organ"
    return {
        "reference_object_id": "digital-P001-cycle1",
        "voi_label": label,
        "voi_type": kind,
        "volume_ml": volume_ml,
        "site_id": site,
        "variant": variant,
        "metric": "tia_mbq_h" if organ else "mean_dose_gy",
        "dose_method": "none" if organ else "sphere",
        "relative_error": error,
    }


def test_per_site_errors_say_where_correction_beats_none() -> None:
    """Per site, the median |error| of organ TIA and lesion (≥ 4 mL) sphere dose per variant,
    and whether ``harmonised_pvc`` beat ``harmonised`` there; a lesion < 4 mL is not judged."""
    errors = {  # site → variant → (kidney, liver, 10 mL lesion)
        "a": {
            "raw": (0.3, 0.3, 0.5),
            "harmonised": (-0.2, 0.1, -0.4),
            "harmonised_pvc": (0.02, -0.05, 0.03),
        },
        "b": {
            "raw": (0.3, 0.3, 0.5),
            "harmonised": (0.05, 0.02, 0.1),
            "harmonised_pvc": (0.3, -0.5, 0.2),
        },
    }
    rows = pd.DataFrame(
        [
            _agreement_row(site, variant, label, kind, error=error, volume_ml=volume)
            for site, by_variant in errors.items()
            for variant, triple in by_variant.items()
            for (label, kind, volume), error in zip(
                (
                    ("kidney_left", "organ", 150.0),
                    ("liver", "organ", 1500.0),
                    ("lesion_1", "lesion", 10.0),
                ),
                triple,
                strict=True,
            )
        ]
        + [_agreement_row("a", "harmonised_pvc", "lesion_2", "lesion", error=9.0, volume_ml=0.5)]
        + [  # lesion_1's TIA, not judged itself: reported beside its dose error
            {
                **_agreement_row(
                    "a", "harmonised_pvc", "lesion_1", "lesion", error=-0.01, volume_ml=10.0
                ),
                "metric": "tia_mbq_h",
                "dose_method": "none",
            }
        ]
    )
    sites = per_site_errors(rows)
    assert sites["a"]["pvc_beats_no_correction"] is True
    assert sites["b"]["pvc_beats_no_correction"] is False
    assert sites["a"]["harmonised_pvc"]["lesion_ge4ml_dose_error_median_abs_pct"] == 3.0
    assert sites["a"]["harmonised_pvc"]["lesion_ge4ml_tia_error_median_abs_pct"] == 1.0
    assert sites["b"]["harmonised_pvc"]["lesion_ge4ml_tia_error_median_abs_pct"] is None
    assert sites["a"]["harmonised_pvc"]["organ_tia_error_max_abs_pct"] == 5.0
    assert sites["b"]["harmonised"]["organ_tia_error_median_abs_pct"] == 3.5
    assert sites["a"]["harmonised"]["error_median_abs_pct"] == 20.0
    summaries = {
        "realistic": {
            "raw": _variant(30.0),
            "harmonised": _variant(9.0),
            "harmonised_pvc": _variant(4.0),
            "per_site": sites,
        }
    }
    assert (
        report(summaries, preset="full")["targets"]["pvc_beats_no_correction_at_every_site"]
        is False
    )


def test_a_kept_run_is_summarised_with_the_preset_and_wall_time_it_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--summarise`` of a kept folder reports the run's own preset, anatomy realism and wall
    time (read from its run record), not the command line's; runs that recorded different
    presets are refused before anything is summarised; a folder kept before the record existed
    is summarised without them."""
    summarised: list[str] = []

    def fake_summarise(run: Path) -> dict[str, Any]:
        summarised.append(run.name)
        return {"run": run.name}

    monkeypatch.setattr(harmonisation, "summarise", fake_summarise)
    for mode, wall_s in (("blur", 1917.2), ("realistic", 1717.8)):
        (tmp_path / mode).mkdir()
        (tmp_path / mode / RUN_RECORD).write_text(
            json.dumps({"preset": "full", "anatomy_realism": False, "wall_s": wall_s}),
            encoding="utf-8",
        )
    summaries, record = summarise_kept(tmp_path, ("blur", "realistic"), preset="full")
    assert record is not None
    assert (record["preset"], anatomy_realism_flag(record["anatomy_realism"])) == ("full", "off")
    assert summaries["realistic"] == {"run": "realistic", "wall_s": 1717.8}
    assert summaries["blur"]["wall_s"] == 1917.2

    summarised.clear()
    with pytest.raises(ValueError, match="--preset test given, but the kept run"):
        summarise_kept(tmp_path, ("blur", "realistic"), preset="test")
    assert summarised == []

    (tmp_path / "blur" / RUN_RECORD).write_text(
        json.dumps({"preset": "test", "anatomy_realism": False, "wall_s": 60.0}), encoding="utf-8"
    )
    with pytest.raises(ValueError, match='different preset: "full", "test"'):
        summarise_kept(tmp_path, ("blur", "realistic"))
    assert summarised == []

    old = tmp_path / "old"
    (old / "realistic").mkdir(parents=True)
    summaries, record = summarise_kept(old, ("blur", "realistic"))
    assert record is None
    assert summaries == {"realistic": {"run": "realistic"}}
    assert anatomy_realism_flag(None) == "mode"


def _timed_truth(site: str, kidney_mbq: list[float], marrow_mbq: list[float]) -> dict[str, Any]:
    return {
        "site": {"site_id": site},
        "patient": {"subject": "P001"},
        "cycles": [
            {
                "time_points_h": [4.0, 240.0],
                "vois": [
                    {"label": "kidney_left", "activity_mbq": kidney_mbq},
                    {"label": "bone_marrow", "activity_mbq": marrow_mbq},
                    {"label": "lesion_1", "activity_mbq": [10.0, 5.0]},
                ],
            }
        ],
    }


def test_organ_errors_are_followed_time_point_by_time_point() -> None:
    """Two sites, a kidney and the marrow at 4 and 240 h: each group's error per time point
    (median and range over sites, %), the marrow apart; lesions and unknown VOIs left out; the
    realistic run's table becomes ``targets.evidence`` without anatomy realism too."""
    truths = [
        _timed_truth("milan", [50.0, 4.0], [3.0, 0.2]),
        _timed_truth("grandrapids", [40.0, 2.0], [3.0, 0.2]),
    ]
    measured = [  # site, VOI, type, time point index, MBq
        ("milan", "kidney_left", "organ", 0, 51.0),  # +2 %
        ("milan", "kidney_left", "organ", 1, 3.2),  # −20 %
        ("grandrapids", "kidney_left", "organ", 0, 40.0),  # 0 %
        ("grandrapids", "kidney_left", "organ", 1, 1.8),  # −10 %
        ("milan", "bone_marrow", "organ", 1, 0.1),  # −50 %
        ("milan", "lesion_1", "lesion", 1, 1.0),
        ("milan", "spleen", "organ", 1, 9.0),  # no truth
    ]
    points = pd.DataFrame(
        [
            {
                "site_id": site,
                "subject": "P001",
                "voi_label": label,
                "voi_type": kind,
                "time_point_index": index,
                "activity_mbq": mbq,
            }
            for site, label, kind, index, mbq in measured
        ]
    )
    errors = organ_errors_by_time_point(points, truths)
    assert errors["kidneys_liver_spleen"] == [
        {
            "time_point_index": 0,
            "time_h": 4.0,
            "measurements": 2,
            "error_median_pct": 1.0,
            "error_range_pct": [0.0, 2.0],
        },
        {
            "time_point_index": 1,
            "time_h": 240.0,
            "measurements": 2,
            "error_median_pct": -15.0,
            "error_range_pct": [-20.0, -10.0],
        },
    ]
    assert [(e["time_h"], e["error_median_pct"]) for e in errors["bone_marrow"]] == [(240.0, -50.0)]

    evidence = {"source": "…", "harmonised": errors, "harmonised_pvc": errors}
    document = report(
        {
            "realistic": {
                "raw": _variant(30.0),
                "harmonised": _variant(9.0),
                "harmonised_pvc": _variant(4.0),
                "delineation": None,
                "organ_activity_by_time_point": evidence,
            }
        },
        preset="test",
    )
    assert document["targets"]["evidence"] == {"organ_activity_by_time_point": evidence}


def test_a_measurement_is_silently_wrong_only_where_no_warning_names_its_voi() -> None:
    """``outside_2sd_without_a_warning`` counts the misses no QC warning of their cycle names:
    the benchmark reads the labels the platform publishes with each finding (``qc_findings``'
    ``voi_labels``, ``results.cycle_summary``), so two lesions flagged in one finding are both
    named, and an info finding or another cycle's warning names none (the message's words are
    not read: a warning naming lesion_3 only in its text names nothing). Findings of before
    ``voi_labels`` (a run kept earlier) are refused rather than counted silent."""
    found = LesionDelineation(
        np.zeros((2, 2, 2), dtype=bool), DELINEATED, 0.75, 1.0, 0.1, 0.01, 9.5, 2.5
    )
    flagged = replace(found, central_peak_only=True)
    tac = replace(
        TAC,
        labels=("lesion_1", "lesion_2", "lesion_3"),
        voi_types=(VoiType.LESION,) * 3,
        volume_ml=np.array([2.5, 2.5, 20.0]),
        mass_g=np.array([2.5, 2.5, 20.0]),
        activity_mbq=np.ones((3, 4)),
        partial_volume_model="gtm_platform_voi",
        partial_volume_status=("ok",) * 3,
        delineations=(flagged, flagged, found),
        organ_outlines=(None, None, None),
    )
    findings = with_partial_volume_findings(
        QC_FINDINGS.schema.empty_table(), IDENTITY, tac, Provenance(run_id="r")
    ).to_pandas()
    assert [list(labels) for labels in findings["voi_labels"]] == [["lesion_1", "lesion_2"]]
    other_cycle = findings.assign(cycle_key="another", voi_labels=[["lesion_3"]])
    info = findings.assign(severity="info", voi_labels=[["lesion_3"]])
    in_words = findings.assign(message="1 lesion VOI(s) [lesion_3]: x", voi_labels=[None])
    named = harmonisation.named_in_warnings(pd.concat([findings, other_cycle, info, in_words]))
    with pytest.raises(SystemExit, match="run the benchmark again"):
        harmonisation.named_in_warnings(findings.assign(schema_version=1))  # no voi_labels yet
    site, cycle = IDENTITY.site_id, IDENTITY.cycle_key
    assert {(s, c, v) for s, c, v in named if c == cycle} == {
        (site, cycle, "lesion_1"),
        (site, cycle, "lesion_2"),
    }


def _agreement(measured: dict[tuple[str, str], float]) -> pd.DataFrame:
    """``reference_rows``-shaped rows: (VOI label, site) → the measured value, judged metric."""
    kinds = {
        "lesion_1": ("lesion", 10.0),
        "lesion_2": ("lesion", 2.0),
        "kidney_left": ("organ", 150.0),
    }
    rows = []
    for (label, site), value in measured.items():
        kind, volume = kinds[label]
        rows.append(
            {
                "reference_object_id": "digital-P001-cycle1",
                "voi_label": label,
                "site_id": site,
                "variant": "harmonised_pvc",
                "metric": "mean_dose_gy" if kind == "lesion" else "tia_mbq_h",
                "dose_method": "sphere" if kind == "lesion" else None,
                "measured": value,
                "voi_type": kind,
                "volume_ml": volume,
            }
        )
        # not judged by the targets: another variant, and a lesion's other dose method
        rows.append({**rows[-1], "variant": "harmonised", "measured": 7.0 * value})
        if kind == "lesion":
            rows.append({**rows[-2], "dose_method": "voxel_s_value", "measured": 99.0 * value})
    return pd.DataFrame(rows)


def test_the_noise_floor_is_what_a_repeat_scan_leaves_of_the_cross_site_cov(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each site measures a VOI twice (the consortium scanned again, other noise): |a − b|/√2
    over their mean is that measurement's noise SD, and the root mean square over the sites is
    the CoV noise alone spreads the VOI by; a target is out of reach where that floor exceeds
    it. Rows the targets do not judge (another dose method, another variant) are not paired."""
    sites = ("brussels", "grandrapids", "milan", "montpellier")
    # relative differences (a - b) / mean per site: lesion_1 ±4 %, lesion_2 ±30 %, kidney 0 / 2 %
    first = {**{("lesion_1", s): 51.0 for s in sites}, **{("lesion_2", s): 11.5 for s in sites}}
    repeat = {**{("lesion_1", s): 49.0 for s in sites}, **{("lesion_2", s): 8.5 for s in sites}}
    for site, difference in zip(sites, (0.0, 0.0, 0.02, 0.02), strict=True):
        first["kidney_left", site] = 100.0 * (1 + difference / 2)
        repeat["kidney_left", site] = 100.0 * (1 - difference / 2)
    run, again = tmp_path / "realistic", tmp_path / harmonisation.NOISE_FLOOR_RUN
    rows = {run: _agreement(first), again: _agreement(repeat)}
    monkeypatch.setattr(harmonisation, "reference_rows", lambda folder: rows[folder])
    settings = {"preset": "full", "patients": 4, "sites": list(sites), "anatomy_realism": None}
    repeated = {**settings, "noise_seed": 5, "wall_s": 12.5}
    for folder, record in ((run, {**settings, "noise_floor": True}), (again, repeated)):
        folder.mkdir()
        (folder / RUN_RECORD).write_text(json.dumps({**record, "pvc_model": None}))

    floor = harmonisation.noise_floor(run, again)
    assert floor is not None
    assert floor["measurements_paired"] == 12  # 3 VOIs × 4 sites, judged rows only
    assert (floor["noise_seed"], floor["repeat_wall_s"]) == (5, 12.5)  # as the repeat recorded
    assert floor["lesion_ge4ml_cov_floor_median_pct"] == pytest.approx(
        100 * 0.04 / np.sqrt(2), abs=0.01
    )
    small, middle, _ = floor["lesion_cov_floor_by_volume_bin"]
    assert small["lesions"] == 1
    assert small["cov_floor_median_pct"] == pytest.approx(100 * 0.3 / np.sqrt(2), abs=0.01)
    assert middle["measurement_noise_sd_median_pct"] == pytest.approx(2.83, abs=0.01)
    # kidney: RMS of (0, 0, 2, 2) % / √2 = 1 %
    assert floor["organs"] == [
        {"voi_label": "kidney_left", "cov_floor_pct": pytest.approx(1.0, abs=0.01)}
    ]
    assert floor["floor_within_target"] == {
        "lesion_ge4ml_cov_median_pct": True,  # 2.83 ≤ 5
        "lesion_ge4ml_cov_max_pct": True,  # 2.83 ≤ 8
        "organ_cov_max_pct": True,  # 1.0 ≤ 5
    }

    # a repeat made under other settings is refused, not paired
    (again / RUN_RECORD).write_text(json.dumps({**settings, "preset": "test", "pvc_model": None}))
    with pytest.raises(ValueError, match="holds none of the same"):
        harmonisation.noise_floor(run, again)
    # a run that recorded no repeat scan has no floor (an old repeat folder beside it is ignored)
    (run / RUN_RECORD).write_text(json.dumps({**settings, "pvc_model": None, "noise_floor": False}))
    assert harmonisation.noise_floor(run, again) is None


def test_the_noise_floor_is_evidence_beside_the_targets() -> None:
    floor = {"lesion_ge4ml_cov_floor_median_pct": 6.0, "floor_within_target": {}}
    summaries = {
        "realistic": {
            "raw": _variant(30.0),
            "harmonised": _variant(9.0),
            "harmonised_pvc": _variant(8.0),
            "noise_floor": floor,
        }
    }
    assert report(summaries, preset="full")["targets"]["evidence"]["noise_floor"] == floor


def test_a_run_with_the_noise_floor_scans_the_same_consortium_again_in_one_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_mode(with_noise_floor=True)``: a second ``run_consortium`` beside the first, same
    settings, other noise seed, ``harmonised_pvc`` only; both records written so that
    :func:`noise_floor` pairs them (and refuses blur imaging)."""
    calls: list[tuple[Path, dict[str, Any]]] = []
    monkeypatch.setattr(
        harmonisation, "run_consortium", lambda out, **kwargs: calls.append((out, kwargs))
    )
    monkeypatch.setattr(harmonisation, "summarise", lambda run: {"run": run.name})
    run = tmp_path / "realistic"
    for folder in (run, tmp_path / harmonisation.NOISE_FLOOR_RUN):
        folder.mkdir()
    settings: dict[str, Any] = {"preset": "test", "patients": 2, "sites": ["milan", "brussels"]}
    summary = harmonisation.run_mode("realistic", run, **settings, with_noise_floor=True)
    assert summary["run"] == "realistic"
    (first, first_args), (repeat, repeat_args) = calls
    assert (first, repeat) == (run, tmp_path / harmonisation.NOISE_FLOOR_RUN)
    assert first_args["noise_seed"] is None
    assert repeat_args["noise_seed"] == harmonisation.NOISE_FLOOR_SEED
    assert [v.value for v in repeat_args["variants"]] == [harmonisation.NOISE_FLOOR_VARIANT]
    assert len(first_args["variants"]) == 3
    for key in ("sites", "n_patients", "preset", "imaging", "partial_volume_model"):
        assert repeat_args[key] == first_args[key]
    first_record = json.loads((run / RUN_RECORD).read_text())
    repeat_record = json.loads((repeat / RUN_RECORD).read_text())
    assert first_record["noise_floor"] is True
    assert repeat_record["noise_seed"] == harmonisation.NOISE_FLOOR_SEED
    for key in harmonisation.REPEATED_SETTINGS:
        assert repeat_record[key] == first_record[key]
    with pytest.raises(ValueError, match="realistic imaging"):
        harmonisation.run_mode("blur", tmp_path / "blur", **settings, with_noise_floor=True)
