"""README's "Onboard a new site", executed literally (issue 16, item 6): the docs cannot drift.

Every fenced ``bash`` block preceded by ``<!-- walkthrough:onboard [mode] -->`` is run with
``bash -euo pipefail``, in README order, in a temporary folder. Only the variables the README
tells the reader to set are set here (``ONBOARD_DIR``, ``ONBOARD_PORT``,
``CONCORDOSE_PSEUDONYM_KEY``). Modes: none (run, must exit 0), ``background`` (the receiver: a
service, started, awaited on its port, stopped with SIGTERM at the end) and
``after-quiet-period`` (run once the spool has completed every time point, as the README says).
``concordose`` on the PATH runs this checkout (``python -m concordose``), ``storescu`` is
dcmtk's.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from concordose.results.catalogue import read_current
from concordose.results.object_store import open_object_store
from concordose.settings import Settings
from concordose.spool.store import Spool
from tests.integration.peers import free_port, port_open, stop_process, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MARKER = re.compile(
    r"<!-- walkthrough:onboard(?: (?P<mode>[a-z-]+))? -->\n```bash\n(?P<body>.*?)```", re.S
)
MODES = {None, "background", "after-quiet-period"}


@dataclass(frozen=True)
class Block:
    """One marked block of the README."""

    mode: str | None
    commands: str


def walkthrough_blocks(readme: Path = REPO / "README.md") -> list[Block]:
    """The marked blocks of ``readme``, in order."""
    blocks = [Block(m["mode"], m["body"]) for m in MARKER.finditer(readme.read_text())]
    assert blocks, "README.md has no <!-- walkthrough:onboard --> block"
    assert {block.mode for block in blocks} <= MODES
    return blocks


def _dcmtk_storescu() -> Path:
    """dcmtk's ``storescu`` (the venv's own ``storescu`` is pynetdicom's, other options)."""
    venv_bin = Path(sys.executable).parent
    for folder in os.environ["PATH"].split(os.pathsep):
        candidate = Path(folder) / "storescu"
        if Path(folder) != venv_bin and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("dcmtk storescu is not installed (apt install dcmtk)")


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    """The README's variables, a ``concordose`` running this checkout, dcmtk's ``storescu``,
    Prefect kept in tmp."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "concordose"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m concordose "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    (bin_dir / "storescu").symlink_to(_dcmtk_storescu())
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CONCORDOSE_", "PREFECT_"))
    }
    env.update(
        PATH=os.pathsep.join([str(bin_dir), env["PATH"], str(Path(sys.executable).parent)]),
        PYTHONPATH=str(REPO),
        ONBOARD_DIR=str(tmp_path / "onboard-padua"),
        ONBOARD_PORT=str(free_port()),
        CONCORDOSE_PSEUDONYM_KEY="walkthrough-test-key-not-secret",
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        COLUMNS="160",
    )
    return env


def _run(block: Block, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.commands],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (
        f"README block failed ({done.returncode}):\n{block.commands}\n"
        f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    return done.stdout + done.stderr


def _all_time_points_complete(spool_dir: Path) -> bool:
    status = Spool(spool_dir).status()
    return status.receiving == 0 and status.complete + status.processed > 0


def test_the_onboarding_walkthrough_runs_as_written(
    tmp_path: Path, shell_env: dict[str, str]
) -> None:
    onboard = Path(shell_env["ONBOARD_DIR"])
    port = int(shell_env["ONBOARD_PORT"])
    outputs: list[str] = []
    services: list[subprocess.Popen[bytes]] = []
    receiver_log = tmp_path / "receiver.log"
    try:
        for block in walkthrough_blocks():
            if block.mode == "background":
                with receiver_log.open("wb") as log:
                    services.append(
                        subprocess.Popen(
                            ["bash", "-euo", "pipefail", "-c", block.commands],
                            env=shell_env,
                            cwd=tmp_path,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
                wait_until(lambda: port_open(port), timeout_s=60, what="the README's receiver")
                continue
            if block.mode == "after-quiet-period":
                wait_until(
                    lambda: _all_time_points_complete(onboard / "spool"),
                    timeout_s=60,
                    what="the quiet period to complete the sent time points",
                )
            outputs.append(_run(block, shell_env, tmp_path))
    finally:
        for service in services:
            stop_process(service, group=True)
    text = " ".join("\n".join(outputs).split())
    assert "site padua added (AE titles PADUA_NM)" in text
    assert "calibration record padua-known-cf-2026 added (CF 9.1 cps/MBq)" in text
    assert "1 processed, 0 held, 0 failed of 1 cycle(s)" in text
    assert '"padua","padua-known-cf-2026","mono_exponential",' in text  # the query's CSV
    assert "protocols/padua.yaml" in text  # protocol show names the site's file
    received = receiver_log.read_text()
    assert "from PADUA_NM (site padua)" in received
    assert "time point complete" in received

    store = open_object_store(str(onboard / "output"), Settings())
    doses = read_current(store, "absorbed_dose")
    assert set(doses.column("site_id").to_pylist()) == {"padua"}
    assert set(doses.column("calibration_record_id").to_pylist()) == {"padua-known-cf-2026"}
    # the flow ran the methods of the site's protocol from the sites file's protocol_dir
    assert set(doses.column("kinetics_method").to_pylist()) == {
        "mono_exponential",
        "trapezoid",
        "hanscheid_stp",
    }
    assert doses.num_rows > 0
