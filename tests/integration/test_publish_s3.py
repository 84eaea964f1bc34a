"""Publication to a real S3-protocol server on loopback (moto's threaded server).

The same code path serves MinIO, Ceph RGW and AWS: only endpoint and credentials differ.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from minio import Minio
from moto.server import ThreadedMotoServer
from pydantic import SecretStr

from concordose.results.object_store import open_object_store
from concordose.results.provenance import Provenance
from concordose.results.publish import publish_tables
from concordose.settings import Settings
from schemas.tables import KINETICS

pytestmark = pytest.mark.integration

ACCESS_KEY = "concordose-test"
SECRET_KEY = "concordose-test-secret"  # a throwaway credential for the local server


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()


def _kinetics_table(site: str) -> pa.Table:
    row = {
        "subject_key": "sub-1",
        "site_id": site,
        "cycle_key": "cyc-1",
        "voi_label": "lesion_1",
        "voi_type": "lesion",
        "kinetics_method": "mono_exponential",
        "kinetics_method_version": "1",
        "method_parameters_hash": "abc",
        "n_time_points": 4,
        "tia_mbq_h": 1000.0,
        "a0_mbq": 10.0,
        "lambda_eff_per_h": 0.01,
        "teff_h": 69.3,
        "status": "ok",
        "schema_version": KINETICS.version,
        "software_version": "test",
        "run_id": "r1",
        "flow_run_id": None,
        "calibration_record_id": "cal-1",
        "input_uid_hashes": ["h1"],
        "created_at": Provenance(run_id="r1").created_at,
    }
    return pa.Table.from_pylist([row], schema=KINETICS.schema)


def test_publish_to_s3_writes_parquet_then_manifest(s3_endpoint: str) -> None:
    client = Minio(s3_endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
    client.make_bucket("results")
    settings = Settings(
        s3_endpoint=f"http://{s3_endpoint}",
        s3_access_key=SecretStr(ACCESS_KEY),
        s3_secret_key=SecretStr(SECRET_KEY),
    )
    store = open_object_store("s3://results/consortium", settings)
    run = publish_tables(
        store,
        {"kinetics": [_kinetics_table("milan"), _kinetics_table("padua")]},
        Provenance(run_id="run-1"),
    )
    keys = sorted(obj.object_name for obj in client.list_objects("results", recursive=True))
    assert keys == [
        "consortium/_manifests/run-1.json",
        f"consortium/kinetics/v{KINETICS.version}/site_id=milan/run-1.parquet",
        f"consortium/kinetics/v{KINETICS.version}/site_id=padua/run-1.parquet",
    ]
    manifest = json.loads(client.get_object("results", "consortium/_manifests/run-1.json").read())
    assert [o["rows"] for o in manifest["objects"]] == [1, 1]
    table = pq.read_table(run.objects[0].path, filesystem=store.filesystem)
    assert table.column("tia_mbq_h").to_pylist() == [1000.0]
