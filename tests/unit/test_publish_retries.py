"""The store retries each request on its own (tenacity): transient failures only, bounded.

No test sleeps: the policy's ``sleep`` is a recorder, so the waits are checked, not spent.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

from concordose.errors import ConcordoseError
from concordose.results.catalogue import read_current
from concordose.results.object_store import (
    ObjectStore,
    RetryPolicy,
    StoreAccessDeniedError,
    StoreUnavailableError,
    open_object_store,
)
from concordose.results.publish import publish_tables
from concordose.settings import Settings
from tests.results_rows import provenance, run_tables

UNAVAILABLE = "AWS Error [code 503]: Service Unavailable (SECRET-LOOKALIKE)"
DENIED = "AWS Error ACCESS_DENIED during PutObject operation: Access Denied"
NOT_FOUND = "AWS Error [code 404]: NoSuchKey"


class FlakyRequest:
    """A store request that fails ``failures`` times with ``error``, then answers ``"ok"``."""

    def __init__(self, failures: int, error: str = UNAVAILABLE) -> None:
        self.failures = failures
        self.error = error
        self.attempts = 0

    def __call__(self) -> str:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise OSError(self.error)
        return "ok"


def _store(policy: RetryPolicy, filesystem: pafs.FileSystem | None = None) -> ObjectStore:
    return ObjectStore(
        filesystem or pafs.LocalFileSystem(),
        "results/consortium",
        "s3://results/consortium",
        policy,
        endpoint="http://127.0.0.1:9000",
    )


@pytest.mark.parametrize("failures", [0, 1, 2, 3])
def test_transient_failures_are_retried_until_the_request_succeeds(failures: int) -> None:
    waits: list[float] = []
    store = _store(RetryPolicy(attempts=4, backoff_s=0.5, sleep=waits.append))
    request = FlakyRequest(failures)
    assert store.call("write x", request) == "ok"
    assert request.attempts == failures + 1
    assert waits == [0.5, 1.0, 2.0][:failures]


def test_refused_credentials_are_tried_once() -> None:
    waits: list[float] = []
    store = _store(RetryPolicy(attempts=4, sleep=waits.append))
    request = FlakyRequest(10, DENIED)
    with pytest.raises(StoreAccessDeniedError, match="refused the credentials while trying"):
        store.call("write x", request)
    assert (request.attempts, waits) == (1, [])


def test_other_refusals_are_tried_once() -> None:
    request = FlakyRequest(10, NOT_FOUND)
    with pytest.raises(ConcordoseError, match="refused to read x") as caught:
        _store(RetryPolicy(attempts=4, sleep=lambda _: None)).call("read x", request)
    assert not isinstance(caught.value, StoreUnavailableError)
    assert request.attempts == 1


@pytest.mark.parametrize("attempts", [1, 3, 6])
def test_attempts_never_exceed_the_setting_and_waits_are_capped(attempts: int) -> None:
    waits: list[float] = []
    policy = RetryPolicy(attempts=attempts, backoff_s=1.0, max_backoff_s=4.0, sleep=waits.append)
    request = FlakyRequest(100)
    with pytest.raises(StoreUnavailableError, match=rf"unreachable.*after {attempts} attempts"):
        _store(policy).call("write x", request)
    assert request.attempts == attempts
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0][: attempts - 1]


def test_settings_set_the_policy(tmp_path: Path) -> None:
    settings = Settings(s3_max_attempts=7, s3_backoff_s=0.25)
    store = open_object_store(str(tmp_path / "out"), settings)
    assert (store.retry.attempts, store.retry.backoff_s) == (7, 0.25)


def test_each_retry_logs_one_line_without_traceback_or_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _store(RetryPolicy(attempts=3, backoff_s=0.5, sleep=lambda _: None))
    with caplog.at_level(logging.DEBUG, logger="concordose.results.object_store"):
        assert store.call("write x", FlakyRequest(2)) == "ok"
    assert [r.getMessage() for r in caplog.records] == [
        "object store s3://results/consortium (endpoint http://127.0.0.1:9000): write x failed "
        f"(attempt {n}/3), retrying in {wait} s"
        for n, wait in ((1, "0.5"), (2, "1.0"))
    ]
    assert all(r.exc_info is None and r.levelno == logging.WARNING for r in caplog.records)
    assert "SECRET" not in caplog.text


class FlakyS3(pafs.FileSystemHandler):  # type: ignore[misc]  # pyarrow is untyped
    """A local folder behind an S3-like filesystem whose every request fails ``failures`` times
    with a 503 before it is served; counts the attempts per (operation, path)."""

    def __init__(self, root: Path, failures: int) -> None:
        self.local = pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem())
        self.failures = failures
        self.attempts: Counter[tuple[str, str]] = Counter()

    def _request(self, operation: str, path: str) -> None:
        self.attempts[(operation, path)] += 1
        if self.attempts[(operation, path)] <= self.failures:
            raise OSError(UNAVAILABLE)

    def _served(self, operation: str, path: str, serve: Callable[[], Any]) -> Any:
        self._request(operation, path)
        return serve()

    def get_type_name(self) -> str:
        return "flaky-s3"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: list[str]) -> Any:
        return self._served("info", ",".join(paths), lambda: self.local.get_file_info(paths))

    def get_file_info_selector(self, selector: pafs.FileSelector) -> Any:
        return self._served("list", selector.base_dir, lambda: self.local.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        self._served("mkdir", path, lambda: self.local.create_dir(path, recursive=recursive))

    def delete_file(self, path: str) -> None:
        self._served("delete", path, lambda: self.local.delete_file(path))

    def open_input_stream(self, path: str) -> Any:
        return self._served("get", path, lambda: self.local.open_input_stream(path))

    def open_input_file(self, path: str) -> Any:
        return self._served("get", path, lambda: self.local.open_input_file(path))

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        def put() -> Any:
            self.local.create_dir(path.rsplit("/", 1)[0], recursive=True)  # S3 has no folders
            return self.local.open_output_stream(path)

        return self._served("put", path, put)

    def _unused(self, *_: Any) -> None:
        raise NotImplementedError

    delete_dir = delete_dir_contents = delete_root_dir_contents = _unused
    move = copy_file = open_append_stream = _unused


def test_every_request_of_a_publication_is_retried_by_the_store(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    flaky = FlakyS3(tmp_path, failures=2)
    waits: list[float] = []
    store = _store(
        RetryPolicy(attempts=3, backoff_s=0.5, sleep=waits.append), pafs.PyFileSystem(flaky)
    )
    publish_tables(store, run_tables("run-1", {"c1": 40.0}), provenance("run-1"))

    operations = {operation for operation, _ in flaky.attempts}
    assert {"info", "list", "put"} <= operations
    assert set(flaky.attempts.values()) == {3}, "each request: two 503s, then served"
    assert waits == [0.5, 1.0] * len(flaky.attempts)
    flaky.failures = 0
    rows = read_current(store, "absorbed_dose").to_pylist()
    assert [(r["cycle_key"], r["mean_dose_gy"]) for r in rows] == [("c1", 40.0)]


def test_a_store_that_stays_down_gets_at_most_max_attempts_per_request(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    flaky = FlakyS3(tmp_path, failures=100)
    store = _store(RetryPolicy(attempts=4, sleep=lambda _: None), pafs.PyFileSystem(flaky))
    with pytest.raises(StoreUnavailableError, match="after 4 attempts"):
        publish_tables(store, run_tables("run-1", {"c1": 40.0}), provenance("run-1"))
    assert list(flaky.attempts.values()) == [4], "the first request gives up; nothing follows"
