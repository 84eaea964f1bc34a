"""A headless browser with no network, for the reports' offline tests (issue 17, item 5).

Debian's ``chromium`` (installed by ``scripts/bootstrap --test``) driven by Playwright through
``executable_path``: no browser download. Every request that is not ``file:`` or ``data:`` is
aborted and recorded, and the context is offline besides. :func:`assert_renders_offline` is
the whole check for one page, so a new report is one line in a test::

    assert_renders_offline(offline_browser, output / "_reports/dashboard/index.html", tmp_path)
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    Route,
    ViewportSize,
    sync_playwright,
)

# Debian's package installs /usr/bin/chromium; CONCORDOSE_TEST_CHROMIUM points elsewhere.
CHROMIUM_ENV = "CONCORDOSE_TEST_CHROMIUM"
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
PAGE_TIMEOUT_MS = 20_000
# A blank render is one colour. A page showing text alone has ~100 colours (antialiasing) and
# covers ~0.1 % of the viewport; the smallest report page (the Data Docs' list of runs) ~500
# colours and ~1.7 %, a report with tables and figures thousands and > 10 %.
MIN_DISTINCT_COLOURS = 32
MIN_NON_BACKGROUND_FRACTION = 0.005


def chromium_executable() -> str:
    """The chromium binary to drive; fails the test (never skips) when there is none."""
    chosen = os.environ.get(CHROMIUM_ENV)
    candidate = chosen or shutil.which("chromium")
    if not candidate or not Path(candidate).is_file():
        found = f"{CHROMIUM_ENV}={chosen} is no file" if chosen else "no `chromium` on PATH"
        pytest.fail(
            f"the headless-browser tests need Debian's chromium, found {found}: run "
            "`scripts/bootstrap --test`, which installs it (`apt-get install chromium`)",
            pytrace=False,
        )
    return candidate


@dataclass
class PageLoad:
    """What loading one page did.

    Attributes:
        url: the ``file://`` URL loaded.
        console_errors: console messages of type error, and uncaught page errors.
        failed_requests: ``url: reason`` of every request that failed (missing files included).
        blocked_requests: URLs of requests to anything but ``file:``/``data:`` (all aborted).
        screenshot: the viewport's PNG.
        distinct_colours: colours in the screenshot.
        non_background_fraction: share of pixels differing from the most frequent colour.
    """

    url: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    blocked_requests: list[str] = field(default_factory=list)
    screenshot: Path = Path()
    distinct_colours: int = 0
    non_background_fraction: float = 0.0


def _colours(screenshot: Path) -> tuple[int, float]:
    with Image.open(screenshot) as image:
        pixels = image.convert("RGB")
        counts = pixels.getcolors(maxcolors=pixels.width * pixels.height) or []
        total = pixels.width * pixels.height
    background = max(count for count, _ in counts)
    return len(counts), 1.0 - background / total


class OfflineBrowser:
    """One headless chromium; :meth:`load` opens a page in a fresh offline context."""

    def __init__(self, browser: Browser) -> None:
        self._browser = browser

    @contextmanager
    def open(self, page_path: Path) -> Iterator[tuple[Page, PageLoad]]:
        """``page_path`` loaded from its ``file://`` URL in a fresh offline context, with the
        record of what it did (kept up to date while the block interacts with the page)."""
        load = PageLoad(url=page_path.resolve().as_uri())
        context = self._browser.new_context(viewport=VIEWPORT, offline=True)

        def route(route: Route) -> None:
            url = route.request.url
            if url.startswith(("file:", "data:")):
                route.continue_()
            else:
                load.blocked_requests.append(url)
                route.abort("blockedbyclient")

        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                load.console_errors.append(f"{message.text} ({message.location.get('url')})")

        def failed(request: Request) -> None:
            if not request.url.startswith(("file:", "data:")):
                return  # blocked: recorded by route()
            load.failed_requests.append(f"{request.url}: {request.failure}")

        try:
            context.route("**/*", route)
            page = context.new_page()
            page.on("console", console)
            page.on("pageerror", lambda error: load.console_errors.append(f"uncaught: {error}"))
            page.on("requestfailed", failed)
            page.goto(load.url, wait_until="load", timeout=PAGE_TIMEOUT_MS)
            page.wait_for_load_state("networkidle", timeout=PAGE_TIMEOUT_MS)
            yield page, load
        finally:
            context.close()

    def load(self, page_path: Path, screenshot: Path) -> PageLoad:
        """Load ``page_path`` from its ``file://`` URL and screenshot it to ``screenshot``."""
        with self.open(page_path) as (page, load):
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
        load.screenshot = screenshot
        load.distinct_colours, load.non_background_fraction = _colours(screenshot)
        return load


def main_thread_has_running_loop() -> bool:
    """Whether an asyncio event loop counts as running in this thread (Playwright's sync API
    sets one while it is open)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@contextmanager
def offline_browser_session() -> Iterator[OfflineBrowser]:
    """A headless Debian chromium for the duration of the block."""
    executable = chromium_executable()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield OfflineBrowser(browser)
        finally:
            browser.close()


def assert_renders_offline(browser: OfflineBrowser, page_path: Path, tmp_path: Path) -> PageLoad:
    """Load ``page_path`` with the network blocked; it must render cleanly and not blank.

    The screenshot is saved in ``tmp_path`` (named after the page's folder and file).
    """
    assert page_path.is_file(), page_path
    name = f"{page_path.parent.name}-{page_path.stem}.png"
    load = browser.load(page_path, tmp_path / "screenshots" / name)
    assert load.blocked_requests == [], f"{page_path.name} asked the network for {load}"
    assert load.failed_requests == [], f"{page_path.name}: failed requests {load}"
    assert load.console_errors == [], f"{page_path.name}: console errors {load}"
    assert load.distinct_colours >= MIN_DISTINCT_COLOURS, f"{page_path.name} looks blank: {load}"
    assert load.non_background_fraction >= MIN_NON_BACKGROUND_FRACTION, (
        f"{page_path.name} looks blank: {load}"
    )
    return load
