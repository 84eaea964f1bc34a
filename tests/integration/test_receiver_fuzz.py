"""Fuzzing the receiver in the suite (issue 18, item 5): ≥ 300 seeded mutants of the Siemens
SPECT fixture and of generated NM, CT and SEG files, sent over real associations to a running
receiver (:mod:`tests.integration.receiver_fuzzing`).

Asserted: every mutant is answered (no association aborted) with a status of PS3.4 B.2.3 /
PS3.7 Annex C; the service still answers a C-ECHO after; every instance answered 0x0000 reads
back with pydicom (every element decoded; a DS/IS whose text is not a number is left to the
readers) and with dcmtk's ``dcmdump``, and through the platform's readers (``concordose
check``'s path for NM: header read + gate; the folder catalogue for all) without an exception
other than a finding-producing ``ConcordoseError``; the spool indexes exactly the instances
answered 0x0000.

Parameters (environment): ``CONCORDOSE_FUZZ_COUNT`` (default 300), ``CONCORDOSE_FUZZ_SEED``
(default 18). Replay one mutant: ``receiver_fuzzing.mutant(seeds, seed, index)``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, NuclearMedicineImageStorage
from pydicom.valuerep import VR

from concordose.calibration.gate import gate_time_point
from concordose.calibration.registry import SiteRegistry
from concordose.dicom.nm import read_nm_header
from concordose.errors import ConcordoseError
from concordose.ingest.receiver import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
    StorageReceiver,
)
from concordose.pipeline.catalogue import catalogue
from concordose.spool.store import Spool
from phantoms import GeneratedPatient
from tests.conftest import SIEMENS_NM_FIXTURE
from tests.integration.crafted_peer import CraftedPeer
from tests.integration.receiver_fuzzing import (
    ECHO_CONTEXT,
    Mutant,
    Seed,
    contexts,
    run_campaign,
    seed_from_file,
)

pytestmark = pytest.mark.integration

COUNT = int(os.environ.get("CONCORDOSE_FUZZ_COUNT", "300"))
SEED = int(os.environ.get("CONCORDOSE_FUZZ_SEED", "18"))
SENDER = "MILAN_SPECT"
ANSWERS = {
    0x0000,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
}
TEXT_NUMBER_VRS = {VR.DS, VR.IS}


def fuzz_seeds(patient: GeneratedPatient) -> list[Seed]:
    """The Siemens fixture, and the test phantom's NM (both VR encodings), a CT slice and SEG."""
    ct = next(p for p in patient.dicom_files if p.parent.name == "ct")
    return [
        seed_from_file(SIEMENS_NM_FIXTURE, "siemens_nm"),
        seed_from_file(patient.nm_files[0], "phantom_nm", ExplicitVRLittleEndian),
        seed_from_file(patient.nm_files[1], "phantom_nm_implicit", ImplicitVRLittleEndian),
        seed_from_file(ct, "phantom_ct", ExplicitVRLittleEndian),
        seed_from_file(patient.seg_path, "phantom_seg", ExplicitVRLittleEndian),
    ]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[StorageReceiver]:
    with StorageReceiver(
        Spool(tmp_path / "spool"), port=0, allowed_calling_ae_titles=[SENDER]
    ) as running:
        yield running


def _read_back(path: Path) -> None:
    """Every element decoded by pydicom (a DS/IS that is not a number: the readers' finding)."""
    dataset = pydicom.dcmread(path)
    for element in dataset.iterall():
        try:
            _ = element.value
        except ValueError:
            if element.VR not in TEXT_NUMBER_VRS:
                raise


def _describe(item: Mutant) -> str:
    return f"mutant {item.index} of seed {SEED} ({item.seed}: {', '.join(item.operators)})"


@pytest.mark.timeout(600)
def test_mutants_never_stop_the_service_and_only_readable_ones_are_stored(
    receiver: StorageReceiver, small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    campaign = run_campaign(
        receiver.port, fuzz_seeds(small_patient), seed=SEED, count=COUNT, calling_ae=SENDER
    )
    print(f"{COUNT} mutants in {campaign.elapsed_s:.1f} s: {dict(campaign.counts())}")
    assert campaign.aborted == []
    assert len(campaign.statuses) == COUNT
    assert set(campaign.statuses.values()) <= ANSWERS
    assert len(campaign.counts()) > 1, "the mutants should not all get the same answer"

    peer = CraftedPeer(receiver.port, contexts(), calling_ae=SENDER)
    try:
        assert peer.echo(ECHO_CONTEXT) == 0x0000
    finally:
        peer.release()

    rows = {row.identity.sop_instance_uid: row for row in receiver.spool.instances()}
    assert set(rows) == set(campaign.accepted), "indexed ≠ answered 0x0000"

    registry = SiteRegistry.load(small_patient.sites_path)
    dcmdump = shutil.which("dcmdump")
    assert dcmdump is not None, "dcmtk's dcmdump is required (installed by `make test`)"
    for uid, item in campaign.accepted.items():
        path = rows[uid].path
        try:
            _read_back(path)
        except Exception as exc:
            pytest.fail(f"{_describe(item)}: pydicom cannot read it back: {exc!r}")
        dumped = subprocess.run([dcmdump, "-q", str(path)], capture_output=True, check=False)
        assert dumped.returncode == 0, f"{_describe(item)}: dcmdump: {dumped.stderr!r}"
        if rows[uid].identity.sop_class_uid != NuclearMedicineImageStorage:
            continue
        try:
            gate_time_point(read_nm_header(path), registry, calling_ae_title=None, site_id="milan")
        except ConcordoseError:
            pass  # a finding (check prints it and holds the file), not a crash
        except Exception as exc:
            pytest.fail(f"{_describe(item)}: the NM reader raised {exc!r}")

    folder = tmp_path / "accepted"
    folder.mkdir()
    for uid in campaign.accepted:
        shutil.copy(rows[uid].path, folder / f"{uid}.dcm")
    assert len(catalogue(folder)) == len(campaign.accepted)
