"""A writer killed between its data objects and its manifest leaves readers on the previous state.

The writer runs in a subprocess whose manifest commit is replaced by "report and block"; the test
waits for the report (the data objects are then written), kills the process with SIGKILL, and
checks what readers see — on the local default store and on a real S3 server (moto) on loopback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from minio import Minio
from moto.server import ThreadedMotoServer
from pydantic import SecretStr

from concordose.results.catalogue import read_current
from concordose.results.object_store import ObjectStore, open_object_store
from concordose.results.publish import publish_tables
from concordose.settings import Settings
from tests.results_rows import provenance, run_tables

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCESS_KEY = "concordose-test"
SECRET_KEY = "concordose-test-secret"  # a throwaway credential for the local server

WRITER = """
import sys
from concordose.results import publish
from concordose.results.object_store import open_object_store
from concordose.settings import Settings
from tests.results_rows import provenance, run_tables

def stall(store, path, data):
    print("DATA-WRITTEN", flush=True)
    sys.stdin.read()  # blocks until the test kills this process

publish._commit = stall
store = open_object_store(sys.argv[1], Settings())
publish.publish_tables(store, run_tables("run-b", {"c1": 99.0, "c3": 10.0}), provenance("run-b"))
print("MANIFEST-WRITTEN", flush=True)
"""


@pytest.fixture(params=["local", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Settings]]:
    if request.param == "local":
        yield str(tmp_path / "out"), Settings()
        return
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    Minio(f"{host}:{port}", ACCESS_KEY, SECRET_KEY, secure=False).make_bucket("killtest")
    try:
        yield (
            "s3://killtest/consortium",
            Settings(
                s3_endpoint=f"http://{host}:{port}",
                s3_access_key=SecretStr(ACCESS_KEY),
                s3_secret_key=SecretStr(SECRET_KEY),
            ),
        )
    finally:
        server.stop()


def _written_objects(store: ObjectStore, run_id: str) -> list[str]:
    infos = store.filesystem.get_file_info(pafs.FileSelector(store.base, recursive=True))
    return sorted(i.path for i in infos if i.path.endswith(f"/{run_id}.parquet"))


def test_killed_writer_leaves_the_previous_state(target: tuple[str, Settings]) -> None:
    uri, settings = target
    store = open_object_store(uri, settings)
    publish_tables(store, run_tables("run-a", {"c1": 40.0, "c2": 20.0}), provenance("run-a"))

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    if settings.s3_endpoint:
        env |= {
            "CONCORDOSE_S3_ENDPOINT": settings.s3_endpoint,
            "CONCORDOSE_S3_ACCESS_KEY": ACCESS_KEY,
            "CONCORDOSE_S3_SECRET_KEY": SECRET_KEY,
        }
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, uri],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "DATA-WRITTEN"  # pytest-timeout guards this
    finally:
        writer.kill()
        writer.wait()

    # The killed run's data objects are there, its manifest is not…
    assert len(_written_objects(store, "run-b")) == 2  # kinetics and absorbed_dose, one site
    # …so readers see exactly the previous state: run-a's rows, nothing of run-b, no duplicate.
    doses = {
        r["cycle_key"]: r["mean_dose_gy"] for r in read_current(store, "absorbed_dose").to_pylist()
    }
    assert doses == {"c1": 40.0, "c2": 20.0}
    kinetics = read_current(store, "kinetics")
    assert set(kinetics.column("run_id").to_pylist()) == {"run-a"}
    assert kinetics.num_rows == 4

    # A complete re-run afterwards replaces c1 as usual.
    publish_tables(store, run_tables("run-c", {"c1": 41.0}), provenance("run-c"))
    doses = {
        r["cycle_key"]: r["mean_dose_gy"] for r in read_current(store, "absorbed_dose").to_pylist()
    }
    assert doses == {"c1": 41.0, "c2": 20.0}
