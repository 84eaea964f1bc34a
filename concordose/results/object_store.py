"""Where results go: a local folder (embedded default) or any S3-protocol server.

Both are reached through :mod:`pyarrow.fs`, so the writer has one code path. S3 settings come
from :class:`~concordose.settings.Settings` (endpoint, credentials, region) and work unchanged
with MinIO, Ceph RGW or AWS.

Failures are classified once, here, and every store request goes through
:meth:`ObjectStore.call`: network errors and server errors (5xx) are retried with exponential
backoff by :mod:`tenacity` (:class:`RetryPolicy`), then raised as :class:`StoreUnavailableError`;
refused credentials raise :class:`StoreAccessDeniedError` at once; a missing bucket raises
:class:`BucketMissingError` (or is created when ``CONCORDOSE_S3_CREATE_BUCKET`` is set).
This is the only retry layer: the S3 SDK tries each request once, and callers (the publish task)
do not retry a whole publication. Messages and log lines name the store's URI and endpoint,
never a credential.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import pyarrow.fs as pafs
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from concordose.errors import ConcordoseError, ConfigurationError
from concordose.settings import DEFAULT_DATA_DOCS_KEEP_RUNS, Settings

logger = logging.getLogger(__name__)
ResultT = TypeVar("ResultT")

# Substrings of pyarrow/AWS SDK error messages, by class of failure.
_DENIED_MARKERS = (
    "ACCESS_DENIED",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "INVALID_ACCESS_KEY_ID",
    "SIGNATURE_DOES_NOT_MATCH",
)
_TRANSIENT_MARKERS = (
    "NETWORK_CONNECTION",
    "Couldn't connect",
    "curlCode: 7",
    "Connection refused",
    "SERVICE_UNAVAILABLE",
    "INTERNAL_FAILURE",
    "SLOW_DOWN",
    "REQUEST_TIMEOUT",
    "timed out",
    "Timeout",
    "[code 5",
)


class StoreUnavailableError(ConcordoseError):
    """The object store could not be reached (after retries)."""


class StoreAccessDeniedError(ConcordoseError):
    """The object store refused the credentials."""


class BucketMissingError(ConcordoseError):
    """The output bucket does not exist and creating it was not asked for."""


def _is_denied(exc: OSError) -> bool:
    return any(marker in str(exc) for marker in _DENIED_MARKERS)


def _is_transient(exc: OSError) -> bool:
    return any(marker in str(exc) for marker in _TRANSIENT_MARKERS)


def _worth_retrying(exc: BaseException) -> bool:
    """A network error or a server error (5xx), and not a refusal of the credentials."""
    return isinstance(exc, OSError) and not _is_denied(exc) and _is_transient(exc)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one store request: ``attempts`` in all, the first included; the waits between
    them are ``backoff_s``, then doubled each time (``backoff_s · 2^k``), at most ``max_backoff_s``.

    Attributes:
        attempts: attempts in all (``CONCORDOSE_S3_MAX_ATTEMPTS``).
        backoff_s: first wait (``CONCORDOSE_S3_BACKOFF_S``).
        max_backoff_s: cap of any one wait.
        sleep: how to wait (tests pass a recorder instead of sleeping).
    """

    attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    def retrying(self, before_sleep: Callable[[RetryCallState], None]) -> Retrying:
        """A tenacity controller for one request; ``before_sleep`` is told of each retry.

        A failure that is not worth retrying, or the last one, is raised as it was.
        """
        return Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
            retry=retry_if_exception(_worth_retrying),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )


@dataclass(frozen=True)
class ObjectStore:
    """A filesystem and the base path inside it under which tables are published.

    Attributes:
        filesystem: pyarrow filesystem (local or S3).
        base: base path inside ``filesystem`` (``bucket/prefix`` for S3; absolute for local).
        uri: the location as a user would write it, for messages.
        retry: retries of transient failures.
        endpoint: the S3 endpoint, for messages (``None`` for local stores and AWS defaults).
        create_bucket: create a missing bucket instead of failing.
        data_docs_keep_runs: how many runs' Data Docs publication keeps
            (:mod:`concordose.results.data_docs`).
    """

    filesystem: pafs.FileSystem
    base: str
    uri: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    endpoint: str | None = None
    create_bucket: bool = False
    data_docs_keep_runs: int = DEFAULT_DATA_DOCS_KEEP_RUNS

    @property
    def is_local(self) -> bool:
        """True for a local folder."""
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        """Join ``parts`` under the base path with ``/``."""
        return "/".join([self.base.rstrip("/"), *parts])

    def relative(self, path: str) -> str:
        """``path`` relative to the base (the object key without bucket and prefix)."""
        prefix = self.base.rstrip("/") + "/"
        return path[len(prefix) :] if path.startswith(prefix) else path

    def ensure_parent(self, path: str) -> None:
        """Create the folder of ``path`` on a local store; a no-op on S3, which has no folders
        (pyarrow would otherwise leave empty "directory marker" objects behind)."""
        if self.is_local:
            self.filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)

    def _where(self) -> str:
        return f"{self.uri}" + (f" (endpoint {self.endpoint})" if self.endpoint else "")

    def call(self, what: str, action: Callable[[], ResultT]) -> ResultT:
        """Run ``action`` (one store request), retrying transient failures with backoff.

        Raises:
            StoreAccessDeniedError: the server refused the credentials (not retried).
            StoreUnavailableError: still failing after ``retry.attempts`` attempts.
            ConcordoseError: any other refusal, not retried (the message says what and where).
        """
        try:
            return self.retry.retrying(partial(self._log_retry, what))(action)
        except OSError as exc:
            if _is_denied(exc):
                raise StoreAccessDeniedError(
                    f"object store {self._where()} refused the credentials while trying to "
                    f"{what}; check CONCORDOSE_S3_ACCESS_KEY / CONCORDOSE_S3_SECRET_KEY"
                ) from exc
            if _is_transient(exc):
                raise StoreUnavailableError(
                    f"object store {self._where()} unreachable: could not {what} after "
                    f"{self.retry.attempts} attempts ({exc}); nothing of this run was published"
                ) from exc
            raise ConcordoseError(f"object store {self._where()} refused to {what}: {exc}") from exc

    def _log_retry(self, what: str, state: RetryCallState) -> None:
        """One line per retry, without the traceback (the last failure is raised in full)."""
        logger.warning(
            "object store %s: %s failed (attempt %d/%d), retrying in %.1f s",
            self._where(),
            what,
            state.attempt_number,
            self.retry.attempts,
            state.upcoming_sleep,
        )

    def check_ready(self) -> None:
        """Check that the store can be written to: for S3, that its bucket exists.

        Creates the bucket when ``create_bucket`` is set.

        Raises:
            BucketMissingError, StoreAccessDeniedError, StoreUnavailableError.
        """
        if self.is_local:
            return
        bucket = self.base.split("/", 1)[0]
        info = self.call(
            f"look up bucket {bucket!r}", lambda: self.filesystem.get_file_info(bucket)
        )
        if info.type != pafs.FileType.NotFound:
            return
        if not self.create_bucket:
            raise BucketMissingError(
                f"bucket {bucket!r} does not exist on {self._where()}; create it (e.g. "
                "`mc mb`) or set CONCORDOSE_S3_CREATE_BUCKET=true"
            )
        self.call(f"create bucket {bucket!r}", lambda: self.filesystem.create_dir(bucket))

    def list_files(self, folder: str) -> list[str]:
        """Paths of the files directly in ``folder`` (empty if it does not exist), sorted."""
        selector = pafs.FileSelector(folder, allow_not_found=True)
        infos = self.call(f"list {folder}", lambda: self.filesystem.get_file_info(selector))
        return sorted(info.path for info in infos if info.type == pafs.FileType.File)

    def read_bytes(self, path: str) -> bytes:
        """The content of the object at ``path``."""

        def read() -> bytes:
            with self.filesystem.open_input_stream(path) as stream:
                data: bytes = stream.read()
                return data

        return self.call(f"read {path}", read)

    def write_bytes_atomically(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` so that readers see either nothing or all of it.

        An S3 PUT is atomic by protocol; on a local folder the bytes go to a temporary name in
        the same folder first and are renamed into place (atomic on POSIX), then fsynced.
        """
        self.ensure_parent(path)
        if not self.is_local:

            def put() -> None:
                with self.filesystem.open_output_stream(path) as stream:
                    stream.write(data)

            self.call(f"write {path}", put)
            return
        target = Path(path)
        temporary = target.with_name(f".{target.name}.partial")
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(target)


def open_object_store(uri: str, settings: Settings, *, create: bool = True) -> ObjectStore:
    """Open ``uri``: a folder path, ``file:///abs/path`` or ``s3://bucket[/prefix]``.

    ``create``: make a missing folder (publishing); readers pass False, so that a mistyped path
    is an error rather than a new empty store.

    Raises:
        ConfigurationError: unsupported scheme, an S3 URI without a bucket, or (``create``
            False) a folder that does not exist.
    """
    parsed = urlparse(uri)
    retry = RetryPolicy(attempts=settings.s3_max_attempts, backoff_s=settings.s3_backoff_s)
    if parsed.scheme in ("", "file"):
        folder = Path(parsed.path if parsed.scheme == "file" else uri).expanduser().resolve()
        if not create and not folder.is_dir():
            raise ConfigurationError(
                f"output {uri}: expected a published store (a folder or s3://bucket/prefix), "
                "found no such folder"
            )
        folder.mkdir(parents=True, exist_ok=True)
        return ObjectStore(
            pafs.LocalFileSystem(),
            folder.as_posix(),
            folder.as_posix(),
            retry,
            data_docs_keep_runs=settings.data_docs_keep_runs,
        )
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigurationError(f"output URI {uri!r} has no bucket: use s3://bucket/prefix")
        options: dict[str, object] = {
            "region": settings.s3_region,
            "connect_timeout": settings.s3_connect_timeout_s,
            "request_timeout": settings.s3_request_timeout_s,
            # ObjectStore.call (tenacity) retries, so that the attempts and the backoff are
            # visible and bounded; the SDK itself tries once.
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=1),
            "allow_bucket_creation": settings.s3_create_bucket,
        }
        if settings.s3_endpoint:
            endpoint = urlparse(settings.s3_endpoint)
            if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
                raise ConfigurationError(
                    f"CONCORDOSE_S3_ENDPOINT {settings.s3_endpoint!r} must look like "
                    "http://host:port or https://host:port"
                )
            options["endpoint_override"] = endpoint.netloc
            options["scheme"] = endpoint.scheme
        if settings.s3_access_key and settings.s3_secret_key:
            options["access_key"] = settings.s3_access_key.get_secret_value()
            options["secret_key"] = settings.s3_secret_key.get_secret_value()
        filesystem = pafs.S3FileSystem(**options)
        base = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
        return ObjectStore(
            filesystem,
            base,
            uri,
            retry,
            endpoint=settings.s3_endpoint,
            create_bucket=settings.s3_create_bucket,
            data_docs_keep_runs=settings.data_docs_keep_runs,
        )
    raise ConfigurationError(
        f"unsupported output URI {uri!r}: use a folder path, file:///…, or s3://bucket/prefix"
    )
