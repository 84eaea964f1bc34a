"""Current-view query (manifests → DuckDB views, latest run per cycle) vs a plain dataset scan.

Run: ``.venv/bin/python -m benchmarks.bench_results_query [--runs N] [--cycles N]``. Publishes
``runs`` runs of ``cycles`` cycles each into a temporary local store, every run re-publishing half
of the previous run's cycles (so half the stored rows are superseded), then times

* the platform: ``concordose.results.catalogue.query`` of a lesion-dose aggregate over the
  current rows (reads every manifest, builds the views, scans the manifested objects);
* the peer: the same aggregate by DuckDB over ``pyarrow.dataset`` of every object on disk — the
  fastest possible scan, but wrong: it counts superseded and unmanifested rows too.

The report is the wall-time ratio and both row counts (the peer's is larger by the superseded).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow.dataset as pads

from concordose.results.catalogue import query
from concordose.results.object_store import open_object_store
from concordose.results.publish import publish_tables
from concordose.settings import Settings
from tests.results_rows import dose_table, kinetics_table, provenance

SQL = "SELECT site_id, count(*) AS n, avg(mean_dose_gy) AS gy FROM {table} GROUP BY site_id"


def main() -> None:
    """Publish, time both, print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = open_object_store(folder, Settings())
        start = time.perf_counter()
        for run in range(args.runs):
            run_id = f"run-{run:05d}"
            first = run * args.cycles // 2
            cycles = [f"c{index}" for index in range(first, first + args.cycles)]
            publish_tables(
                store,
                {
                    "absorbed_dose": [dose_table(run_id, c, dose_gy=float(run)) for c in cycles],
                    "kinetics": [kinetics_table(run_id, c) for c in cycles],
                },
                provenance(run_id),
                validate=False,  # the benchmark measures reading, not GX
            )
        publish_s = time.perf_counter() - start

        timings = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            current = query(store, SQL.format(table="absorbed_dose"))
            timings.append(time.perf_counter() - start)
        platform_s = min(timings)

        peer_timings = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            connection = duckdb.connect()
            everything = pads.dataset(Path(folder) / "absorbed_dose" / "v1", format="parquet")
            connection.register("everything", everything)
            peer = connection.sql(SQL.format(table="everything")).to_arrow_table()
            connection.close()
            peer_timings.append(time.perf_counter() - start)
        peer_s = min(peer_timings)

    current_rows = sum(current.column("n").to_pylist())
    peer_rows = sum(peer.column("n").to_pylist())
    print(f"runs: {args.runs}, cycles per run: {args.cycles} (publish took {publish_s:.1f} s)")
    print(f"current view query:  {platform_s * 1000:8.1f} ms  ({current_rows:,} current rows)")
    print(
        f"plain scan (peer):   {peer_s * 1000:8.1f} ms  ({peer_rows:,} rows, superseded included)"
    )
    print(f"ratio:               {platform_s / peer_s:8.1f}x")


if __name__ == "__main__":
    main()
