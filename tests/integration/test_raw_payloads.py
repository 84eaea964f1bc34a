"""Issue 19, item 1: a ready cycle's instances reach workers through object storage (a real S3
protocol server on loopback, moto), content-addressed and idempotent, the manifest last; a
worker runs ``process-cycle`` from the manifest without the spool; retention deletes only the
payloads of cycles processed long enough ago."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from moto.s3.models import s3_backends
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.deployments.runner import RunnerDeployment
from typer.testing import CliRunner

from concordose.cli import app
from concordose.errors import UnreadableDicomError
from concordose.flows.process_cycle import OUTCOME_PROCESSED, process_cycle
from concordose.flows.sweep import sweep
from concordose.flows.triggers import DeploymentTrigger, InProcessFlowTrigger, idempotency_key
from concordose.payloads import (
    CycleManifest,
    ManifestError,
    ManifestInstance,
    PayloadHashMismatchError,
    RawObjectMissingError,
    RawStore,
    RecordedOutcome,
    instance_key,
    manifest_key,
    prune,
    sha256_of_file,
    stage_cycle,
    upload_cycle,
)
from concordose.phantoms import GeneratedPatient
from concordose.results.object_store import BucketMissingError
from concordose.settings import Settings
from concordose.spool.cycles import CycleRecord, CycleState
from concordose.spool.store import Spool
from tests.fakes import Recorder
from tests.integration.received import receive_patient
from tests.integration.s3_stores import use_s3_server

pytestmark = pytest.mark.integration

BUCKET = "concordose-raw"
PREFIX = "site-a"
RAW_URI = f"s3://{BUCKET}/{PREFIX}"
MOTO_ACCOUNT = "123456789012"  # moto's default account
RUN_COLUMNS = ("run_id", "flow_run_id", "created_at")
"""Columns that say which run wrote a row (differ between any two runs)."""


@pytest.fixture(autouse=True)
def _pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-secret")


@pytest.fixture
def spool_root(tmp_path: Path, small_patient: GeneratedPatient) -> Path:
    """A spool holding one complete cycle of the small patient (received for real)."""
    root = tmp_path / "spool"
    receive_patient(root, small_patient, Recorder(), complete=True).stop()
    return root


def _cycle(root: Path) -> tuple[Spool, CycleRecord]:
    spool = Spool.open_existing(root)
    (record,) = spool.cycles()
    assert record.state is CycleState.READY
    return spool, record


def _raw(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> RawStore:
    use_s3_server(s3_endpoint, monkeypatch)
    return RawStore.open(RAW_URI, Settings())


def _objects() -> dict[str, datetime]:
    """Key → last-modified (µs) of every object of the bucket, from the S3 server itself."""
    bucket = s3_backends[MOTO_ACCOUNT]["aws"].buckets[BUCKET]
    return {key: bucket.keys[key].last_modified for key in bucket.keys}


def test_upload_is_content_addressed_idempotent_and_writes_the_manifest_last(
    spool_root: Path,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    small_patient: GeneratedPatient,
) -> None:
    raw = _raw(s3_endpoint, monkeypatch)
    spool, record = _cycle(spool_root)
    rows = spool.cycle_instances(record.members)
    report = upload_cycle(spool, record, raw)
    assert (report.uploaded, report.present) == (len(rows), 0)
    assert report.bytes_uploaded == sum(row.size_bytes for row in rows)
    assert report.manifest_written

    first = _objects()
    hashes = [sha256_of_file(row.path) for row in rows]
    instance_keys = {f"{PREFIX}/{instance_key(h)}" for h in hashes}
    assert all(
        key.split("/")[-1] == f"{h}.dcm"
        for key, h in zip(sorted(instance_keys), sorted(hashes), strict=True)
    )
    key = f"{PREFIX}/{manifest_key(record.cycle_id, record.members.content_revision)}"
    assert set(first) == instance_keys | {key}
    assert first[key] > max(first[k] for k in instance_keys)  # the manifest last
    assert (
        report.manifest_uri
        == f"{RAW_URI}/cycles/{record.cycle_id}/{record.members.content_revision}.json"
    )

    manifest = raw.read_manifest(record.cycle_id, record.members.content_revision)
    assert [i.sha256 for i in manifest.instances] == hashes  # the spool's order
    assert {tp.study_uid for tp in manifest.time_points} == set(record.members.all_study_uids)
    assert manifest.cycle_number == 1
    text = raw.store.read_bytes(raw.store.path(key.removeprefix(f"{PREFIX}/"))).decode()
    assert small_patient.patient_id not in text
    assert record.members.injection_datetime.isoformat()[:10] not in text

    again = upload_cycle(spool, record, raw)  # a re-delivered event
    assert (again.uploaded, again.present, again.manifest_written) == (0, len(rows), False)
    assert _objects() == first  # not one object sent again


def test_an_interrupted_upload_leaves_no_manifest_and_the_retry_sends_only_the_rest(
    spool_root: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    raw = _raw(s3_endpoint, monkeypatch)
    spool, record = _cycle(spool_root)
    rows = spool.cycle_instances(record.members)
    aside = tmp_path / "aside.dcm"
    rows[3].path.rename(aside)
    with pytest.raises(UnreadableDicomError, match="missing on disk"):
        upload_cycle(spool, record, raw)
    assert not raw.has_manifest(record.cycle_id, record.members.content_revision)
    assert len(_objects()) == 3  # what went before the failure

    aside.rename(rows[3].path)
    command = ["raw", "upload", "--spool", str(spool_root), "--cycle-id", record.cycle_id]
    result = CliRunner().invoke(app, [*command, "--store", RAW_URI])
    assert result.exit_code == 0, result.output
    assert f"{len(rows) - 3} instance(s) uploaded, 3 already there" in result.output
    assert raw.has_manifest(record.cycle_id, record.members.content_revision)


def test_a_worker_refuses_corrupt_and_missing_payloads_and_a_missing_bucket(
    spool_root: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    raw = _raw(s3_endpoint, monkeypatch)
    spool, record = _cycle(spool_root)
    upload_cycle(spool, record, raw)
    manifest = raw.read_manifest(record.cycle_id, record.members.content_revision)
    entry = manifest.instances[2]
    target = raw.store.path(instance_key(entry.sha256))
    original = raw.store.read_bytes(target)
    flipped = bytes([original[-1] ^ 0xFF])
    with raw.store.filesystem.open_output_stream(target) as out:  # same size, other bytes
        out.write(original[:-1] + flipped)

    folder = tmp_path / "worker"
    with pytest.raises(PayloadHashMismatchError, match=entry.sha256) as mismatch:
        stage_cycle(raw, manifest, folder)
    assert "corrupt: delete it and upload the cycle again" in str(mismatch.value)
    assert not (folder / f"{entry.sha256}.dcm").exists()
    assert not list(folder.glob(".*partial"))

    raw.delete(instance_key(entry.sha256))
    with pytest.raises(RawObjectMissingError, match=instance_key(entry.sha256)):
        stage_cycle(raw, manifest, tmp_path / "worker-2")

    with raw.store.filesystem.open_output_stream(target) as out:
        out.write(original)
    other = manifest.model_copy(update={"spool_id": "another-spool"})  # keys to another id
    with pytest.raises(ManifestError, match="does not describe its instances"):
        stage_cycle(raw, other, tmp_path / "worker-3")
    assert stage_cycle(raw, manifest, tmp_path / "worker-4").members == record.members

    use_s3_server(s3_endpoint, monkeypatch, create_bucket=False)
    with pytest.raises(BucketMissingError, match="no-such-bucket"):
        RawStore.open("s3://no-such-bucket/raw", Settings())


def _comparable(table: pa.Table) -> pa.Table:
    kept = table.drop_columns([c for c in RUN_COLUMNS if c in table.column_names])
    return kept.sort_by(
        [
            (name, "ascending")
            for name in kept.column_names
            if pa.types.is_string(kept.schema.field(name).type)
        ]
    )


@pytest.mark.usefixtures("prefect_server")
def test_process_cycle_from_the_manifest_needs_no_spool_and_publishes_the_same_tables(
    spool_root: Path,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    small_patient: GeneratedPatient,
) -> None:
    raw = _raw(s3_endpoint, monkeypatch)
    spool, record = _cycle(spool_root)
    from_spool = process_cycle(
        spool_root, small_patient.sites_path, record.cycle_id, output_uri=str(tmp_path / "a")
    )
    assert from_spool.outcome == OUTCOME_PROCESSED
    manifest_uri = upload_cycle(spool, record, raw).manifest_uri
    spool.close()

    spool_root.rename(tmp_path / "receiver-only")  # the worker has no path to the spool
    worker = tmp_path / "worker"
    worker.mkdir()
    monkeypatch.chdir(worker)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    from_raw = process_cycle(
        spool_root,
        small_patient.sites_path,
        record.cycle_id,
        content_revision=record.members.content_revision,
        output_uri=str(tmp_path / "b"),
        manifest_uri=manifest_uri,
    )
    assert not spool_root.exists()
    assert from_raw.outcome == OUTCOME_PROCESSED
    assert list(scratch.iterdir()) == []  # the downloaded cycle is cleaned up
    assert from_raw.cycle_key == from_spool.cycle_key
    assert set(from_raw.tables) == set(from_spool.tables)
    assert from_spool.tables["kinetics"].num_rows > 0  # science ran, not a held cycle
    for name, table in from_spool.tables.items():
        assert _comparable(from_raw.tables[name]).equals(_comparable(table)), name
    (outcome,) = raw.outcomes()
    assert outcome.state is CycleState.PROCESSED
    assert from_raw.published is not None
    assert outcome.run_id == from_raw.published.run_id

    # Back beside the receiver: the spool learns what the worker recorded, once.
    (tmp_path / "receiver-only").rename(spool_root)
    sync = ["raw", "sync-outcomes", "--spool", str(spool_root), "--store", RAW_URI]
    result = CliRunner().invoke(app, sync)
    assert result.exit_code == 0, result.output
    assert "1 outcome(s) recorded" in result.output
    (cycle,) = Spool.open_existing(spool_root).cycles()
    assert cycle.state is CycleState.PROCESSED
    assert cycle.outcome is not None
    assert cycle.outcome.run_id == from_raw.published.run_id
    assert "0 outcome(s) recorded" in CliRunner().invoke(app, sync).output


@pytest.mark.usefixtures("prefect_server")
def test_the_sweep_does_not_rerun_a_cycle_a_worker_ran_from_the_raw_store(
    spool_root: Path,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    small_patient: GeneratedPatient,
) -> None:
    """A worker without the spool recorded the cycle's outcome in the raw store only; the nightly
    sweep beside the receiver records it in the spool first and runs nothing."""
    raw = _raw(s3_endpoint, monkeypatch)
    monkeypatch.setenv("CONCORDOSE_RAW_STORE_URI", RAW_URI)
    spool, record = _cycle(spool_root)
    assert record.outcome is None  # received and complete, never run here
    upload_cycle(spool, record, raw)
    spool.close()
    raw.write_outcome(
        RecordedOutcome(
            cycle_id=record.cycle_id,
            content_revision=record.members.content_revision,
            state=CycleState.PROCESSED,
            run_id="worker-run",
            recorded_at=datetime.now(UTC),
        )
    )
    result = sweep(spool_root, small_patient.sites_path, output_uri=str(tmp_path / "out"))
    assert result.runs == ()
    assert result.failed == {}
    (cycle,) = Spool.open_existing(spool_root).cycles()
    assert cycle.state is CycleState.PROCESSED
    assert cycle.outcome is not None
    assert cycle.outcome.run_id == "worker-run"


@pytest.mark.usefixtures("prefect_server")
def test_an_unreadable_raw_store_does_not_stop_the_sweep(
    spool_root: Path,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    small_patient: GeneratedPatient,
    *,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The outcomes cannot be read (no such bucket): the sweep says so and runs its cycles."""
    use_s3_server(s3_endpoint, monkeypatch)
    monkeypatch.setenv("CONCORDOSE_S3_CREATE_BUCKET", "false")
    monkeypatch.setenv("CONCORDOSE_RAW_STORE_URI", "s3://no-such-bucket/raw")
    result = sweep(spool_root, small_patient.sites_path, output_uri=str(tmp_path / "out"))
    assert [run.outcome for run in result.runs] == [OUTCOME_PROCESSED]
    assert "outcomes not read from the raw store" in caplog.text


def _manifest(
    raw: RawStore,
    tmp_path: Path,
    *,
    cycle_id: str,
    revision: str,
    contents: list[bytes],
    created_at: datetime,
) -> CycleManifest:
    entries = []
    for index, data in enumerate(contents):
        path = tmp_path / f"{cycle_id}-{revision}-{index}.dcm"
        path.write_bytes(data)
        put = raw.put_instance(path)
        entries.append(
            ManifestInstance(
                sha256=put.sha256,
                size_bytes=put.size_bytes,
                study_uid="1.2.3",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.20",
                calling_ae_title="SITE",
            )
        )
    manifest = CycleManifest(
        spool_id="spool",
        cycle_id=cycle_id,
        content_revision=revision,
        cycle_number=1,
        created_at=created_at,
        time_points=(),
        instances=tuple(entries),
    )
    raw.write_manifest(manifest)
    return manifest


def _outcome(raw: RawStore, manifest: CycleManifest, state: CycleState, at: datetime) -> None:
    raw.write_outcome(
        RecordedOutcome(
            cycle_id=manifest.cycle_id,
            content_revision=manifest.content_revision,
            state=state,
            recorded_at=at,
        )
    )


def test_retention_deletes_only_payloads_of_cycles_processed_long_enough_ago(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    raw = _raw(s3_endpoint, monkeypatch)
    now = datetime.now(UTC)  # the CLI below prunes as of now too
    old, recent = now - timedelta(days=40), now - timedelta(days=1)
    # cycle id, revision, instance contents, manifest written, outcome (state, recorded) if run
    layout: list[tuple[str, str, list[bytes], datetime, tuple[CycleState, datetime] | None]] = [
        ("aa01", "0001", [b"only-a", b"shared"], old, (CycleState.PROCESSED, old)),  # expired
        ("bb02", "0001", [b"shared", b"only-b"], old, (CycleState.PROCESSED, recent)),  # young
        ("cc03", "0001", [b"only-c"], old, (CycleState.HELD, old)),  # held: kept
        ("dd04", "0001", [b"only-d"], old, (CycleState.PROCESSED, old)),  # superseded ...
        ("dd04", "0002", [b"only-d", b"new-d"], recent, None),  # ... by a revision not run yet
    ]
    manifests: dict[str, CycleManifest] = {}
    for cycle_id, revision, contents, created_at, outcome in layout:
        manifest = _manifest(
            raw,
            tmp_path,
            cycle_id=cycle_id,
            revision=revision,
            contents=contents,
            created_at=created_at,
        )
        manifests.setdefault(cycle_id, manifest)
        if outcome is not None:
            _outcome(raw, manifest, *outcome)
    expired, young = manifests["aa01"], manifests["bb02"]

    before = _objects()
    dry = prune(raw, 30, now, dry_run=True)
    assert _objects() == before
    assert (dry.cycles, dry.manifests_deleted, dry.instances_deleted, dry.instances_kept) == (
        ("aa01",),
        1,
        1,
        1,
    )

    result = CliRunner().invoke(
        app, ["raw", "prune", "--store", RAW_URI, "--retention-days", "30", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["cycles"] == ["aa01"]
    assert (
        document["manifests_deleted"],
        document["instances_deleted"],
        document["instances_kept"],
    ) == (1, 1, 1)
    gone = set(before) - set(_objects())
    assert gone == {
        f"{PREFIX}/{manifest_key('aa01', '0001')}",
        f"{PREFIX}/{instance_key(expired.instances[0].sha256)}",
    }
    assert raw.manifests("bb02") == [young]
    assert len(raw.outcomes()) == 4  # the history stays


@pytest.mark.usefixtures("prefect_server")
def test_the_receiver_uploads_a_completed_cycle_and_the_flow_runs_from_the_raw_store(
    tmp_path: Path,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    small_patient: GeneratedPatient,
) -> None:
    use_s3_server(s3_endpoint, monkeypatch)
    monkeypatch.setenv("CONCORDOSE_RAW_STORE_URI", RAW_URI)
    trigger = InProcessFlowTrigger(small_patient.sites_path, output_uri=str(tmp_path / "out"))
    receiver = receive_patient(tmp_path / "spool", small_patient, trigger, complete=True)
    try:
        (future,) = trigger.futures.values()
        result = future.result(timeout=600)
    finally:
        receiver.stop()
        trigger.shutdown()
    assert result.outcome == OUTCOME_PROCESSED
    raw = RawStore.open(RAW_URI, Settings())
    (manifest,) = raw.manifests()
    assert manifest.cycle_id == result.cycle_id
    (outcome,) = raw.outcomes()
    assert outcome.state is CycleState.PROCESSED
    (cycle,) = Spool(tmp_path / "spool").cycles()  # this worker sees the spool too: recorded
    assert cycle.state is CycleState.PROCESSED


@pytest.mark.usefixtures("prefect_server")
def test_a_deployment_run_is_given_the_manifest_of_the_uploaded_cycle(
    tmp_path: Path,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    small_patient: GeneratedPatient,
) -> None:
    deployment = process_cycle.to_deployment(name="raw-store-test")
    assert isinstance(deployment, RunnerDeployment)  # called synchronously
    deployment.apply()
    recorder = Recorder()
    receive_patient(tmp_path / "spool", small_patient, recorder, complete=True).stop()
    use_s3_server(s3_endpoint, monkeypatch)
    monkeypatch.setenv("CONCORDOSE_RAW_STORE_URI", RAW_URI)
    trigger = DeploymentTrigger("process-cycle/raw-store-test", small_patient.sites_path)
    for event in recorder.events:  # the last one finds the cycle complete
        trigger(event)
    spool, record = _cycle(tmp_path / "spool")
    key = idempotency_key(spool.spool_id, record)
    with get_client(sync_client=True) as client:
        # this deployment's runs only: the session's server holds every earlier test's runs,
        # more than one page of read_flow_runs
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["raw-store-test"]))
        )
    (run,) = [r for r in runs if r.idempotency_key == key]
    expected = RawStore.open(RAW_URI, Settings()).manifest_uri(
        record.cycle_id, record.members.content_revision
    )
    assert run.parameters["manifest_uri"] == expected
    assert RawStore.open(RAW_URI, Settings()).has_manifest(
        record.cycle_id, record.members.content_revision
    )
    assert small_patient.patient_id not in str(run.parameters)
