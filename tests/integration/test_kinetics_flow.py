"""The flow with every registered kinetics method side by side on a six-time-point patient."""

from __future__ import annotations

from pathlib import Path

import pytest

from concordose.calibration.protocol import DEFAULT_DOSE_METHODS, DEFAULT_KINETICS_METHODS
from concordose.flows.sweep import process_spool
from concordose.kinetics.registry import KINETICS_METHODS
from concordose.phantoms import generate_patient
from concordose.schemas.tables import KINETICS

pytestmark = pytest.mark.integration


def test_every_method_publishes_rows_with_model_and_time_points(
    tmp_path: Path, prefect_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-key-not-secret")
    patient = generate_patient(
        tmp_path / "patient", seed=11, preset="test", time_points_h=(4, 24, 48, 96, 168, 240)
    )
    result = process_spool(
        patient.out_dir / "dicom",
        patient.sites_path,
        output_uri=str(tmp_path / "out"),
        site_id="milan",
        kinetics_methods=KINETICS_METHODS.names(),
    )
    rows = result.tables["kinetics"].to_pylist()
    methods = {row["kinetics_method"] for row in rows}
    assert methods == set(KINETICS_METHODS.names())
    assert {row["schema_version"] for row in rows} == {KINETICS.version}
    reference = [row for row in rows if row["kinetics_method"] == "spectacular_6tp"]
    assert all(row["status"] == "ok" for row in reference)
    # the reference chooses its model per VOI (issue 14); on six points among these four
    six_point_candidates = {
        "mono_exponential",
        "mono_exponential_uptake",
        "bi_exponential",
        "bi_exponential_uptake",
    }
    assert all(row["model"] in six_point_candidates for row in reference)
    assert all(row["n_time_points"] == 6 for row in reference)
    assert all(row["tia_sd_mbq_h"] > 0 for row in reference)
    lutadose = [row for row in rows if row["kinetics_method"] == "lutadose_2tp"]
    assert all(row["time_points_used_h"] == [24.0, 168.0] for row in lutadose)
    # Hebert's 72 h and 192 h are emulated by 96 h and 168 h (issue 14; before, not applicable)
    hebert = [row for row in rows if row["kinetics_method"] == "hebert_4tp"]
    assert all(row["status"] == "ok" for row in hebert)
    assert all(row["time_points_used_h"] == [4.0, 24.0, 96.0, 168.0] for row in hebert)
    assert all(row["time_point_offsets_h"] == [0.0, 0.0, 24.0, -24.0] for row in hebert)
    points = result.tables["voi_timepoints"].to_pylist()
    for point in points:  # Poisson part: sd/A = 1/sqrt(counts) (this site states no CF sd)
        assert point["activity_sd_mbq"] == pytest.approx(
            point["activity_mbq"] / point["counts"] ** 0.5, rel=1e-9
        )
    doses = result.tables["absorbed_dose"].to_pylist()
    # every kinetics method × the site protocol's default VOI dose methods (issue 14)
    assert len(doses) == len(rows) * len(DEFAULT_DOSE_METHODS)
    assert not any(
        dose["status"] == "no TIA (kinetics failed)"
        for dose in doses
        if dose["kinetics_method"] == "hebert_4tp"
    )
    comparison = result.tables["method_comparison"].to_pylist()
    compared = {row["kinetics_method"] for row in comparison}
    assert compared == set(KINETICS_METHODS.names()) - {"spectacular_6tp"}
    assert {row["reference_kinetics_method"] for row in comparison} == {"spectacular_6tp"}
    lumen = [
        row
        for row in comparison
        if row["kinetics_method"] == "lumen_3tp" and row["dose_method"] == "sphere"
    ]
    assert lumen
    # Mono-exponential truth: LUMEN's 3 points agree with the 6-point reference within noise.
    assert all(abs(row["relative_difference"]) < 0.1 for row in lumen)


def test_the_default_method_set_on_three_points_reports_what_does_not_apply(
    tmp_path: Path, prefect_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: the site protocol's full default set on a three-point cycle (4, 24, 96 h) runs;
    a method the schedule cannot support says why per VOI, and the cycle is processed."""
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-key-not-secret")
    patient = generate_patient(
        tmp_path / "patient", seed=11, preset="test", time_points_h=(4.0, 24.0, 96.0)
    )
    result = process_spool(
        patient.out_dir / "dicom",
        patient.sites_path,
        output_uri=str(tmp_path / "out"),
        site_id="milan",
    )
    assert not result.failed
    assert len(result.processed) == 1
    rows = result.tables["kinetics"].to_pylist()
    n_vois = len({row["voi_label"] for row in rows})
    status = {
        method: {row["status"] for row in rows if row["kinetics_method"] == method}
        for method in DEFAULT_KINETICS_METHODS
    }
    assert set(status) == {row["kinetics_method"] for row in rows}
    assert len(rows) == n_vois * len(DEFAULT_KINETICS_METHODS)
    assert status["spectacular_6tp"] == {"not applicable: needs ≥ 6 acquired time points, has 3"}
    assert status["bi_exponential"] == {"not applicable: needs ≥ 4 acquired time points, has 3"}
    for method in ("lutadose_2tp", "lumen_3tp", "hebert_4tp"):  # no late point near 162-192 h
        (reason,) = status[method]
        assert reason.startswith("not applicable: nominal"), reason
    for method in ("hanscheid_stp", "madsen_stp", "mono_exponential", "trapezoid"):
        assert status[method] == {"ok"}, method
    # without a reference TIA no comparison has a reference dose (nothing is made up)
    comparison = result.tables["method_comparison"].to_pylist()
    assert all(row["reference_dose_gy"] is None for row in comparison)
