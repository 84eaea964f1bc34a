"""A cycle's working set from its headers, and batches of cycles within a memory budget."""

from __future__ import annotations

from datetime import datetime

import pytest

from concordose.flows.sweep import batches_within_budget
from concordose.phantoms import GeneratedPatient
from concordose.pipeline.assembly import assemble_cycles
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.working_set import (
    BASE_BYTES,
    BYTES_PER_CT_VOXEL,
    BYTES_PER_SPECT_VOXEL,
    estimate_working_set,
    memory_budget_bytes,
)
from concordose.spool.cycles import CycleMembers, CycleRecord


def test_the_estimate_grows_with_the_largest_ct_and_every_spect(
    small_patient: GeneratedPatient,
) -> None:
    (study,) = assemble_cycles(catalogue(small_patient.out_dir / "dicom"))
    working_set = estimate_working_set(study)
    assert working_set.ct_shape is not None
    ct_voxels = working_set.ct_shape[0] * working_set.ct_shape[1] * working_set.ct_shape[2]
    spect = study.time_points[0].acquisition.geometry.shape
    spect_voxels = spect[0] * spect[1] * spect[2] * len(study.time_points)
    assert working_set.estimated_bytes == pytest.approx(
        BASE_BYTES + BYTES_PER_CT_VOXEL * ct_voxels + BYTES_PER_SPECT_VOXEL * spect_voxels
    )
    assert working_set.ct_shape[0] == len(study.time_points[0].ct_files)
    assert "GB" in working_set.describe()
    assert f"× {len(study.time_points)} time points" in working_set.describe()


def test_the_budget_defaults_to_half_the_memory() -> None:
    assert memory_budget_bytes(2.5) == 2.5e9
    assert 0 < memory_budget_bytes(None) < 1e15


def _record(name: str) -> CycleRecord:
    return CycleRecord(CycleMembers(name, "P", datetime(2026, 1, 1), (), (), "r", False), None)


def test_cycles_run_together_only_while_they_fit_the_budget() -> None:
    records = [_record(name) for name in "abcde"]
    sizes = [1.0, 1.0, 3.0, 0.5, 5.0]
    batches = batches_within_budget(records, sizes, limit=3, budget_bytes=4.0)
    assert [[r.cycle_id for r in batch] for batch in batches] == [["a", "b"], ["c", "d"], ["e"]]
    assert [len(b) for b in batches_within_budget(records, [0.0] * 5, 2, 4.0)] == [2, 2, 1]
