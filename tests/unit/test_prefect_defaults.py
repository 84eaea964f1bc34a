"""The Prefect defaults ``flows`` embeds: applied before Prefect reads its settings, and only
where the operator has not set them (a fresh interpreter each: Prefect reads its settings once,
at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from concordose.flows import EPHEMERAL_STARTUP_TIMEOUT_S

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import json
import concordose.flows
from prefect.settings import get_current_settings

settings = get_current_settings()
print(json.dumps({
    "startup_timeout_s": settings.server.ephemeral.startup_timeout_seconds,
    "analytics": settings.server.analytics_enabled,
}))
"""


def _settings_after_importing_flows(**operator: str) -> dict[str, object]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(operator, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    settings: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return settings


def test_the_temporary_server_gets_longer_than_prefects_20_s_to_start_and_no_telemetry() -> None:
    assert EPHEMERAL_STARTUP_TIMEOUT_S > 20  # Prefect's own default: what failed CI
    assert _settings_after_importing_flows() == {
        "startup_timeout_s": EPHEMERAL_STARTUP_TIMEOUT_S,
        "analytics": False,
    }


def test_what_the_operator_set_is_kept() -> None:
    assert _settings_after_importing_flows(
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="45",
        PREFECT_SERVER_ANALYTICS_ENABLED="true",
    ) == {"startup_timeout_s": 45, "analytics": True}
