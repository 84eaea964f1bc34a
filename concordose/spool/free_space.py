"""Free space on the spool's volume: checked before an instance is acknowledged, and before a
new spool's journal is allocated.

An acknowledged instance must still be fileable: after the acknowledgement its bytes are
copied from the journal into ``instances/`` and its index row is written (:mod:`.store`). So
the receiver answers 0xA700 (Refused: Out of Resources, PS3.4 B.2.3) while the volume's free space,
less what acknowledged instances still need to be filed (this one included), is below a reserve
(``CONCORDOSE_SPOOL_FREE_RESERVE_MB``): room for the index (SQLite WAL), the quarantine and the
system. A preallocated journal would otherwise keep acknowledging on a full disk.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from concordose.errors import ConcordoseError

DEFAULT_FREE_RESERVE_MB = 100
"""Free space (MB) the receiver keeps beyond what is still to be filed; below it, 0xA700."""

_MB = 1 << 20


def _mb(size_bytes: int) -> str:
    return f"{size_bytes / _MB:.1f}"


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the volume holding ``path``."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


class SpoolFullError(OSError):
    """Too little free space to acknowledge one more instance (``errno`` ENOSPC: the receiver
    answers 0xA700, as for any disk error)."""

    def __init__(self, root: Path, free: int, to_file: int, reserve: int) -> None:
        super().__init__(
            errno.ENOSPC,
            f"spool {root}: {_mb(free)} MB free, {_mb(to_file)} MB still to be filed "
            f"(this instance included), reserve {_mb(reserve)} MB "
            "(CONCORDOSE_SPOOL_FREE_RESERVE_MB); refusing until space is freed",
        )


def check_room(root: Path, *, to_file_bytes: int, reserve_bytes: int) -> None:
    """Raise :class:`SpoolFullError` unless the volume of ``root`` has ``to_file_bytes`` plus
    ``reserve_bytes`` free."""
    free = free_bytes(root)
    if free - to_file_bytes < reserve_bytes:
        raise SpoolFullError(root, free, to_file_bytes, reserve_bytes)


class JournalDoesNotFitError(ConcordoseError):
    """A new spool's journal (plus the reserve) is larger than its volume's free space."""

    def __init__(
        self, root: Path, *, journal_bytes: int, allocate_bytes: int, free: int, reserve: int
    ) -> None:
        super().__init__(
            f"spool {root}: its journal needs {_mb(allocate_bytes)} MB more "
            f"({_mb(journal_bytes)} MB in all, CONCORDOSE_SPOOL_JOURNAL_MB) plus the free-space "
            f"reserve of {_mb(reserve)} MB (CONCORDOSE_SPOOL_FREE_RESERVE_MB), but its volume "
            f"has {_mb(free)} MB free; free space, or set a smaller journal "
            "(CONCORDOSE_SPOOL_JOURNAL_MB=0: no journal, each instance filed before its answer)"
        )


def check_journal_fits(
    root: Path, *, journal_bytes: int, allocate_bytes: int, reserve_bytes: int
) -> None:
    """Raise :class:`JournalDoesNotFitError` unless allocating ``allocate_bytes`` of journal
    on the volume of ``root`` leaves ``reserve_bytes`` free (nothing to allocate: no check, so
    a restart on a full disk works)."""
    if allocate_bytes <= 0:
        return
    free = free_bytes(root)
    if free - allocate_bytes < reserve_bytes:
        raise JournalDoesNotFitError(
            root,
            journal_bytes=journal_bytes,
            allocate_bytes=allocate_bytes,
            free=free,
            reserve=reserve_bytes,
        )
