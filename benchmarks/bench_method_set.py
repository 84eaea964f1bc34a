"""What the full default method set costs a cycle, against mono-only processing in the same run.

Run: ``.venv/bin/python -m benchmarks.bench_method_set [--preset demo] [--repeats 5]``.

Target (issue 14, item 8): running the site protocol's full default method set (the reference
``spectacular_6tp``, five simplified methods, mono, bi, trapezoid; × ``sphere``, ``organ_s_am``,
``organ_s_af``, ``ldm``) must not make a cycle slower than 1.5× the processing before issue 14
(``mono_exponential`` × ``sphere``, no comparison rows), because methods are batched over a
cycle's VOIs, never looped per VOI.

Set-up (untimed): one demo-size patient (``phantoms.generate_patient``) on the SPECTacular
six-point schedule (4, 24, 48, 96, 168, 240 h, ``flows.demo.DEMO_TIME_POINTS_H``) written as
DICOM; its cycle is read and gated once (``prepare_cycle``), identical for both variants.

Timed, ``--repeats`` times with the variants interleaved (mono-only, full, mono-only, …; the
first pair is a warm-up, reported apart), the calls ``flows.process_cycle`` makes after the gate,
as the tasks' functions (``task.fn``, no Prefect): quantify (no result cache: a cycle's first
run registers its CTs), kinetics, dose, cycle tables and summary tables (``method_comparison``
against the reference for the full set), voxel dosimetry (site protocol; the same for both),
then validation (Great Expectations) and publication into a fresh temporary folder. Reported per
variant: median and best of the whole cycle, of kinetics + dose + tables (the part that
grows with the methods) and of validation + publication (grows with the rows), and the ratios
full / mono-only (median/median and best/best).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from concordose.calibration.protocol import load_protocol
from concordose.calibration.registry import SiteRegistry
from concordose.flows.demo import DEMO_TIME_POINTS_H
from concordose.phantoms import generate_patient
from concordose.pipeline.catalogue import CycleSource
from concordose.pipeline.preparation import PreparedCycle, cycle_identity, prepare_cycle
from concordose.results.calibration_table import build_site_calibrations
from concordose.results.cycle_tables import CycleIdentity
from concordose.results.object_store import open_object_store
from concordose.results.provenance import Provenance, new_run_id
from concordose.settings import Settings
from concordose.tasks.study import (
    dose_task,
    kinetics_task,
    publish_task,
    quantify_task,
    summary_tables_task,
    tables_task,
    voxel_dose_task,
    voxel_tables_task,
)

SITE_ID = "milan"
MONO_ONLY = (("mono_exponential",), ("sphere",))
"""The flow's methods before issue 14 (``DEFAULT_KINETICS_METHODS``/``DEFAULT_DOSE_METHODS`` of
``flows/process_cycle.py`` then)."""
TARGET_RATIO = 1.5


@dataclass(frozen=True)
class Timing:
    """One timed cycle: seconds per part and the rows published."""

    quantify_s: float
    kinetics_s: float
    dose_s: float
    tables_s: float
    voxel_s: float
    publish_s: float
    rows: int

    @property
    def methods_s(self) -> float:
        """Kinetics, dose and the tables built from them, s."""
        return self.kinetics_s + self.dose_s + self.tables_s

    @property
    def cycle_s(self) -> float:
        """The whole cycle after the gate, s."""
        return self.quantify_s + self.methods_s + self.voxel_s + self.publish_s


def run_cycle(
    prepared: PreparedCycle,
    identity: CycleIdentity,
    out: Path,
    *,
    kinetics_methods: Sequence[str],
    dose_methods: Sequence[str],
    reference_method: str,
) -> Timing:
    """The flow's calls after the gate for one cycle (``flows.process_cycle._science_tables``
    and the publication), timed by part."""
    study, verdict = prepared.study, prepared.verdict
    assert study is not None
    assert verdict is not None
    assert verdict.site is not None
    assert verdict.calibration is not None
    calibration = verdict.calibration
    provenance = Provenance(run_id=new_run_id())
    tables: dict[str, list[pa.Table]] = {}

    def collect(built: dict[str, pa.Table]) -> None:
        for name, table in built.items():
            tables.setdefault(name, []).append(table)

    mark = time.perf_counter()
    tac = quantify_task.fn(study, calibration, SITE_ID, prepared.vois, None)
    quantified = time.perf_counter()
    kinetics = kinetics_task.fn(tac, kinetics_methods)
    fitted = time.perf_counter()
    doses = dose_task.fn(tac, kinetics, dose_methods)
    dosed = time.perf_counter()
    collect(tables_task.fn(identity, tac, kinetics, doses, provenance))
    collect(
        summary_tables_task.fn(
            identity,
            study,
            verdict,
            tac,
            doses,
            provenance=provenance,
            reference_method=reference_method,
        )
    )
    methods_done = time.perf_counter()
    voxel = voxel_dose_task.fn(study, calibration, tac, SITE_ID, prepared.vois)
    if voxel is not None:
        collect(
            voxel_tables_task.fn(identity, study, tac, voxel, provenance, calibration=calibration)
        )
    collect({"site_calibrations": build_site_calibrations([(SITE_ID, calibration)], provenance)})
    voxel_done = time.perf_counter()
    publish_task.fn(open_object_store(str(out), Settings()), tables, provenance)
    published = time.perf_counter()
    return Timing(
        quantify_s=quantified - mark,
        kinetics_s=fitted - quantified,
        dose_s=dosed - fitted,
        tables_s=methods_done - dosed,
        voxel_s=voxel_done - methods_done,
        publish_s=published - voxel_done,
        rows=sum(part.num_rows for parts in tables.values() for part in parts),
    )


def _summary(name: str, times: list[Timing]) -> str:
    def stat(values: list[float]) -> str:
        return f"median {statistics.median(values):6.2f} s  best {min(values):6.2f} s"

    return "\n".join(
        [
            f"  {name} ({times[0].rows} rows published)",
            f"    cycle                      {stat([t.cycle_s for t in times])}",
            f"    kinetics + dose + tables   {stat([t.methods_s for t in times])}",
            f"      kinetics                 {stat([t.kinetics_s for t in times])}",
            f"      dose                     {stat([t.dose_s for t in times])}",
            f"      tables                   {stat([t.tables_s for t in times])}",
            f"    validation + publication   {stat([t.publish_s for t in times])}",
            f"    quantify                   {stat([t.quantify_s for t in times])}",
            f"    voxel dosimetry            {stat([t.voxel_s for t in times])}",
        ]
    )


def _ratio(part: str, full: list[float], mono: list[float]) -> str:
    median = statistics.median(full) / statistics.median(mono)
    return f"  {part:27s} full / mono-only: median {median:5.2f}, best {min(full) / min(mono):5.2f}"


def main() -> None:
    """Generate and gate (untimed), then time mono-only and the full set, interleaved."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("CONCORDOSE_PSEUDONYM_KEY", "benchmark-not-secret")
    full = load_protocol(SITE_ID).run_methods()
    variants = {
        "mono-only": (*MONO_ONLY, full.reference_method),
        "full default set": (full.kinetics_methods, full.dose_methods, full.reference_method),
    }
    with tempfile.TemporaryDirectory(prefix="bench-method-set-") as tmp:
        patient = generate_patient(
            Path(tmp) / "patient", preset=args.preset, time_points_h=DEMO_TIME_POINTS_H
        )
        source = CycleSource(patient.out_dir / "dicom")
        (record,) = source.cycles()
        registry = SiteRegistry.load(patient.sites_path)
        prepared = prepare_cycle(source.instances(record.members), registry, site_id=SITE_ID)
        assert not prepared.held, prepared.held_reason
        identity = cycle_identity(
            record.members, prepared, registry, Settings().pseudonym_key, site_id=SITE_ID
        )
        times: dict[str, list[Timing]] = {name: [] for name in variants}
        warm_up: dict[str, Timing] = {}
        for repeat in range(args.repeats + 1):
            for name, (kinetics, dose, reference) in variants.items():
                out = Path(tmp) / f"out-{repeat}-{len(kinetics)}"
                timing = run_cycle(
                    prepared,
                    identity,
                    out,
                    kinetics_methods=kinetics,
                    dose_methods=dose,
                    reference_method=reference,
                )
                if repeat == 0:
                    warm_up[name] = timing
                else:
                    times[name].append(timing)
    assert prepared.study is not None
    print(
        f"preset {args.preset}: {len(prepared.study.time_points)} time points, "
        f"{len(prepared.vois)} VOIs; {args.repeats} interleaved repeats after a warm-up pair "
        f"(warm-up cycle: mono-only {warm_up['mono-only'].cycle_s:.2f} s, full "
        f"{warm_up['full default set'].cycle_s:.2f} s)"
    )
    print(f"  full set: kinetics {', '.join(full.kinetics_methods)}")
    print(f"            dose {', '.join(full.dose_methods)}")
    for name, timings in times.items():
        print(_summary(name, timings))
    mono, every = times["mono-only"], times["full default set"]
    for part, attribute in (
        ("cycle", "cycle_s"),
        ("kinetics + dose + tables", "methods_s"),
        ("validation + publication", "publish_s"),
    ):
        print(
            _ratio(
                part,
                [getattr(t, attribute) for t in every],
                [getattr(t, attribute) for t in mono],
            )
        )
    cycle_ratio = statistics.median(t.cycle_s for t in every) / statistics.median(
        t.cycle_s for t in mono
    )
    verdict = "met" if cycle_ratio <= TARGET_RATIO else "NOT met"
    print(f"  target: cycle ≤ {TARGET_RATIO}× mono-only (median): {verdict}")


if __name__ == "__main__":
    main()
