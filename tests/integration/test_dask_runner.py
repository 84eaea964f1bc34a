"""The Dask runner (issue 19): a sweep of three small cycles with voxel dosimetry on a real local
cluster (scheduler and two single-threaded worker processes) publishes the same tables as the
default runner, and the work — the cycles and their voxel chunks — ran on the Dask workers.

The same numbers, computed the same way: the voxel fits and convolutions are cut into the same
chunks whichever runner runs them (``concordose.chunk_map``), so every column is compared
exactly (run ids and clocks aside). Two things that once made floats differ in their last bits
are fixed where they arose, not tolerated here: the cohort tables summed their input rows in
publication order, which parallel cycles change (``read_cohort_inputs`` now sorts them), and a
VOI's CT mass was a BLAS matrix product whose split follows the BLAS thread count, one in
Dask's worker processes (``quant.density.voi_masses_g`` now sums per VOI).
"""

from __future__ import annotations

import faulthandler
import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import distributed
import numpy as np
import pyarrow as pa
import pytest

from concordose.dose.methods.voxel_s_value import convolve_kernel_in_slabs
from concordose.dose.vsv_kernels import vsv_kernel
from concordose.flows.process_cycle import OUTCOME_PROCESSED
from concordose.flows.sweep import SweepResult, sweep
from concordose.phantoms import generate_patient
from concordose.results.catalogue import read_current
from concordose.results.object_store import open_object_store
from concordose.schemas.tables import TABLES
from concordose.settings import Settings
from concordose.tasks.voxel_chunks import DaskChunkMap, voxel_chunk_map

pytestmark = pytest.mark.integration

PATIENT_SEEDS = (11, 12, 13)
"""Three patients of the fast ``test`` preset: three cycles (another PatientID each)."""
TIME_POINTS_H = (4.0, 24.0, 96.0)
"""Three time points: the fewest the voxel model (mono-exponential) is fitted on."""
KINETICS_METHODS = ("mono_exponential",)
DOSE_METHODS = ("ldm",)
"""Few VOI-level methods (the voxel dosimetry is the site protocol's: ldm and two VSV kernels)."""
VOLATILE_COLUMNS = {"run_id", "flow_run_id", "created_at"}
"""Columns that differ between two runs of the same input: the run's identity and clock."""
FLOAT_RTOL = 0.0
"""Relative difference allowed between two floats: none (see the module docstring)."""
CHUNK_PREFIXES = ("fit_voxel_chunk", "convolve_slab")
"""Dask task key prefixes of the voxel chunks (the library functions' names)."""


@pytest.fixture(scope="module")
def backlog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder holding three patients' cycles, and the site registry."""
    root = tmp_path_factory.mktemp("dask-backlog")
    folder = root / "backlog"
    sites = root / "sites.yaml"
    for seed in PATIENT_SEEDS:
        patient = generate_patient(
            root / f"patient-{seed}", seed=seed, preset="test", time_points_h=TIME_POINTS_H
        )
        shutil.copytree(patient.out_dir / "dicom", folder / f"patient-{seed}")
        shutil.copyfile(patient.sites_path, sites)  # the same registry for every seed
    return folder, sites


def _published(output: Path) -> dict[str, pa.Table]:
    """Every published table's current rows without the run's identity and clock, sorted."""
    store = open_object_store(str(output), Settings())
    tables = {}
    for name in sorted(TABLES):
        if not (output / name).is_dir():
            continue
        table = read_current(store, name)
        keep = [
            column
            for column, kind in zip(table.column_names, table.schema.types, strict=True)
            if column not in VOLATILE_COLUMNS and not pa.types.is_timestamp(kind)
        ]
        table = table.select(keep)
        # keys first (strings, integers): a float a few ulps apart never reorders rows
        kinds = dict(zip(table.column_names, table.schema.types, strict=True))
        keys = [c for c, k in kinds.items() if pa.types.is_string(k) or pa.types.is_integer(k)]
        rest = [c for c, k in kinds.items() if c not in keys and not pa.types.is_nested(k)]
        tables[name] = table.sort_by([(column, "ascending") for column in keys + rest])
    return tables


def _differences(expected: pa.Table, found: pa.Table, *, float_rtol: float = 0.0) -> dict[str, str]:
    """Per differing column, what differs (for the assertion's message); floats within
    ``float_rtol`` (relative) count as equal."""
    if expected.num_rows != found.num_rows:
        return {"rows": f"{expected.num_rows} != {found.num_rows}"}
    differing = {}
    for column in expected.column_names:
        a, b = expected[column].to_pylist(), found[column].to_pylist()
        if float_rtol and pa.types.is_floating(expected.schema.field(column).type):
            same = all(
                x == y
                or (x is not None and y is not None and math.isclose(x, y, rel_tol=float_rtol))
                or (x is not None and y is not None and math.isnan(x) and math.isnan(y))
                for x, y in zip(a, b, strict=True)
            )
            if same:
                continue
        if a != b:
            index = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
            differing[column] = f"row {index}: {a[index]!r} != {b[index]!r}"
    return differing


def _computed_by_prefix(dask_scheduler: Any) -> dict[str, int]:
    """Tasks the scheduler saw finish (reach memory), per key prefix."""
    return {
        name: int(prefix.state_counts.get("memory", 0))
        for name, prefix in dask_scheduler.task_prefixes.items()
    }


def _executed(dask_worker: Any) -> int:
    return int(dask_worker.state.executed_count)


STACKS_AFTER_S = 420.0
"""When the Dask sweep still runs after this long (the suite's timeout is 600 s; it takes
2-4 minutes), every thread's stack in each worker is written to the worker's stderr (captured,
shown with a failure): a sweep once hung in a cycle's report on a worker in CI (1 run in ~10),
the worker did not answer its nanny's close, and the timeout's own dump shows only the test
process waiting."""


@contextmanager
def _stacks_if_stuck(client: distributed.Client) -> Iterator[None]:
    """Arm :func:`faulthandler.dump_traceback_later` in every worker for the block: its
    watchdog is a C thread, so it dumps even a worker whose interpreter is deadlocked (a
    diagnostic, not a synchronisation). Disarmed only when the block succeeds: after a timeout
    a deadlocked worker would never answer the request (the cluster's teardown kills it)."""
    client.run(faulthandler.dump_traceback_later, STACKS_AFTER_S, exit=False)
    yield
    client.run(faulthandler.cancel_dump_traceback_later)


def test_a_sweep_on_a_dask_cluster_publishes_the_default_runners_tables(
    backlog: tuple[Path, Path],
    tmp_path: Path,
    prefect_server: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, sites = backlog
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "dask-test-key")
    default = sweep(
        folder,
        sites,
        output_uri=str(tmp_path / "default"),
        site_id="milan",
        kinetics_methods=KINETICS_METHODS,
        dose_methods=DOSE_METHODS,
    )
    with (
        distributed.LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
        _stacks_if_stuck(client),
    ):
        on_dask: SweepResult = sweep(
            folder,
            sites,
            output_uri=str(tmp_path / "dask"),
            site_id="milan",
            kinetics_methods=KINETICS_METHODS,
            dose_methods=DOSE_METHODS,
            task_runner=f"dask:{cluster.scheduler_address}",
        )
        computed = client.run_on_scheduler(_computed_by_prefix)
        executed = client.run(_executed)
        # outside a worker (`process-cycle --task-runner dask:ADDRESS`): a client of the scheduler
        tia = np.random.default_rng(1).gamma(2.0, 1.0, (30, 12, 14))
        with voxel_chunk_map(f"dask:{cluster.scheduler_address}") as map_chunks:
            assert isinstance(map_chunks, DaskChunkMap)
            on_cluster = convolve_kernel_in_slabs(tia, vsv_kernel("4.42mm"), map_chunks=map_chunks)
        np.testing.assert_array_equal(
            on_cluster, convolve_kernel_in_slabs(tia, vsv_kernel("4.42mm"))
        )

    for result in (default, on_dask):
        assert result.failed == {}
        assert [run.outcome for run in result.runs] == [OUTCOME_PROCESSED] * len(PATIENT_SEEDS)
    # the cycles and their voxel chunks ran on the cluster, on both workers
    assert sum(count for name, count in computed.items() if "run" in name and "cycle" in name) >= 3
    for prefix in CHUNK_PREFIXES:
        assert computed.get(prefix, 0) >= len(PATIENT_SEEDS), (prefix, computed)
    assert len(executed) == 2
    assert all(count > 0 for count in executed.values()), executed

    expected = _published(tmp_path / "default")
    found = _published(tmp_path / "dask")
    assert {"voxel_dose", "voxel_dose_summary", "absorbed_dose"} <= set(expected)
    assert set(found) == set(expected)
    differences = {
        name: _differences(table, found[name], float_rtol=FLOAT_RTOL)
        for name, table in expected.items()
        if not found[name].equals(table)
    }
    assert {name: diff for name, diff in differences.items() if diff} == {}
    assert {"kinetics_agreement", "dose_agreement"} <= set(expected)  # compared too
    assert all(table.num_rows > 0 for table in expected.values())
