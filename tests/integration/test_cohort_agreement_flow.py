"""The cohort tables through the real flow (issue 14, items 4 and 6): published, validated,
current.

One six-time-point cycle of the ``test`` preset with the reference and two simplified kinetics
methods, three VOI-level dose methods and the site's voxel dosimetry; ``kinetics_agreement``
and ``dose_agreement`` are read back from the store as a reader sees them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from concordose.consortium import POOLED_SITE_ID, build_cohort_tables, read_cohort_inputs
from concordose.flows.sweep import process_spool
from concordose.phantoms import generate_patient
from concordose.results.catalogue import load_manifests, read_current
from concordose.results.object_store import open_object_store
from concordose.results.provenance import Provenance
from concordose.settings import Settings

pytestmark = pytest.mark.integration

KINETICS = ("spectacular_6tp", "lumen_3tp", "lutadose_2tp", "hebert_4tp")
DOSES = ("sphere", "organ_s_am", "ldm")


def test_agreement_tables_are_published_after_the_cycles(
    tmp_path: Path, prefect_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-key-not-secret")
    patient = generate_patient(
        tmp_path / "patient", seed=11, preset="test", time_points_h=(4, 24, 48, 96, 168, 240)
    )
    out = tmp_path / "out"
    process_spool(
        patient.out_dir / "dicom",
        patient.sites_path,
        output_uri=str(out),
        site_id="milan",
        kinetics_methods=KINETICS,
        dose_methods=DOSES,
    )
    store = open_object_store(str(out), Settings())
    kinetics_agreement = read_current(store, "kinetics_agreement").to_pylist()
    dose_agreement = read_current(store, "dose_agreement").to_pylist()

    assert {r["site_id"] for r in kinetics_agreement} == {"milan", POOLED_SITE_ID}
    assert {r["kinetics_method"] for r in kinetics_agreement} == set(KINETICS[1:])
    assert {r["metric"] for r in kinetics_agreement} == {"tia", "mean_dose"}
    assert {r["dose_method"] for r in kinetics_agreement} == {None, *DOSES}
    n_vois = len({r["voi_label"] for r in read_current(store, "kinetics").to_pylist()})
    tia_pooled = [
        r for r in kinetics_agreement if r["metric"] == "tia" and r["site_id"] == POOLED_SITE_ID
    ]
    for method in KINETICS[1:]:  # every VOI paired once, in one class
        rows = [r for r in tia_pooled if r["kinetics_method"] == method]
        assert sum(r["n_pairs"] + r["n_missing"] for r in rows) == n_vois
    # dose methods against each other, VOI-level on the reference's TIA and voxel methods
    sources = {(r["dose_source"], r["comparator_dose_source"]) for r in dose_agreement}
    assert ("absorbed_dose", "absorbed_dose") in sources
    assert ("voxel_dose", "absorbed_dose") in sources
    voi_level = [r for r in dose_agreement if r["dose_source"] == "absorbed_dose"]
    assert {r["kinetics_method"] for r in voi_level} == {"spectacular_6tp"}
    assert all(r["dose_method"] != r["comparator_dose_method"] for r in voi_level)

    # validated at publication, and exactly the rebuild of the store's current cycles
    manifests = load_manifests(store)
    cohort_runs = [m for m in manifests if "cohort" in m.scopes]
    assert cohort_runs
    manifest = json.loads(
        store.read_bytes(store.path("_manifests", f"{cohort_runs[-1].run_id}.json"))
    )
    assert manifest["validation"]["kinetics_agreement"]["success"]
    assert manifest["validation"]["dose_agreement"]["success"]
    rebuilt = build_cohort_tables(read_cohort_inputs(store), Provenance(run_id="check"))
    columns = ("site_id", "voi_class", "metric", "kinetics_method", "dose_method", "n_pairs")

    def key(row: dict[str, object]) -> tuple[str, ...]:
        return tuple(str(row[c]) for c in columns)

    assert sorted(map(key, kinetics_agreement)) == sorted(
        map(key, rebuilt["kinetics_agreement"].to_pylist())
    )
    # the thresholds in their studies' emulated methods and with the reference (item 6)
    concordance = read_current(store, "threshold_concordance").to_pylist()
    # the one cycle is its patient's first: numbered 1, so cycle-1 thresholds apply to it
    assert {r["cycle_number"] for r in read_current(store, "patient_summary").to_pylist()} == {1}
    cycle_rows = [r for r in concordance if r["level"] == "cycle"]
    assert {r["threshold_name"] for r in cycle_rows} == {
        "LUMEN minimal lesion dose",
        "LUTADOSE GTD1",
    }
    assert all(r["study_value_gy"] is not None for r in cycle_rows)
    patient_rows = [r for r in concordance if r["level"] == "patient"]
    assert {r["threshold_name"] for r in patient_rows} == {
        "Hebert minimal cumulative lesion dose",
        "Hebert mean lesion dose",
    }
    assert all(r["n_cycles"] == 1 for r in patient_rows)
    assert all(r["reference_kinetics_method"] == "spectacular_6tp" for r in cycle_rows)
    assert {r["site_id"] for r in concordance if r["level"] == "cohort"} == {
        "milan",
        POOLED_SITE_ID,
    }
    assert manifest["validation"]["threshold_concordance"]["success"]
    # the rebuilds (after the cycle, after the sweep) replace each other: one current run
    assert len({r["run_id"] for r in kinetics_agreement + dose_agreement + concordance}) == 1
