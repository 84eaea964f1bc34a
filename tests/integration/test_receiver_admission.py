"""Admission control of the storage SCP (issue 18, item 2), over real sockets on loopback.

The scenario of the adversarial test: 10 associations from one site each trickle an unfinished
PDU, 150 connections never associate. A sender from another site must succeed within 15 s, and
the trickling site's own new association within the PDU deadline. Measured on this machine
(``benchmarks/bench_receiver_admission.py``, same scenario with a 1 byte / 5 s trickle and the
default limits; ``benchmarks/README.md``, "Receiver admission control"): before, the other
site's sender was still refused after 120 s (the 10 trickling associations held every slot
and no per-``recv`` timeout ever fired); now it is accepted at once (≈ 0.01 s) and the
trickling site's own association as soon as the PDU deadline aborts the trickles.

Deadlines are set small here so that the tests stay short; trickling is the workload (a
sender thread), never a way to wait for the receiver: the tests poll its observable state.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from concordose.ingest.admission import AdmissionLimits
from concordose.ingest.receiver import StorageReceiver
from concordose.ingest.tls import server_context
from concordose.spool.store import Spool
from tests.integration.peers import echo_accepted, wait_until
from tests.raw_association import associate_rq_bytes, read_exactly

pytestmark = pytest.mark.integration

SITES = {"MILAN_SPECT": "milan", "ROME_SPECT": "rome"}
PDU_DEADLINE_S = 4.0
ASSOCIATE_DEADLINE_S = 3.0
A_ASSOCIATE_AC_TYPE, A_ASSOCIATE_RJ_TYPE, A_ABORT_TYPE = 0x02, 0x03, 0x07


def _associate_rq(calling_ae: str, called_ae: str = "CONCORDOSE") -> bytes:
    """An A-ASSOCIATE-RQ proposing CT storage (explicit VR LE) on context 1."""
    return associate_rq_bytes(
        calling_ae, [(1, CTImageStorage, ExplicitVRLittleEndian)], called_ae=called_ae
    )


class _Peer:
    """A requestor speaking raw PDUs."""

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=30)

    def read_pdu(self) -> tuple[int, bytes]:
        pdu_type, length = struct.unpack(">BxI", read_exactly(self.socket, 6))
        return pdu_type, read_exactly(self.socket, length)

    def associate(self, calling_ae: str, called_ae: str = "CONCORDOSE") -> tuple[int, bytes]:
        self.socket.sendall(_associate_rq(calling_ae, called_ae))
        return self.read_pdu()

    def closed_by_receiver(self) -> bool:
        """True when the receiver closes the connection (EOF or reset) within 10 s."""
        self.socket.settimeout(10)
        try:
            while self.socket.recv(65536):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.socket.close()


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[StorageReceiver]:
    with StorageReceiver(
        Spool(tmp_path / "spool"),
        port=0,
        site_by_ae_title=SITES,
        max_associations=12,
        admission=AdmissionLimits(
            associate_deadline_s=ASSOCIATE_DEADLINE_S,
            pdu_deadline_s=PDU_DEADLINE_S,
            max_unassociated=16,
            max_associations_per_site=10,
        ),
    ) as running:
        yield running


def _trickle(peers: list[_Peer], stop: threading.Event, started: list[float]) -> None:
    """The slow sender: each peer opens a P-DATA-TF announcing 1,000 bytes (one PDV, a command
    fragment of 994 bytes, its header complete), then all send one more byte per second until
    the receiver drops them or ``stop`` is set."""
    opening = struct.pack(">BxI", 0x04, 1000) + struct.pack(">IBB", 996, 1, 0x01)
    for peer in peers:
        peer.socket.sendall(opening)
    started.append(time.monotonic())
    live = list(peers)
    while live and not stop.wait(1.0):  # the workload's pace, not a wait for the receiver
        for peer in list(live):
            try:
                peer.socket.sendall(b"\x00")
            except OSError:
                live.remove(peer)


def test_slow_senders_and_idle_connections_do_not_lock_out_other_senders(
    receiver: StorageReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    trickling = [_Peer(receiver.port) for _ in range(10)]
    for peer in trickling:
        assert peer.associate("MILAN_SPECT")[0] == A_ASSOCIATE_AC_TYPE
    baseline_threads = threading.active_count()
    stop, started = threading.Event(), list[float]()
    sender = threading.Thread(target=_trickle, args=(trickling, stop, started), daemon=True)
    sender.start()
    idle = [socket.create_connection(("127.0.0.1", receiver.port)) for _ in range(150)]
    try:
        wait_until(
            lambda: bool(started) and receiver.unassociated.evicted_count >= 150 - 16,
            timeout_s=10,
            what="the trickle to start and the idle connections to be taken in",
        )
        storm_at = time.monotonic()
        assert echo_accepted(receiver.port, "ROME_SPECT")  # another site: at once
        other_site_s = time.monotonic() - storm_at
        assert other_site_s < 15.0
        # The receiver holds at most its limits, not a thread per idle connection.
        assert len(receiver.unassociated) <= 16
        wait_until(  # + the trickling thread
            lambda: threading.active_count() <= baseline_threads + 16 + 1,
            timeout_s=5,
            what="the threads of closed connections to end",
        )

        # The trickling site's own new association: refused while its 10 are open, then
        # accepted once the PDU deadline has aborted the trickles.
        refused = _Peer(receiver.port)
        pdu_type, body = refused.associate("MILAN_SPECT")
        refused.close()
        assert (pdu_type, body[1], body[2], body[3]) == (A_ASSOCIATE_RJ_TYPE, 2, 3, 2)
        wait_until(
            lambda: receiver.associations_by_site.get("milan", 0) < 10,
            timeout_s=PDU_DEADLINE_S + 10,
            what="the PDU deadline to abort the trickling associations",
        )
        assert echo_accepted(receiver.port, "MILAN_SPECT")
        own_site_s = time.monotonic() - started[0]
        assert own_site_s <= PDU_DEADLINE_S + 3.0
        for peer in trickling:  # each was told: A-ABORT (service provider), then closed
            pdu_type, body = peer.read_pdu()
            assert (pdu_type, body[2]) == (A_ABORT_TYPE, 0x02)
        deadline_line = "PDU not complete 4 s after its first byte"
        assert caplog.text.count(deadline_line) == 10  # the deadline, not a malformed PDU
    finally:
        stop.set()
        sender.join(timeout=10)
        for connection in [*idle, *(peer.socket for peer in trickling)]:
            connection.close()
    print(f"other site accepted after {other_site_s:.2f} s, own site after {own_site_s:.2f} s")


def test_idle_connections_are_bounded_and_threads_and_descriptors_return_to_baseline(
    receiver: StorageReceiver,
) -> None:
    baseline_threads, baseline_fds = threading.active_count(), _open_descriptors()
    idle = [socket.create_connection(("127.0.0.1", receiver.port)) for _ in range(150)]
    try:
        # One over the limit closes the connection that waited longest: 134 are closed
        # at once, the last 16 when the association deadline expires.
        wait_until(
            lambda: len(receiver.unassociated) <= 16 and receiver.unassociated.evicted_count >= 134,
            timeout_s=10,
            what="the unassociated connections to be capped",
        )
        wait_until(
            lambda: threading.active_count() <= baseline_threads + 16,
            timeout_s=5,
            what="the threads of the closed connections to end",
        )
        wait_until(
            lambda: len(receiver.unassociated) == 0,
            timeout_s=ASSOCIATE_DEADLINE_S + 10,
            what="the association deadline to close the rest",
        )
        for connection in idle:
            connection.settimeout(5)
            assert connection.recv(1) == b""  # closed by the receiver, nothing sent
    finally:
        for connection in idle:
            connection.close()
    wait_until(
        lambda: (
            threading.active_count() == baseline_threads and _open_descriptors() == baseline_fds
        ),
        timeout_s=10,
        what="threads and file descriptors back to their baseline",
    )
    assert echo_accepted(receiver.port, "ROME_SPECT")


def _trickle_until_closed(port: int, data: bytes) -> tuple[int, float]:
    """Send ``data`` one byte every 0.5 s on a new connection (each read quick, the whole too
    slow) until the receiver closes it or all is sent: (bytes sent, seconds from the connect)."""
    peer = _Peer(port)
    connected_at = time.monotonic()
    sent = 0
    try:
        peer.socket.settimeout(0.5)
        while sent < len(data):
            try:
                peer.socket.sendall(data[sent : sent + 1])
                sent += 1
                if peer.socket.recv(1) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        return sent, time.monotonic() - connected_at
    finally:
        peer.close()


def test_an_associate_rq_trickled_past_its_deadline_is_closed(receiver: StorageReceiver) -> None:
    request = _associate_rq("MILAN_SPECT")
    sent, closed_after_s = _trickle_until_closed(receiver.port, request)
    assert sent < len(request)
    assert ASSOCIATE_DEADLINE_S - 0.5 <= closed_after_s <= ASSOCIATE_DEADLINE_S + 2.0


def _client_hello() -> bytes:
    """The first flight of a TLS client (its ClientHello record), made in memory."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def test_a_tls_handshake_trickled_past_the_association_deadline_is_closed(
    tmp_path: Path,
) -> None:
    key, pem = tmp_path / "server.key", tmp_path / "server.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(pem), "-days", "1", "-subj", "/CN=receiver"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    hello = _client_hello()
    with StorageReceiver(
        Spool(tmp_path / "spool"),
        port=0,
        site_by_ae_title=SITES,
        ssl_context=server_context(pem, key, pem),
        admission=AdmissionLimits(associate_deadline_s=ASSOCIATE_DEADLINE_S),
    ) as receiver:
        sent, closed_after_s = _trickle_until_closed(receiver.port, hello)
        wait_until(lambda: len(receiver.unassociated) == 0, timeout_s=10, what="the close")
    assert sent < len(hello)  # the handshake never completed
    assert closed_after_s <= ASSOCIATE_DEADLINE_S + 2.0


def test_a_p_data_longer_than_our_max_pdu_is_aborted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with StorageReceiver(Spool(tmp_path / "spool"), port=0, site_by_ae_title=SITES) as receiver:
        peer = _Peer(receiver.port)
        assert peer.associate("MILAN_SPECT")[0] == A_ASSOCIATE_AC_TYPE
        data = b"\x00" * (150 * 1024)  # 150 kB against the 128 kB we announced
        pdv = struct.pack(">IBB", len(data) + 2, 1, 0x00) + data
        peer.socket.sendall(struct.pack(">BxI", 0x04, len(pdv)) + pdv)
        pdu_type, body = peer.read_pdu()
        assert peer.closed_by_receiver()
        peer.close()
        wait_until(lambda: receiver.active_associations == 0, timeout_s=10, what="the abort")
        assert receiver.spool.status().instances == 0
    assert pdu_type == A_ABORT_TYPE
    assert (body[2], body[3]) == (0x02, 0x06)  # service provider, invalid PDU parameter value
    assert "longer than the maximum PDU length we announced (131072 bytes)" in caplog.text


@pytest.mark.parametrize("check", [True, False])
def test_the_called_ae_title_is_checked_unless_turned_off(tmp_path: Path, check: bool) -> None:
    with StorageReceiver(
        Spool(tmp_path / "spool"),
        port=0,
        site_by_ae_title=SITES,
        admission=AdmissionLimits(check_called_ae_title=check),
    ) as receiver:
        peer = _Peer(receiver.port)
        try:
            pdu_type, body = peer.associate("MILAN_SPECT", called_ae="NOT_OURS")
        finally:
            peer.close()
    if check:
        assert pdu_type == A_ASSOCIATE_RJ_TYPE
        # PS3.8 Table 9-21: rejected-permanent, service user, called-AE-title not recognized
        assert (body[1], body[2], body[3]) == (1, 1, 7)
    else:
        assert pdu_type == A_ASSOCIATE_AC_TYPE


def _malformed_requests() -> dict[str, bytes]:
    valid = _associate_rq("MILAN_SPECT")
    body = bytearray(valid[6:])
    pdus: dict[str, bytes] = {}
    pdus["garbage after the header"] = struct.pack(">BxI", 0x01, 200) + b"\xff" * 200
    pdus["shorter than its fixed fields"] = struct.pack(">BxI", 0x01, 20) + b"\x00" * 20
    cut = bytes(body[: len(body) - 10])  # the user information item lost its last 10 bytes
    pdus["truncated items"] = struct.pack(">BxI", 0x01, len(cut)) + cut
    longer = bytearray(body)
    longer[68 + 2 : 68 + 4] = (0xFFFF).to_bytes(2, "big")  # application context item length
    pdus["an item longer than the PDU"] = struct.pack(">BxI", 0x01, len(longer)) + longer
    pdv = struct.pack(">IBB", 2, 1, 0x03)  # an empty last command fragment on context 1
    pdus["P-DATA-TF before associating"] = struct.pack(">BxI", 0x04, len(pdv)) + pdv
    version_2 = bytearray(body)
    version_2[0:2] = (0x0002).to_bytes(2, "big")
    pdus["protocol version 2"] = struct.pack(">BxI", 0x01, len(version_2)) + version_2
    other_context = bytes(body).replace(b"1.2.840.10008.3.1.1.1", b"1.2.840.10008.3.1.1.9")
    pdus["another application context"] = valid[:6] + other_context
    return pdus


# (PDU type, A-ABORT source and reason or A-ASSOCIATE-RJ result, source and diagnostic)
EXPECTED_ANSWERS = {
    "garbage after the header": (A_ABORT_TYPE, (0x02, 0x06)),
    "shorter than its fixed fields": (A_ABORT_TYPE, (0x02, 0x06)),
    "truncated items": (A_ABORT_TYPE, (0x02, 0x06)),
    "an item longer than the PDU": (A_ABORT_TYPE, (0x02, 0x06)),
    "P-DATA-TF before associating": (A_ABORT_TYPE, (0x02, 0x02)),
    "protocol version 2": (A_ASSOCIATE_RJ_TYPE, (1, 2, 2)),
    "another application context": (A_ASSOCIATE_RJ_TYPE, (1, 1, 2)),
}


@pytest.mark.parametrize("case", sorted(EXPECTED_ANSWERS))
def test_a_malformed_associate_rq_is_answered_then_closed(
    receiver: StorageReceiver, case: str
) -> None:
    peer = _Peer(receiver.port)
    try:
        peer.socket.sendall(_malformed_requests()[case])
        pdu_type, body = peer.read_pdu()
        assert peer.closed_by_receiver()
    finally:
        peer.close()
    expected_type, fields = EXPECTED_ANSWERS[case]
    assert pdu_type == expected_type
    if pdu_type == A_ABORT_TYPE:
        assert (body[2], body[3]) == fields
    else:  # A-ASSOCIATE-RJ: reserved, result, source, reason/diag.
        assert (body[1], body[2], body[3]) == fields
    assert echo_accepted(receiver.port, "MILAN_SPECT")  # and the service stays up


def test_a_valid_request_is_accepted_by_the_same_checks(receiver: StorageReceiver) -> None:
    peer = _Peer(receiver.port)
    try:
        pdu_type, body = peer.associate("MILAN_SPECT")
    finally:
        peer.close()
    assert pdu_type == A_ASSOCIATE_AC_TYPE
    accept = A_ASSOCIATE_AC()
    accept.decode(bytes([pdu_type, 0]) + struct.pack(">I", len(body)) + body)
    assert accept.called_ae_title == "CONCORDOSE"
