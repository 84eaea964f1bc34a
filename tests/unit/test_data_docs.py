"""Offline Great Expectations Data Docs kept per run (issue 17, item 4): no external reference
left, every local one resolves, the vendored assets are GX's, older runs kept up to the limit."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import great_expectations
import pytest
from bs4 import BeautifulSoup

from concordose.external_references import css_urls, external_references, is_external_url
from concordose.results.data_docs import CDN_ASSETS, VENDOR_DIR, rewrite_page
from concordose.results.object_store import ObjectStore, open_object_store
from concordose.results.publish import ValidationFailedError, publish_tables
from concordose.settings import Settings
from tests.results_rows import dose_table, provenance, run_tables

GX_TEMPLATES = Path(great_expectations.__file__).parent / "render" / "view" / "templates"


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_object_store(str(tmp_path / "out"), Settings(data_docs_keep_runs=2))


def _local_references(file: Path) -> tuple[Path, list[str]]:
    """The folder relative URLs of an HTML or CSS file start from (its ``<base>`` applied), and
    its relative src/href/url() (fragments and data: URLs left out)."""
    folder = file.parent
    if file.suffix == ".css":
        urls = [url for _, url in css_urls(file.read_text())]
    else:
        soup = BeautifulSoup(file.read_text(), "html.parser")
        base = soup.find("base")
        if base is not None:
            folder = folder / str(base["href"])
        urls = [
            str(tag[name])
            for tag in soup.find_all(True)
            for name in ("src", "href")
            if name in tag.attrs and tag.name != "base"
        ]
        for style in soup.find_all("style"):
            urls += [url for _, url in css_urls(style.get_text())]
    local = [u for u in urls if u and not u.startswith(("#", "data:")) and not is_external_url(u)]
    return folder, local


def test_published_data_docs_need_no_network_and_every_reference_resolves(
    store: ObjectStore,
) -> None:
    publish_tables(store, run_tables("run-a", {"c1": 40.0}), provenance("run-a"))
    docs = Path(store.base) / "_data_docs"
    files = sorted(p for p in docs.rglob("*") if p.suffix in (".html", ".css"))
    assert len(files) > 5
    remaining = [(f.relative_to(docs), r.url) for f in files for r in external_references(f)]
    assert remaining == []
    checked = 0
    for file in files:
        folder, urls = _local_references(file)
        for url in urls:
            target = (folder / url.split("#")[0].split("?")[0]).resolve()
            assert target.is_file(), (file.relative_to(docs), url)
            assert docs in target.parents  # nothing points outside the published docs
            checked += 1
    assert checked > 50
    # Font Awesome's fonts came along with its stylesheet
    fonts = docs / "static" / "vendor" / "fontawesome-free-6.6.0" / "webfonts"
    assert len(list(fonts.glob("*.woff2"))) == 4


def test_each_run_keeps_its_docs_up_to_the_limit_and_the_latest_stays_at_the_top(
    store: ObjectStore,
) -> None:
    docs = Path(store.base) / "_data_docs"
    (docs / "validations").mkdir(parents=True)  # the flat layout of earlier versions
    (docs / "validations" / "old.html").write_text("<html></html>")
    publish_tables(store, run_tables("run-a", {"c1": 40.0}), provenance("run-a"))
    jquery = docs / "static" / "vendor" / "jquery-3.7.1" / "dist" / "jquery.min.js"
    written = jquery.stat().st_ino
    publish_tables(store, run_tables("run-b", {"c1": 41.0}), provenance("run-b"))
    assert jquery.stat().st_ino == written  # the shared assets were unchanged: not rewritten
    bad = {"absorbed_dose": [dose_table("run-c", "c1", dose_gy=-3.0)]}
    with pytest.raises(ValidationFailedError):
        publish_tables(store, bad, provenance("run-c"))

    assert sorted(p.name for p in (docs / "runs").iterdir() if p.is_dir()) == ["run-b", "run-c"]
    assert not (docs / "validations").exists()
    record = json.loads((docs / "runs" / "run-c" / "run.json").read_text())
    assert record["tables"] == {"absorbed_dose": False}
    runs = BeautifulSoup((docs / "runs" / "index.html").read_text(), "html.parser")
    rows = [(row["data-run"], row.select(".status")[0].get_text()) for row in runs("tr")[1:]]
    assert rows == [("run-c", "failed"), ("run-b", "passed")]
    # the latest run's home page is where the docs' home always was, based in runs/run-c
    home = BeautifulSoup((docs / "index.html").read_text(), "html.parser")
    base = home.find("base")
    assert base is not None
    assert base["href"] == "runs/run-c/"
    assert home.find("a", href="../index.html") is not None  # "all runs"
    # GX's index builds its tables in JavaScript from relative links: they resolve via <base>
    text = (docs / "index.html").read_text()
    links = re.findall(r"'_table_row_link_path': '([^']+)'", text)
    links += re.findall(r'href=\\?"(expectations/[^"\\]+)', text)
    assert {link.split("/")[0] for link in links} == {"validations", "expectations"}
    for link in links:
        assert (docs / "runs" / "run-c" / link).is_file(), link
    (page,) = (docs / "runs" / "run-c" / "validations" / "absorbed_dose").rglob("*.html")
    assert "mean_dose_gy" in page.read_text()


def test_rewrite_moves_relative_links_with_the_run_and_unlinks_external_ones() -> None:
    html = (
        '<html><head><script src="https://code.jquery.com/jquery-3.7.1.min.js" '
        'integrity="sha384-x" crossorigin="anonymous"></script>'
        '<link href="../../static/styles/a.css"></head><body>'
        '<a href="../../index.html">home</a> <a href="https://greatexpectations.io">GX</a>'
        '<a href="#s1">s1</a></body></html>'
    )
    out = BeautifulSoup(
        rewrite_page(html, "validations/t/p.html", "runs/r1/validations/t/p.html", "runs/r1"),
        "html.parser",
    )
    script = out.find("script")
    assert script is not None
    assert script["src"] == "../../../../static/vendor/jquery-3.7.1/dist/jquery.min.js"
    assert "integrity" not in script.attrs
    assert "crossorigin" not in script.attrs
    assert [a.get("href") for a in out("a")] == ["../../index.html", None, "#s1"]
    assert out("a")[1].get_text() == "GX"
    link = out.find("link")
    assert link is not None
    assert link["href"] == "../../../../static/styles/a.css"


def test_every_cdn_asset_of_gx_templates_is_vendored_and_matches_gx_integrity_hashes() -> None:
    referenced: dict[str, str | None] = {}
    for template in sorted(GX_TEMPLATES.glob("*.j2")):
        soup = BeautifulSoup(template.read_text(), "html.parser")
        for tag in soup.find_all(["script", "link"]):
            url = str(tag.get("src") or tag.get("href") or "")
            if is_external_url(url):
                integrity = tag.get("integrity")
                referenced[url] = str(integrity) if integrity else None
    assert referenced, "GX's templates moved: update GX_TEMPLATES"
    assert sorted(referenced) == sorted(CDN_ASSETS)
    hashed = 0
    for url, integrity in referenced.items():
        vendored = VENDOR_DIR / CDN_ASSETS[url]
        assert vendored.is_file(), url
        if integrity:
            algorithm, expected = integrity.split("-", 1)
            digest = hashlib.new(algorithm, vendored.read_bytes()).digest()
            assert base64.b64encode(digest).decode() == expected, url
            hashed += 1
    assert hashed == 2  # Popper and Bootstrap's JS


def test_every_vendored_package_has_its_licence_and_is_described() -> None:
    readme = (VENDOR_DIR / "README.md").read_text()
    for folder in sorted(p for p in VENDOR_DIR.iterdir() if p.is_dir()):
        assert list(folder.glob("LICENSE*")), folder.name
        assert f"`{folder.name}`" in readme, folder.name


def test_retention_comes_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_object_store(str(tmp_path / "a"), Settings()).data_docs_keep_runs == 30
    monkeypatch.setenv("CONCORDOSE_DATA_DOCS_KEEP_RUNS", "5")
    assert open_object_store(str(tmp_path / "b"), Settings()).data_docs_keep_runs == 5
