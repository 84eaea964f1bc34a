"""One clinical-size cycle through the flow's steps: wall time per step and peak memory, CT-grid
voxel dosimetry against the SPECT-grid variant in the same run.

Run: ``.venv/bin/python -m benchmarks.bench_clinical_cycle [--keep DIR] [--json FILE]
[--skip-300] [--repeats N]``.

One clinical patient (``phantoms.generate_patient(preset="clinical", seed=7)``: SPECT 128×128×96
at 4.42 mm, CT 512×512×142 of 2.99 mm at each of 6 time points, 4–240 h) is generated untimed
(``--keep DIR`` keeps it there and reuses it on the next run). Each variant then runs in its own
fresh interpreter, so that its peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) is its own:

* ``ct``: the site protocol's defaults (voxel dose on the first CT's grid, the default);
* ``spect``: the same with ``output_grid: spect`` (the peer a user could choose instead);
* ``ct-300``: the ``ct`` variant on a second patient whose CTs have 300 slices of 1.41 mm
  (``generate_patient(..., ct_slice_mm=1.415)``; ``--skip-300`` leaves it out).

With ``--repeats N`` the ``ct`` and ``spect`` children alternate N times (best wall and lowest
peak of each reported). Each child runs what ``flows/process_cycle.py`` runs for a folder
source, without Prefect's orchestration (the tasks' functions, ``Task.fn``), timing each step:

1. read: ``CycleSource`` (headers of the folder) and the cycle's instances;
2. prepare: ``prepare_cycle`` (assembly, SEG read, calibration gate);
3. quantify: ``quantify_task`` (registration of the 5 later CTs to the first included, read,
   calibrate, VOI sums); the registration is timed inside it by wrapping
   ``align_time_points`` (and its CT reads by wrapping ``read_ct_series``);
4. kinetics + dose: the site protocol's methods, as the flow runs them (by default every
   kinetics method of the consortium and sphere, organ S-value and LDM dose);
5. voxel dosimetry: ``cycle_voxel_dosimetry`` with the site protocol's rules (its activity
   maps, CT dose grid and science timed inside by wrapping);
6. tables: every table the flow publishes;
7. validate + publish: ``publish_tables`` to a temporary folder (Great Expectations validation
   timed inside).

"Science" is steps 3–5 (they include the pixel reads they do themselves, listed), "I/O" steps 1,
2 and 7. Targets (issue 13): ``ct`` peak RSS ≤ 2.0 GB and wall ≤ 30 s on the 2-core development
machine; ``ct-300`` peak ≤ 3.0 GB; ``ct``/``spect`` ≤ 1.5× in wall and in peak RSS. Wall is
steps 1–7 (interpreter start and imports reported apart); GB = 10⁹ bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import SecretStr

import concordose.pipeline.alignment as alignment_module
import concordose.pipeline.preparation as preparation_module
import concordose.pipeline.quantify as quantify_module
import concordose.pipeline.voxel_dosimetry as voxel_module
import concordose.results.publish as publish_module
from concordose.calibration.protocol import load_protocol
from concordose.calibration.registry import SiteRegistry
from concordose.phantoms import DEFAULT_SITE, generate_patient
from concordose.pipeline.catalogue import CycleSource
from concordose.pipeline.preparation import cycle_identity, prepare_cycle
from concordose.results.calibration_table import build_site_calibrations
from concordose.results.object_store import open_object_store
from concordose.results.provenance import Provenance, new_run_id
from concordose.settings import Settings
from concordose.tasks.study import (
    dose_task,
    kinetics_task,
    quantify_task,
    summary_tables_task,
    tables_task,
    voxel_tables_task,
)

SEED = 7
TIME_POINTS_H = (4.0, 24.0, 48.0, 96.0, 168.0, 240.0)
THIN_CT_SLICE_MM = 1.415
"""Largest CT slice spacing of the 300-slice patient (424 mm axial field of view / 300)."""
PATIENTS = {"clinical": None, "clinical-ct1.415mm": THIN_CT_SLICE_MM}
VARIANTS = {  # name: (patient, output grid)
    "ct": ("clinical", "ct"),
    "spect": ("clinical", "spect"),
    "ct-300": ("clinical-ct1.415mm", "ct"),
}
CT_PEAK_GB = 2.0
CT_WALL_S = 30.0
CT_300_PEAK_GB = 3.0
MAX_RATIO = 1.5
STEPS = ("read", "prepare", "quantify", "kinetics + dose", "voxel dosimetry", "tables", "publish")
SCIENCE = ("quantify", "kinetics + dose", "voxel dosimetry")
IO = ("read", "prepare", "publish")
REPO = Path(__file__).resolve().parents[1]


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


TIMED_FUNCTIONS: tuple[tuple[ModuleType, str, str], ...] = (
    (preparation_module, "read_voi_masks", "SEG read"),
    (quantify_module, "align_time_points", "registration"),
    (alignment_module, "read_ct_series", "registration: CT reads"),
    (voxel_module, "registered_activity_maps", "voxel: activity maps"),
    (voxel_module, "first_ct_dose_grid", "voxel: CT dose grid"),
    (voxel_module, "voxel_dose_from_maps", "voxel: fits, dose, metrics"),
    (publish_module, "validate_tables", "validation"),
)
"""The functions timed inside the steps: (module the flow's code calls it through, name, label).
A rename in the pipeline breaks the benchmark; ``tests/unit/test_benchmark_hooks.py`` catches it."""


def _wrap(module: ModuleType, name: str, key: str, spent: dict[str, float]) -> None:
    """Replace ``module.name`` by a wrapper adding its wall time to ``spent[key]``."""
    original: Callable[..., Any] = getattr(module, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        mark = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - mark

    setattr(module, name, timed)


def _child(patient: Path, grid: str, out: Path) -> None:
    """One variant in this (fresh) process; writes its figures to ``out`` as JSON."""
    import_peak = _peak_gb()
    inner: dict[str, float] = {}
    for module, name, key in TIMED_FUNCTIONS:
        _wrap(module, name, key, inner)
    steps: dict[str, tuple[float, float]] = {}  # step: (seconds, peak RSS so far)
    site_id = DEFAULT_SITE.site_id
    start = mark = time.perf_counter()

    def done(step: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        steps[step] = (now - mark, _peak_gb())
        mark = now

    source = CycleSource(patient / "dicom")
    (record,) = source.cycles()
    instances = source.instances(record.members)
    done("read")
    registry = SiteRegistry.load(patient / "sites.yaml")
    prepared = prepare_cycle(instances, registry, site_id=site_id)
    assert not prepared.held, prepared.held_reason
    assert prepared.study is not None
    assert prepared.verdict is not None
    calibration = prepared.verdict.calibration
    assert calibration is not None
    study = prepared.study
    done("prepare")
    tac = quantify_task.fn(study, calibration, site_id, prepared.vois, None)
    done("quantify")
    methods = load_protocol(site_id).run_methods()  # the site's, as the flow
    kinetics = kinetics_task.fn(tac, methods.kinetics_methods)
    doses = dose_task.fn(tac, kinetics, methods.dose_methods)
    done("kinetics + dose")
    rules = load_protocol(site_id).voxel_dosimetry.model_copy(update={"output_grid": grid})
    voxel = voxel_module.cycle_voxel_dosimetry(
        study, calibration, tac.alignments, vois=prepared.vois, rules=rules
    )
    done("voxel dosimetry")
    identity = cycle_identity(
        record.members, prepared, registry, SecretStr("benchmark"), site_id=site_id
    )
    provenance = Provenance(run_id=new_run_id())
    tables: dict[str, list[Any]] = {}
    for part in (
        tables_task.fn(identity, tac, kinetics, doses, provenance),
        summary_tables_task.fn(
            identity,
            study,
            prepared.verdict,
            tac,
            doses,
            provenance=provenance,
            reference_method=methods.reference_method,
        ),
        voxel_tables_task.fn(identity, study, tac, voxel, provenance, calibration=calibration),
        {"site_calibrations": build_site_calibrations([(site_id, calibration)], provenance)},
    ):
        for name, table in part.items():
            tables.setdefault(name, []).append(table)
    done("tables")
    with tempfile.TemporaryDirectory(prefix="bench-clinical-publish-") as folder:
        published = publish_module.publish_tables(
            open_object_store(folder, Settings()), tables, provenance
        )
    done("publish")
    wall_s = time.perf_counter() - start
    first = study.time_points[0]
    result = {
        "patient": patient.name,
        "output_grid": grid,
        "dose_grid": voxel.dose_grid,
        "time_points": len(study.time_points),
        "ct_slices": len(first.ct_files),
        "voxels_fitted": sum(voxel.fit_status_counts.values()),
        "published_objects": len(published.objects),
        "peak_gb_after_imports": import_peak,
        "steps": {name: {"s": s, "peak_gb": peak} for name, (s, peak) in steps.items()},
        "inner_s": inner,
        "wall_s": wall_s,
        "science_s": sum(steps[name][0] for name in SCIENCE),
        "io_s": sum(steps[name][0] for name in IO),
        "peak_gb": _peak_gb(),
    }
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")


def _ensure_patient(root: Path, name: str) -> Path:
    folder = root / name
    marker = folder / ".complete"
    if marker.exists():
        return folder
    mark = time.perf_counter()
    generate_patient(
        folder,
        seed=SEED,
        preset="clinical",
        time_points_h=TIME_POINTS_H,
        ct_slice_mm=PATIENTS[name],
    )
    marker.write_text("", encoding="utf-8")
    print(f"generated {name} in {time.perf_counter() - mark:.1f} s (untimed)", flush=True)
    return folder


def _run_child(patient: Path, variant: str, scratch: Path) -> dict[str, Any]:
    out = scratch / f"{variant}-{time.monotonic_ns()}.json"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
    )
    command = [sys.executable, "-m", "benchmarks.bench_clinical_cycle", "--child", variant]
    command += ["--patient", str(patient), "--out", str(out)]
    mark = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env=env)
    process_s = time.perf_counter() - mark
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    result["variant"] = variant
    result["process_s"] = process_s  # with interpreter start, imports and writing the JSON
    print(
        f"  {variant}: wall {result['wall_s']:.1f} s, peak {result['peak_gb']:.2f} GB", flush=True
    )
    return result


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the shortest wall, its peak replaced by the lowest peak of all runs."""
    best = dict(min(runs, key=lambda r: float(r["wall_s"])))
    best["peak_gb"] = min(float(r["peak_gb"]) for r in runs)
    best["walls_s"] = [r["wall_s"] for r in runs]
    best["peaks_gb"] = [r["peak_gb"] for r in runs]
    return best


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _report(best: dict[str, dict[str, Any]]) -> dict[str, Any]:
    names = list(best)
    width = 12
    print()
    print(f"{'step (s; peak RSS GB so far)':32s}" + "".join(f"{n:>{width + 7}s}" for n in names))
    for step in STEPS:
        cells = [
            f"{best[n]['steps'][step]['s']:.2f} s ({best[n]['steps'][step]['peak_gb']:.2f})"
            for n in names
        ]
        print(f"{step:32s}" + "".join(f"{c:>{width + 7}s}" for c in cells))
    inner_keys = sorted({key for n in names for key in best[n]["inner_s"]})
    for key in inner_keys:
        cells = [f"{best[n]['inner_s'].get(key, 0.0):.2f} s" for n in names]
        print(f"  of which {key:23s}" + "".join(f"{c:>{width + 7}s}" for c in cells))
    for label, key, unit in (
        ("science (quantify..voxel)", "science_s", "s"),
        ("I/O (read, prepare, publish)", "io_s", "s"),
        ("wall, steps 1-7", "wall_s", "s"),
        ("peak RSS", "peak_gb", "GB"),
        ("whole process (start, imports)", "process_s", "s"),
        ("RSS after imports", "peak_gb_after_imports", "GB"),
    ):
        cells = [f"{float(best[n][key]):.2f} {unit}" for n in names]
        print(f"{label:32s}" + "".join(f"{c:>{width + 7}s}" for c in cells))
    for label, key in (("CT slices", "ct_slices"), ("voxels fitted", "voxels_fitted")):
        print(f"{label:32s}" + "".join(f"{best[n][key]:>{width + 7}}" for n in names))
    if any(len(best[n]["walls_s"]) > 1 for n in names):
        for n in names:
            walls = ", ".join(f"{w:.1f}" for w in best[n]["walls_s"])
            peaks = ", ".join(f"{p:.2f}" for p in best[n]["peaks_gb"])
            print(f"  {n}: walls {walls} s; peaks {peaks} GB")
    ct, spect = best["ct"], best["spect"]
    pairs = zip(ct["walls_s"], spect["walls_s"], strict=True)
    print("  ct/spect wall per repeat: " + ", ".join(f"{c / s:.2f}" for c, s in pairs))
    voxel_ratio = ct["steps"]["voxel dosimetry"]["s"] / spect["steps"]["voxel dosimetry"]["s"]
    print(f"  ct/spect voxel dosimetry step alone (best runs): {voxel_ratio:.2f}")
    wall_ratio = float(ct["wall_s"]) / float(spect["wall_s"])
    peak_ratio = float(ct["peak_gb"]) / float(spect["peak_gb"])
    targets = {
        "ct peak RSS <= 2.0 GB": (ct["peak_gb"], float(ct["peak_gb"]) <= CT_PEAK_GB),
        "ct wall <= 30 s": (ct["wall_s"], float(ct["wall_s"]) <= CT_WALL_S),
        "ct/spect wall <= 1.5": (wall_ratio, wall_ratio <= MAX_RATIO),
        "ct/spect peak RSS <= 1.5": (peak_ratio, peak_ratio <= MAX_RATIO),
    }
    if "ct-300" in best:
        peak = float(best["ct-300"]["peak_gb"])
        targets["ct-300 peak RSS <= 3.0 GB"] = (peak, peak <= CT_300_PEAK_GB)
    print()
    for name, (value, ok) in targets.items():
        print(f"  {name:28s} {float(value):7.2f}  {_verdict(ok)}")
    return {name: {"value": value, "met": ok} for name, (value, ok) in targets.items()}


def main() -> None:
    """Generate the patients (untimed), run every variant in its own process, report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=Path, help="generate the patients here and reuse them")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--skip-300", action="store_true", help="leave out the 300-slice CT")
    parser.add_argument("--repeats", type=int, default=1, help="alternate ct/spect N times")
    parser.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--patient", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.patient, VARIANTS[args.child][1], args.out)
        return
    with tempfile.TemporaryDirectory(prefix="bench-clinical-") as tmp:
        root = args.keep or Path(tmp)
        variants = [v for v in VARIANTS if not (args.skip_300 and v == "ct-300")]
        patients = {v: _ensure_patient(root, VARIANTS[v][0]) for v in variants}
        load_before = _load()
        print(f"load average before: {load_before}", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for _ in range(args.repeats):
            for variant in ("ct", "spect"):
                runs[variant].append(_run_child(patients[variant], variant, Path(tmp)))
        if "ct-300" in variants:
            runs["ct-300"].append(_run_child(patients["ct-300"], "ct-300", Path(tmp)))
        load_after = _load()
        print(f"load average after: {load_after}", flush=True)
        best = {v: _best(r) for v, r in runs.items()}
        targets = _report(best)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "load_before": load_before,
                    "load_after": load_after,
                    "runs": runs,
                    "targets": targets,
                },
                indent=2,
            ),
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
