"""The receiver's speed measures (benchmarks/bench_receiver.py) keep what they promise."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from concordose.dicom.receiver import StorageReceiver
from concordose.dicom.spool import Spool


@pytest.mark.parametrize(("level", "bound"), [(logging.WARNING, False), (logging.DEBUG, True)])
def test_pynetdicom_debug_handlers_are_unbound_unless_its_log_shows_debug(
    tmp_path: Path, level: int, bound: bool
) -> None:
    logger = logging.getLogger("pynetdicom")
    previous = logger.level
    logger.setLevel(level)
    try:
        with StorageReceiver(Spool(tmp_path / "spool"), port=0) as receiver:
            server = receiver._server
            assert server is not None
            handlers = [
                h
                for event in (evt.EVT_PDU_RECV, evt.EVT_PDU_SENT, evt.EVT_DIMSE_RECV)
                for h in server.get_handlers(event)
            ]
    finally:
        logger.setLevel(previous)
    assert bool(handlers) is bound


def test_the_dul_poll_interval_reaches_each_association(tmp_path: Path) -> None:
    # The receiver tunes a private pynetdicom attribute: if an upgrade renames it, reading it
    # back below fails and says so.
    seen: list[float] = []
    with StorageReceiver(Spool(tmp_path / "spool"), port=0, dul_poll_interval_s=0.0003) as receiver:
        requestor = AE(ae_title="TESTER")
        requestor.add_requested_context(Verification)
        assoc = requestor.associate("127.0.0.1", receiver.port)
        try:
            assert assoc.is_established
            server = receiver._server
            assert server is not None
            (server_side,) = server.active_associations
            seen.append(server_side.dul._run_loop_delay)
        finally:
            assoc.release()
    assert seen == [0.0003]
