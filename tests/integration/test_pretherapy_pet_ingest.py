"""Issue 20 item 3b: a pre-therapy PET/CT sent by C-STORE is filed as the patient's pre-therapy
study, not as an incomplete therapy cycle (real receiver on loopback, generated files)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from concordose.cli import app
from concordose.flows.sweep import sweep
from concordose.ingest.receiver import StorageReceiver
from concordose.ingest.sender import send_files
from concordose.phantoms.consortium import generate_consortium
from concordose.phantoms.site_profiles import CONSORTIUM_SITES
from concordose.pipeline.catalogue import CycleSource
from concordose.results.catalogue import read_current
from concordose.results.object_store import open_object_store
from concordose.settings import Settings
from concordose.spool.store import Spool
from tests.fakes import FakeClock


@pytest.mark.usefixtures("prefect_server")
def test_a_pet_study_is_received_and_filed_as_pretherapy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = CONSORTIUM_SITES[0]
    generated = generate_consortium(
        tmp_path / "consortium",
        preset="test",
        sites=[site],
        n_patients=1,
        phantoms=False,
        pretherapy_pet=True,
        pet_only_patients=1,
    )
    (at_site,) = generated.sites
    assert at_site.pet_files
    # The folder rule first: the patient's folder holds one cycle, the PET study is not in it.
    folder = at_site.folder / "patients" / "P001" / "dicom"
    (folder_cycle,) = CycleSource(folder).cycles()
    assert all("pet" in p.relative_to(folder.parent.parent).parts for p in at_site.pet_files)

    spool_root = tmp_path / "spool"
    with StorageReceiver(
        Spool(spool_root),
        port=0,
        site_by_ae_title={site.calling_ae_title: site.site_id},
        clock=FakeClock(),
    ) as receiver:
        report = send_files(
            [*at_site.dicom_files, *at_site.pet_files],
            host="127.0.0.1",
            port=receiver.port,
            called_ae_title="CONCORDOSE",
            calling_ae_title=site.calling_ae_title,
        )
        assert report.refused == []
        receiver.spool.file_journaled()  # acknowledged ⇒ journaled: filed before completing
        for record in Spool.open_existing(spool_root).timepoints():
            receiver.completion.trigger(record.study_uid)
    spool = Spool.open_existing(spool_root)
    cycles = spool.cycles()
    (cycle,) = cycles  # P001's cycle 1; P002 (PET only) has no cycle
    assert cycle.members.patient_id == f"{site.site_id.upper()}-P001"
    assert cycle.members.study_uids == folder_cycle.members.study_uids
    assert spool.cycle_number(cycle.members) == 1
    pets = spool.pretherapy_studies()
    assert [p.patient_id for p in pets] == [
        f"{site.site_id.upper()}-P001",
        f"{site.site_id.upper()}-P002",
    ]
    for pet in pets:
        assert "PT" in pet.modalities
        assert "NM" not in pet.modalities
        assert pet.study_uid not in cycle.members.all_study_uids
    # P002's PET study carries its SEG; the PET's CT came in the same study.
    assert {"PT", "CT", "SEG"} <= set(pets[1].modalities)

    # The command builds and publishes dose_prediction from that spool (no dose published yet:
    # every VOI waits for its therapy, and no model can be trained).
    result = CliRunner().invoke(
        app,
        ["prediction", "build", "--spool", str(spool_root), "--sites",
         str(generated.sites_path), "--output", str(tmp_path / "published")],
        env={"CONCORDOSE_PSEUDONYM_KEY": "test-secret"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "dose_prediction:" in result.output
    store = open_object_store(str(tmp_path / "published"), Settings())
    rows = read_current(store, "dose_prediction").to_pylist()
    assert {r["validation"] for r in rows} == {"no_therapy_yet"}
    assert {r["site_id"] for r in rows} == {site.site_id}
    assert len({r["subject_key"] for r in rows}) == 2
    assert not any(site.site_id.upper() in r["subject_key"] for r in rows)  # pseudonymised

    # The nightly sweep does the same after running the spool's cycle: P001 now has a
    # first-cycle dose; P002 (PET only) still waits for its therapy.
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-secret")
    swept = sweep(spool_root, generated.sites_path, output_uri=str(tmp_path / "swept"))
    assert [run.outcome for run in swept.runs] == ["processed"]
    swept_store = open_object_store(str(tmp_path / "swept"), Settings())
    predicted = [
        r
        for r in read_current(swept_store, "dose_prediction").to_pylist()
        if r["row_kind"] == "voi"
    ]
    assert {r["subject_key"] for r in predicted} == {r["subject_key"] for r in rows}
    assert read_current(swept_store, "absorbed_dose").num_rows > 0
