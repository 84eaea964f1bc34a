"""One cycle's report (issue 17, item 6): target ≤ 5 s, absolute (no peer).

Run: ``.venv/bin/python -m benchmarks.bench_cycle_report [--output DIR] [--repeats 5]``.
``--output``: a published store holding at least one cycle (e.g. ``concordose demo``'s
``<workdir>/output``); without it the demo runs first in a temporary folder (≈ 45 s, untimed:
a 6-time-point cycle, every kinetics × dose method of the default protocol, voxel dosimetry, its
image products). Times, per repeat, what ``concordose report --cycle KEY`` does for one cycle:
reading its current rows (manifests → DuckDB views → the cycle's rows), rendering every figure
and the template, and writing the HTML to the store; prints the split and the best and median.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.demo_store import demo_output
from concordose.report import (
    publish_cycle_report,
    published_cycle_keys,
    read_cycle_rows,
    render_cycle_report,
)
from concordose.report.images import image_products_key, read_cycle_images
from concordose.results.catalogue import connect
from concordose.results.object_store import ObjectStore, open_object_store
from concordose.settings import Settings

TARGET_S = 5.0


def _one(store: ObjectStore, cycle_key: str) -> tuple[float, float, float, int]:
    start = time.perf_counter()
    connection = connect(store)
    rows = read_cycle_rows(connection, cycle_key)
    connection.close()
    path = store.path(image_products_key(cycle_key))
    images = read_cycle_images(store.read_bytes(path)) if Path(path).is_file() else None
    read_s = time.perf_counter() - start
    html = render_cycle_report(rows, images)
    render_s = time.perf_counter() - start - read_s
    publish_cycle_report(store, cycle_key, html)
    return read_s, render_s, time.perf_counter() - start, len(html)


def main() -> None:
    """Time the report of the store's first cycle."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        output = args.output or demo_output(Path(folder))
        store = open_object_store(str(output), Settings())
        connection = connect(store)
        cycle_key = published_cycle_keys(connection)[0]
        connection.close()
        _one(store, cycle_key)  # warm: imports, matplotlib's font cache
        runs = [_one(store, cycle_key) for _ in range(args.repeats)]
    totals = [run[2] for run in runs]
    best = min(runs, key=lambda run: run[2])
    print(f"cycle {cycle_key}: report of {best[3] / 1e6:.2f} MB, {args.repeats} repeats")
    print(f"  read rows + images {best[0]:.2f} s, render {best[1]:.2f} s (best run)")
    print(f"  total best {min(totals):.2f} s, median {statistics.median(totals):.2f} s")
    verdict = "met" if statistics.median(totals) <= TARGET_S else "NOT met"
    print(f"target ≤ {TARGET_S:.0f} s (median): {verdict}")


if __name__ == "__main__":
    main()
