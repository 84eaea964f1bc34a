"""Does a cycle cost more once the spool holds many? And where does one cycle's time go?

Run: ``.venv/bin/python -m benchmarks.bench_cycle_scaling [--cycles 40] [--preset test|demo]
[--repeats 3] [--json FILE]``.

Set-up (untimed): ``--cycles`` + 1 distinct patients (``phantoms.generate_patient``, one seed
each, the SPECTacular schedule 4, 24, 48, 96, 168, 240 h) are received by the real receiver
(``StorageReceiver`` with its journal allocated as ``concordose receive`` does, ``send_files``: one
association per patient) and every time point is completed. Spool A holds patient *k* only;
spool B the ``--cycles`` backlog patients. Generating a patient costs ~1 s on the ``test`` preset,
so every cycle is a real distinct patient (no UID rewriting).

Then, in one process against a temporary Prefect server (``prefect_test_harness``, whose start is
not timed), wall time of ``flows.process_cycle.process_cycle`` with its defaults (kinetics and
dose methods, voxel dosimetry per the site protocol, GX validation, publication). Every timed run
is a cycle's *first* run: the result-cache entries (``<spool>/cache``: CT registrations, voxel
fits) of cycle *k* are removed before and after each repeat, the backlog's kept.

1. warm-up: cycle *k* in spool A once (the process's first run pays imports), reported apart;
2. **(a)** cycle *k* in spool A, ``--repeats`` times (a re-run replaces its rows), A's own store;
3. backlog: ``flows.sweep.process_spool`` over spool B's cycles, into B's store (throughput);
4. patient *k* is received into spool B (untimed), then **(b)** cycle *k* in spool B, into B's
   store that holds the backlog's runs, ``--repeats`` times, interleaved with **(a′)** cycle *k* in
   spool A again (the same Prefect database and machine load as (b): the control); then, for
   reference, re-runs of (b) with its registrations and voxel fits cached;
5. where the time goes, two ways: (i) the (b) runs' task runs as the Prefect server recorded
   them (start to end), Prefect's share being the flow's wall time minus its task runs; (ii)
   outside Prefect, the library calls the flow's tasks make (``task.fn``), in the flow's order,
   on cycle *k* of spool B and, interleaved, of spool A, ``--repeats`` times each: read (find
   the cycle, list its instances), gate (site registry, assemble, read SEG, gate, identity),
   quantify, kinetics, dose, voxel, tables, validate (Great Expectations, timed inside
   ``publish_tables``), publish (the rest of ``publish_tables``: Parquet, data docs copy,
   manifest), record (the spool's outcome);
6. the same breakdown once with every kinetics method that fits at least one of the cycle's VOIs
   on these six points (the others are named with the reason they give).

Targets (issue 12, item 8): median (b) / median (a) ≤ 1.2; one cycle end to end ≤ 10 s on the
2-core development machine (Prefect server start excluded), split into :data:`STEP_TARGETS_S`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock
from uuid import UUID

import pyarrow as pa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.testing.utilities import prefect_test_harness

from concordose.calibration.protocol import load_protocol
from concordose.calibration.registry import SiteRegistry
from concordose.flows.process_cycle import (
    OUTCOME_PROCESSED,
    CycleRunResult,
    process_cycle,
)
from concordose.flows.sweep import process_spool
from concordose.ingest.receiver import StorageReceiver
from concordose.ingest.sender import send_files
from concordose.kinetics.registry import KINETICS_METHODS
from concordose.phantoms import GeneratedPatient, generate_patient
from concordose.phantoms.protocols import PROTOCOLS
from concordose.pipeline.catalogue import CycleSource
from concordose.pipeline.preparation import cycle_identity
from concordose.results import publish as publish_module
from concordose.results.calibration_table import build_site_calibrations
from concordose.results.object_store import open_object_store
from concordose.results.provenance import Provenance, new_run_id
from concordose.results.validation import TableValidation, validate_tables
from concordose.settings import Settings
from concordose.spool.cycles import CycleState
from concordose.spool.store import Spool
from concordose.spool.timepoints import TimePointState
from concordose.tasks.cycle import (
    cycle_instances_task,
    find_cycle_task,
    prepare_task,
    record_outcome_task,
)
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

TIME_POINTS_H = PROTOCOLS["spectacular"].time_points_h_by_cycle[1]
SEED_K = 1208
"""Seed of patient *k* (issue 12, item 8); the backlog's seeds follow it."""
CALLED_AE_TITLE = "CONCORDOSE"
RATIO_TARGET = 1.2
END_TO_END_TARGET_S = 10.0
STEP_TARGETS_S: dict[str, float] = {
    "read": 0.1,
    "gate": 0.5,
    "quantify": 2.0,
    "kinetics": 0.2,
    "dose": 0.1,
    "voxel": 2.5,
    "tables": 0.2,
    "validate": 2.5,
    "publish": 0.4,
    "record": 0.1,
    "prefect": 1.4,
}
"""Per-step targets for one 6-time-point cycle; they sum to :data:`END_TO_END_TARGET_S`."""
STEPS = tuple(name for name in STEP_TARGETS_S if name != "prefect")


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 min load averages (what ``uptime`` prints)."""
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def receive(spool_root: Path, patients: Sequence[GeneratedPatient]) -> None:
    """Send each patient over its own association to a real receiver, then complete every time
    point (an explicit trigger, instead of waiting out the quiet period)."""
    spool = Spool(spool_root)
    receiver = StorageReceiver(
        spool,
        port=0,
        site_by_ae_title={p.site.calling_ae_title: p.site.site_id for p in patients},
        ae_title=CALLED_AE_TITLE,
        journal_prefill=True,
    )
    receiver.start()
    try:
        for patient in patients:
            report = send_files(
                list(patient.dicom_files),
                host="127.0.0.1",
                port=receiver.port,
                called_ae_title=CALLED_AE_TITLE,
                calling_ae_title=patient.site.calling_ae_title,
            )
            if report.refused:
                raise RuntimeError(f"{patient.patient_id}: refused {report.refused[:3]}")
        for record in spool.timepoints():
            if record.state is TimePointState.RECEIVING:
                receiver.completion.trigger(record.study_uid)
    finally:
        receiver.stop()


def cycle_id_of(spool_root: Path, patient: GeneratedPatient) -> str:
    """The id of ``patient``'s one cycle in a spool."""
    (record,) = [
        c for c in Spool(spool_root).cycles() if c.members.patient_id == patient.patient_id
    ]
    return record.cycle_id


def cache_files(spool_root: Path) -> frozenset[Path]:
    """The files of a spool's result cache (``<spool>/cache``: CT registrations, voxel fits)."""
    cache_dir = CycleSource(spool_root).cache_dir
    assert cache_dir is not None
    return frozenset(path for path in cache_dir.rglob("*") if path.is_file())


@contextmanager
def uncached(spool_root: Path, keep: frozenset[Path] = frozenset()) -> Iterator[None]:
    """Run as a cycle's first run does: the result-cache entries not in ``keep`` (the backlog's)
    are removed before and after, so that every repeat registers and fits again."""

    def clear() -> None:
        for path in cache_files(spool_root) - keep:
            path.unlink()

    clear()
    try:
        yield
    finally:
        clear()


def timed_cold_cycle(
    spool_root: Path, sites: Path, cycle_id: str, out: Path, keep: frozenset[Path] = frozenset()
) -> CycleRun:
    """:func:`timed_cycle` with nothing of the cycle in the result cache."""
    with uncached(spool_root, keep):
        return timed_cycle(spool_root, sites, cycle_id, out)


@dataclass(frozen=True)
class CycleRun:
    """One timed ``process-cycle`` run."""

    wall_s: float
    cpu_s: float
    flow_run_id: UUID


def timed_cycle(spool_root: Path, sites: Path, cycle_id: str, out: Path) -> CycleRun:
    """Wall and CPU time (this process, all threads; the server's not included) of one
    ``process-cycle`` run, which must process the cycle."""
    mark, cpu_mark = time.perf_counter(), time.process_time()
    state = process_cycle(spool_root, sites, cycle_id, output_uri=str(out), return_state=True)
    elapsed, cpu = time.perf_counter() - mark, time.process_time() - cpu_mark
    result = state.result()
    if not isinstance(result, CycleRunResult) or result.outcome != OUTCOME_PROCESSED:
        raise RuntimeError(f"cycle {cycle_id}: {result!r}")
    flow_run_id = state.state_details.flow_run_id
    if flow_run_id is None:
        raise RuntimeError(f"cycle {cycle_id}: the run's state names no flow run")
    return CycleRun(elapsed, cpu, flow_run_id)


TASK_STEPS = {
    "find-cycle": "read",
    "cycle-instances": "read",
    "prepare-cycle": "gate",
    "quantify": "quantify",
    "kinetics": "kinetics",
    "dose": "dose",
    "voxel-dose": "voxel",
    "cycle-tables": "tables",
    "cycle-summary-tables": "tables",
    "voxel-dose-tables": "tables",
    "publish": "validate + publish",
    "record-outcome": "record",
}
"""``process-cycle``'s task names → the breakdown's steps (in the flow, GX runs inside
``publish``)."""


def task_seconds(runs: Sequence[CycleRun], timeout_s: float = 120.0) -> list[dict[str, float]]:
    """Per run, the seconds its task runs spent (start to end, as the Prefect server recorded
    them) by step of :data:`TASK_STEPS`; waits for the server to record every task run's end."""
    ids = [run.flow_run_id for run in runs]
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))
            )
            finished = [r for r in task_runs if r.start_time and r.end_time]
            counts = {i: sum(r.flow_run_id == i for r in finished) for i in ids}
            if min(counts.values()) >= len(TASK_STEPS) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    seconds: list[dict[str, float]] = [{} for _ in runs]
    for task_run in finished:
        assert task_run.start_time is not None
        assert task_run.end_time is not None
        step = TASK_STEPS.get(task_run.name.rsplit("-", 1)[0], "other tasks")
        by_step = seconds[ids.index(task_run.flow_run_id)] if task_run.flow_run_id in ids else {}
        spent = (task_run.end_time - task_run.start_time).total_seconds()
        by_step[step] = by_step.get(step, 0.0) + spent
    return seconds


@dataclass
class Stopwatch:
    """Seconds per named step (added up when a step is timed more than once)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        mark = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - mark)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


@dataclass(frozen=True)
class Breakdown:
    """One cycle's steps, outside Prefect."""

    seconds: dict[str, float]
    cpu_s: float
    kinetics_methods: tuple[str, ...]
    rows: int


def breakdown(
    spool_root: Path,
    sites: Path,
    cycle_id: str,
    out: Path,
    *,
    kinetics_methods: Sequence[str] | None = None,
    dose_methods: Sequence[str] | None = None,
) -> Breakdown:
    """Time the calls ``process_cycle`` makes for a cycle that passes, in its order (tasks'
    functions without Prefect). ``validate`` is timed inside ``publish_tables``, and ``publish``
    is the rest of it. Methods: the site protocol's unless given (as the flow)."""
    clock = Stopwatch()
    cpu_mark = time.process_time()

    def timed_validation(
        tables: Mapping[str, pa.Table], *, data_docs_dir: Path | None = None
    ) -> dict[str, TableValidation]:
        with clock.step("validate"):
            return validate_tables(tables, data_docs_dir=data_docs_dir)

    with clock.step("read"):
        record = find_cycle_task.fn(spool_root, cycle_id)
        instances = cycle_instances_task.fn(spool_root, record.members)
    with clock.step("gate"):
        settings = Settings()
        registry = SiteRegistry.load(sites)
        prepared = prepare_task.fn(instances, registry, None)
        identity = cycle_identity(record.members, prepared, registry, settings.pseudonym_key)
    study, verdict = prepared.study, prepared.verdict
    if study is None or verdict is None or verdict.site is None or verdict.calibration is None:
        raise RuntimeError(f"cycle {cycle_id} held: {prepared.held_reason}")
    site_id, calibration = verdict.site.site_id, verdict.calibration
    provenance = Provenance(run_id=new_run_id())
    cache_dir = CycleSource(spool_root).cache_dir
    with clock.step("quantify"):
        tac = quantify_task.fn(study, calibration, site_id, prepared.vois, cache_dir)
    methods = load_protocol(site_id).run_methods(kinetics_methods, dose_methods)
    with clock.step("kinetics"):
        kinetics = kinetics_task.fn(tac, methods.kinetics_methods)
    with clock.step("dose"):
        doses = dose_task.fn(tac, kinetics, methods.dose_methods)
    tables: dict[str, list[pa.Table]] = {}
    with clock.step("tables"):
        built = tables_task.fn(identity, tac, kinetics, doses, provenance)
        built |= summary_tables_task.fn(
            identity,
            study,
            verdict,
            tac,
            doses,
            provenance=provenance,
            reference_method=methods.reference_method,
        )
    with clock.step("voxel"):
        voxel = voxel_dose_task.fn(
            study, calibration, tac, site_id, prepared.vois, cache_dir=cache_dir
        )
    with clock.step("tables"):
        for name, table in built.items():
            tables.setdefault(name, []).append(table)
        if voxel is not None:
            for name, table in voxel_tables_task.fn(
                identity, study, tac, voxel, provenance, calibration=calibration
            ).items():
                tables.setdefault(name, []).append(table)
        tables.setdefault("site_calibrations", []).append(
            build_site_calibrations([(site_id, calibration)], provenance)
        )
    with (
        mock.patch.object(publish_module, "validate_tables", timed_validation),
        clock.step("publish"),
    ):
        store = open_object_store(str(out), settings)
        published = publish_task.fn(store, tables, provenance)
    clock.add("publish", -clock.seconds["validate"])
    with clock.step("record"):
        record_outcome_task.fn(
            spool_root, record.members, CycleState.PROCESSED, None, published.run_id
        )
    rows = sum(part.num_rows for parts in tables.values() for part in parts)
    return Breakdown(clock.seconds, time.process_time() - cpu_mark, methods.kinetics_methods, rows)


def supported_kinetics_methods(
    spool_root: Path, sites: Path, cycle_id: str
) -> tuple[list[str], dict[str, str]]:
    """Kinetics methods that fit at least one of the cycle's VOIs on its time points, and the
    reason each other method gives (untimed)."""
    record = find_cycle_task.fn(spool_root, cycle_id)
    prepared = prepare_task.fn(
        cycle_instances_task.fn(spool_root, record.members), SiteRegistry.load(sites), None
    )
    assert prepared.study is not None
    assert prepared.verdict is not None
    assert prepared.verdict.site is not None
    assert prepared.verdict.calibration is not None
    tac = quantify_task.fn(
        prepared.study, prepared.verdict.calibration, prepared.verdict.site.site_id, prepared.vois
    )
    supported: list[str] = []
    refused: dict[str, str] = {}
    for name in KINETICS_METHODS.names():
        (batch,) = kinetics_task.fn(tac, [name])
        if batch.ok.any():
            supported.append(name)
        else:
            refused[name] = batch.status[0]
    return supported, refused


def median(values: Sequence[float]) -> float:
    """The median (a shorter name for the tables)."""
    return statistics.median(values)


def _verdict(value: float, target: float) -> str:
    return "pass" if value <= target else "MISS"


def _cell(values: Sequence[float]) -> str:
    if not values:
        return "–"
    spread = f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else ""
    return f"{median(values):.2f}{spread}"


def main(argv: Sequence[str] | None = None) -> None:
    """Generate and receive (untimed), then time the scenario of the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=40, help="backlog cycles in spool B")
    parser.add_argument("--preset", choices=("test", "demo"), default="test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("CONCORDOSE_PSEUDONYM_KEY", "bench-cycle-scaling")
    loads: dict[str, tuple[float, float, float]] = {"start": load_average()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-cycle-scaling-") as tmp:
        root = Path(tmp)
        mark = time.perf_counter()
        patient_k, *backlog = [
            generate_patient(
                root / "patients" / str(seed),
                seed=seed,
                preset=args.preset,
                time_points_h=TIME_POINTS_H,
            )
            for seed in range(SEED_K, SEED_K + args.cycles + 1)
        ]
        generate_s = time.perf_counter() - mark
        sites = patient_k.sites_path
        spool_a, spool_b = root / "spool-a", root / "spool-b"
        out_a, out_b = root / "out-a", root / "out-b"
        mark = time.perf_counter()
        receive(spool_a, [patient_k])
        receive(spool_b, backlog)
        receive_s = time.perf_counter() - mark
        cycle_a = cycle_id_of(spool_a, patient_k)
        print(
            f"set-up: {args.cycles + 1} patients ({args.preset} preset, {len(TIME_POINTS_H)} "
            f"time points, {len(patient_k.dicom_files)} instances each) generated in "
            f"{generate_s:.0f} s, received in {receive_s:.0f} s",
            flush=True,
        )
        with prefect_test_harness(server_startup_timeout=120):
            loads["server_started"] = load_average()
            warm_up = timed_cold_cycle(spool_a, sites, cycle_a, out_a)
            a_runs = [timed_cold_cycle(spool_a, sites, cycle_a, out_a) for _ in range(args.repeats)]
            loads["after_a"] = load_average()

            mark = time.perf_counter()
            sweep = process_spool(spool_b, sites, output_uri=str(out_b))
            backlog_s = time.perf_counter() - mark
            if sweep.failed or len(sweep.processed) != args.cycles:
                raise RuntimeError(f"backlog: {len(sweep.processed)} processed, {sweep.failed}")
            loads["after_backlog"] = load_average()
            backlog_cache = cache_files(spool_b)

            receive(spool_b, [patient_k])
            cycle_b = cycle_id_of(spool_b, patient_k)
            b_runs: list[CycleRun] = []
            a2_runs: list[CycleRun] = []
            for _ in range(args.repeats):
                b_runs.append(timed_cold_cycle(spool_b, sites, cycle_b, out_b, backlog_cache))
                a2_runs.append(timed_cold_cycle(spool_a, sites, cycle_a, out_a))
            loads["after_b"] = load_average()
            timed_cycle(spool_b, sites, cycle_b, out_b)  # fills the cache for the re-runs
            cached_runs = [timed_cycle(spool_b, sites, cycle_b, out_b) for _ in range(args.repeats)]
            in_flow = task_seconds(b_runs)
            in_flow_a = task_seconds(a_runs)
            in_flow_a2 = task_seconds(a2_runs)

        outside: list[Breakdown] = []
        outside_a: list[Breakdown] = []
        for _ in range(args.repeats):
            with uncached(spool_b, backlog_cache):
                outside.append(breakdown(spool_b, sites, cycle_b, out_b))
            with uncached(spool_a):
                outside_a.append(breakdown(spool_a, sites, cycle_a, out_a))
        supported, refused = supported_kinetics_methods(spool_b, sites, cycle_b)
        with uncached(spool_b, backlog_cache):
            every = breakdown(spool_b, sites, cycle_b, out_b, kinetics_methods=supported)
        loads["end"] = load_average()
        instances_b = len(Spool(spool_b).instances())

    a_s, a_cpu = [run.wall_s for run in a_runs], [run.cpu_s for run in a_runs]
    b_s, b_cpu = [run.wall_s for run in b_runs], [run.cpu_s for run in b_runs]
    a2_s, a2_cpu = [run.wall_s for run in a2_runs], [run.cpu_s for run in a2_runs]

    def outside_tasks(runs: Sequence[CycleRun], tasks: Sequence[dict[str, float]]) -> list[float]:
        return [run.wall_s - sum(spent.values()) for run, spent in zip(runs, tasks, strict=True)]

    overhead_s = outside_tasks(b_runs, in_flow)
    steps = {name: median([run.seconds[name] for run in outside]) for name in STEPS}
    figures: dict[str, Any] = {
        "cycles": args.cycles,
        "preset": args.preset,
        "repeats": args.repeats,
        "time_points_h": list(TIME_POINTS_H),
        "instances_per_cycle": len(patient_k.dicom_files),
        "instances_spool_b": instances_b,
        "cpus": os.cpu_count(),
        "load_average": loads,
        "generate_s": generate_s,
        "receive_s": receive_s,
        "warm_up_s": warm_up.wall_s,
        "a_s": a_s,
        "b_s": b_s,
        "a_control_s": a2_s,
        "b_cached_s": [run.wall_s for run in cached_runs],
        "a_cpu_s": a_cpu,
        "b_cpu_s": b_cpu,
        "a_control_cpu_s": a2_cpu,
        "ratio_cpu": median(b_cpu) / median(a_cpu),
        "ratio_cpu_control": median(b_cpu) / median(a2_cpu),
        "outside_prefect_cpu_s": [run.cpu_s for run in outside],
        "median_a_s": median(a_s),
        "median_b_s": median(b_s),
        "median_a_control_s": median(a2_s),
        "ratio": median(b_s) / median(a_s),
        "ratio_control": median(b_s) / median(a2_s),
        "backlog_s": backlog_s,
        "backlog_per_cycle_s": backlog_s / args.cycles,
        "step_targets_s": STEP_TARGETS_S,
        "end_to_end_target_s": END_TO_END_TARGET_S,
        "ratio_target": RATIO_TARGET,
        "outside_prefect_runs_s": [run.seconds for run in outside],
        "outside_prefect_a_runs_s": [run.seconds for run in outside_a],
        "outside_prefect_a_cpu_s": [run.cpu_s for run in outside_a],
        "outside_prefect_median_s": steps,
        "in_flow_task_runs_s": in_flow,
        "prefect_overhead_s": overhead_s,
        "prefect_overhead_a_s": outside_tasks(a_runs, in_flow_a),
        "prefect_overhead_a_control_s": outside_tasks(a2_runs, in_flow_a2),
        "in_flow_task_runs_a_s": in_flow_a,
        "in_flow_task_runs_a_control_s": in_flow_a2,
        "median_b_minus_outside_steps_s": median(b_s) - sum(steps.values()),
        "rows_published": outside[0].rows,
        "every_kinetics": {
            "methods": supported,
            "not_supported": refused,
            "seconds": every.seconds,
            "rows_published": every.rows,
        },
        "total_s": time.perf_counter() - started,
    }
    report(figures)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


def report(figures: Mapping[str, Any]) -> None:
    """Print the figures as tables (seconds: median, range in brackets)."""
    n = figures["cycles"]
    print(
        f"\nprocess_cycle wall time (s), {figures['preset']} preset, "
        f"{len(figures['time_points_h'])} time points, median (range) of {figures['repeats']}; "
        f"first run in the process (warm-up) {figures['warm_up_s']:.2f}"
    )
    print(f"  {'':50s} {'wall':>20s} {'CPU (this process)':>20s}")
    for label, key in (
        ("(a)  1 cycle in spool A", "a"),
        (f"(b)  cycle k in spool B after {n} processed", "b"),
        ("(a') 1 cycle in spool A, interleaved with (b)", "a_control"),
    ):
        print(
            f"  {label:50s} {_cell(figures[key + '_s']):>20s} {_cell(figures[key + '_cpu_s']):>20s}"
        )
    label = "(b)  re-run, registrations + voxel fits cached"
    print(f"  {label:50s} {_cell(figures['b_cached_s']):>20s}")
    ratio = figures["ratio"]
    print(
        f"  ratio (b)/(a) {ratio:.2f}: {_verdict(ratio, RATIO_TARGET)} (target ≤ {RATIO_TARGET}); "
        f"(b)/(a') {figures['ratio_control']:.2f}; CPU (b)/(a) {figures['ratio_cpu']:.2f}, "
        f"(b)/(a') {figures['ratio_cpu_control']:.2f}"
    )
    print(
        f"  backlog: process_spool over {n} cycles {figures['backlog_s']:.0f} s, "
        f"{figures['backlog_per_cycle_s']:.2f} s per cycle"
    )
    print(
        "  flow wall − its task runs (Prefect's own share): "
        f"(a) {_cell(figures['prefect_overhead_a_s'])}, "
        f"(b) {_cell(figures['prefect_overhead_s'])}, "
        f"(a') {_cell(figures['prefect_overhead_a_control_s'])}"
    )
    print(
        "\nwhere one cycle's time goes: outside Prefect (the tasks' functions) on cycle k in "
        f"spool A (1 cycle) and in spool B ({n + 1} cycles, {figures['instances_spool_b']} "
        "instances), interleaved, and the (b) runs' task runs as the Prefect server recorded them; "
        "targets judged on spool B"
    )
    print(
        f"  {'step':20s} {'outside, spool A':>20s} {'outside, spool B':>20s} "
        f"{'(b) in the flow':>20s}   target   verdict (outside B / in the flow)"
    )
    outside = figures["outside_prefect_runs_s"]
    outside_a = figures["outside_prefect_a_runs_s"]
    in_flow = figures["in_flow_task_runs_s"]
    for step in STEPS:
        if step == "publish":
            continue  # in the flow, GX runs inside the publish task: one row for both
        name, target = step, STEP_TARGETS_S[step]
        outside_values = [run[name] for run in outside]
        a_values = [run[name] for run in outside_a]
        if step == "validate":
            name, target = "validate + publish", target + STEP_TARGETS_S["publish"]
            outside_values = [run["validate"] + run["publish"] for run in outside]
            a_values = [run["validate"] + run["publish"] for run in outside_a]
        flow_values = [run.get(name, 0.0) for run in in_flow]
        print(
            f"  {name:20s} {_cell(a_values):>20s} {_cell(outside_values):>20s} "
            f"{_cell(flow_values):>20s}   "
            f"≤ {target:4.1f}   {_verdict(median(outside_values), target)} / "
            f"{_verdict(median(flow_values), target)}"
        )
    flow_sums = [sum(run.values()) for run in in_flow]
    a_sums = [sum(run.values()) for run in outside_a]
    b_sums = [sum(run.values()) for run in outside]
    print(
        f"  {'sum of the steps':20s} {_cell(a_sums):>20s} {_cell(b_sums):>20s} "
        f"{_cell(flow_sums):>20s}"
    )
    overhead = figures["prefect_overhead_s"]
    target = STEP_TARGETS_S["prefect"]
    print(
        f"  {'prefect':20s} {'':>41s} {_cell(overhead):>20s}   ≤ {target:4.1f}   "
        f"{_verdict(median(overhead), target)} (flow wall − its task runs)"
    )
    total = figures["median_b_s"]
    print(
        f"  {'end to end (b)':20s} {'':>41s} {_cell(figures['b_s']):>20s}   "
        f"≤ {END_TO_END_TARGET_S:4.1f}   {_verdict(total, END_TO_END_TARGET_S)}"
    )
    print(
        f"  {'CPU (this process)':20s} {_cell(figures['outside_prefect_a_cpu_s']):>20s} "
        f"{_cell(figures['outside_prefect_cpu_s']):>20s} {_cell(figures['b_cpu_s']):>20s}"
    )
    every = figures["every_kinetics"]
    print(
        f"\nevery kinetics method that fits on these points ({len(every['methods'])}: "
        f"{', '.join(every['methods'])}), one run outside Prefect, {every['rows_published']} "
        f"rows published (defaults: {figures['rows_published']}):"
    )
    print("  " + ", ".join(f"{name} {every['seconds'][name]:.2f}" for name in STEPS))
    print(f"  sum {sum(every['seconds'].values()):.2f} s")
    for name, reason in every["not_supported"].items():
        print(f"  not fitted: {name}: {reason}")
    print(f"\nload average (1/5/15 min) by phase: {figures['load_average']}")
    print(f"benchmark wall time {figures['total_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
