"""A small real volume for disk-full tests: a tmpfs mounted for one test (the test command runs
as root), and a filler file that leaves an exact amount of it free."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PAGE_BYTES = 4096


@contextmanager
def mounted_tmpfs(mount_point: Path, size_mb: int) -> Iterator[Path]:
    """Mount a ``size_mb`` MB tmpfs on ``mount_point`` for the block; skip the test, naming
    why, where mounting is impossible (not root, or no permission in this container)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the test command runs the suite as root)")
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def free_bytes(path: Path) -> int:
    """Free bytes on the volume of ``path``."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(volume: Path, leave_bytes: int) -> Path:
    """Write a filler file so that ``leave_bytes`` (whole pages) stay free on ``volume``."""
    filler = volume / "filler"
    leave = -(-leave_bytes // PAGE_BYTES) * PAGE_BYTES
    size = free_bytes(volume) - leave
    assert size > 0, f"only {free_bytes(volume)} bytes free, cannot leave {leave}"
    with open(filler, "wb") as handle:
        handle.write(bytes(size))
    assert free_bytes(volume) == leave, (free_bytes(volume), leave)
    return filler
