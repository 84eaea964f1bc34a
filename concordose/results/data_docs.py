"""Great Expectations Data Docs that work offline, kept per run.

GX's page templates load Bootstrap, Font Awesome, Vega and jQuery from public CDNs and its logo
from an S3 bucket, so on a closed hospital network they render broken. Each built site is
rewritten here: every CDN asset it references is replaced by the same file vendored in
``data_docs_vendor/`` (see its README: npm package, version and licence of each), published in
the docs' ``static/vendor/``; GX's remote logo becomes its local copy; hyperlinks to GX's
website and documentation are unlinked (their text stays); ``integrity``/``crossorigin`` go
with the CDN URLs they protected (a ``file://`` page cannot pass a CORS check; the vendored
files' hashes are checked against GX's SRI values by the tests instead).

Nothing is fetched: a CDN URL without a vendored copy is removed with a warning (a GX upgrade
that adds one shows up there, and in the tests, which scan the published docs).

Publication keeps every run's docs (layout under the store's base)::

    _data_docs/index.html                 the latest run's Data Docs home (<base> runs/<id>/)
    _data_docs/runs/index.html            every kept run, newest first, with its validation status
    _data_docs/runs/<run_id>/…            one run's pages; <run_id>/run.json says what it holds
    _data_docs/static/…                   GX's styles, fonts, images and the vendored assets,
                                          shared by all runs (rewritten only when they change)

Runs beyond the newest ``keep_runs`` (by build time) are deleted when a run is published.
The shared ``static/`` holds the assets of the GX version that built the newest run; older runs'
pages use them too (GX's static files change little between versions).
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import jinja2
import pyarrow.fs as pafs
from bs4 import BeautifulSoup

from concordose.external_references import (
    URL_ATTRIBUTES,
    css_urls,
    is_external_url,
)
from concordose.results.object_store import ObjectStore

logger = logging.getLogger(__name__)

DATA_DOCS_DIR = "_data_docs"
RUNS_DIR = "runs"
STATIC_DIR = "static"
VENDOR_DIR = Path(__file__).resolve().parent / "data_docs_vendor"
RUN_RECORD = "run.json"
_STATIC_DIGEST = "assets.sha256"
# Cycles published from threads of one process would otherwise write the same shared files
# (static assets, the list of runs) at once.
_PUBLISH_LOCK = threading.Lock()

# CDN URL in GX 1.24's templates (render/view/templates/*.j2) → the same file under
# data_docs_vendor/ (README there: where each came from). vega@5, vega-lite@5 and vega-embed@6
# are major-version ranges on jsDelivr; the newest release of each range was vendored.
CDN_ASSETS: dict[str, str] = {
    "https://cdn.jsdelivr.net/npm/vega@5": "vega-5.33.1/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite-5.23.0/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed-6.29.0/build/vega-embed.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap-4.3.1/dist/css/bootstrap.min.css"
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        "bootstrap-4.3.1/dist/js/bootstrap.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table-1.19.1/dist/bootstrap-table.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table-1.19.1/dist/bootstrap-table.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.js": (
        "bootstrap-table-1.19.1/dist/extensions/filter-control/"
        "bootstrap-table-filter-control.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.css": (
        "bootstrap-table-1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.css": (
        "bootstrap-table-1.19.0/dist/extensions/filter-control/"
        "bootstrap-table-filter-control.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/"
    "bootstrap-datepicker.min.css": (
        "bootstrap-datepicker-1.9.0/dist/css/bootstrap-datepicker.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/"
    "bootstrap-datepicker.min.js": (
        "bootstrap-datepicker-1.9.0/dist/js/bootstrap-datepicker.min.js"
    ),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/"
    "bootstrap-prefers-dark.css": ("bootstrap-dark-1.1.0/dist/css/bootstrap-prefers-dark.css"),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "fontawesome-free-6.6.0/css/all.min.css"
    ),
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper.js-1.12.9/dist/umd/popper.min.js"
    ),
}
# GX's logo images on its S3 bucket (top_navbar.j2, data_docs_default_styles.css) → the copies
# GX ships in the site's static/images (there is no local dark-theme logo: the light one serves).
_GX_WEB_ASSETS = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
_GX_IMAGES = {"logo-long.png": "logo-long.png", "full_logo_dark.png": "logo-long.png"}


def _site_target(url: str) -> str | None:
    """The site-relative file that replaces external ``url``, or None if there is none."""
    if url in CDN_ASSETS:
        return f"{STATIC_DIR}/vendor/{CDN_ASSETS[url]}"
    if url.startswith(_GX_WEB_ASSETS):
        name = url[len(_GX_WEB_ASSETS) :].split("?", 1)[0]
        if name in _GX_IMAGES:
            return f"{STATIC_DIR}/images/{_GX_IMAGES[name]}"
    return None


@dataclass(frozen=True)
class _Placement:
    """Where a site's files end up, relative to the published docs root.

    ``run_root`` holds the run's pages ("" for a standalone site); the shared static folder is
    ``static/`` of the root in both cases.
    """

    run_root: str

    def published(self, site_path: str) -> str:
        """The published location of the site-relative ``site_path``."""
        if site_path == STATIC_DIR or site_path.startswith(f"{STATIC_DIR}/"):
            return site_path
        return posixpath.join(self.run_root, site_path) if self.run_root else site_path


def _relative(target: str, page: str) -> str:
    """``target`` relative to the folder of ``page`` (both relative to the same root)."""
    return posixpath.relpath(f"/{target}", posixpath.dirname(f"/{page}"))


def _relocated(url: str, site_page: str, published_page: str, placement: _Placement) -> str | None:
    """The URL that ``url`` (on ``site_page``) becomes on ``published_page``; None to unlink."""
    if is_external_url(url):
        target = _site_target(url.strip())
        return None if target is None else _relative(target, published_page)
    if not url or url.startswith(("#", "data:", "javascript:", "mailto:")):
        return url
    path, hash_mark, fragment = url.partition("#")
    path, question, query = path.partition("?")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(site_page), path))
    if resolved.startswith(".."):
        return url  # outside the site: leave it as GX wrote it
    if f"/{STATIC_DIR}/" in f"/{resolved}":
        # GX 1.24 miscounts the ../ of a validation page's favicon (it lands in
        # validations/static/): a static/ segment anywhere means the site's static folder.
        resolved = resolved[resolved.index(f"{STATIC_DIR}/") :]
    moved = _relative(placement.published(resolved), published_page)
    return f"{moved}{question}{query}{hash_mark}{fragment}"


def _rewrite_css(
    css: str,
    site_file: str,
    published_file: str,
    placement: _Placement,
    *,
    declarations: bool = False,
) -> str:
    """CSS text with its external ``url()``s replaced (relative ones moved with the file)."""
    for url in sorted({url for _, url in css_urls(css, declarations=declarations)}):
        new = _relocated(url, site_file, published_file, placement)
        if new == url:
            continue
        if new is None:
            logger.warning("Data Docs file %s: no local copy of %s (CSS); removed", site_file, url)
        written = re.compile(
            r"""(url\(\s*['"]?|@import\s+['"])""" + re.escape(url) + r"""(?=['"]?\s*\)|['"])"""
        )
        css = written.sub(r"\g<1>" + (new or "").replace("\\", "\\\\"), css)
    return css


def rewrite_page(
    html: str, site_page: str, published_page: str | None = None, run_root: str = ""
) -> str:
    """One Data Docs page made offline, and moved from ``site_page`` to ``published_page``.

    Args:
        html: the page as GX built it.
        site_page: its path in the GX site (e.g. ``validations/kinetics/…/x.html``).
        published_page: its path under the published docs root (default: ``site_page``).
        run_root: the folder of the run's pages under that root ("" for a standalone site);
            links to the site's other pages point there, links to ``static/`` to the root's.
    """
    published_page = published_page or site_page
    placement = _Placement(run_root)
    soup = BeautifulSoup(html, "html.parser")
    for tag in soup.find_all(True):
        for name in sorted(URL_ATTRIBUTES & set(tag.attrs)):
            value = tag.attrs[name]
            if not isinstance(value, str):
                continue
            new = _relocated(value, site_page, published_page, placement)
            if new is None:
                if tag.name != "a":
                    logger.warning(
                        "Data Docs page %s: no local copy of %s (<%s %s>); removed",
                        site_page,
                        value,
                        tag.name,
                        name,
                    )
                del tag.attrs[name]
                continue
            if new != value:
                tag.attrs[name] = new
                if is_external_url(value):
                    tag.attrs.pop("integrity", None)
                    tag.attrs.pop("crossorigin", None)
        style = tag.attrs.get("style")
        if isinstance(style, str) and "url(" in style:
            tag.attrs["style"] = _rewrite_css(
                style, site_page, published_page, placement, declarations=True
            )
        if tag.name == "style" and tag.string is not None and "url(" in tag.string:
            tag.string = _rewrite_css(str(tag.string), site_page, published_page, placement)
    return str(soup)


@dataclass(frozen=True)
class DataDocsRun:
    """One run's Data Docs as recorded in ``runs/<run_id>/run.json``.

    Attributes:
        run_id: the publishing run.
        built_at: when its docs were built (UTC).
        tables: table name → whether its suite passed.
    """

    run_id: str
    built_at: datetime
    tables: dict[str, bool]

    @property
    def success(self) -> bool:
        """Every table passed."""
        return all(self.tables.values())


_RUNS_PAGE = jinja2.Environment(autoescape=True).from_string(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Data Docs by run</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #212529; }
table { border-collapse: collapse; } th, td { padding: .3rem .8rem; text-align: left; }
tr { border-bottom: 1px solid #dee2e6; } .failed { color: #b00020; font-weight: 600; }
</style></head>
<body>
<h1>Great Expectations Data Docs by run</h1>
<p>The newest {{ runs|length }} run(s) are kept (at most {{ keep_runs }});
<a href="../index.html">the latest run's Data Docs</a>.</p>
<table class="runs">
<tr><th>Run</th><th>Built (UTC)</th><th>Validation</th><th>Tables</th></tr>
{% for run in runs %}<tr data-run="{{ run.run_id }}">
<td><a href="{{ run.run_id }}/index.html">{{ run.run_id }}</a></td>
<td>{{ run.built_at.strftime("%Y-%m-%d %H:%M:%S") }}</td>
{% set status = 'passed' if run.success else 'failed' %}
<td class="status {{ status }}">{{ status }}</td>
<td>{% for name, ok in run.tables|dictsort -%}
{{ name }}{% if not ok %} (failed){% endif %}{{ ", " if not loop.last }}
{%- endfor %}</td>
</tr>
{% endfor %}</table>
</body></html>
"""
)


def _banner(soup: BeautifulSoup, run_id: str, runs_index: str) -> None:
    """Put a line naming the run and linking to the list of runs at the top of ``soup``."""
    body = soup.body
    if body is None:
        return
    banner = soup.new_tag("div", attrs={"class": "alert alert-secondary m-0 rounded-0"})
    banner.append("Data Docs of run ")
    code = soup.new_tag("code")
    code.string = run_id
    banner.append(code)
    banner.append(" · ")
    link = soup.new_tag("a", href=runs_index)
    link.string = "all runs"
    banner.append(link)
    body.insert(0, banner)


def _home_page(run_index: BeautifulSoup, run_root: str) -> str:
    """The docs' top ``index.html``: the run's home page read from its run folder.

    A ``<base>`` element rather than rewritten links: GX's index page builds its tables in
    JavaScript from relative links (``validations/…``) that no HTML rewrite can see.
    """
    head = run_index.head
    if head is not None:
        head.insert(0, run_index.new_tag("base", href=f"{run_root}/"))
    return str(run_index)


def _read_if_present(store: ObjectStore, path: str) -> bytes | None:
    info = store.call(f"look up {path}", partial(store.filesystem.get_file_info, path))
    return None if info.type != pafs.FileType.File else store.read_bytes(path)


def _run_record(store: ObjectStore, folder: str) -> DataDocsRun | None:
    """The run recorded in ``folder``; None (with a warning) if it has no readable record."""
    raw = _read_if_present(store, f"{folder}/{RUN_RECORD}")
    try:
        record: dict[str, Any] = json.loads(raw or b"")
        return DataDocsRun(
            run_id=str(record["run_id"]),
            built_at=datetime.fromisoformat(record["built_at"]),
            tables={str(k): bool(v) for k, v in record["tables"].items()},
        )
    except (KeyError, ValueError, AttributeError) as error:
        logger.warning("Data Docs run folder %s has no readable %s: %s", folder, RUN_RECORD, error)
        return None


def _entries(store: ObjectStore, folder: str) -> list[pafs.FileInfo]:
    selector = pafs.FileSelector(folder, allow_not_found=True, recursive=False)
    infos: list[pafs.FileInfo] = store.call(
        f"list {folder}", partial(store.filesystem.get_file_info, selector)
    )
    return infos


def _delete(store: ObjectStore, info: pafs.FileInfo) -> None:
    if info.type == pafs.FileType.Directory:
        store.call(f"delete {info.path}", partial(store.filesystem.delete_dir, info.path))
    elif info.type == pafs.FileType.File:
        store.call(f"delete {info.path}", partial(store.filesystem.delete_file, info.path))


def _static_files(site: Path) -> dict[str, bytes]:
    """The shared static folder's files (path inside it → content): GX's own, its stylesheets
    made offline, and the vendored assets under ``vendor/``."""
    files: dict[str, bytes] = {}
    static = site / STATIC_DIR
    for file in sorted(p for p in static.rglob("*") if p.is_file()):
        relative = file.relative_to(static).as_posix()
        data = file.read_bytes()
        if file.suffix == ".css":
            site_path = f"{STATIC_DIR}/{relative}"
            css = _rewrite_css(data.decode("utf-8"), site_path, site_path, _Placement(""))
            data = css.encode("utf-8")
        files[relative] = data
    for file in sorted(p for p in VENDOR_DIR.rglob("*") if p.is_file()):
        files[f"vendor/{file.relative_to(VENDOR_DIR).as_posix()}"] = file.read_bytes()
    return files


def _publish_static(store: ObjectStore, files: Mapping[str, bytes]) -> None:
    """Write the shared static folder unless it already holds exactly these files."""
    digest = hashlib.sha256()
    for relative, data in sorted(files.items()):
        digest.update(relative.encode())
        digest.update(hashlib.sha256(data).digest())
    stamp = store.path(DATA_DOCS_DIR, STATIC_DIR, _STATIC_DIGEST)
    if _read_if_present(store, stamp) == digest.hexdigest().encode():
        return
    for relative, data in sorted(files.items()):
        store.write_bytes_atomically(store.path(DATA_DOCS_DIR, STATIC_DIR, relative), data)
    store.write_bytes_atomically(stamp, digest.hexdigest().encode())


def _publish_run_pages(
    store: ObjectStore, site: Path, run_id: str, tables: Mapping[str, bool]
) -> str:
    """Write the run's pages (made offline) and its ``run.json``; return the docs' home page."""
    run_root = f"{RUNS_DIR}/{run_id}"
    run_folder = store.path(DATA_DOCS_DIR, run_root)
    for info in _entries(store, run_folder):
        _delete(store, info)  # a re-published run id replaces its docs
    pages = sorted(
        p for p in site.rglob("*") if p.is_file() and p.relative_to(site).parts[0] != STATIC_DIR
    )
    home = ""
    for file in pages:
        relative = file.relative_to(site).as_posix()
        published = f"{run_root}/{relative}"
        data = file.read_bytes()
        if file.suffix == ".html":
            html = rewrite_page(data.decode("utf-8"), relative, published, run_root)
            if relative == "index.html":
                soup = BeautifulSoup(html, "html.parser")
                _banner(soup, run_id, "../index.html")
                html = str(soup)
                home = _home_page(soup, run_root)
            data = html.encode("utf-8")
        store.write_bytes_atomically(store.path(DATA_DOCS_DIR, published), data)
    record = {
        "run_id": run_id,
        "built_at": datetime.now(UTC).isoformat(),
        "tables": dict(sorted(tables.items())),
    }
    store.write_bytes_atomically(
        f"{run_folder}/{RUN_RECORD}", json.dumps(record, indent=2).encode("utf-8")
    )
    return home


def _prune_runs(store: ObjectStore, keep_runs: int) -> list[DataDocsRun]:
    """Delete the runs beyond the newest ``keep_runs`` (by build time); the kept, newest first.

    A run folder without a readable ``run.json`` (a publication killed half-way) is neither
    listed nor deleted.
    """
    runs: list[DataDocsRun] = []
    for info in _entries(store, store.path(DATA_DOCS_DIR, RUNS_DIR)):
        if info.type == pafs.FileType.Directory:
            run = _run_record(store, info.path)
            if run is not None:
                runs.append(run)
    runs.sort(key=lambda run: (run.built_at, run.run_id), reverse=True)
    for run in runs[keep_runs:]:
        path = store.path(DATA_DOCS_DIR, RUNS_DIR, run.run_id)
        store.call(f"delete {path}", partial(store.filesystem.delete_dir, path))
    return runs[:keep_runs]


def publish_data_docs(
    store: ObjectStore,
    site: Path,
    run_id: str,
    tables: Mapping[str, bool],
    *,
    keep_runs: int,
) -> list[DataDocsRun]:
    """Publish the GX site built in ``site`` as run ``run_id``'s offline Data Docs.

    Writes the shared static assets (when changed), the run's pages under ``runs/<run_id>/``,
    its ``run.json``, then deletes runs beyond the newest ``keep_runs``, rewrites the list of
    runs and makes this run's home page the docs' ``index.html``. Whatever else sits directly
    under ``_data_docs/`` (the flat layout of earlier versions) is removed.

    Args:
        store: where to write.
        site: the folder GX built the site into (read only).
        run_id: the publishing run.
        tables: table name → whether its suite passed (shown in the list of runs).
        keep_runs: how many runs' docs to keep (at least 1).

    Returns:
        The kept runs, newest first.
    """
    with _PUBLISH_LOCK:  # threads of one process publish one after the other
        _publish_static(store, _static_files(site))
        home = _publish_run_pages(store, site, run_id, tables)
        kept = _prune_runs(store, max(1, keep_runs))
        store.write_bytes_atomically(
            store.path(DATA_DOCS_DIR, RUNS_DIR, "index.html"),
            _RUNS_PAGE.render(runs=kept, keep_runs=max(1, keep_runs)).encode("utf-8"),
        )
        if home:
            store.write_bytes_atomically(store.path(DATA_DOCS_DIR, "index.html"), home.encode())
        for info in _entries(store, store.path(DATA_DOCS_DIR)):
            if info.base_name not in {RUNS_DIR, STATIC_DIR, "index.html"}:
                _delete(store, info)  # the flat layout of earlier versions
        return kept
