"""Integration fixtures: a real (temporary) Prefect server for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness

import flows  # noqa: F401  (applies the platform's Prefect defaults)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """Run flows against a temporary Prefect server with its own database (not ~/.prefect)."""
    with prefect_test_harness(server_startup_timeout=60):
        yield
