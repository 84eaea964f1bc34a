"""The spool: durable, indexed, idempotent, path-safe, with a quarantine."""

from __future__ import annotations

from pathlib import Path

import pytest

from concordose.spool.store import InstanceIdentity, InvalidInstanceError, Spool
from concordose.spool.uids import is_valid_uid

NM = "1.2.840.10008.5.1.4.1.1.20"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _identity(sop: str = "1.2.3.4.5") -> InstanceIdentity:
    return InstanceIdentity.checked(
        sop_class_uid=NM,
        sop_instance_uid=sop,
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        transfer_syntax=EXPLICIT_LE,
    )


@pytest.mark.parametrize(
    "value",
    ["", "1.2..3", "../../etc/passwd", "1.2.3/4", "1.2.3 ", "a.b", "1." + "2" * 70, None, 1.2],
)
def test_invalid_uids_are_refused(value: object) -> None:
    assert not is_valid_uid(value)


def test_identity_names_every_bad_uid() -> None:
    with pytest.raises(
        InvalidInstanceError, match=r"StudyInstanceUID='\.\./x'.*SeriesInstanceUID=None"
    ):
        InstanceIdentity.checked(
            sop_class_uid=NM,
            sop_instance_uid="1.2",
            study_uid="../x",
            series_uid=None,
            transfer_syntax=EXPLICIT_LE,
        )


def test_store_writes_file_and_index_and_is_idempotent(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    first = spool.store(_identity(), b"first bytes", "SITE_A")
    again = spool.store(_identity(), b"other bytes", "SITE_A")
    assert first == again
    assert first.read_bytes() == b"first bytes"
    assert first.relative_to(spool.instances_dir) == Path("1.2.3/1.2.3.4/1.2.3.4.5.dcm")
    rows = Spool.open_existing(tmp_path / "spool").instances()
    assert [
        (row.identity.sop_instance_uid, row.calling_ae_title, row.size_bytes) for row in rows
    ] == [("1.2.3.4.5", "SITE_A", 11)]
    assert list(spool.tmp_dir.iterdir()) == []


def test_index_survives_reopening_and_partial_writes_are_dropped(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    Spool(root).store(_identity("1.9"), b"x", "SITE_A")
    (root / "tmp" / "crashed.part").write_bytes(b"half")
    reopened = Spool(root)
    assert [row.identity.sop_instance_uid for row in reopened.instances()] == ["1.9"]
    assert not (root / "tmp" / "crashed.part").exists()


def test_quarantine_keeps_bytes_and_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.quarantine(b"garbage", "missing StudyInstanceUID")
    assert path.read_bytes() == b"garbage"
    assert path.with_suffix(".reason.txt").read_text() == "missing StudyInstanceUID"
    assert spool.instances() == []


def test_open_existing_on_missing_spool_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="does not exist"):
        Spool.open_existing(tmp_path / "nowhere")
