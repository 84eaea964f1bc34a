"""A published store copied to the loopback S3 server (moto), for tests of commands that read
from object storage as a deployment's workers do."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from concordose.results.object_store import ObjectStore, open_object_store
from concordose.settings import Settings


def use_s3_server(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, *, create_bucket: bool = True
) -> None:
    """Point the settings at the S3 server ``s3_endpoint`` (throwaway local credentials;
    missing buckets created unless ``create_bucket`` is False)."""
    for name, value in {
        "CONCORDOSE_S3_ENDPOINT": f"http://{s3_endpoint}",
        "CONCORDOSE_S3_ACCESS_KEY": "concordose-test",
        "CONCORDOSE_S3_SECRET_KEY": "concordose-test-secret",  # throwaway, local server only
        "CONCORDOSE_S3_CREATE_BUCKET": "true" if create_bucket else "false",
    }.items():
        monkeypatch.setenv(name, value)


def copy_store_to_s3(
    local: Path, uri: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> ObjectStore:
    """Point the settings at the S3 server ``s3_endpoint`` (:func:`use_s3_server`), copy the
    folder store ``local`` to ``uri`` and return that store."""
    use_s3_server(s3_endpoint, monkeypatch)
    store = open_object_store(uri, Settings())
    store.check_ready()
    pafs.copy_files(
        str(local),
        store.base,
        source_filesystem=pafs.LocalFileSystem(),
        destination_filesystem=store.filesystem,
    )
    return store
