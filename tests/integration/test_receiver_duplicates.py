"""A SOP Instance UID sent again over real associations (issue 18, item 4): the same bytes are
idempotent; other bytes, or another study, are kept in the quarantine, logged without the UID
and counted by `concordose spool status` — never acknowledged and dropped."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from typer.testing import CliRunner

from concordose.cli import app
from concordose.dicom.pseudonym import uid_hash
from concordose.ingest.receiver import StorageReceiver
from concordose.phantoms import GeneratedPatient
from concordose.spool.store import Spool

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[StorageReceiver]:
    with StorageReceiver(
        Spool(tmp_path / "spool"), port=0, site_by_ae_title={"MILAN_SPECT": "milan"}
    ) as running:
        yield running


def _send(port: int, dataset: Dataset | Path) -> int:
    ae = AE(ae_title="MILAN_SPECT")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="CONCORDOSE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(dataset).Status)
    finally:
        assoc.release()


def _ct(patient: GeneratedPatient) -> Dataset:
    path = next(p for p in sorted(patient.dicom_files) if "/ct/" in p.as_posix())
    dataset = pydicom.dcmread(path)
    assert dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    return dataset


def _totals(spool: Path) -> dict[str, object]:
    result = CliRunner().invoke(app, ["spool", "status", "--spool", str(spool), "--json"])
    assert result.exit_code == 0, result.output
    totals: dict[str, object] = json.loads(result.output)["totals"]
    return totals


def test_the_same_bytes_are_idempotent_and_other_bytes_are_kept_logged_and_counted(
    receiver: StorageReceiver, small_patient: GeneratedPatient, caplog: pytest.LogCaptureFixture
) -> None:
    sent = _ct(small_patient)
    uid = str(sent.SOPInstanceUID)
    assert _send(receiver.port, sent) == 0x0000
    assert _send(receiver.port, sent) == 0x0000  # a sender's retry: the same bytes
    spool = receiver.spool
    assert spool.quarantined() == []
    (row,) = spool.instances()
    first_bytes = row.path.read_bytes()

    changed = _ct(small_patient)
    changed.ImageComments = "re-sent after a correction"
    with caplog.at_level(logging.WARNING, logger="concordose"):
        assert _send(receiver.port, changed) == 0x0000
        assert _send(receiver.port, changed) == 0x0000  # the same different copy again
        assert spool.status().instances == 1  # files what is journaled
    assert row.path.read_bytes() == first_bytes  # the first copy stays filed and indexed
    (kept,) = spool.quarantined()
    assert pydicom.dcmread(kept).ImageComments == "re-sent after a correction"
    assert "(conflicting)" in kept.with_suffix(".reason.txt").read_text()
    flagged = [r for r in caplog.records if "duplicate SOP Instance UID" in r.getMessage()]
    assert len(flagged) == 1
    assert flagged[0].levelno == logging.WARNING
    assert uid_hash(uid) in flagged[0].getMessage()
    assert uid not in caplog.text  # no UID in the log
    totals = _totals(spool.root)
    assert totals["duplicates"] == {"conflicting": 1, "other_study": 0}
    assert totals["quarantined"] == 1
    text = CliRunner().invoke(app, ["spool", "status", "--spool", str(spool.root)]).output
    assert "duplicates kept: conflicting 1, other study 0" in " ".join(text.split())


def test_the_same_uid_under_another_study_is_flagged_not_filed_under_the_first(
    receiver: StorageReceiver, small_patient: GeneratedPatient
) -> None:
    sent = _ct(small_patient)
    assert _send(receiver.port, sent) == 0x0000
    moved = _ct(small_patient)
    moved.StudyInstanceUID = generate_uid()
    assert _send(receiver.port, moved) == 0x0000
    spool = receiver.spool
    assert [r.identity.study_uid for r in spool.instances()] == [str(sent.StudyInstanceUID)]
    assert [tp.study_uid for tp in spool.timepoints()] == [str(sent.StudyInstanceUID)]
    (kept,) = spool.quarantined()
    assert pydicom.dcmread(kept).StudyInstanceUID == moved.StudyInstanceUID
    reason = kept.with_suffix(".reason.txt").read_text()
    assert "(other_study)" in reason
    assert "another StudyInstanceUID than the filed copy" in reason
    assert _totals(spool.root)["duplicates"] == {"conflicting": 0, "other_study": 1}
