"""The header walk and the inflater of :mod:`concordose.ingest.dataset_checks` in the transfer
syntaxes beyond little endian (issue 18): Explicit VR Big Endian walked in its byte order,
a deflated data set inflated in chunks with bounded memory and a cap (a decompression bomb
stops at the cap). Over real associations: ``tests/integration/test_receiver_malformed.py``."""

from __future__ import annotations

import io
import tracemalloc
import zlib
from typing import BinaryIO, cast

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from concordose.ingest.dataset_checks import (
    MalformedDataSetError,
    check_nesting,
    inflate_data_set,
)
from tests.integration.crafted_peer import encode_data_set


class _Sink(io.RawIOBase):
    """Counts what is written and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        size = len(data)  # type: ignore[arg-type]
        self.count += size
        return size


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def _zeros_deflated(size: int) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = bytes(1 << 20)
    return b"".join(compressor.compress(block) for _ in range(size >> 20)) + compressor.flush()


def test_inflating_holds_a_few_chunks_in_memory_however_large_the_data_set() -> None:
    stream = _zeros_deflated(64 << 20)  # 64 MiB inflated from ≈ 64 kB
    sink = _Sink()
    tracemalloc.start()
    try:
        size = inflate_data_set(
            io.BytesIO(stream), start=0, end=len(stream), target=cast(BinaryIO, sink)
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == sink.count == 64 << 20
    assert peak < 1 << 20, peak


def test_a_decompression_bomb_stops_at_the_cap() -> None:
    stream = _zeros_deflated(64 << 20)
    sink = _Sink()
    with pytest.raises(MalformedDataSetError, match="refused as a decompression bomb"):
        inflate_data_set(
            io.BytesIO(stream),
            start=0,
            end=len(stream),
            target=cast(BinaryIO, sink),
            max_bytes=8 << 20,
        )
    assert sink.count <= 8 << 20


def test_each_chunk_is_announced_before_it_is_written_and_the_announcement_can_stop_it() -> None:
    """The receiver checks the spool's free-space reserve there (``before_write``)."""
    stream = _zeros_deflated(4 << 20)
    sink = _Sink()
    announced: list[tuple[int, int]] = []

    def before_write(written_bytes: int, chunk_bytes: int) -> None:
        assert written_bytes == sink.count  # called before the chunk is written
        announced.append((written_bytes, chunk_bytes))
        if written_bytes + chunk_bytes > 1 << 20:
            raise OSError(28, "no room")

    with pytest.raises(OSError, match="no room"):
        inflate_data_set(
            io.BytesIO(stream),
            start=0,
            end=len(stream),
            target=cast(BinaryIO, sink),
            before_write=before_write,
        )
    assert sink.count == 1 << 20  # nothing past the refused chunk
    assert sum(size for _, size in announced[:-1]) == sink.count


def test_one_nul_pad_byte_after_the_stream_is_allowed() -> None:
    data = b"x" * 1001
    stream = _deflate(data) + b"\0"
    target = io.BytesIO()
    assert inflate_data_set(io.BytesIO(stream), start=0, end=len(stream), target=target) == 1001
    assert target.getvalue() == data


def _nested() -> Dataset:
    inner = Dataset()
    inner.CodeValue = "121322"
    inner.CodeMeaning = "Source image"
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"
    ds.SourceImageSequence = Sequence([item, item])
    ds.Rows = 4
    return ds


@pytest.mark.parametrize("undefined_length", [False, True])
def test_a_big_endian_data_set_is_walked_in_its_byte_order(undefined_length: bool) -> None:
    ds = _nested()
    ds.SourceImageSequence.is_undefined_length = undefined_length
    data = encode_data_set(ds, ExplicitVRBigEndian)
    check_nesting(io.BytesIO(data), start=0, end=len(data), transfer_syntax=ExplicitVRBigEndian)
    with pytest.raises(MalformedDataSetError):
        check_nesting(
            io.BytesIO(data[:-2]), start=0, end=len(data) - 2, transfer_syntax=ExplicitVRBigEndian
        )


def test_deflated_bytes_are_inflated_before_the_walk_never_walked_as_they_are() -> None:
    data = _deflate(encode_data_set(_nested(), DeflatedExplicitVRLittleEndian))
    with pytest.raises(MalformedDataSetError, match="inflate the data set before"):
        check_nesting(
            io.BytesIO(data), start=0, end=len(data), transfer_syntax=DeflatedExplicitVRLittleEndian
        )
