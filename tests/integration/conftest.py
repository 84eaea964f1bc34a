"""Integration fixtures: a real (temporary) Prefect server for the session; an S3-protocol
server on loopback (moto's threaded server) per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from moto.server import ThreadedMotoServer
from prefect.testing.utilities import prefect_test_harness

import flows  # noqa: F401  (applies the platform's Prefect defaults)


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
