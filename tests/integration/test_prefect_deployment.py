"""The site's deployment as ``deploy/README.md`` tells a site to run it, against real processes:
``prefect server start``, ``prefect work-pool create``, ``prefect deploy --prefect-file
deploy/prefect.yaml --all``, a process worker, ``concordose receive --deployment
process-cycle/process-cycle`` and dcmtk ``storescu``; then a Prefect outage the receiver rides out.

Everything runs as a subprocess with its own Prefect home (and SQLite database) in a temporary
folder; every wait polls with a deadline and fails with the tail of each process's log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from concordose.flows.triggers import idempotency_key
from concordose.phantoms import GeneratedPatient, generate_patient
from concordose.results.catalogue import read_current
from concordose.results.object_store import open_object_store
from concordose.settings import Settings
from concordose.spool.cycles import OUTCOME_STATES, CycleRecord
from concordose.spool.store import Spool
from tests.integration.peers import free_port, port_open, stop_process, storescu, wait_until

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEPLOYMENT = "process-cycle/process-cycle"
DEADLINE_S = 180.0
LOG_TAIL_LINES = 30
FAILED_DELIVERY = re.compile(
    r"WARNING +concordose\.spool\.completion: time point \S+#\d+: "
    r"delivery attempt \d+ failed \(\w+: [^\n]*\); it stays pending$"
)


@dataclass
class Service:
    """A long-running subprocess (its own process group), its output appended to a log file."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (again: same command, same log)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        """Terminate it and whatever it spawned (killed if it does not stop in time)."""
        if self.process is not None:
            stop_process(self.process, group=True)
            self.process = None

    def exited(self) -> int | None:
        """Its exit status if it was started, not stopped, and has exited on its own."""
        return None if self.process is None else self.process.poll()

    def log(self) -> str:
        """Everything it wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self) -> str:
        """The last lines of its log, for failure messages."""
        lines = self.log().splitlines()[-LOG_TAIL_LINES:]
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(lines)


@dataclass
class Site:
    """One site's running deployment (see the module docstring)."""

    api_url: str
    receiver_port: int
    spool: Path
    output: Path
    env: dict[str, str]
    """The environment of the operator's CLI commands (Prefect home and API URL)."""
    patients: list[GeneratedPatient] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)

    def service(self, name: str) -> Service:
        """The service called ``name``."""
        return next(service for service in self.services if service.name == name)

    def logs(self) -> str:
        """The tail of every service's log."""
        return "\n".join(service.tail() for service in self.services)

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition`` (once a second) until true; on timeout, or when a service died,
        fail with every service's log tail."""

        def check() -> bool:
            for service in self.services:
                if (status := service.exited()) is not None:
                    pytest.fail(
                        f"{service.name} exited ({status}) waiting for {what}\n{self.logs()}"
                    )
            return condition()

        try:
            wait_until(check, timeout_s=DEADLINE_S, what=what, interval_s=1.0)
        except TimeoutError as exc:
            pytest.fail(f"{exc}\n{self.logs()}")

    def run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        """Run a CLI command as the operator does (from the repository root), checked."""
        done = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
        return done

    def api_healthy(self) -> bool:
        """True when the Prefect server answers ``GET /api/health``."""
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def cycle_runs(self) -> list[FlowRun]:
        """Every flow run of the ``process-cycle`` deployment."""
        with (
            temporary_settings({PREFECT_API_URL: self.api_url}),
            get_client(sync_client=True) as client,
        ):
            return client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=[DEPLOYMENT.split("/")[1]])
                )
            )

    def cycles(self) -> tuple[str, list[CycleRecord]]:
        """The spool's id and its cycles (read while the receiver runs)."""
        spool = Spool.open_existing(self.spool)
        try:
            return spool.spool_id, spool.cycles()
        finally:
            spool.close()

    def published_cycle_keys(self) -> set[str]:
        """The ``cycle_key``s with current ``absorbed_dose`` rows in the output folder."""
        if not (self.output / "_manifests").is_dir():
            return set()
        table = read_current(open_object_store(str(self.output), Settings()), "absorbed_dose")
        return {str(key) for key in table.column("cycle_key").to_pylist()}

    def send(self, patient: GeneratedPatient) -> None:
        """All of a patient's instances, one ``storescu`` association."""
        sent = storescu(self.receiver_port, patient.site.calling_ae_title, patient.dicom_files)
        assert sent.returncode == 0, f"{sent.stdout}\n{sent.stderr}\n{self.logs()}"


def _settled(site: Site, cycle_ids: set[str]) -> Callable[[], bool]:
    """Condition: those cycles have an outcome and every ``process-cycle`` run is final (the API
    may be coming back: not settled then)."""

    def settled() -> bool:
        _, cycles = site.cycles()
        states = {record.cycle_id: record.state for record in cycles}
        if not cycle_ids <= set(states) or any(
            states[cycle_id] not in OUTCOME_STATES for cycle_id in cycle_ids
        ):
            return False
        try:
            runs = site.cycle_runs()
        except httpx.HTTPError:
            return False
        return bool(runs) and all(run.state is not None and run.state.is_final() for run in runs)

    return settled


def _runs_by_key(site: Site) -> dict[str | None, list[FlowRun]]:
    runs: dict[str | None, list[FlowRun]] = {}
    for run in site.cycle_runs():
        runs.setdefault(run.idempotency_key, []).append(run)
    return runs


def _assert_one_completed_run_per_cycle(site: Site, cycle_ids: set[str]) -> None:
    """Each cycle's final content has exactly one run, COMPLETED; no run failed or repeated."""
    spool_id, cycles = site.cycles()
    runs = _runs_by_key(site)
    states = Counter(run.state_type for keyed in runs.values() for run in keyed)
    assert set(states) == {StateType.COMPLETED}, f"{states}\n{site.logs()}"
    assert all(len(keyed) == 1 for keyed in runs.values()), runs
    for record in cycles:
        if record.cycle_id in cycle_ids:
            (run,) = runs[idempotency_key(spool_id, record)]
            assert run.parameters["cycle_id"] == record.cycle_id
            assert run.parameters["content_revision"] == record.members.content_revision


def _prefect(*arguments: str) -> list[str]:
    return [str(BIN / "prefect"), *arguments]


def _concordose(*arguments: str) -> list[str]:
    return [str(BIN / "concordose"), *arguments]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Server, work pool, deployments, worker and receiver, as deploy/README.md runs them."""
    root = tmp_path_factory.mktemp("prefect-deployment")
    server_port, receiver_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{server_port}/api"
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {
        **os.environ,
        "PYTHONPATH": python_path,
        "PREFECT_HOME": str(root / "prefect-home"),  # its own profiles and SQLite database
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",  # not looked at here; starts faster
        "COLUMNS": "400",  # `spool status`: one line per table row
    }
    for name in ("CONCORDOSE_PSEUDONYM_KEY", "CONCORDOSE_OUTPUT_URI"):
        env.pop(name, None)  # the worker's alone
    site = Site(api_url, receiver_port, root / "spool", root / "out", env)
    server = Service(
        "prefect server",
        _prefect("server", "start", "--host", "127.0.0.1", "--port", str(server_port)),
        env,
        root / "server.log",
    )
    worker_env = {
        **env,
        "CONCORDOSE_PSEUDONYM_KEY": "test-secret",
        "CONCORDOSE_OUTPUT_URI": str(site.output),
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # default 10: pick runs up at once
        "PYTHONUNBUFFERED": "1",  # its log read as it is written ("started!")
    }
    worker = Service(
        "worker",
        _prefect("worker", "start", "--pool", "concordose-process"),
        worker_env,
        root / "worker.log",
    )
    with ExitStack() as cleanup:

        def add(service: Service) -> None:
            site.services.append(service)
            cleanup.callback(service.stop)  # in reverse order: the server last

        add(server)
        add(worker)
        server.start()
        # Three patients of one site (two PatientIDs for the first test, one for the outage),
        # generated while the server and then the receiver start.
        site.patients.append(generate_patient(root / "patient-0", seed=31, preset="test"))
        receiver = Service(
            "receiver",
            _concordose(
                "receive",
                *("--spool", str(site.spool), "--config", str(site.patients[0].sites_path)),
                *("--host", "127.0.0.1", "--port", str(receiver_port), "--quiet-period-s", "1"),
                *("--deployment", DEPLOYMENT),
            ),
            # The outage test waits for redelivery: back off 2 s at most, not the default 300 s.
            {**env, "CONCORDOSE_RECEIVER_DELIVERY_BACKOFF_MAX_S": "2"},
            root / "receiver.log",
        )
        add(receiver)
        receiver.start()
        for index, seed in ((1, 32), (2, 33)):
            site.patients.append(
                generate_patient(root / f"patient-{index}", seed=seed, preset="test")
            )
        assert len({patient.patient_id for patient in site.patients}) == 3
        site.wait(site.api_healthy, "the Prefect server's /api/health")
        site.run(_prefect("work-pool", "create", "concordose-process", "--type", "process"))
        site.run(
            _prefect("--no-prompt", "deploy", "--prefect-file", "deploy/prefect.yaml", "--all")
        )
        worker.start()
        # Up before any test: the outage test stops the server first thing, and a worker
        # starting then cannot learn its pool's type and exits.
        site.wait(lambda: "started!" in worker.log(), "the Prefect worker to start polling")
        site.wait(lambda: port_open(receiver_port), "concordose receive to listen")
        yield site


def test_two_patients_each_get_one_completed_run_and_published_rows(site: Site) -> None:
    for patient in site.patients[:2]:
        site.send(patient)
    site.wait(lambda: len(site.cycles()[1]) == 2, "two cycles in the spool")
    cycle_ids = {record.cycle_id for record in site.cycles()[1]}
    site.wait(_settled(site, cycle_ids), "both cycles processed and their runs final")

    _assert_one_completed_run_per_cycle(site, cycle_ids)
    # One association per patient: its time points complete in the same poll, so the first
    # event already sees the whole cycle and every later event maps to the same key.
    assert len(_runs_by_key(site)) == 2
    assert len(site.published_cycle_keys()) == 2
    manifests = [json.loads(p.read_text()) for p in (site.output / "_manifests").glob("*.json")]
    # one per cycle; the cohort tables' rebuilds are runs of their own (scope ``cohort``)
    assert len([m for m in manifests if "cycle_key" in m["scopes"]]) == 2
    status = site.run(_concordose("spool", "status", "--spool", str(site.spool)))
    assert "cycles: processed 2 " in status.stdout, status.stdout
    for cycle_id in cycle_ids:
        rows = [line for line in status.stdout.splitlines() if cycle_id in line]
        assert rows, status.stdout
        assert all(row.rstrip(" │").endswith("processed") for row in rows), status.stdout


def test_a_prefect_outage_delays_the_run_and_loses_nothing(site: Site) -> None:
    patient = site.patients[2]
    before = {record.cycle_id for record in site.cycles()[1]}
    published_before = site.published_cycle_keys()
    server = site.service("prefect server")
    server.stop()
    assert not site.api_healthy()

    site.send(patient)
    receiver = site.service("receiver")
    # Restart only once a retry has failed too: the server coming back within the
    # first backoff would leave nothing to show that failed deliveries are retried.
    site.wait(
        lambda: "delivery attempt 2 failed" in receiver.log(),
        "the receiver to back off and retry after failed deliveries",
    )
    spool = Spool.open_existing(site.spool)
    try:
        assert spool.status().pending_events > 0
    finally:
        spool.close()
    (new_cycle,) = {record.cycle_id for record in site.cycles()[1]} - before

    server.start()  # same port, same database
    site.wait(site.api_healthy, "the restarted Prefect server")
    site.wait(_settled(site, {new_cycle}), "the held-back cycle processed and its run final")
    site.wait(
        lambda: len(site.published_cycle_keys() - published_before) == 1,
        "the new cycle's rows published",
    )
    _assert_one_completed_run_per_cycle(site, {new_cycle})
    # Each failed delivery is one warning line, retried after the backoff; no traceback.
    log = receiver.log()
    failures = [line for line in log.splitlines() if "delivery attempt" in line]
    assert any("delivery attempt 2 failed (ConnectError" in line for line in failures), log
    assert all(FAILED_DELIVERY.search(line) for line in failures), failures
    backoffs = [line for line in log.splitlines() if "next poll in" in line]
    assert all("next poll in 2.0 s" in line for line in backoffs), backoffs  # the 2 s cap
    assert "Traceback" not in log
