"""How long a legitimate sender waits while slow and idle peers hold the receiver (issue 18).

Run: ``.venv/bin/python -m benchmarks.bench_receiver_admission [--trickle-s 5] [--limit-s 120]``;
against another checkout's code (e.g. before the change):
``PYTHONPATH=/path/to/checkout .venv/bin/python benchmarks/bench_receiver_admission.py``.

The adversarial test's scenario, with the receiver's default limits: 10 associations from one
site (``MILAN_SPECT``) each open a P-DATA-TF announcing 1,000 bytes (its PDV header complete,
a command fragment) and send one more byte every
``--trickle-s`` seconds; 150 TCP connections are opened and never associate. Then, like a PACS
retrying once a second, (1) a sender from another site (``ROME_SPECT``) and (2) the trickling
site itself try a C-ECHO association until one is accepted; the seconds each waited (from the
storm being in place) are printed, ``> limit`` when still refused after ``--limit-s``. Also
printed: the process's threads and open descriptors at the height of the storm.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from concordose.ingest.receiver import StorageReceiver
from concordose.spool.store import Spool
from tests.integration.peers import echo_accepted
from tests.raw_association import associate_rq_bytes

SITES = {"MILAN_SPECT": "milan", "ROME_SPECT": "rome"}


def _associated_socket(port: int, calling_ae: str) -> socket.socket | None:
    """A raw association (C-ECHO context), or ``None`` when it is not accepted."""
    request = associate_rq_bytes(calling_ae, [(1, Verification, None)])
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(request)
    header = b""
    while len(header) < 6:
        part = connection.recv(6 - len(header))
        if not part:
            connection.close()
            return None
        header += part
    if header[0] != 0x02:
        connection.close()
        return None
    length = struct.unpack(">I", header[2:])[0]
    while length:
        length -= len(connection.recv(length))
    return connection


def _wait_s(port: int, calling_ae: str, since: float, limit_s: float) -> float | None:
    """Seconds from ``since`` until an association from ``calling_ae`` is accepted, retrying
    once a second (a sender's retry pace); ``None`` after ``limit_s``."""
    while time.monotonic() - since < limit_s:
        if echo_accepted(port, calling_ae):
            return time.monotonic() - since
        time.sleep(1.0)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trickle-s", type=float, default=5.0)
    parser.add_argument("--limit-s", type=float, default=120.0)
    args = parser.parse_args()
    new_code = "admission" in inspect.signature(StorageReceiver).parameters
    with tempfile.TemporaryDirectory() as folder:
        receiver = StorageReceiver(Spool(Path(folder) / "spool"), port=0, site_by_ae_title=SITES)
        receiver.start()
        try:
            port = receiver.port
            trickling = [
                s for s in (_associated_socket(port, "MILAN_SPECT") for _ in range(10)) if s
            ]
            stop = threading.Event()

            def trickle() -> None:
                # A PDU of 1,000 bytes: one PDV, a command fragment (not the last) of 994.
                opening = struct.pack(">BxI", 0x04, 1000) + struct.pack(">IBB", 996, 1, 0x01)
                for connection in trickling:
                    connection.sendall(opening)
                while not stop.wait(args.trickle_s):
                    for connection in trickling:
                        with contextlib.suppress(OSError):  # aborted by the receiver
                            connection.sendall(b"\x00")

            sender = threading.Thread(target=trickle, daemon=True)
            sender.start()
            idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(150)]
            time.sleep(1.0)  # let the receiver take the connections in before counting
            threads, descriptors = threading.active_count(), len(os.listdir("/proc/self/fd"))
            storm_at = time.monotonic()
            other = _wait_s(port, "ROME_SPECT", storm_at, args.limit_s)
            own = _wait_s(port, "MILAN_SPECT", storm_at, args.limit_s)
            stop.set()
            for connection in [*idle, *trickling]:
                connection.close()
        finally:
            receiver.stop()

    def shown(value: float | None) -> str:
        return f"> {args.limit_s:.0f} s" if value is None else f"{value:.2f} s"

    print(
        f"code: {'with' if new_code else 'without'} admission control; trickle 1 byte / "
        f"{args.trickle_s:g} s; {len(trickling)} trickling associations admitted\n"
        f"threads {threads}, open descriptors {descriptors} (this process: both ends) at the "
        "height of the storm\n"
        f"other site's sender accepted after {shown(other)}\n"
        f"trickling site's own new association accepted after {shown(own)}"
    )


if __name__ == "__main__":
    main()
