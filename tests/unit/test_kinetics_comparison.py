"""Comparison with the reference (ratio, Bland–Altman), uncertainty helpers, kinetics rows."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from concordose.dicom.seg import VoiType
from concordose.dose.models import DoseBatch
from concordose.kinetics.comparison import (
    agreement_by_group,
    agreement_rows,
    bland_altman,
    ratios_to_reference,
)
from concordose.kinetics.registry import KINETICS_METHODS
from concordose.kinetics.uncertainty import activity_sd_mbq, tia_sd_with_calibration_mbq_h
from concordose.pipeline.quantify import CycleTimeActivity
from concordose.results.cycle_summary import build_method_comparison
from concordose.results.cycle_tables import CycleIdentity, build_cycle_tables
from concordose.results.provenance import Provenance
from concordose.schemas.tables import KINETICS, KINETICS_AGREEMENT

SIX_H = np.array([4.0, 24.0, 48.0, 96.0, 168.0, 240.0])


def test_bland_altman_matches_hand_computation() -> None:
    reference = np.array([100.0, 200.0, 300.0, 400.0, np.nan])
    method = np.array([110.0, 190.0, 330.0, 400.0, 50.0])
    result = bland_altman(method, reference, method="lumen_3tp")
    d = 100 * (method[:4] - reference[:4]) / ((method[:4] + reference[:4]) / 2)
    assert result.n_pairs == 4
    assert result.n_missing == 1
    assert result.bias_percent == pytest.approx(d.mean())
    assert result.sd_percent == pytest.approx(d.std(ddof=1))
    assert result.loa_upper_percent == pytest.approx(d.mean() + 1.96 * d.std(ddof=1))
    assert result.loa_lower_percent == pytest.approx(d.mean() - 1.96 * d.std(ddof=1))


def test_agreement_per_site_and_table_rows_fit_the_schema() -> None:
    reference = np.array([100.0, 100.0, 100.0, 100.0])
    method = np.array([110.0, 110.0, 90.0, 95.0])
    groups = agreement_by_group(["milan", "milan", "padua", "padua"], method, reference, method="x")
    assert groups["milan"].bias_percent == pytest.approx(100 * 10 / 105)
    assert groups["milan"].sd_percent == pytest.approx(0.0)
    rows = agreement_rows({(site, "organ"): value for site, value in groups.items()})
    provenance = {
        "schema_version": 1,
        "software_version": "test",
        "run_id": "r1",
        "created_at": Provenance(run_id="r1").created_at,
    }
    # agreement_rows keeps the columns of kinetics_agreement v1 (the cohort table is built by
    # concordose.consortium.agreement)
    v1 = KINETICS_AGREEMENT.schema_of(1)
    table = pa.Table.from_pylist([{**r, **provenance} for r in rows], v1)
    assert table.column("site_id").to_pylist() == ["milan", "padua"]


def test_ratios_to_reference_on_mono_exponential_curves() -> None:
    curves = 100 * np.exp(-math.log(2) / 60 * SIX_H)[None, :]
    batches = [
        KINETICS_METHODS.get(name).fit(SIX_H, curves)
        for name in ("spectacular_6tp", "mono_exponential", "hanscheid_stp")
    ]
    ratios = {r.method: r.ratio[0] for r in ratios_to_reference(batches)}
    assert set(ratios) == {"mono_exponential", "hanscheid_stp"}
    # The reference's uptake term must be faster than clearance by ln2/24 h, so it cannot be
    # exactly instantaneous: a few per mille of TIA on a curve with no uptake phase.
    assert ratios["mono_exponential"] == pytest.approx(1.0, rel=5e-3)
    x = 96.0 / 60.0  # Hänscheid picks 96 h
    assert ratios["hanscheid_stp"] == pytest.approx(2 * x / 2**x, rel=5e-3)
    with pytest.raises(KeyError, match="reference method"):
        ratios_to_reference(batches[1:])


def test_the_reference_is_never_compared_with_itself() -> None:
    curves = 100 * np.exp(-math.log(2) / 60 * SIX_H)[None, :]
    batches = [
        KINETICS_METHODS.get(name).fit(SIX_H, curves) for name in ("spectacular_6tp", "lumen_3tp")
    ]
    assert [r.method for r in ratios_to_reference(batches)] == ["lumen_3tp"]
    with pytest.raises(ValueError, match="'spectacular_6tp' is the reference"):
        bland_altman(batches[0].tia_mbq_h, batches[0].tia_mbq_h, method="spectacular_6tp")
    with pytest.raises(ValueError, match="found the reference itself"):
        agreement_by_group(["milan"], np.ones(1), np.ones(1), method="spectacular_6tp")
    # the per-cycle table: every dose of every other method, none of the reference against itself
    tac = CycleTimeActivity(
        labels=("kidney_left",),
        voi_types=(VoiType.ORGAN,),
        volume_ml=np.array([150.0]),
        mass_g=np.array([150.0]),
        time_h=SIX_H,
        activity_mbq=curves,
        sop_instance_uids=tuple(f"1.2.{i}" for i in range(6)),
        calibration_record_id="cal-1",
    )
    doses = [
        (batch, DoseBatch("sphere", "1", "d", batch.tia_mbq_h * 1e-3, ("ok",))) for batch in batches
    ]
    rows = build_method_comparison(
        CycleIdentity("sub-1", "cyc-1", "milan"), tac, doses, Provenance(run_id="r1")
    ).to_pylist()
    assert [(r["reference_kinetics_method"], r["kinetics_method"]) for r in rows] == [
        ("spectacular_6tp", "lumen_3tp")
    ]


def test_activity_and_tia_uncertainty_add_in_quadrature() -> None:
    sd = activity_sd_mbq(
        np.array([[10.0, 5.0]]), np.array([[10_000.0, 2_500.0]]), recovery_relative_sd=0.03
    )
    np.testing.assert_allclose(sd, [[10 * math.hypot(0.01, 0.03), 5 * math.hypot(0.02, 0.03)]])
    total = tia_sd_with_calibration_mbq_h(np.array([1000.0]), np.array([30.0]), 0.04)
    assert total[0] == pytest.approx(50.0)


def test_kinetics_rows_carry_model_time_points_and_uncertainty() -> None:
    times = np.array([4.0, 24.0, 72.0, 168.0])
    activity = np.array([[100.0, 80.0, 45.0, 14.0], [10.0, 9.0, 7.0, 4.0]])
    tac = CycleTimeActivity(
        labels=("kidney_left", "lesion_1"),
        voi_types=(VoiType.ORGAN, VoiType.LESION),
        volume_ml=np.array([150.0, 8.0]),
        mass_g=np.array([150.0, 8.0]),
        time_h=times,
        activity_mbq=activity,
        sop_instance_uids=("1.2.3", "1.2.4", "1.2.5", "1.2.6"),
        calibration_record_id="cal-1",
        counts=np.full(activity.shape, 10_000.0),
        calibration_relative_sd=0.05,
    )
    kinetics = [
        KINETICS_METHODS.get(name).fit(times, activity, voi_types=["organ", "lesion"])
        for name in ("mono_exponential", "lutadose_2tp", "aicc_best_fit", "madsen_stp")
    ]
    tables = build_cycle_tables(
        CycleIdentity("sub-1", "cyc-1", "milan"), tac, kinetics, [], Provenance(run_id="r1")
    )
    rows = tables["kinetics"].to_pylist()
    assert tables["kinetics"].schema.equals(KINETICS.schema)
    by_key = {(r["kinetics_method"], r["voi_label"]): r for r in rows}
    mono = by_key[("mono_exponential", "kidney_left")]
    assert mono["n_time_points"] == 4
    assert mono["time_points_used_h"] is None
    lutadose = by_key[("lutadose_2tp", "lesion_1")]
    assert lutadose["n_time_points"] == 2
    assert lutadose["time_points_used_h"] == [24.0, 168.0]
    assert lutadose["time_point_offsets_h"] == [4.0, 6.0]  # nominal 20 h and 162 h
    assert mono["time_point_offsets_h"] is None  # no schedule
    best = by_key[("aicc_best_fit", "kidney_left")]
    assert best["model"] in {"mono_exponential", "mono_exponential_uptake"}
    assert best["tia_sd_mbq_h"] > 0
    assert "lambda_eff_per_h" in json.loads(best["fit_parameters_json"])
    assert by_key[("madsen_stp", "lesion_1")]["teff_h"] == pytest.approx(95.0)
    # Uncertainty: counting (1 % at 10 000 counts) ⊕ CF 5 % per point; fit ⊕ CF 5 % per TIA.
    point = tables["voi_timepoints"].to_pylist()[0]
    assert point["activity_sd_mbq"] == pytest.approx(100.0 * math.hypot(0.01, 0.05))
    assert best["tia_total_sd_mbq_h"] == pytest.approx(
        math.hypot(best["tia_sd_mbq_h"], 0.05 * best["tia_mbq_h"])
    )
    # mono_exponential's closed-form fit reports its covariance-propagated SD too (4 points)
    assert mono["tia_sd_mbq_h"] is not None
    assert mono["tia_total_sd_mbq_h"] == pytest.approx(
        math.hypot(mono["tia_sd_mbq_h"], 0.05 * mono["tia_mbq_h"])
    )
