"""The same backlog swept by the default runner and by a local Dask cluster of two workers.

Run: ``.venv/bin/python -m benchmarks.bench_dask_sweep [--cycles 4] [--preset test|demo]
[--workers 2] [--repeats 1] [--keep DIR] [--json FILE]``.

Set-up (untimed): ``--cycles`` distinct patients (``phantoms.generate_patient``, one seed each,
the default four time points) in one folder: a backlog of that many cycles with voxel
dosimetry (the site protocol's: mono-exponential voxel fits, ``ldm``, ``vsv_4.42mm``,
``vsv_2.21mm`` on the CT grid).

Each measurement runs in its own process (so its peak memory is its own), against its own
temporary Prefect server (``prefect_test_harness``; its start is not timed), and publishes into
its own store:

* **default**: ``flows.sweep.sweep`` with ``task_runner="default"`` — the thread runner, one
  cycle at a time (``CONCORDOSE_MAX_CONCURRENT_CYCLES`` defaults to 1), voxel chunks in the
  cycle's thread;
* **dask**: a ``distributed.LocalCluster(processes=True, n_workers=--workers,
  threads_per_worker=1)`` started by the benchmark (its start timed apart), then the same sweep
  with ``task_runner="dask:<scheduler address>"``: as many cycles at once as workers, each
  cycle's voxel chunks spread over the cluster.

Reported per case: the sweep's wall time (median over ``--repeats``), the speed-up (default /
dask), the cluster's start, and peak resident memory (``ru_maxrss``) of the driver process and,
for Dask, of each worker process. The two stores' ``voxel_dose`` and ``absorbed_dose`` rows are
checked equal (run ids and times aside): every column exactly, floats to :data:`FLOAT_RTOL`
(a BLAS product's sum splits by the BLAS thread count, one in Dask's workers:
``tests/integration/test_dask_runner.py``), and the columns equal bit for bit are counted, so
the speed-up is for the same results.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import distributed
import numpy as np
import pyarrow as pa
from prefect.testing.utilities import prefect_test_harness

from concordose.flows.process_cycle import OUTCOME_PROCESSED
from concordose.flows.sweep import sweep
from concordose.phantoms import generate_patient
from concordose.results.catalogue import read_current
from concordose.results.object_store import open_object_store
from concordose.settings import Settings

VOLATILE_COLUMNS = {"run_id", "flow_run_id", "created_at"}
CHECKED_TABLES = ("voxel_dose", "absorbed_dose")
FLOAT_RTOL = 1e-12
KEY = "bench-dask-sweep-key"


def _peak_rss_mb() -> float:
    """This process's peak resident set, MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sweep(folder: Path, sites: Path, output: Path, task_runner: str) -> float:
    started = time.perf_counter()
    result = sweep(folder, sites, output_uri=str(output), site_id="milan", task_runner=task_runner)
    elapsed = time.perf_counter() - started
    outcomes = [run.outcome for run in result.runs]
    if result.failed or any(outcome != OUTCOME_PROCESSED for outcome in outcomes):
        raise RuntimeError(f"sweep did not process every cycle: {outcomes}, {result.failed}")
    return elapsed


def run_case(case: str, folder: Path, sites: Path, output: Path, workers: int) -> dict[str, Any]:
    """One measurement (in this process): the sweep's time and the peak memories."""
    os.environ["CONCORDOSE_PSEUDONYM_KEY"] = KEY
    with prefect_test_harness(server_startup_timeout=120):
        if case == "default":
            return {"sweep_s": _sweep(folder, sites, output, "default"), "rss_mb": _peak_rss_mb()}
        started = time.perf_counter()
        with (
            distributed.LocalCluster(
                processes=True, n_workers=workers, threads_per_worker=1, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            cluster_s = time.perf_counter() - started
            sweep_s = _sweep(folder, sites, output, f"dask:{cluster.scheduler_address}")
            worker_rss = client.run(
                lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            )
        return {
            "sweep_s": sweep_s,
            "cluster_start_s": cluster_s,
            "rss_mb": _peak_rss_mb(),
            "worker_rss_mb": sorted(worker_rss.values()),
        }


def _rows(output: Path, table: str) -> pa.Table:
    rows = read_current(open_object_store(str(output), Settings()), table)
    keep = [
        name
        for name, kind in zip(rows.column_names, rows.schema.types, strict=True)
        if name not in VOLATILE_COLUMNS and not pa.types.is_timestamp(kind)
    ]
    rows = rows.select(keep)
    flat = [
        name
        for name, kind in zip(rows.column_names, rows.schema.types, strict=True)
        if not pa.types.is_nested(kind)
    ]
    return rows.sort_by([(name, "ascending") for name in flat])


def _compare(expected: pa.Table, found: pa.Table) -> tuple[bool, int, int]:
    """Whether the tables are equal (floats to :data:`FLOAT_RTOL`), and how many of their
    columns are equal bit for bit, of how many."""
    if expected.num_rows != found.num_rows or expected.column_names != found.column_names:
        return False, 0, len(expected.column_names)
    exact = 0
    equal = True
    for column in expected.column_names:
        a, b = expected[column], found[column]
        if a.equals(b):
            exact += 1
        elif pa.types.is_floating(a.type):
            equal &= bool(
                np.allclose(
                    a.to_numpy(zero_copy_only=False),
                    b.to_numpy(zero_copy_only=False),
                    rtol=FLOAT_RTOL,
                    atol=0.0,
                    equal_nan=True,
                )
            )
        else:
            equal = False
    return equal, exact, len(expected.column_names)


def _in_subprocess(case: str, folder: Path, sites: Path, output: Path, workers: int) -> Any:
    command = [
        sys.executable, "-m", "benchmarks.bench_dask_sweep", "--case", case,
        "--folder", str(folder), "--sites", str(sites), "--output", str(output),
        "--workers", str(workers),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{case} run failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument("--preset", default="test", choices=("test", "demo"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the backlog and stores here")
    parser.add_argument("--json", type=Path, help="write the results here")
    # one measurement, in its own process (internal)
    parser.add_argument("--case", choices=("default", "dask"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sites", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        result = run_case(args.case, args.folder, args.sites, args.output, args.workers)
        print(json.dumps(result))
        return

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-dask-sweep-"))
    folder, sites = root / "backlog", root / "sites.yaml"
    started = time.perf_counter()
    if not folder.is_dir():
        for seed in range(100, 100 + args.cycles):
            patient = generate_patient(root / f"patient-{seed}", seed=seed, preset=args.preset)
            shutil.copytree(patient.out_dir / "dicom", folder / f"patient-{seed}")
            shutil.copyfile(patient.sites_path, sites)
    print(f"backlog of {args.cycles} {args.preset} cycles: {time.perf_counter() - started:.0f} s")
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {"default": [], "dask": []}
    for repeat in range(args.repeats):
        for case in ("default", "dask"):  # interleaved: the same machine load for both
            output = root / f"out-{case}-{repeat}"
            shutil.rmtree(output, ignore_errors=True)
            runs[case].append(_in_subprocess(case, folder, sites, output, args.workers))
            print(f"repeat {repeat + 1} {case}: {runs[case][-1]}")
    os.environ["CONCORDOSE_PSEUDONYM_KEY"] = KEY
    compared = {
        table: _compare(_rows(root / "out-default-0", table), _rows(root / "out-dask-0", table))
        for table in CHECKED_TABLES
    }
    default_s = statistics.median(run["sweep_s"] for run in runs["default"])
    dask_s = statistics.median(run["sweep_s"] for run in runs["dask"])
    cluster_s = statistics.median(run["cluster_start_s"] for run in runs["dask"])
    summary = {
        "cycles": args.cycles,
        "preset": args.preset,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "default_sweep_s": default_s,
        "dask_sweep_s": dask_s,
        "dask_cluster_start_s": cluster_s,
        "speed_up": default_s / dask_s,
        "speed_up_with_cluster_start": default_s / (dask_s + cluster_s),
        "default_peak_rss_mb": max(run["rss_mb"] for run in runs["default"]),
        "dask_driver_peak_rss_mb": max(run["rss_mb"] for run in runs["dask"]),
        "dask_worker_peak_rss_mb": max(max(run["worker_rss_mb"]) for run in runs["dask"]),
        "tables_equal": all(equal for equal, _, _ in compared.values()),
        "columns_bit_identical": {
            table: f"{exact}/{total}" for table, (_, exact, total) in compared.items()
        },
        "runs": runs,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2))
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
