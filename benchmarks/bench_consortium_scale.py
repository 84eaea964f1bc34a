"""What grows with the consortium's published history (issue 19, item 7: docs/scaling.md).

Run: ``.venv/bin/python -m benchmarks.bench_consortium_scale [--source DIR]
[--cycles 250,1000,4000] [--sites 20] [--json FILE]``.

Per-cycle work (receive, gate, quantify, fit, dose, validate, publish) does not depend on how many
cycles the store already holds (``bench_cycle_scaling``: cycle *k* after a 40-cycle backlog costs
what it costs alone). What does grow is everything that reads *the whole current store*: the
cohort tables a processed ``process-cycle`` run rebuilds (issue 14), the dashboard the nightly
sweep rebuilds (issue 17), and any consortium query. This benchmark measures them against the
number of published cycles, on stores synthesised as ``bench_dashboard`` does (a real run's
published rows replicated, one run and manifest per cycle, every tenth cycle held; ``--source``
or a ``concordose demo`` run first), and reports the store's object count and size.

Timed at each size (seconds, one cold call each; the sizes are built one after another):

* ``read_current``: the current rows of one per-cycle table (``kinetics``) through the
  manifests and DuckDB views — what any consortium query pays first;
* ``cohort rebuild``: ``rebuild_cohort_tables`` (read the inputs, build the agreement tables,
  validate them with Great Expectations, publish) — paid by every processed cycle;
* ``dashboard read``: ``read_dashboard_tables`` (every table the dashboard draws).

The per-cycle slope of each, extrapolated to the consortium of docs/scaling.md (20 sites ×
300 cycles a year), says which one breaks first and when. No peer: the figures are absolute,
on this machine, local-folder store (an S3 store adds a request per object read: the object
counts are printed for that estimate).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_dashboard import build_store, site_names
from benchmarks.demo_store import demo_output
from concordose.consortium import rebuild_cohort_tables
from concordose.report import read_dashboard_tables
from concordose.results.catalogue import read_current
from concordose.results.provenance import Provenance

# The consortium docs/scaling.md sizes: 20 sites × 300 cycles a year (issue 19, item 7).
CYCLES_PER_YEAR = 20 * 300


def _store_size(root: Path) -> tuple[int, int]:
    files = [path for path in root.rglob("*") if path.is_file()]
    return len(files), sum(path.stat().st_size for path in files)


def measure(source: Path, folder: Path, cycles: int, sites: list[str]) -> dict[str, float]:
    """Build a store of ``cycles`` cycles under ``folder`` and time the whole-store readers."""
    target = folder / f"store-{cycles}"
    started = time.perf_counter()
    store = build_store(source, target, cycles, sites)
    build_s = time.perf_counter() - started

    started = time.perf_counter()
    kinetics = read_current(store, "kinetics")
    read_s = time.perf_counter() - started

    started = time.perf_counter()
    rebuild_cohort_tables(store, Provenance(run_id=f"bench-cohort-{cycles}"))
    rebuild_s = time.perf_counter() - started

    started = time.perf_counter()
    read_dashboard_tables(store)
    dashboard_s = time.perf_counter() - started

    objects, size_bytes = _store_size(target)
    return {
        "cycles": float(cycles),
        "build_s": build_s,
        "kinetics_rows": float(kinetics.num_rows),
        "read_current_s": read_s,
        "cohort_rebuild_s": rebuild_s,
        "dashboard_read_s": dashboard_s,
        "objects": float(objects),
        "store_mb": size_bytes / 1e6,
    }


def _slope_per_cycle(rows: list[dict[str, float]], key: str) -> tuple[float, float]:
    """Least-squares line of ``key`` against cycles: (seconds per cycle, intercept s)."""
    cycles = np.array([row["cycles"] for row in rows])
    values = np.array([row[key] for row in rows])
    slope, intercept = np.polyfit(cycles, values, 1)
    return float(slope), float(intercept)


def main() -> None:
    """Build stores of increasing size; print the table and the extrapolation."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--cycles", default="250,1000,4000")
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sizes = [int(value) for value in args.cycles.split(",")]
    sites = site_names(args.sites)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        source = args.source or demo_output(Path(folder))
        for cycles in sizes:
            row = measure(source, Path(folder), cycles, sites)
            rows.append(row)
            print(
                f"{cycles:6d} cycles: read_current {row['read_current_s']:6.2f} s, "
                f"cohort rebuild {row['cohort_rebuild_s']:6.2f} s, dashboard read "
                f"{row['dashboard_read_s']:6.2f} s; {row['objects']:.0f} objects, "
                f"{row['store_mb']:.0f} MB (built in {row['build_s']:.0f} s, untimed)",
                flush=True,
            )
    extrapolated: dict[str, dict[str, float]] = {}
    if len(rows) >= 2:
        for key in ("read_current_s", "cohort_rebuild_s", "dashboard_read_s", "store_mb"):
            slope, intercept = _slope_per_cycle(rows, key)
            one_year = intercept + slope * CYCLES_PER_YEAR
            extrapolated[key] = {"per_cycle": slope, "intercept": intercept, "year_1": one_year}
            print(
                f"{key}: {slope * 1000:.3f} per 1000 cycles, intercept {intercept:.2f}; "
                f"at {CYCLES_PER_YEAR} cycles (one year): {one_year:.1f}, "
                f"five years: {intercept + slope * 5 * CYCLES_PER_YEAR:.1f}"
            )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "extrapolated": extrapolated}, indent=2))


if __name__ == "__main__":
    main()
