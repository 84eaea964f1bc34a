"""A content-addressed cache of expensive, pure intermediate results (CT registrations, voxel
fits), kept beside the spool so that re-running a cycle — the incremental run after a new time
point, or the sweep's retry after a failure — does not redo them.

An entry's key is a hash of everything the result depends on (the input files' identities or
the input arrays' bytes, the method's settings and a version), so a changed input is a miss,
never a stale hit. Entries are written atomically (temporary file, then rename); a corrupt or
unreadable entry is a miss. Values are pickled: the cache lives in the platform's own spool
folder and is never read from elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

LOG = logging.getLogger(__name__)

ValueT = TypeVar("ValueT")


def file_identity(paths: Iterable[Path]) -> str:
    """The identity of a set of files: sorted (path, size, modification time in ns).

    Spool files are written once under their UIDs; a rewritten file changes its size or time.
    """
    parts = []
    for path in sorted(paths):
        stat = path.stat()
        parts.append(f"{path}|{stat.st_size}|{stat.st_mtime_ns}")
    return "\n".join(parts)


def array_digest(*arrays: npt.ArrayLike) -> str:
    """BLAKE2b digest of arrays' dtype, shape and bytes (C order)."""
    digest = hashlib.blake2b(digest_size=20)
    for array in arrays:
        values = np.ascontiguousarray(array)
        digest.update(f"{values.dtype.str}{values.shape}".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


class ResultCache:
    """Pickled results under ``folder/<kind>/<key>.pickle``.

    Attributes:
        hits, misses: lookups served from the cache / computed, since construction.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(*parts: str) -> str:
        """SHA-256 of the parts, joined unambiguously."""
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], ValueT]) -> ValueT:
        """The cached value of ``kind``/``key``, or ``compute()`` stored under it."""
        path = self.folder / kind / f"{key}.pickle"
        try:
            with path.open("rb") as handle:
                value: ValueT = pickle.load(handle)
        except FileNotFoundError:
            pass
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
            LOG.warning("cache entry %s/%s unreadable (%s); recomputing", kind, key, exc)
        else:
            with self._lock:
                self.hits += 1
            return value
        value = compute()
        with self._lock:
            self.misses += 1
        temp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=path.parent, suffix=".part")
            with os.fdopen(fd, "wb") as handle:
                pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temp, path)
            temp = None
        except OSError as exc:  # a full disk must not fail the science: it only loses the cache
            LOG.warning("could not cache %s/%s (%s)", kind, key, exc)
        finally:
            if temp is not None:
                Path(temp).unlink(missing_ok=True)
        return value
