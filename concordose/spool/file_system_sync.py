"""One flush for a whole batch of filed instances: Linux ``syncfs(2)``.

Filing an instance the journal already holds needs its file and folder entry durable before
the journal record may be overwritten, not before anything else. Per file that is an
``fsync`` of the file (on ext4 a file-system journal commit and a cache flush each) and one of
each folder. ``syncfs`` of the spool's file system makes every write and rename before it
durable at once: one commit and one cache flush for the batch (:meth:`.store.Spool._file`).

Its cost is that of everything dirty on that file system, other programs' writes included:
a spool on its own volume pays only for its own. Where ``syncfs`` is missing (not Linux) or
not supported (``ENOSYS``, ``EINVAL``, ``EOPNOTSUPP``), :func:`sync_file_system` returns
``False`` and the caller fsyncs file by file.

Since Linux 5.8 ``syncfs`` reports write-back errors of the file system (``errno``), as
``fsync`` does for one file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

__all__ = ["sync_file_system"]


def _load_syncfs() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name, use_errno=True).syncfs
    except (OSError, AttributeError):  # no libc by that name, or no syncfs in it
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_SYNCFS = _load_syncfs()
_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})
"""What a kernel, a seccomp filter or a file system answers when it does not do ``syncfs``
(the caller fsyncs file by file); any other error is the flush failing."""


def sync_file_system(path: Path) -> bool:
    """Make every write and rename on ``path``'s file system durable (``syncfs``).

    Returns:
        ``True`` once flushed; ``False`` where ``syncfs`` is not available (the caller must
        fsync each file and folder itself).

    Raises:
        OSError: the flush reported an error (e.g. a failed write-back): nothing written
            before it may be taken as durable.
    """
    if _SYNCFS is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        if _SYNCFS(fd) == 0:
            return True
        code = ctypes.get_errno()
    finally:
        os.close(fd)
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, f"syncfs of {path}: {os.strerror(code)}")
