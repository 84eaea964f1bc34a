"""Where results go: a local folder (embedded default) or any S3-protocol server.

Both are reached through :mod:`pyarrow.fs`, so the writer has one code path. S3 settings come
from :class:`~concordose.settings.Settings` (endpoint, credentials, region) and work unchanged
with MinIO, Ceph RGW or AWS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from concordose.errors import ConfigurationError
from concordose.settings import Settings


@dataclass(frozen=True)
class ObjectStore:
    """A filesystem and the base path inside it under which tables are published.

    Attributes:
        filesystem: pyarrow filesystem (local or S3).
        base: base path inside ``filesystem`` (``bucket/prefix`` for S3; absolute for local).
        uri: the location as a user would write it, for messages.
    """

    filesystem: pafs.FileSystem
    base: str
    uri: str

    def path(self, *parts: str) -> str:
        """Join ``parts`` under the base path with ``/``."""
        return "/".join([self.base.rstrip("/"), *parts])

    def ensure_parent(self, path: str) -> None:
        """Create the folder of ``path`` on a local store; a no-op on S3, which has no folders
        (pyarrow would otherwise leave empty "directory marker" objects behind)."""
        if isinstance(self.filesystem, pafs.LocalFileSystem):
            self.filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)


def open_object_store(uri: str, settings: Settings) -> ObjectStore:
    """Open ``uri``: a folder path, ``file:///abs/path`` or ``s3://bucket[/prefix]``.

    Raises:
        ConfigurationError: unsupported scheme or an S3 URI without a bucket.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        folder = Path(parsed.path if parsed.scheme == "file" else uri).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return ObjectStore(pafs.LocalFileSystem(), folder.as_posix(), folder.as_posix())
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigurationError(f"output URI {uri!r} has no bucket: use s3://bucket/prefix")
        options: dict[str, object] = {"region": settings.s3_region}
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
        return ObjectStore(filesystem, base, uri)
    raise ConfigurationError(
        f"unsupported output URI {uri!r}: use a folder path, file:///…, or s3://bucket/prefix"
    )
