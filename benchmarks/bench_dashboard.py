"""The consortium dashboard over ≥ 100 cycles (issue 17, item 6): target ≤ 30 s, absolute (no
peer).

Run: ``.venv/bin/python -m benchmarks.bench_dashboard [--source DIR] [--cycles 100]
[--sites 4] [--repeats 3] [--keep DIR]``.

The store is *synthesised*, not processed: running the pipeline 100 times would take hours
and the dashboard reads only published rows. A real small run's published tables are the
template — ``--source`` (any published store with at least one processed cycle, e.g.
``concordose demo``'s ``<workdir>/output``), else ``concordose demo`` runs first in a
temporary folder (≈ 45 s, untimed) — and its per-cycle rows (``acquisitions``,
``voi_timepoints``, ``kinetics``, ``absorbed_dose``, ``voxel_dose``, the summaries,
``method_comparison``, ``qc_findings``) are replicated into ``--cycles`` cycles over
``--sites`` sites, each published as its own run (one manifest per cycle, as the flow does;
validation off, since the rows are the source's, already validated), with every TIA, dose and
activity multiplied by a per-row log-normal factor (σ 10 %, seeded) so that the Bland–Altman
plots have scatter. Every tenth cycle is held instead (its ``acquisitions`` and one error
finding, no science rows). Then, as in production: three calibration records per site
(2024, 2025, 2026–open, perturbed CF/PSF) in one run; the cohort tables rebuilt by the real
builder from the replicated cycles (``rebuild_cohort_tables``, validated); and a synthetic
``harmonisation_agreement`` (the first ten processed cycles' reference-method rows measured at
every site, three variants, truth = the source's value) so that every section is drawn.

Timed, per repeat, what ``concordose report --dashboard`` does: reading the published tables
(manifests → DuckDB views → one query per table), rendering every figure and the template,
and writing the HTML to the store. Prints the split, the best and median, and the verdict.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.demo_store import demo_output
from concordose.consortium import rebuild_cohort_tables
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.report import publish_dashboard, read_dashboard_tables, render_dashboard
from concordose.report.cycle_tables import CYCLE_TABLES
from concordose.results.catalogue import read_current
from concordose.results.object_store import ObjectStore, open_object_store
from concordose.results.provenance import Provenance
from concordose.results.publish import publish_tables
from concordose.schemas.tables import HARMONISATION_AGREEMENT, TABLES
from concordose.settings import Settings

TARGET_S = 30.0
PERTURBED = ("tia_mbq_h", "mean_dose_gy", "activity_mbq", "dose_gy", "reference_dose_gy")
SCATTER_SIGMA = 0.10
HELD_EVERY = 10
SITES = ("milan", "brussels", "montpellier", "grandrapids", "leuven", "aarhus")


def site_names(count: int) -> list[str]:
    """``count`` site ids: the named ones first, then ``site06``, ``site07``…"""
    return [*SITES, *(f"site{index:02d}" for index in range(len(SITES), count))][:count]


def _replace(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(name), values)


def _replicated(
    source: pa.Table, cycle: int, site: str, run_id: str, rng: np.random.Generator
) -> pa.Table:
    table = source
    for name, value in (
        ("cycle_key", f"cyc-bench-{cycle:04d}"),
        ("subject_key", f"sub-bench-{cycle:04d}"),
        ("site_id", site),
        ("run_id", run_id),
    ):
        if name in table.schema.names:
            table = _replace(table, name, pa.array([value] * table.num_rows, pa.string()))
    for name in PERTURBED:
        if name in table.schema.names:
            factors = rng.lognormal(0.0, SCATTER_SIGMA, table.num_rows)
            values = pc.multiply(table.column(name), pa.array(factors))
            table = _replace(table, name, values.cast(table.schema.field(name).type))
    return table


def _calibrations(source: pa.Table, sites: list[str], rng: np.random.Generator) -> pa.Table:
    template = source.slice(0, 1).to_pylist()[0]
    rows = []
    windows = ((date(2024, 1, 1), date(2024, 12, 31)), (date(2025, 1, 1), date(2025, 12, 31)))
    for site in sites:
        for year, (start, end) in enumerate((*windows, (date(2026, 1, 1), None))):
            rows.append(
                {
                    **template,
                    "site_id": site,
                    "calibration_record_id": f"{site}-{2024 + year}",
                    "valid_from": start,
                    "valid_to": end,
                    "calibration_factor_cps_per_mbq": template["calibration_factor_cps_per_mbq"]
                    * rng.lognormal(0.0, 0.03),
                    "psf_fwhm_mm": (template["psf_fwhm_mm"] or 10.0) * rng.lognormal(0.0, 0.03),
                    "run_id": "bench-calibrations",
                }
            )
    return pa.Table.from_pylist(rows, schema=TABLES["site_calibrations"].schema)


def _harmonisation(store: ObjectStore, sites: list[str], rng: np.random.Generator) -> pa.Table:
    kinetics = read_current(store, "kinetics").to_pylist()
    cycles = sorted({r["cycle_key"] for r in kinetics})[:10]
    rows = []
    now = datetime.now(UTC)
    for cycle in cycles:
        reference = [
            r
            for r in kinetics
            if r["cycle_key"] == cycle
            and r["kinetics_method"] == REFERENCE_METHOD_NAME
            and r["tia_mbq_h"] is not None
        ]
        for variant, spread in (("raw", 0.15), ("harmonised", 0.04), ("harmonised_pvc", 0.03)):
            for row in reference:
                measured = row["tia_mbq_h"] * rng.lognormal(0.0, spread, len(sites))
                cov = float(np.std(measured, ddof=1) / np.mean(measured))
                for site, value in zip(sites, measured, strict=True):
                    rows.append(
                        {
                            "reference_object_id": f"bench-{cycle}",
                            "reference_object_kind": "digital_patient",
                            "voi_label": row["voi_label"],
                            "voi_type": row["voi_type"],
                            "site_id": site,
                            "variant": variant,
                            "metric": "tia_mbq_h",
                            "kinetics_method": REFERENCE_METHOD_NAME,
                            "dose_method": "none",
                            "method_parameters_hash": row["method_parameters_hash"],
                            "measured": float(value),
                            "truth": row["tia_mbq_h"],
                            "relative_error": float(value / row["tia_mbq_h"] - 1.0),
                            "n_sites": len(sites),
                            "cross_site_mean": float(np.mean(measured)),
                            "cross_site_cov": cov,
                            "calibration_record_id": f"{site}-2026",
                            "source_run_id": row["run_id"],
                            "schema_version": HARMONISATION_AGREEMENT.version,
                            "software_version": "bench",
                            "run_id": "bench-harmonisation",
                            "flow_run_id": None,
                            "created_at": now,
                        }
                    )
    return pa.Table.from_pylist(rows, schema=HARMONISATION_AGREEMENT.schema)


def build_store(source: Path, target: Path, cycles: int, sites: list[str]) -> ObjectStore:
    """Replicate ``source``'s published cycles into ``cycles`` cycles at ``target`` (see the
    module docstring); the store."""
    rng = np.random.default_rng(17)
    origin = open_object_store(str(source), Settings(), create=False)
    templates = {name: read_current(origin, name) for name in (*CYCLE_TABLES, "site_calibrations")}
    first = sorted(set(templates["kinetics"].column("cycle_key").to_pylist()))[0]
    per_cycle = {
        name: templates[name].filter(pc.equal(templates[name].column("cycle_key"), first))
        for name in CYCLE_TABLES
    }
    store = open_object_store(str(target), Settings())
    for index in range(cycles):
        run_id = f"bench-{index:04d}"
        site = sites[index % len(sites)]
        held = index % HELD_EVERY == HELD_EVERY - 1
        names = ("acquisitions",) if held else CYCLE_TABLES
        tables = {
            name: [_replicated(per_cycle[name], index, site, run_id, rng)]
            for name in names
            if per_cycle[name].num_rows
        }
        if held:
            finding = per_cycle["acquisitions"].slice(0, 1).to_pylist()[0]
            tables["qc_findings"] = [
                pa.Table.from_pylist(
                    [
                        {
                            **{k: finding.get(k) for k in TABLES["qc_findings"].schema.names},
                            "subject_key": f"sub-bench-{index:04d}",
                            "cycle_key": f"cyc-bench-{index:04d}",
                            "site_id": site,
                            "finding_index": 0,
                            "check_name": "calibration",
                            "severity": "error",
                            "message": "no calibration record covers the acquisition date",
                            "time_point_index": None,
                            "schema_version": TABLES["qc_findings"].version,
                            "run_id": run_id,
                        }
                    ],
                    schema=TABLES["qc_findings"].schema,
                )
            ]
        publish_tables(store, tables, Provenance(run_id=run_id), validate=False)
    publish_tables(
        store,
        {"site_calibrations": [_calibrations(templates["site_calibrations"], sites, rng)]},
        Provenance(run_id="bench-calibrations"),
        validate=False,
    )
    rebuild_cohort_tables(store, Provenance(run_id="bench-cohort"))
    publish_tables(
        store,
        {"harmonisation_agreement": [_harmonisation(store, sites, rng)]},
        Provenance(run_id="bench-harmonisation"),
        validate=False,
    )
    return store


def _one(store: ObjectStore) -> tuple[float, float, float, int]:
    start = time.perf_counter()
    tables = read_dashboard_tables(store)
    read_s = time.perf_counter() - start
    html = render_dashboard(tables)
    render_s = time.perf_counter() - start - read_s
    publish_dashboard(store, html)
    return read_s, render_s, time.perf_counter() - start, len(html)


def main() -> None:
    """Build the synthetic store, then time the dashboard."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="build the store here, keep it")
    args = parser.parse_args()
    sites = site_names(args.sites)
    with tempfile.TemporaryDirectory() as folder:
        source = args.source or demo_output(Path(folder))
        target = args.keep or Path(folder) / "bench-store"
        started = time.perf_counter()
        store = build_store(source, target, args.cycles, sites)
        print(f"store of {args.cycles} cycles at {len(sites)} sites built in "
              f"{time.perf_counter() - started:.0f} s (untimed): {target}")  # fmt: skip
        runs = [_one(store) for _ in range(args.repeats)]
    totals = [run[2] for run in runs]
    best = min(runs, key=lambda run: run[2])
    print(f"dashboard of {best[3] / 1e6:.2f} MB, {args.repeats} repeats (the first cold)")
    print(f"  read tables {best[0]:.2f} s, render + figures {best[1]:.2f} s (best run)")
    print(f"  total best {min(totals):.2f} s, median {statistics.median(totals):.2f} s, "
          f"all {', '.join(f'{t:.2f}' for t in totals)}")  # fmt: skip
    verdict = "met" if statistics.median(totals) <= TARGET_S else "NOT met"
    print(f"target ≤ {TARGET_S:.0f} s over {args.cycles} cycles (median): {verdict}")


if __name__ == "__main__":
    main()
