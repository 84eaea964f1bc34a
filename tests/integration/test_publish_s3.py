"""Publication to a real S3-protocol server on loopback (moto's threaded server).

The same code path serves MinIO, Ceph RGW and AWS: only endpoint and credentials differ.
"""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from minio import Minio
from moto.server import ThreadedMotoServer
from pydantic import SecretStr

from concordose.results.catalogue import read_current
from concordose.results.object_store import (
    BucketMissingError,
    StoreAccessDeniedError,
    StoreUnavailableError,
    open_object_store,
)
from concordose.results.provenance import Provenance
from concordose.results.publish import publish_tables
from concordose.schemas.tables import KINETICS
from concordose.settings import Settings
from tests.results_rows import provenance, run_tables

pytestmark = pytest.mark.integration

ACCESS_KEY = "concordose-test"
SECRET_KEY = "concordose-test-secret"  # a throwaway credential for the local server


def _kinetics_table(site: str) -> pa.Table:
    row = {
        "subject_key": "sub-1",
        "site_id": site,
        "cycle_key": f"cyc-{site}",  # one cycle per site: keys are unique in a batch
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
        "run_id": "run-1",
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
    keys = sorted(
        obj.object_name
        for obj in client.list_objects("results", recursive=True)
        if not obj.object_name.startswith(("consortium/_data_docs/", "consortium/_validation/"))
    )
    assert keys == [
        "consortium/_manifests/run-1.json",
        f"consortium/kinetics/v{KINETICS.version}/site_id=milan/run-1.parquet",
        f"consortium/kinetics/v{KINETICS.version}/site_id=padua/run-1.parquet",
    ]
    docs = {
        obj.object_name
        for obj in client.list_objects("results", prefix="consortium/_data_docs/", recursive=True)
    }
    # Data Docs kept per run (issue 17): the run's pages, the shared assets, the latest at the top
    assert {
        "consortium/_data_docs/index.html",
        "consortium/_data_docs/runs/index.html",
        "consortium/_data_docs/runs/run-1/run.json",
        "consortium/_data_docs/static/vendor/jquery-3.7.1/dist/jquery.min.js",
    } <= docs
    manifest = json.loads(client.get_object("results", "consortium/_manifests/run-1.json").read())
    assert [o["rows"] for o in manifest["objects"]] == [1, 1]
    table = pq.read_table(run.objects[0].path, filesystem=store.filesystem)
    assert table.column("tia_mbq_h").to_pylist() == [1000.0]


def _settings(endpoint: str, **overrides: object) -> Settings:
    return Settings(
        s3_endpoint=f"http://{endpoint}",
        s3_access_key=SecretStr(ACCESS_KEY),
        s3_secret_key=SecretStr(SECRET_KEY),
        **overrides,  # type: ignore[arg-type]
    )


def test_missing_bucket_is_a_clear_error_and_nothing_is_written(s3_endpoint: str) -> None:
    store = open_object_store("s3://absent/consortium", _settings(s3_endpoint))
    with pytest.raises(BucketMissingError, match=r"bucket 'absent' does not exist.*CREATE_BUCKET"):
        publish_tables(store, run_tables("run-1", {"c1": 40.0}), provenance("run-1"))
    client = Minio(s3_endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
    assert not client.bucket_exists("absent")


def test_missing_bucket_is_created_when_asked(s3_endpoint: str) -> None:
    store = open_object_store(
        "s3://fresh/consortium", _settings(s3_endpoint, s3_create_bucket=True)
    )
    publish_tables(store, run_tables("run-1", {"c1": 40.0}), provenance("run-1"))
    rows = read_current(store, "absorbed_dose").to_pylist()
    assert [(r["cycle_key"], r["mean_dose_gy"]) for r in rows] == [("c1", 40.0)]


def test_wrong_credentials_are_a_clear_error(s3_endpoint: str) -> None:
    Minio(s3_endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False).make_bucket(
        "results"
    )
    wrong = Settings(
        s3_endpoint=f"http://{s3_endpoint}",
        s3_access_key=SecretStr("not-a-user"),
        s3_secret_key=SecretStr("wrong-secret-value"),
    )
    # moto checks credentials only once told to (its server's reset-auth endpoint).
    requests.post(f"http://{s3_endpoint}/moto-api/reset-auth", data=b"0", timeout=10)
    try:
        store = open_object_store("s3://results/consortium", wrong)
        started = time.monotonic()
        with pytest.raises(StoreAccessDeniedError, match="refused the credentials") as caught:
            publish_tables(store, run_tables("run-1", {"c1": 40.0}), provenance("run-1"))
        assert time.monotonic() - started < 5, "refused credentials must not be retried"
        assert "wrong-secret-value" not in str(caught.value)
    finally:
        requests.post(f"http://{s3_endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)


def test_server_down_retries_with_backoff_then_fails_with_nothing_partial() -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"{host}:{port}"
    Minio(endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False).make_bucket(
        "results"
    )
    settings = _settings(endpoint, s3_max_attempts=3, s3_backoff_s=0.2)
    store = open_object_store("s3://results/consortium", settings)
    publish_tables(store, run_tables("run-a", {"c1": 40.0}), provenance("run-a"))
    server.stop()

    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=r"unreachable.*after 3 attempts"):
        publish_tables(store, run_tables("run-b", {"c1": 99.0}), provenance("run-b"))
    assert time.monotonic() - started >= 0.2 + 0.4  # the two backoff waits happened

    # Same port, same (in-process) moto state: the failed run left nothing behind.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = Minio(endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
        names = [o.object_name for o in client.list_objects("results", recursive=True)]
        assert not [name for name in names if "run-b" in name]
        rows = read_current(store, "absorbed_dose").to_pylist()
        assert [(r["cycle_key"], r["mean_dose_gy"]) for r in rows] == [("c1", 40.0)]
    finally:
        server.stop()
