"""The reports need no network (issue 17, item 5): no external reference left in the cycle
report or the Data Docs (``concordose.external_references``), and each renders in a real
headless chromium from a ``file://`` URL with every other request blocked: no console error,
no failed or blocked request, a screenshot that is not blank.

The browser is Debian's ``chromium`` (``scripts/bootstrap --test`` installs it); without it these
tests fail, saying so. Pages come from the demo run shared with ``test_cycle_report.py``, and
from a store where a run failed validation (its Data Docs are published too).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from concordose.external_references import external_references
from concordose.results.object_store import open_object_store
from concordose.results.publish import ValidationFailedError, publish_tables
from concordose.settings import Settings
from tests.browser import OfflineBrowser, assert_renders_offline
from tests.results_rows import dose_table, provenance, run_tables

pytestmark = pytest.mark.integration


def _cycle_report(output: Path) -> Path:
    (report,) = (output / "_reports" / "cycles").glob("*.html")
    return report


def _data_docs_pages(output: Path) -> list[Path]:
    """The docs' home (the latest run), the list of runs, and one validation result and one
    suite page of a run."""
    docs = output / "_data_docs"
    validation = next((docs / "runs").glob("*/validations/**/*.html"))
    suite = next((docs / "runs").glob("*/expectations/**/*.html"))
    return [docs / "index.html", docs / "runs" / "index.html", validation, suite]


def test_no_external_reference_remains_in_the_reports(demo_output: Path) -> None:
    output = demo_output / "output"
    files = [_cycle_report(output)]
    files += sorted(p for p in (output / "_data_docs").rglob("*") if p.suffix in (".html", ".css"))
    assert len(files) > 10
    remaining = {
        file.relative_to(output).as_posix(): [f"{r.where} {r.url}" for r in refs]
        for file in files
        if (refs := external_references(file))
    }
    assert remaining == {}


def test_cycle_report_renders_offline(
    demo_output: Path, offline_browser: OfflineBrowser, tmp_path: Path
) -> None:
    load = assert_renders_offline(offline_browser, _cycle_report(demo_output / "output"), tmp_path)
    assert load.non_background_fraction > 0.05  # figures and tables, not a line of text


def test_data_docs_render_offline(
    demo_output: Path, offline_browser: OfflineBrowser, tmp_path: Path
) -> None:
    for page in _data_docs_pages(demo_output / "output"):
        assert_renders_offline(offline_browser, page, tmp_path)


def test_the_browser_check_fails_a_page_that_needs_the_network_or_is_blank(
    offline_browser: OfflineBrowser, tmp_path: Path
) -> None:
    online = tmp_path / "online.html"
    online.write_text(
        '<html><head><script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>'
        '<link rel="stylesheet" href="missing.css"></head>'
        "<body><h1>Report</h1><script>jQuery('h1')</script></body></html>"
    )
    load = offline_browser.load(online, tmp_path / "online.png")
    assert load.blocked_requests == ["https://code.jquery.com/jquery-3.7.1.min.js"]
    assert [r.split(":")[0] for r in load.failed_requests] == ["file"]  # missing.css
    assert any("jQuery is not defined" in error for error in load.console_errors)
    with pytest.raises(AssertionError, match="asked the network"):
        assert_renders_offline(offline_browser, online, tmp_path)

    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")
    with pytest.raises(AssertionError, match="looks blank"):
        assert_renders_offline(offline_browser, blank, tmp_path)


def test_data_docs_of_a_failed_run_render_offline_and_the_home_page_links_into_the_run(
    offline_browser: OfflineBrowser, tmp_path: Path
) -> None:
    store = open_object_store(str(tmp_path / "out"), Settings())
    publish_tables(store, run_tables("run-a", {"c1": 40.0}), provenance("run-a"))
    bad = {"absorbed_dose": [dose_table("run-b", "c1", dose_gy=-3.0)]}
    with pytest.raises(ValidationFailedError):
        publish_tables(store, bad, provenance("run-b"))
    docs = tmp_path / "out" / "_data_docs"
    (failed,) = (docs / "runs" / "run-b" / "validations").rglob("*.html")
    assert_renders_offline(offline_browser, failed, tmp_path)
    # GX's home page builds its table of results in JavaScript from relative links: from the
    # docs' top they must lead into the latest run's folder (<base>), and load offline too.
    with offline_browser.open(docs / "index.html") as (page, load):
        with page.expect_navigation(timeout=10_000):
            page.locator("tr.clickable-row").first.click()
        page.wait_for_load_state("networkidle")
        assert page.url == failed.resolve().as_uri()
        assert "mean_dose_gy" in page.content()
    assert load.blocked_requests == []
    assert load.failed_requests == []
    assert load.console_errors == []
