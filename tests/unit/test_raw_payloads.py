"""Issue 19, item 1, the parts that need no server: the settings' names, the raw store's key
layout, manifest parsing, the default (no raw store) doing nothing, and the worker command's
one-line errors for a manifest it cannot run from. The S3 path end to end:
``tests/integration/test_raw_payloads.py``."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from typer.testing import CliRunner

from concordose.cli import app
from concordose.cli.console import EXIT_INPUT_ERROR
from concordose.payloads import (
    CycleManifest,
    ManifestError,
    ManifestInstance,
    PayloadHashMismatchError,
    RawObjectMissingError,
    RawStore,
    instance_key,
    split_manifest_uri,
    upload_if_configured,
)
from concordose.phantoms import GeneratedPatient
from concordose.settings import Settings
from concordose.spool.cycles import CycleRecord
from concordose.spool.store import Spool

SHA = "ab" + "0" * 62


def test_the_settings_read_exactly_the_deploy_files_names(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().raw_store_uri, Settings().raw_retention_days) == (None, None)
    monkeypatch.setenv("CONCORDOSE_RAW_STORE_URI", "s3://raw/site-a")
    monkeypatch.setenv("CONCORDOSE_RAW_RETENTION_DAYS", "30")
    assert (Settings().raw_store_uri, Settings().raw_retention_days) == ("s3://raw/site-a", 30)
    monkeypatch.setenv("CONCORDOSE_RAW_STORE_URI", "")  # as a compose file leaves it
    monkeypatch.setenv("CONCORDOSE_RAW_RETENTION_DAYS", "")
    assert (Settings().raw_store_uri, Settings().raw_retention_days) == (None, None)


def test_without_a_raw_store_the_hook_uploads_nothing() -> None:
    # Neither the spool nor the record is touched: the worker reads the spool as before.
    untouchable = cast(Spool, object())
    assert upload_if_configured(untouchable, cast(CycleRecord, object()), Settings()) is None


def test_keys_are_content_hashes_and_manifest_uris_name_their_store() -> None:
    assert instance_key(SHA) == f"instances/sha256/ab/{SHA}.dcm"
    with pytest.raises(ManifestError, match="64 lowercase hex"):
        instance_key("../../etc/passwd")
    assert split_manifest_uri("s3://raw/site-a/cycles/9ed9/df55.json") == (
        "s3://raw/site-a",
        "9ed9",
        "df55",
    )
    with pytest.raises(ManifestError, match="expected <raw store>/cycles/"):
        split_manifest_uri("s3://raw/site-a/instances/x.dcm")


def test_a_document_that_is_no_manifest_is_refused_with_where() -> None:
    with pytest.raises(ManifestError, match="manifest here: expected a concordose-cycle"):
        CycleManifest.parse(b'{"cycle_id": "x"}', "here")
    with pytest.raises(ValueError, match="String should match pattern"):
        ManifestInstance(
            sha256="not-a-hash",
            size_bytes=1,
            study_uid="1.2",
            sop_class_uid="1.2",
            calling_ae_title="A",
        )


def test_a_folder_raw_store_verifies_what_it_serves(tmp_path: Path) -> None:
    raw = RawStore.open(str(tmp_path / "raw"), Settings())
    source = tmp_path / "one.dcm"
    source.write_bytes(b"payload")
    put = raw.put_instance(source)
    assert put.uploaded
    assert not raw.put_instance(source).uploaded  # idempotent
    entry = ManifestInstance(
        sha256=put.sha256,
        size_bytes=put.size_bytes,
        study_uid="1.2",
        sop_class_uid="1.2",
        calling_ae_title="A",
    )
    raw.fetch_instance(entry, tmp_path / "copy.dcm")
    assert (tmp_path / "copy.dcm").read_bytes() == b"payload"
    wrong = entry.model_copy(update={"sha256": SHA})
    (tmp_path / "raw" / instance_key(SHA)).parent.mkdir(parents=True)
    (tmp_path / "raw" / instance_key(SHA)).write_bytes(b"payload")
    with pytest.raises(PayloadHashMismatchError, match=f"should hash to {SHA}"):
        raw.fetch_instance(wrong, tmp_path / "bad.dcm")
    assert not (tmp_path / "bad.dcm").exists()
    with pytest.raises(RawObjectMissingError, match="no-such"):
        raw.read_manifest("no-such", "0001")


def test_process_cycle_from_a_manifest_fails_in_one_line_before_running(
    tmp_path: Path, small_patient: GeneratedPatient
) -> None:
    base = ["process-cycle", "--spool", str(tmp_path / "not-here"), "--sites"]
    base += [str(small_patient.sites_path), "--cycle-id", "9ed9"]
    runner = CliRunner()
    for manifest, expected in (
        ("s3://raw/site-a/instances/x.dcm", "expected <raw store>/cycles/"),
        (f"{tmp_path}/raw/cycles/9ed9/df55.json", "found no such object"),
    ):
        result = runner.invoke(app, [*base, "--manifest", manifest])
        assert result.exit_code == EXIT_INPUT_ERROR, result.output
        assert expected in result.output
        assert "Traceback" not in result.output
