"""``syncfs`` through ctypes: available on this Linux, and its errors are ``OSError``s."""

from __future__ import annotations

import ctypes
import errno
import sys
from pathlib import Path

import pytest

from concordose.spool import file_system_sync
from concordose.spool.file_system_sync import sync_file_system


@pytest.mark.skipif(sys.platform != "linux", reason="syncfs(2) is Linux's")
def test_syncfs_is_found_and_flushes(tmp_path: Path) -> None:
    (tmp_path / "written").write_bytes(b"x" * 4096)
    assert sync_file_system(tmp_path) is True


def test_a_missing_syncfs_asks_the_caller_to_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_system_sync, "_SYNCFS", None)
    assert sync_file_system(tmp_path) is False


def test_a_refused_flush_is_an_oserror_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="No such file"):
        sync_file_system(tmp_path / "missing")


def _failing_with(code: int) -> object:
    def syncfs(fd: int) -> int:
        ctypes.set_errno(code)
        return -1

    return syncfs


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP])
def test_a_kernel_or_file_system_without_syncfs_asks_the_caller_to_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    monkeypatch.setattr(file_system_sync, "_SYNCFS", _failing_with(code))
    assert sync_file_system(tmp_path) is False


def test_a_write_back_error_is_raised_not_taken_for_a_missing_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_system_sync, "_SYNCFS", _failing_with(errno.EIO))
    with pytest.raises(OSError, match=r"syncfs of .*Input/output error"):
        sync_file_system(tmp_path)
