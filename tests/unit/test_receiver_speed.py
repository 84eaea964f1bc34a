"""The receiver's speed measures (benchmarks/bench_receiver.py) keep what they promise."""

from __future__ import annotations

import logging
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import evt

from concordose.dicom.receiver import StorageReceiver, _read_header
from concordose.dicom.spool import Spool


def _ct_part10() -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "CT", "P1"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.zeros((8, 8), dtype=np.uint16).tobytes()
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_header_is_read_without_the_pixel_data() -> None:
    header = _read_header(_ct_part10())
    assert header.Modality == "CT"
    assert "PixelData" not in header


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
