"""The consortium dashboard (issue 17, items 2, 4, 5) over the digital consortium's stores: its
numbers equal the published tables (parsed from the HTML), ``concordose report --dashboard``
writes it to a folder and to S3, and the nightly ``sweep`` rebuilds it, a failure there being a
warning and never a failed sweep.

Reuses the session's consortium run (``consortium_run`` in ``conftest.py``, shared with
``test_consortium_command.py``); tests that write work on copies of its stores.
"""

from __future__ import annotations

import math
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from concordose.cli import app
from concordose.external_references import external_references
from concordose.flows.sweep import sweep
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.report import DASHBOARD_KEY, DASHBOARD_SECTION_IDS, build_dashboard
from concordose.results.catalogue import read_current
from concordose.results.object_store import ObjectStore, open_object_store
from concordose.results.provenance import Provenance
from concordose.results.publish import publish_tables
from concordose.schemas.tables import QC_FINDINGS
from concordose.settings import Settings
from tests.browser import OfflineBrowser, assert_renders_offline
from tests.dashboard_page import parse_dashboard
from tests.integration.s3_stores import copy_store_to_s3

pytestmark = pytest.mark.integration

VARIANT = "harmonised_pvc"
HELD_CYCLE = "cyc-held-for-the-dashboard"
HELD_MESSAGE = "no calibration record of site milan covers 2026-11-02"


def _value(cell: dict[str, str]) -> float | None:
    return None if cell["data-value"] == "" else float(cell["data-value"])


def _same(shown: float | None, published: object) -> bool:
    if published is None or (isinstance(published, float) and math.isnan(published)):
        return shown is None
    return shown == published


def _store(folder: Path) -> ObjectStore:
    return open_object_store(folder.as_posix(), Settings(), create=False)


def _publish_held_cycle(store: ObjectStore) -> None:
    """A held cycle as the flow publishes one: its error finding, no quantification."""
    row = {
        "subject_key": "sub-held",
        "site_id": "milan",
        "cycle_key": HELD_CYCLE,
        "finding_index": 0,
        "check_name": "calibration",
        "severity": "error",
        "message": HELD_MESSAGE,
        "time_point_index": None,
        "schema_version": QC_FINDINGS.version,
        "software_version": "test",
        "run_id": "run-held",
        "flow_run_id": None,
        "calibration_record_id": "none",
        "input_uid_hashes": ["h1"],
        "created_at": datetime(2026, 12, 5, tzinfo=UTC),
    }
    table = pa.Table.from_pylist([row], schema=QC_FINDINGS.schema)
    publish_tables(store, {"qc_findings": [table]}, Provenance(run_id="run-held"))


@pytest.fixture(scope="module")
def variant_copy(consortium_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of one variant's store (cycles, cohort tables) with a held cycle added, its
    dashboard built by ``concordose report --dashboard``."""
    copy = tmp_path_factory.mktemp("dashboard") / "store"
    shutil.copytree(consortium_run / "output" / "variants" / VARIANT, copy)
    _publish_held_cycle(_store(copy))
    result = CliRunner().invoke(app, ["report", "--output", str(copy), "--dashboard"])
    assert result.exit_code == 0, result.output
    assert f"dashboard  {copy / DASHBOARD_KEY}" in result.output
    assert ".html" in result.output
    assert "cyc-" not in result.output  # --dashboard alone builds no cycle report
    return copy


def test_variant_dashboard_numbers_equal_its_tables(variant_copy: Path) -> None:
    html = (variant_copy / DASHBOARD_KEY).read_text()
    page = parse_dashboard(html)
    assert set(DASHBOARD_SECTION_IDS) <= page.ids
    assert external_references(variant_copy / DASHBOARD_KEY) == []
    store = _store(variant_copy)

    # Bland–Altman numbers: every kinetics_agreement row, per site and pooled
    agreement = read_current(store, "kinetics_agreement").to_pylist()
    for css, column in (("bias", "bias_percent"), ("loa-lower", "loa_lower_percent")):
        shown = {
            (c["data-site"], c["data-voi-class"], c["data-method"], c["data-dose-method"]): c
            for c in page.table("agreement", css)
        }
        assert len(shown) == len(agreement) > 0
        for row in agreement:
            key = (
                row["site_id"],
                row["voi_class"],
                row["kinetics_method"],
                row["dose_method"] or "",
            )
            assert _same(_value(shown[key]), row[column]), (key, column)
    assert {row["site_id"] for row in agreement} == {"milan", "brussels", "*"}
    assert html.count('class="bland-altman"') == 3

    # counts: cycles with rows, processed (quantified), held (the added one)
    acquisitions = read_current(store, "acquisitions").to_pylist()
    quantified = {r["cycle_key"] for r in read_current(store, "voi_timepoints").to_pylist()}
    held = {c["data-site"]: _value(c) for c in page.table("cycle-counts", "held")}
    processed = {c["data-site"]: _value(c) for c in page.table("cycle-counts", "processed")}
    points = {c["data-site"]: _value(c) for c in page.table("cycle-counts", "time-points")}
    for site in ("milan", "brussels"):
        mine = {r["cycle_key"] for r in acquisitions if r["site_id"] == site}
        assert processed[site] == len(mine & quantified) > 0
        assert points[site] == sum(r["site_id"] == site for r in acquisitions)
    assert held == {"milan": 1.0, "brussels": 0.0, "*": 1.0}
    (reason,) = page.table("held-reasons", "held-cycles")
    assert reason["data-check"] == "calibration"
    assert _value(reason) == 1
    assert f"{HELD_MESSAGE} (1×)" in html

    # threshold concordance: each cohort row's flip fraction and kappa
    cohort = [
        r for r in read_current(store, "threshold_concordance").to_pylist()
        if r["level"] == "cohort"
    ]  # fmt: skip
    flips = {
        (c["data-site"], c["data-threshold"]): c
        for c in page.table("threshold-cohort", "flip-fraction")
    }
    kappas = {
        (c["data-site"], c["data-threshold"]): c for c in page.table("threshold-cohort", "kappa")
    }
    assert len(flips) == len(cohort) > 0
    for row in cohort:
        site_threshold = (row["site_id"], row["threshold_name"])
        expected = None if row["flip_fraction"] is None else 100.0 * row["flip_fraction"]
        assert _same(_value(flips[site_threshold]), expected)
        assert _same(_value(kappas[site_threshold]), row["cohen_kappa"])

    # calibration records of this store; no harmonisation table in a variant's store
    cfs = {c["data-record"]: _value(c) for c in page.table("calibrations", "cf")}
    assert cfs == {
        r["calibration_record_id"]: r["calibration_factor_cps_per_mbq"]
        for r in read_current(store, "site_calibrations").to_pylist()
    }
    assert "Harmonisation: not available" in html


def test_consortium_output_dashboard_shows_harmonisation(consortium_run: Path) -> None:
    store = _store(consortium_run / "output")
    html = build_dashboard(store)  # built, not written: the shared run stays as it is
    page = parse_dashboard(html)
    published = [
        r for r in read_current(store, "harmonisation_agreement").to_pylist()
        if r["kinetics_method"] == REFERENCE_METHOD_NAME
    ]  # fmt: skip
    assert published
    cov = {
        (
            c["data-object"],
            c["data-voi"],
            c["data-metric"],
            c["data-dose-method"],
            c["data-variant"],
        ): c
        for c in page.table("harmonisation-cov", "cov")
    }
    error = {
        (
            c["data-object"],
            c["data-voi"],
            c["data-metric"],
            c["data-dose-method"],
            c["data-site"],
            c["data-variant"],
        ): c
        for c in page.table("harmonisation-error", "error")
    }
    assert len(error) == len(published)
    for row in published:
        group = (row["reference_object_id"], row["voi_label"], row["metric"], row["dose_method"])
        expected_cov = None if row["cross_site_cov"] is None else 100.0 * row["cross_site_cov"]
        shown = _value(cov[(*group, row["variant"])])
        assert (shown is None and expected_cov is None) or shown == pytest.approx(
            expected_cov, rel=1e-12
        )
        expected_error = None if row["relative_error"] is None else 100.0 * row["relative_error"]
        shown = _value(error[(*group, row["site_id"], row["variant"])])
        assert (shown is None and expected_error is None) or shown == pytest.approx(
            expected_error, rel=1e-12
        )
    assert {c["data-variant"] for c in cov.values()} == {"raw", "harmonised", "harmonised_pvc"}
    # both record kinds of each site (vendor nominal for raw, phantom for the others)
    records = {c["data-record"] for c in page.table("calibrations", "cf")}
    assert records == {
        r["calibration_record_id"] for r in read_current(store, "site_calibrations").to_pylist()
    }
    assert "Method agreement is not available" in html  # no cycle in the top-level store
    assert not re.search(r"https?://", html)
    assert all(r.startswith(("data:image/png;base64,", "#")) for r in page.references)


def test_report_dashboard_on_s3(
    variant_copy: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = copy_store_to_s3(variant_copy, "s3://dashboards/lu177", s3_endpoint, monkeypatch)
    store.filesystem.delete_file(store.path(DASHBOARD_KEY))
    result = CliRunner().invoke(app, ["report", "--output", "s3://dashboards/lu177", "--dashboard"])
    assert result.exit_code == 0, result.output
    html = store.read_bytes(store.path(DASHBOARD_KEY)).decode()
    on_s3 = [c["data-value"] for c in parse_dashboard(html).table("agreement", "bias")]
    local = [
        c["data-value"]
        for c in parse_dashboard((variant_copy / DASHBOARD_KEY).read_text()).table(
            "agreement", "bias"
        )
    ]
    assert on_s3 == local
    assert "s3://dashboards/lu177" in html
    assert s3_endpoint not in html  # the endpoint (an http URL) is never written


def _sweep_copy(consortium_run: Path, folder: Path) -> tuple[Path, Path, Path]:
    spool = folder / "spool"
    shutil.copytree(consortium_run / "spool", spool)
    shutil.copytree(consortium_run / "config", folder / "config")
    output = folder / "output"
    shutil.copytree(consortium_run / "output" / "variants" / VARIANT, output)
    (output / DASHBOARD_KEY).unlink(missing_ok=True)
    return spool, folder / "config" / VARIANT / "sites.yaml", output


def test_nightly_sweep_rebuilds_the_dashboard_and_survives_its_failure(
    consortium_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, sites, output = _sweep_copy(consortium_run, tmp_path)
    # every cycle is processed at its current revision: the sweep runs none, and still
    # rebuilds the dashboard (cycles triggered during the day did not)
    result: Any = sweep(spool, sites, output_uri=str(output))
    assert result.runs == ()
    assert result.dashboard.error is None
    assert result.dashboard.path == str(output / DASHBOARD_KEY)
    assert "kinetics_agreement" in (output / DASHBOARD_KEY).read_text()

    def broken(store: ObjectStore) -> str:
        raise OSError("disk full")

    monkeypatch.setattr("concordose.tasks.report.build_dashboard", broken)
    failed: Any = sweep(spool, sites, output_uri=str(output))
    assert failed.dashboard.path is None
    assert "OSError: disk full" in failed.dashboard.error
    assert failed.failed == {}


def test_dashboard_renders_offline_in_a_browser(
    variant_copy: Path, offline_browser: OfflineBrowser, tmp_path: Path
) -> None:
    """Issue 17 item 5: the dashboard from a ``file://`` URL in headless chromium with every
    other request blocked — no console error, no failed or blocked request, not blank."""
    page = variant_copy / DASHBOARD_KEY
    assert external_references(page) == []
    load = assert_renders_offline(offline_browser, page, tmp_path)
    assert load.non_background_fraction > 0.05  # plots and tables, not a line of text
