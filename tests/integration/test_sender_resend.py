"""The storage SCU resends on a new association when a C-STORE response never comes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import UID
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event

from concordose.errors import ConcordoseError
from concordose.ingest.sender import MAX_FRUITLESS_ASSOCIATIONS, send_files
from concordose.phantoms import GeneratedPatient

pytestmark = pytest.mark.integration


class _Scp:
    """A pynetdicom storage SCP that withholds the response to chosen instances: their handler
    returns only once the sender has aborted (so the response goes nowhere)."""

    def __init__(self, withhold: set[str], *, times: int) -> None:
        self.withhold = withhold
        self.times = times  # how many receptions of a withheld instance go unanswered
        self.received: list[str] = []
        self._aborted = threading.Event()
        self._lock = threading.Lock()

    def on_store(self, event: Event) -> int:
        uid = str(event.dataset.SOPInstanceUID)
        with self._lock:
            self.received.append(uid)
            unanswered = uid in self.withhold and self.received.count(uid) <= self.times
            if unanswered:
                self._aborted.clear()
        if unanswered:
            # Not a sleep: wait for the sender's abort (its DIMSE timeout), bounded for safety.
            assert self._aborted.wait(timeout=30.0), "the sender never aborted"
        return 0x0000

    def on_abort(self, _event: Event) -> None:
        self._aborted.set()


@pytest.fixture
def files(small_patient: GeneratedPatient) -> list[Path]:
    return list(small_patient.nm_files[:4])


def _serve(scp: _Scp) -> Iterator[int]:
    ae = AE(ae_title="PEER")
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, scp.on_store), (evt.EVT_ABORTED, scp.on_abort)],
    )
    assert server is not None  # block=False returns the running server
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def _uid(path: Path) -> str:
    return str(UID(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))


def test_a_lost_response_is_resent_on_a_new_association(files: list[Path]) -> None:
    lost = _uid(files[1])
    scp = _Scp({lost}, times=1)
    for port in _serve(scp):
        report = send_files(
            files,
            host="127.0.0.1",
            port=port,
            called_ae_title="PEER",
            calling_ae_title="SITE",
            dimse_timeout_s=0.5,
        )
    assert report.sent == len(files)
    assert report.refused == []
    assert sorted(set(scp.received)) == sorted(_uid(f) for f in files)
    assert scp.received.count(lost) == 2  # once unanswered, once on the new association
    assert scp.received.count(_uid(files[0])) == 1  # answered files are not sent again


def test_a_peer_that_never_answers_ends_the_send_with_what_was_left(files: list[Path]) -> None:
    stuck = _uid(files[2])
    # The first association answers files 0 and 1; the next MAX in a row answer nothing.
    scp = _Scp({stuck}, times=MAX_FRUITLESS_ASSOCIATIONS + 1)
    for port in _serve(scp):
        with pytest.raises(ConcordoseError, match=r"without a C-STORE response; 2 of 4 file"):
            send_files(
                files,
                host="127.0.0.1",
                port=port,
                called_ae_title="PEER",
                calling_ae_title="SITE",
                dimse_timeout_s=0.5,
            )
    assert scp.received.count(stuck) == MAX_FRUITLESS_ASSOCIATIONS + 1
