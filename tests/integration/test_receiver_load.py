"""Load: parallel associations into one receiver, every instance stored byte-identical
(issue 18 item 6; the throughput figures are in benchmarks/README.md, bench_receiver_load)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.bench_receiver import write_series
from benchmarks.bench_receiver_load import send_parallel, split, verify_spool
from concordose.ingest.receiver import StorageReceiver
from concordose.spool.store import Spool

pytestmark = pytest.mark.integration

SENDERS = 4
INSTANCES_PER_SENDER = 50


def test_four_parallel_senders_store_every_instance_byte_identical(tmp_path: Path) -> None:
    assert shutil.which("storescu") is not None, "dcmtk's storescu is required (make test)"
    # 128×128 CT slices (32 kB): 200 of them overrun the 4 × 1 MB journal, so segments are
    # recycled, filed and spilled to temp files while the four associations keep sending.
    series = write_series(tmp_path / "series", SENDERS * INSTANCES_PER_SENDER, side=128)
    parts = split(series, tmp_path / "parts", SENDERS)
    with StorageReceiver(
        Spool(tmp_path / "spool"),
        port=0,
        allowed_calling_ae_titles=["BENCH"],
        journal_segment_bytes=1 << 20,
        journal_segments=4,
        journal_prefill=True,
    ) as receiver:
        send_parallel(receiver.port, "CONCORDOSE", parts)  # raises if a storescu failed
    verify_spool(tmp_path / "spool", series)
