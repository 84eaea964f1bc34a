"""A cycle whose VOIs come as an RTSTRUCT (drawn by rt-utils from the SEG's masks on the first
CT) is processed end to end like the same cycle with its SEG: the same VOIs, TIAs within 3 %."""

from __future__ import annotations

from pathlib import Path

import pytest

from concordose.flows.process_cycle import OUTCOME_PROCESSED
from concordose.flows.sweep import process_spool
from concordose.phantoms import GeneratedPatient
from concordose.results.catalogue import read_current
from concordose.results.object_store import open_object_store
from concordose.settings import Settings
from tests.rtstruct_builder import folder_with_rtstruct

pytestmark = pytest.mark.integration


def _tia_by_voi(folder: Path, sites: Path, out: Path) -> dict[str, float]:
    result = process_spool(
        folder,
        sites,
        output_uri=str(out),
        site_id="milan",
        kinetics_methods=("mono_exponential",),
        dose_methods=("sphere",),
        voxel_dosimetry=False,
    )
    assert [run.outcome for run in result.runs] == [OUTCOME_PROCESSED], result.runs
    rows = read_current(open_object_store(str(out), Settings()), "kinetics").to_pylist()
    return {
        row["voi_label"]: row["tia_mbq_h"]
        for row in rows
        if row["kinetics_method"] == "mono_exponential"
    }


def test_a_cycle_with_an_rtstruct_gives_the_seg_runs_tias(
    prefect_server: None,
    small_patient: GeneratedPatient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-secret")
    sites = small_patient.sites_path
    with_seg = _tia_by_voi(small_patient.out_dir / "dicom", sites, tmp_path / "seg-out")
    folder = folder_with_rtstruct(small_patient, tmp_path / "with-rtstruct")
    with_rtstruct = _tia_by_voi(folder, sites, tmp_path / "rtstruct-out")
    assert set(with_rtstruct) == set(with_seg)
    assert len(with_seg) == 6  # kidneys, liver, spleen, two lesions
    for label, tia in with_seg.items():
        assert tia is not None
        assert with_rtstruct[label] == pytest.approx(tia, rel=0.03), label
