"""Starting and awaiting real peers (dcmtk, Orthanc, Prefect, our CLI) in tests: free ports,
polling, sending with dcmtk ``storescu``, a C-ECHO association, stopping subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(
    condition: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    """Poll ``condition`` every ``interval_s`` until true; fail naming ``what`` after
    ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def port_open(port: int) -> bool:
    """True when something accepts TCP connections on loopback ``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def storescu(
    port: int, calling_ae: str, files: Sequence[Path], *, called_ae: str = "CONCORDOSE"
) -> subprocess.CompletedProcess[str]:
    """Send ``files`` with dcmtk ``storescu`` in one association to loopback ``port``."""
    executable = shutil.which("storescu")
    assert executable is not None, "dcmtk storescu is not installed"
    command = [executable, "-aet", calling_ae, "-aec", called_ae, "--required"]
    command += ["127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def stop_process(
    process: subprocess.Popen[bytes], *, timeout_s: float = 30.0, group: bool = False
) -> int:
    """SIGTERM (as systemd stops a service), then SIGKILL after ``timeout_s``; never leaves a
    hung process behind.

    Args:
        process: a process this test started.
        group: signal its whole process group (it was started with ``start_new_session``), so
            children it spawned (e.g. a Prefect worker's flow runs) go too.

    Returns:
        Its exit status (negative: the signal that ended it, -9 when it had to be killed).
    """

    def send(sig: signal.Signals) -> None:
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)

    if process.poll() is not None:
        return process.returncode
    send(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        return process.wait(timeout=timeout_s)


def echo_accepted(port: int, calling_ae: str, called_ae: str = "CONCORDOSE") -> bool:
    """One association (C-ECHO) from ``calling_ae`` to a receiver on loopback: True when it is
    accepted and the echo answered success."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        return False
    try:
        return bool(assoc.send_c_echo().Status == 0x0000)
    finally:
        assoc.release()
