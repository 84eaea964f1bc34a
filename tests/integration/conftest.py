"""Integration fixtures: a real (temporary) Prefect server for the session; an S3-protocol
server on loopback (moto's threaded server) per test; one demo run shared by the report tests;
a headless chromium with the network blocked (``tests/browser.py``); one digital-consortium run
for the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from moto.server import ThreadedMotoServer
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from concordose import flows  # noqa: F401  (applies the platform's Prefect defaults)
from concordose.cli import app
from tests.browser import OfflineBrowser, main_thread_has_running_loop, offline_browser_session

CONSORTIUM_SITES = ("milan", "brussels")
CONSORTIUM_KEY = "consortium-command-test-key"


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """Run flows against a temporary Prefect server with its own database (not ~/.prefect)."""
    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """``host:port`` of a moto S3 server on loopback. moto keeps its buckets in the process, not
    the server, so they are reset after each test (every test starts with no bucket)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        requests.post(f"http://{host}:{port}/moto-api/reset", timeout=10)
        server.stop()


@pytest.fixture(scope="session")
def demo_output(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Path:
    """The work folder of one ``concordose demo`` run (the whole path: C-STORE → spool →
    ``process-cycle`` → publication → report), shared by the report tests."""
    workdir = tmp_path_factory.mktemp("report-demo") / "run"
    result = CliRunner().invoke(app, ["demo", "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    assert f"report: {workdir / 'output' / '_reports' / 'cycles'}" in result.output
    return workdir


@pytest.fixture
def offline_browser() -> Iterator[OfflineBrowser]:
    """Debian's chromium, headless, every non-file request blocked (fails if not installed).

    One per test, not per session: Playwright's sync API leaves its event loop set as the main
    thread's running loop while it is open, and Prefect's sync-or-async dispatch then hands a
    later test coroutines where it expects results (``Flow.to_deployment`` returned an
    un-awaited ``ato_deployment`` in the full suite). Closing it clears the loop; the teardown
    checks that it did."""
    with offline_browser_session() as browser:
        yield browser
    assert not main_thread_has_running_loop(), "Playwright left its event loop running"


@pytest.fixture(scope="session")
def consortium_run(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Path:
    """One ``concordose consortium`` run (test preset, :data:`CONSORTIUM_SITES`, one patient,
    key :data:`CONSORTIUM_KEY`) shared by the session's tests (≈ 2 min): its folder. Tests read
    it; a test that writes (a report, a sweep) works on a copy."""
    out = tmp_path_factory.mktemp("consortium") / "run"
    result = CliRunner().invoke(
        app,
        [
            "consortium",
            "--out", str(out),
            "--preset", "test",
            "--site-ids", ",".join(CONSORTIUM_SITES),
            "--patients", "1",
        ],
        env={"CONCORDOSE_PSEUDONYM_KEY": CONSORTIUM_KEY, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Cross-site agreement on reference objects" in result.output
    for variant in ("raw", "harmonised", "harmonised_pvc"):
        assert variant in result.output
    return out
