"""``concordose consortium``: the digital consortium through the whole platform (generator →
phantom calibration → C-STORE to the receiver on loopback → process-spool per variant →
Parquet), and ``harmonisation_agreement`` checked against a hand computation from the same
published rows and the sites' ground-truth JSON (issue 14, item 7)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from concordose.consortium import ReferenceObjectRegistry
from concordose.results.catalogue import read_current
from concordose.results.object_store import open_object_store
from concordose.settings import Settings
from tests.integration.conftest import CONSORTIUM_KEY, CONSORTIUM_SITES

pytestmark = pytest.mark.integration

SITES = CONSORTIUM_SITES
KEY = CONSORTIUM_KEY


@pytest.fixture(scope="module")
def run(consortium_run: Path) -> Path:
    """The session's consortium run (``tests/integration/conftest.py``), shared with the
    dashboard's tests."""
    return consortium_run


def rows(folder: Path, table: str) -> list[dict[str, Any]]:
    store = open_object_store(folder.as_posix(), Settings())
    current: list[dict[str, Any]] = read_current(store, table).to_pylist()
    return current


def test_harmonisation_table_reproduces_the_hand_computed_cov(run: Path) -> None:
    published = rows(run / "output", "harmonisation_agreement")
    assert {r["site_id"] for r in published} == set(SITES)
    assert {r["variant"] for r in published} == {"raw", "harmonised", "harmonised_pvc"}

    # Truth from each site's ground-truth JSON (not from the truth sheet the table was built with).
    truths = [
        json.loads(path.read_text())
        for site in SITES
        for path in (run / "input" / "sites" / site / "patients").glob("*/ground_truth.json")
    ]
    assert len(truths) == len(SITES)
    (cycle,) = truths[0]["cycles"]
    truth_by_label = {voi["label"]: voi for voi in cycle["vois"]}
    # Measurements from each variant's published rows, matched to the site's cycle by its key.
    sheet = ReferenceObjectRegistry.load(run / "input" / "reference_objects.yaml")
    (reference,) = sheet.reference_objects
    cycle_keys = {m.site_id: m.cycle_key(SecretStr(KEY)) for m in reference.measurements}
    # Every method pair the flow published is compared (whichever methods the protocol runs).
    pairs = {(r["metric"], r["kinetics_method"], r["dose_method"]) for r in published}
    assert {metric for metric, _, _ in pairs} == {"tia_mbq_h", "mean_dose_gy"}
    checked = 0
    for variant in ("raw", "harmonised", "harmonised_pvc"):
        folder = run / "output" / "variants" / variant
        sources = {
            "tia_mbq_h": rows(folder, "kinetics"),
            "mean_dose_gy": rows(folder, "absorbed_dose"),
        }
        for label, truth in truth_by_label.items():
            for metric, kinetics_method, dose_method in sorted(pairs):
                if truth[metric] is None:
                    continue
                values = {
                    r["site_id"]: r[metric]
                    for r in sources[metric]
                    if r["voi_label"] == label
                    and r["cycle_key"] == cycle_keys[r["site_id"]]
                    and r["kinetics_method"] == kinetics_method
                    and r.get("dose_method", "none") == dose_method
                }
                assert set(values) == set(SITES), (variant, label, metric)
                present = [v for v in values.values() if v is not None]
                group = [
                    r
                    for r in published
                    if (r["variant"], r["voi_label"], r["metric"]) == (variant, label, metric)
                    and (r["kinetics_method"], r["dose_method"]) == (kinetics_method, dose_method)
                ]
                assert {r["site_id"] for r in group} == set(SITES)
                for row in group:
                    if len(present) >= 2:
                        expected_cov = statistics.stdev(present) / statistics.mean(present)
                        assert row["cross_site_cov"] == pytest.approx(expected_cov, rel=1e-9)
                    else:
                        assert row["cross_site_cov"] is None
                    assert row["n_sites"] == len(present)
                    assert row["truth"] == pytest.approx(truth[metric], rel=1e-12)
                    measured = values[row["site_id"]]
                    assert row["measured"] == measured
                    if measured is not None:
                        assert row["relative_error"] == pytest.approx(
                            (measured - truth[metric]) / truth[metric], rel=1e-9
                        )
                checked += 1
    assert checked >= 3 * len(truth_by_label)  # at least every compartment's TIA, per variant


def test_variants_apply_the_vendor_or_phantom_factor(run: Path) -> None:
    published = rows(run / "output", "harmonisation_agreement")
    records = {(r["variant"], r["calibration_record_id"]) for r in published}
    for site in SITES:
        assert ("raw", f"{site}-vendor-nominal") in records
        assert ("harmonised", f"{site}-phantom-consortium") in records
        assert ("harmonised_pvc", f"{site}-phantom-consortium") in records
    calibrations = {r["calibration_record_id"] for r in rows(run / "output", "site_calibrations")}
    assert calibrations == {f"{s}-vendor-nominal" for s in SITES} | {
        f"{s}-phantom-consortium" for s in SITES
    }
    # Harmonisation is what the phantoms are for: the sites agree better with their own factors.
    kinetics_method = min(r["kinetics_method"] for r in published)
    organ_tia_cov = {
        r["variant"]: r["cross_site_cov"]
        for r in published
        if (r["voi_label"], r["metric"], r["kinetics_method"])
        == ("kidney_left", "tia_mbq_h", kinetics_method)
    }
    assert organ_tia_cov["harmonised"] < organ_tia_cov["raw"]
    # PVC (the protocol's default model, gtm_platform_voi) changes organs and lesions
    # (harmonised_pvc = harmonised + partial-volume correction).
    by_variant: dict[str, dict[tuple[str, ...], float | None]] = {}
    for r in published:
        key = (
            r["voi_type"],
            r["site_id"],
            r["voi_label"],
            r["metric"],
            r["kinetics_method"],
            r["dose_method"],
        )
        by_variant.setdefault(r["variant"], {})[key] = r["measured"]
    pvc, plain = by_variant["harmonised_pvc"], by_variant["harmonised"]
    assert any(pvc[k] != plain[k] for k in plain if k[0] == "organ")
    assert any(pvc[k] != plain[k] for k in plain if k[0] == "lesion")


def test_every_study_went_through_the_receiver(run: Path) -> None:
    spool = run / "spool"
    assert (spool / "instances").is_dir()
    sent = sum(1 for path in (run / "input" / "sites").rglob("*.dcm") if "patients" in path.parts)
    stored = sum(1 for path in (spool / "instances").rglob("*") if path.is_file())
    assert stored == sent
