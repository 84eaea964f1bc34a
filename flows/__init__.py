"""Prefect flows (deployment entrypoints): thin compositions of the tasks in ``tasks/``.

Embedded defaults for Prefect, applied before Prefect is imported and only where the operator has
not set them: no telemetry (this platform runs on closed hospital networks, and the telemetry
heartbeat contends for the ephemeral server's SQLite database).
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
