"""The storage SCP over real associations on loopback: pynetdicom and dcmtk as senders."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import NuclearMedicineImageStorage, Verification  # type: ignore[attr-defined]

from concordose.errors import ConcordoseError
from concordose.ingest.receiver import STATUS_CANNOT_UNDERSTAND, StorageReceiver
from concordose.ingest.sender import send_files
from concordose.phantoms import GeneratedPatient
from concordose.spool.store import Spool
from tests.conftest import SIEMENS_NM_FIXTURE

pytestmark = pytest.mark.integration

SITE_AE = "MILAN_SPECT"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[StorageReceiver]:
    with StorageReceiver(
        Spool(tmp_path / "spool"), port=0, allowed_calling_ae_titles=[SITE_AE, "STORESCU"]
    ) as running:
        yield running


def test_every_instance_is_stored_as_sent_and_indexed(
    receiver: StorageReceiver, small_patient: GeneratedPatient
) -> None:
    files = [*small_patient.dicom_files, SIEMENS_NM_FIXTURE]
    report = send_files(
        files,
        host="127.0.0.1",
        port=receiver.port,
        called_ae_title="CONCORDOSE",
        calling_ae_title=SITE_AE,
    )
    assert report.sent == len(files)
    assert report.refused == []
    rows = {row.identity.sop_instance_uid: row for row in receiver.spool.instances()}
    assert len(rows) == len(files)
    for path in files:
        original = pydicom.dcmread(path)
        row = rows[original.SOPInstanceUID]
        stored = pydicom.dcmread(row.path)
        assert row.calling_ae_title == SITE_AE
        assert stored.PixelData == original.PixelData
        assert stored.StudyInstanceUID == original.StudyInstanceUID


def test_unknown_calling_ae_is_rejected_at_association(
    receiver: StorageReceiver, small_patient: GeneratedPatient
) -> None:
    with pytest.raises(ConcordoseError, match=r"ROGUE → CONCORDOSE .* was not established"):
        send_files(
            small_patient.nm_files[:1],
            host="127.0.0.1",
            port=receiver.port,
            called_ae_title="CONCORDOSE",
            calling_ae_title="ROGUE",
        )
    assert receiver.spool.instances() == []


def test_missing_study_uid_fails_and_is_quarantined_and_service_stays_up(
    receiver: StorageReceiver,
) -> None:
    dataset = Dataset()
    dataset.SOPClassUID = NuclearMedicineImageStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.PatientID = "X"
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ae = AE(ae_title=SITE_AE)
    ae.add_requested_context(NuclearMedicineImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="CONCORDOSE")
    assert assoc.is_established
    status = assoc.send_c_store(dataset)
    echo = assoc.send_c_echo()
    assoc.release()
    assert status.Status == STATUS_CANNOT_UNDERSTAND
    assert echo.Status == 0x0000
    reasons = list(receiver.spool.quarantine_dir.glob("*.reason.txt"))
    assert len(reasons) == 1
    assert "StudyInstanceUID=None" in reasons[0].read_text()
    assert receiver.spool.instances() == []


def test_dcmtk_storescu_can_send_to_us(
    receiver: StorageReceiver, small_patient: GeneratedPatient
) -> None:
    storescu = shutil.which("storescu")
    assert storescu is not None, "dcmtk's storescu is required (installed by `make test`)"
    completed = subprocess.run(
        [
            storescu,
            "-aet",
            "STORESCU",
            "--required",  # propose exactly the files' SOP classes (SEG is not in the default list)
            "-aec",
            "CONCORDOSE",
            "127.0.0.1",
            str(receiver.port),
            *map(str, small_patient.nm_files),
            str(small_patient.seg_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    stored = {row.identity.sop_instance_uid for row in receiver.spool.instances()}
    expected = {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
        for p in [*small_patient.nm_files, small_patient.seg_path]
    }
    assert stored == expected
