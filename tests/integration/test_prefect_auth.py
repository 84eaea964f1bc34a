"""Issue 19 item 5: a real ``prefect server start`` with ``PREFECT_SERVER_API_AUTH_STRING`` set
refuses a client without the auth string (401) and accepts the site's clients that send it
(``PREFECT_API_AUTH_STRING``): the worker (``prefect work-pool create``, ``prefect worker
start``) and the receiver's delivery (``concordose receive --deployment …``, whose hook calls
``run_deployment``), as every deployment file configures them (deploy/README.md).

Everything runs as a subprocess with its own Prefect home in a temporary folder; every wait
polls with a deadline.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from concordose.phantoms import generate_patient
from concordose.spool.store import Spool
from tests.integration.peers import free_port, port_open, stop_process, storescu, wait_until

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AUTH_STRING = "concordose:auth-test-secret"
POOL = "concordose-process"
FLOW, DEPLOYMENT_NAME = "process-cycle", "process-cycle"
DEPLOYMENT = f"{FLOW}/{DEPLOYMENT_NAME}"
DEADLINE_S = 120.0
# Settings through which a client could authenticate: none may leak in from the outside.
AUTH_VARIABLES = ("PREFECT_API_AUTH_STRING", "PREFECT_API_KEY", "PREFECT_SERVER_API_AUTH_STRING")


@dataclass
class Server:
    """A running Prefect server with an auth string, and the environments of its clients."""

    api_url: str
    anonymous_env: dict[str, str]
    """A client's environment without the auth string."""
    root: Path

    @property
    def client_env(self) -> dict[str, str]:
        """A client's environment with the auth string, as the deployment files set it."""
        return {**self.anonymous_env, "PREFECT_API_AUTH_STRING": AUTH_STRING}


def _log_tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return f"--- {path.name} ---\n" + "\n".join(text.splitlines()[-lines:])


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``prefect server start`` with ``PREFECT_SERVER_API_AUTH_STRING``, its own home and
    SQLite database."""
    root = tmp_path_factory.mktemp("prefect-auth")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    base = {k: v for k, v in os.environ.items() if k not in AUTH_VARIABLES}
    anonymous_env = {
        **base,
        "PYTHONPATH": python_path,
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    server_env = {**anonymous_env, "PREFECT_SERVER_API_AUTH_STRING": AUTH_STRING}
    log = root / "server.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            cwd=root,
            env=server_env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def up() -> bool:
            if process.poll() is not None:
                pytest.fail(f"prefect server exited ({process.returncode})\n{_log_tail(log)}")
            return _healthy(api_url)

        try:
            wait_until(up, timeout_s=DEADLINE_S, what="the Prefect server", interval_s=0.5)
        except TimeoutError as exc:
            pytest.fail(f"{exc}\n{_log_tail(log)}")
        yield Server(api_url, anonymous_env, root)
    finally:
        stop_process(process, group=True)


def _prefect(server_env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "prefect"), *arguments],
        cwd=REPO_ROOT,
        env=server_env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _basic(auth_string: str) -> dict[str, str]:
    token = base64.b64encode(auth_string.encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_the_api_refuses_requests_without_the_auth_string(server: Server) -> None:
    url = f"{server.api_url}/work_pools/filter"
    assert httpx.post(url, json={}, timeout=10).status_code == 401
    assert httpx.post(url, json={}, headers=_basic("concordose:wrong"), timeout=10).status_code == (
        401
    )
    assert httpx.post(url, json={}, headers=_basic(AUTH_STRING), timeout=10).status_code == 200
    # Probes (compose healthchecks, Kubernetes probes) need no credentials.
    assert httpx.get(f"{server.api_url}/health", timeout=10).status_code == 200


def test_the_worker_is_refused_without_and_accepted_with_the_auth_string(server: Server) -> None:
    refused = _prefect(server.anonymous_env, "work-pool", "create", POOL, "--type", "process")
    assert refused.returncode != 0
    assert "401" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    refused_worker = _prefect(
        server.anonymous_env, "worker", "start", "--pool", POOL, "--run-once", "--name", "anon"
    )
    assert refused_worker.returncode != 0, refused_worker.stdout + refused_worker.stderr

    created = _prefect(server.client_env, "work-pool", "create", POOL, "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    worker = _prefect(
        server.client_env, "worker", "start", "--pool", POOL, "--run-once", "--name", "site"
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr
    with (
        temporary_settings({PREFECT_API_URL: server.api_url, PREFECT_API_AUTH_STRING: AUTH_STRING}),
        get_client(sync_client=True) as client,
    ):
        workers = {w.name for w in client.read_workers_for_work_pool(POOL)}
    assert workers == {"site"}  # the worker's heartbeat was accepted; the anonymous one never


def _ensure_deployment(server: Server) -> None:
    """The ``process-cycle/process-cycle`` deployment (what ``prefect deploy`` registers), made
    with an authenticated client: the receiver's runs are created from it."""
    with (
        temporary_settings({PREFECT_API_URL: server.api_url, PREFECT_API_AUTH_STRING: AUTH_STRING}),
        get_client(sync_client=True) as client,
    ):
        if POOL not in {pool.name for pool in client.read_work_pools()}:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        flow_id = client.create_flow_from_name(FLOW)
        client.create_deployment(
            flow_id=flow_id,
            name=DEPLOYMENT_NAME,
            entrypoint="concordose.flows.process_cycle.process_cycle",
            work_pool_name=POOL,
        )


def _cycle_runs(server: Server) -> list[FlowRun]:
    with (
        temporary_settings({PREFECT_API_URL: server.api_url, PREFECT_API_AUTH_STRING: AUTH_STRING}),
        get_client(sync_client=True) as client,
    ):
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[DEPLOYMENT_NAME]))
        )


def _spool_id(spool: Path) -> str:
    opened = Spool.open_existing(spool)
    try:
        return opened.spool_id
    finally:
        opened.close()


def test_the_receiver_delivers_only_with_the_auth_string(server: Server) -> None:
    _ensure_deployment(server)
    patient = generate_patient(server.root / "patient", seed=41, preset="test")
    receivers: dict[str, tuple[int, Path, Path]] = {}
    with ExitStack() as cleanup:
        for name, env in (("with-auth", server.client_env), ("anonymous", server.anonymous_env)):
            port, spool, log = free_port(), server.root / f"spool-{name}", server.root / name
            with log.open("ab") as output:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        *("-m", "concordose", "receive"),
                        *("--spool", str(spool), "--sites", str(patient.sites_path)),
                        *("--host", "127.0.0.1", "--port", str(port), "--quiet-period-s", "1"),
                        *("--deployment", DEPLOYMENT),
                    ],
                    cwd=REPO_ROOT,
                    env={**env, "CONCORDOSE_RECEIVER_DELIVERY_BACKOFF_MAX_S": "2"},
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            cleanup.callback(stop_process, process, group=True)
            receivers[name] = (port, spool, log)

            def listening(
                port: int = port, process: subprocess.Popen[bytes] = process, log: Path = log
            ) -> bool:
                assert process.poll() is None, _log_tail(log)
                return port_open(port)

            wait_until(listening, timeout_s=DEADLINE_S, what=f"receiver {name}", interval_s=0.2)
            sent = storescu(port, patient.site.calling_ae_title, patient.dicom_files)
            assert sent.returncode == 0, f"{sent.stdout}\n{sent.stderr}"

        with_auth_spool, anonymous_log = receivers["with-auth"][1], receivers["anonymous"][2]

        def delivered() -> bool:
            prefix = f"{_spool_id(with_auth_spool)}/"
            return any(
                (run.idempotency_key or "").startswith(prefix) for run in _cycle_runs(server)
            )

        def refused_twice() -> bool:
            return "delivery attempt 2 failed" in anonymous_log.read_text(errors="replace")

        for condition, what in (
            (delivered, "the authenticated receiver's process-cycle run"),
            (refused_twice, "the anonymous receiver's second refused delivery"),
        ):
            try:
                wait_until(condition, timeout_s=DEADLINE_S, what=what, interval_s=0.5)
            except TimeoutError as exc:
                logs = "\n".join(_log_tail(log) for _, _, log in receivers.values())
                pytest.fail(f"{exc}\n{logs}")

        runs = _cycle_runs(server)
        anonymous_prefix = f"{_spool_id(receivers['anonymous'][1])}/"
        assert not [r for r in runs if (r.idempotency_key or "").startswith(anonymous_prefix)]
        (run,) = runs
        assert run.parameters["source"] == str(with_auth_spool.resolve())
        failures = [
            line
            for line in anonymous_log.read_text(errors="replace").splitlines()
            if "delivery attempt" in line
        ]
        assert failures
        assert all("401 Unauthorized" in line for line in failures), failures
        assert all(line.endswith("it stays pending") for line in failures), failures
    # The refused events stay pending in that spool, to be delivered once the key is set.
    anonymous = Spool.open_existing(receivers["anonymous"][1])
    try:
        assert anonymous.status().pending_events > 0
    finally:
        anonymous.close()
