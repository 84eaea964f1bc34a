"""Fuzzing the receiver in the suite (issue 18, item 5): ≥ 300 seeded mutants of the Siemens
SPECT fixture and of generated NM, CT, SEG and RTSTRUCT files, sent over real associations to a
running receiver (:mod:`tests.integration.receiver_fuzzing`).

Asserted: every mutant is answered (no association aborted) with a status of PS3.4 B.2.3 /
PS3.7 Annex C; the service still answers a C-ECHO after; every instance answered 0x0000 reads
back with pydicom (every element decoded; a DS/IS whose text is not a number is left to the
readers) and with dcmtk's ``dcmdump``, and through the platform's readers (``concordose
check``'s path for NM: header read + gate; the CT series, SEG and RTSTRUCT readers (an
RTSTRUCT on the CT it was drawn on); the folder catalogue
for all) without an exception other than a finding-producing ``ConcordoseError``; the spool
indexes exactly the instances answered 0x0000.

A smaller share, ``CONCORDOSE_FUZZ_SYNTAX_COUNT`` (default 40) mutants in each of Explicit VR Big
Endian and Deflated Explicit VR Little Endian (generated NM, CT, SEG and RTSTRUCT; campaign seeds
``CONCORDOSE_FUZZ_SEED`` + 1 and + 2), is sent on those presentation contexts and asserted the
same way.

Parameters (environment): ``CONCORDOSE_FUZZ_COUNT`` (default 300), ``CONCORDOSE_FUZZ_SEED``
(default 18). Replay one mutant: ``receiver_fuzzing.mutant(seeds, seed, index)``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from concordose.calibration.registry import SiteRegistry
from concordose.ingest.receiver import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
    StorageReceiver,
)
from concordose.phantoms import GeneratedPatient
from concordose.pipeline.catalogue import catalogue
from concordose.spool.store import Spool, SpooledInstance
from tests.conftest import SIEMENS_NM_FIXTURE
from tests.integration.crafted_peer import CraftedPeer
from tests.integration.receiver_fuzzing import (
    ECHO_CONTEXT,
    OTHER_SYNTAXES,
    Campaign,
    contexts,
    fuzz_seeds,
    rtstruct_ct_files,
    run_campaign,
    syntax_seeds,
    unreadable_successes,
)

pytestmark = pytest.mark.integration

COUNT = int(os.environ.get("CONCORDOSE_FUZZ_COUNT", "300"))
SEED = int(os.environ.get("CONCORDOSE_FUZZ_SEED", "18"))
SYNTAX_COUNT = int(os.environ.get("CONCORDOSE_FUZZ_SYNTAX_COUNT", "40"))
SENDER = "MILAN_SPECT"
ANSWERS = {
    0x0000,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[StorageReceiver]:
    with StorageReceiver(
        Spool(tmp_path / "spool"), port=0, allowed_calling_ae_titles=[SENDER]
    ) as running:
        yield running


@pytest.mark.timeout(600)
def test_mutants_never_stop_the_service_and_only_readable_ones_are_stored(
    receiver: StorageReceiver, small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    campaign = run_campaign(
        receiver.port,
        fuzz_seeds(SIEMENS_NM_FIXTURE, small_patient),
        seed=SEED,
        count=COUNT,
        calling_ae=SENDER,
    )
    print(f"{COUNT} mutants in {campaign.elapsed_s:.1f} s: {dict(campaign.counts())}")
    assert campaign.aborted == []
    assert len(campaign.statuses) == COUNT
    assert set(campaign.statuses.values()) <= ANSWERS
    assert len(campaign.counts()) > 1, "the mutants should not all get the same answer"
    accepted_seeds = {item.seed for item in campaign.accepted.values()}
    assert {"phantom_rtstruct", "phantom_rtstruct_implicit"} & accepted_seeds, (
        "no RTSTRUCT mutant was stored: its reader is not exercised"
    )

    peer = CraftedPeer(receiver.port, contexts(), calling_ae=SENDER)
    try:
        assert peer.echo(ECHO_CONTEXT) == 0x0000
    finally:
        peer.release()

    rows = {row.identity.sop_instance_uid: row for row in receiver.spool.instances()}
    assert set(rows) == set(campaign.accepted), "indexed ≠ answered 0x0000"

    _assert_every_success_reads_back(rows, [(SEED, campaign)], small_patient, tmp_path)


@pytest.mark.timeout(300)
def test_big_endian_and_deflated_mutants_are_handled_like_the_others(
    receiver: StorageReceiver, small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    campaigns: dict[str, tuple[int, Campaign]] = {}
    for offset, syntax in enumerate(OTHER_SYNTAXES, start=1):
        # A campaign seed of its own: the same (seed, index) would draw the same fresh UIDs.
        seed = SEED + offset
        campaign = run_campaign(
            receiver.port,
            syntax_seeds(small_patient, syntax),
            seed=seed,
            count=SYNTAX_COUNT,
            calling_ae=SENDER,
        )
        print(
            f"{syntax}: {SYNTAX_COUNT} mutants in {campaign.elapsed_s:.1f} s: {campaign.counts()}"
        )
        assert campaign.aborted == []
        assert len(campaign.statuses) == SYNTAX_COUNT
        assert set(campaign.statuses.values()) <= ANSWERS
        assert 0x0000 in campaign.counts(), f"no {syntax} mutant was stored: nothing read back"
        assert len(campaign.counts()) > 1, "the mutants should not all get the same answer"
        campaigns[syntax] = seed, campaign

    peer = CraftedPeer(receiver.port, contexts(), calling_ae=SENDER)
    try:
        assert peer.echo(ECHO_CONTEXT) == 0x0000
    finally:
        peer.release()

    rows = {row.identity.sop_instance_uid: row for row in receiver.spool.instances()}
    accepted = {uid for _, campaign in campaigns.values() for uid in campaign.accepted}
    assert set(rows) == accepted, "indexed ≠ answered 0x0000"
    for name, (_, campaign) in campaigns.items():
        syntaxes = {str(rows[uid].identity.transfer_syntax) for uid in campaign.accepted}
        assert name in syntaxes, f"no mutant was stored in {name}"

    _assert_every_success_reads_back(rows, list(campaigns.values()), small_patient, tmp_path)


def _assert_every_success_reads_back(
    rows: dict[str, SpooledInstance],
    campaigns: list[tuple[int, Campaign]],
    small_patient: GeneratedPatient,
    tmp_path: Path,
) -> None:
    """Every instance a campaign (its seed, its result) got 0x0000 for reads back through
    pydicom and the platform's readers, and the whole accepted set through the catalogue."""
    registry = SiteRegistry.load(small_patient.sites_path)
    stored = {uid: row.path for uid, row in rows.items()}
    classes = {uid: row.identity.sop_class_uid for uid, row in rows.items()}
    for seed, campaign in campaigns:
        failures = unreadable_successes(
            campaign,
            stored,
            classes,
            registry,
            seed=seed,
            rtstruct_ct_files=rtstruct_ct_files(small_patient),
        )
        assert failures == []
    accepted = [uid for _, campaign in campaigns for uid in campaign.accepted]
    folder = tmp_path / "accepted"
    folder.mkdir()
    for uid in accepted:
        shutil.copy(rows[uid].path, folder / f"{uid}.dcm")
    assert len(catalogue(folder)) == len(accepted)
