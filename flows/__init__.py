"""Prefect flows (deployment entrypoints): thin compositions of the tasks in ``tasks/``.

Embedded defaults for Prefect, applied before Prefect is imported and only where the operator has
not set them:

* no telemetry (this platform runs on closed hospital networks, and the telemetry heartbeat
  contends for the ephemeral server's SQLite database);
* the temporary (ephemeral) server, started when ``PREFECT_API_URL`` is unset, is given
  :data:`EPHEMERAL_STARTUP_TIMEOUT_S` to answer instead of Prefect's 20 s: its first start
  migrates a new SQLite database, and on a loaded 2-core machine that took longer than 20 s
  (the README walkthrough's ``concordose sweep`` failed so in CI of 4a1b262).
"""

import os

__all__ = ["EPHEMERAL_STARTUP_TIMEOUT_S"]

EPHEMERAL_STARTUP_TIMEOUT_S = 120
"""Seconds ``concordose`` waits for a temporary Prefect server to answer its health check."""

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault(
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_TIMEOUT_S)
)
