"""The raw store: DICOM payloads of ready cycles, content-addressed, for workers without the spool.

A thin layer over :class:`~concordose.results.object_store.ObjectStore` (the same S3 settings,
retries and failure classes as publication): it puts and gets instances by SHA-256, and reads and
writes cycle manifests and recorded outcomes (layout: :mod:`concordose.payloads.manifest`).
Instances stream in and out in chunks of :data:`CHUNK_BYTES`, never whole in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from concordose.errors import ConcordoseError
from concordose.payloads.manifest import (
    CYCLES_FOLDER,
    OUTCOMES_FOLDER,
    CycleManifest,
    ManifestInstance,
    RecordedOutcome,
    instance_key,
    manifest_key,
    outcome_key,
)
from concordose.results.object_store import ObjectStore, open_object_store
from concordose.settings import Settings

CHUNK_BYTES = 1 << 20
"""Bytes read or written per step when an instance streams to or from the store (1 MiB)."""


class RawObjectMissingError(ConcordoseError):
    """An object a manifest names is not in the raw store."""


class PayloadHashMismatchError(ConcordoseError):
    """An instance's bytes do not hash to the SHA-256 that names them."""


class _MissingObjectError(Exception):
    """Raised inside a store request for a missing object (not an OSError, so not retried)."""


def sha256_of_file(path: Path) -> str:
    """SHA-256 (lowercase hex) of a file's bytes, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True)
class PutResult:
    """One instance offered to the store.

    Attributes:
        sha256: its content hash (its key).
        size_bytes: its size.
        uploaded: False when the store already held it (nothing was sent).
    """

    sha256: str
    size_bytes: int
    uploaded: bool


class RawStore:
    """The raw payload store at ``store`` (see the module docstring)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @classmethod
    def open(cls, uri: str, settings: Settings) -> RawStore:
        """Open the raw store at ``uri`` (a folder or ``s3://bucket/prefix``) and check that it
        can be used (for S3: its bucket exists, or is created with
        ``CONCORDOSE_S3_CREATE_BUCKET``).

        Raises:
            ConfigurationError: an unsupported URI.
            BucketMissingError, StoreAccessDeniedError, StoreUnavailableError.
        """
        raw = cls(open_object_store(uri, settings))
        raw.store.check_ready()
        return raw

    @property
    def uri(self) -> str:
        """The store's location as a user writes it."""
        return self.store.uri.rstrip("/")

    def manifest_uri(self, cycle_id: str, content_revision: str) -> str:
        """The URI a worker is given for a cycle manifest."""
        return f"{self.uri}/{manifest_key(cycle_id, content_revision)}"

    def _info(self, key: str) -> pafs.FileInfo:
        path = self.store.path(key)
        info: pafs.FileInfo = self.store.call(
            f"look up {key}", lambda: self.store.filesystem.get_file_info(path)
        )
        return info

    def put_instance(self, path: Path) -> PutResult:
        """Store the file at ``path`` under its SHA-256, unless an object of that hash and size
        is already there (idempotent: a second call sends nothing)."""
        sha256 = sha256_of_file(path)
        size = path.stat().st_size
        key = instance_key(sha256)
        info = self._info(key)
        if info.type == pafs.FileType.File and info.size == size:
            return PutResult(sha256, size, uploaded=False)
        target = self.store.path(key)
        self.store.ensure_parent(target)

        def put() -> None:
            with path.open("rb") as source, self.store.filesystem.open_output_stream(target) as out:
                while chunk := source.read(CHUNK_BYTES):
                    out.write(chunk)

        self.store.call(f"upload {key}", put)
        return PutResult(sha256, size, uploaded=True)

    def fetch_instance(self, entry: ManifestInstance, target: Path) -> None:
        """Stream the instance ``entry`` names into ``target``, checking its SHA-256 (a partial
        or wrong file is removed).

        Raises:
            RawObjectMissingError: no such object.
            PayloadHashMismatchError: its bytes hash to something else.
        """
        key = instance_key(entry.sha256)
        source = self.store.path(key)
        partial = target.with_name(f".{target.name}.partial")

        def get() -> str:
            digest = hashlib.sha256()
            try:
                stream = self.store.filesystem.open_input_stream(source)
            except FileNotFoundError as exc:
                raise _MissingObjectError from exc
            with stream, partial.open("wb") as out:
                while chunk := stream.read(CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
            return digest.hexdigest()

        try:
            found = self.store.call(f"download {key}", get)
        except _MissingObjectError:
            partial.unlink(missing_ok=True)
            raise RawObjectMissingError(
                f"raw store {self.uri}: expected instance {key} (named by the cycle's manifest), "
                "found no such object; was it pruned (`concordose raw prune`) or never uploaded?"
            ) from None
        if found != entry.sha256:
            partial.unlink(missing_ok=True)
            raise PayloadHashMismatchError(
                f"raw store {self.uri}: object {key} should hash to {entry.sha256}, its bytes "
                f"hash to {found}; the object is corrupt: delete it and upload the cycle again "
                "(`concordose raw upload --spool … --cycle-id …`)"
            )
        partial.replace(target)

    def read_manifest(self, cycle_id: str, content_revision: str) -> CycleManifest:
        """The manifest of a cycle revision.

        Raises:
            RawObjectMissingError: none was written.
            ManifestError: it is not a manifest this code reads.
        """
        key = manifest_key(cycle_id, content_revision)
        data = self._read(key, "cycle manifest")
        manifest = CycleManifest.parse(data, f"{self.uri}/{key}")
        if (manifest.cycle_id, manifest.content_revision) != (cycle_id, content_revision):
            raise RawObjectMissingError(
                f"raw store {self.uri}: manifest {key} holds cycle {manifest.cycle_id} revision "
                f"{manifest.content_revision}, expected the ones its key names"
            )
        return manifest

    def _read(self, key: str, what: str) -> bytes:
        path = self.store.path(key)

        def read() -> bytes:
            try:
                stream = self.store.filesystem.open_input_stream(path)
            except FileNotFoundError as exc:
                raise _MissingObjectError from exc
            with stream:
                data: bytes = stream.read()
                return data

        try:
            return self.store.call(f"read {key}", read)
        except _MissingObjectError:
            raise RawObjectMissingError(
                f"raw store {self.uri}: expected the {what} {key}, found no such object"
            ) from None

    def has_manifest(self, cycle_id: str, content_revision: str) -> bool:
        """True when the manifest of that cycle revision is in the store."""
        info = self._info(manifest_key(cycle_id, content_revision))
        return bool(info.type == pafs.FileType.File)

    def write_manifest(self, manifest: CycleManifest) -> str:
        """Write a cycle manifest (atomically); its URI."""
        key = manifest_key(manifest.cycle_id, manifest.content_revision)
        self.store.write_bytes_atomically(
            self.store.path(key), manifest.model_dump_json(indent=1).encode()
        )
        return f"{self.uri}/{key}"

    def write_outcome(self, outcome: RecordedOutcome) -> None:
        """Record what a worker's run did for a cycle revision."""
        key = outcome_key(outcome.cycle_id, outcome.content_revision)
        self.store.write_bytes_atomically(
            self.store.path(key), outcome.model_dump_json(indent=1).encode()
        )

    def _keys_under(self, folder: str) -> Iterator[str]:
        selector = pafs.FileSelector(self.store.path(folder), allow_not_found=True, recursive=True)
        infos = self.store.call(
            f"list {folder}", lambda: self.store.filesystem.get_file_info(selector)
        )
        for info in sorted(infos, key=lambda i: i.path):
            if info.type == pafs.FileType.File and info.path.endswith(".json"):
                yield self.store.relative(info.path)

    def manifests(self, cycle_id: str | None = None) -> list[CycleManifest]:
        """Every manifest in the store (or of one cycle), oldest first."""
        folder = CYCLES_FOLDER if cycle_id is None else f"{CYCLES_FOLDER}/{cycle_id}"
        found = [
            CycleManifest.parse(self._read(key, "cycle manifest"), f"{self.uri}/{key}")
            for key in self._keys_under(folder)
        ]
        return sorted(found, key=lambda m: (m.created_at, m.cycle_id))

    def outcomes(self) -> list[RecordedOutcome]:
        """Every outcome workers recorded."""
        return [
            RecordedOutcome.model_validate_json(self._read(key, "recorded outcome"))
            for key in self._keys_under(OUTCOMES_FOLDER)
        ]

    def delete(self, key: str) -> bool:
        """Delete the object at ``key`` (relative to the base); False if it was not there."""
        path = self.store.path(key)

        def remove() -> bool:
            try:
                self.store.filesystem.delete_file(path)
            except FileNotFoundError:
                return False
            return True

        return self.store.call(f"delete {key}", remove)
