"""What voxel dosimetry adds to the flow per cycle, against the VOI quantification in the same run.

Run: ``.venv/bin/python -m benchmarks.bench_flow_voxel_dosimetry [--preset demo] [--repeats 5]``.

The demo patient (``phantoms.generate_patient``, four time points) is written as DICOM
(untimed) and assembled into its cycle. Then, interleaved ``--repeats`` times: the peer, the VOI
quantification the flow already runs (``quant.cycle.quantify_cycle``: read, calibrate, register,
VOI sums), and the added step (``pipeline.voxel_dosimetry.cycle_voxel_dosimetry`` with the site
protocol's default rules, reusing the peer's registrations), on the first CT's grid
(``output_grid: ct``, the default) and on the first SPECT grid (``output_grid: spect``), so the
CT grid's cost (reading the CT, masks and averaging onto it, metrics on finer voxels) shows as
their ratio. Reported: best and median of each, and the ratio added/peer (target: the demo's
``make demo`` grows by ≲ 15 s, i.e. the added step stays within a few seconds on the 2-core
development machine).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from concordose.calibration.protocol import VoxelDosimetryRules, load_protocol
from concordose.calibration.registry import SiteRegistry
from concordose.phantoms import generate_patient
from concordose.pipeline.assembly import assemble_cycles
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.quantify import quantify_cycle
from concordose.pipeline.voxel_dosimetry import cycle_voxel_dosimetry


def main() -> None:
    """Generate (untimed), then time the peer and the voxel step, interleaved."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rules = load_protocol("milan").voxel_dosimetry
    with tempfile.TemporaryDirectory() as tmp:
        patient = generate_patient(Path(tmp) / "patient", preset=args.preset)
        (cycle,) = assemble_cycles(catalogue(patient.out_dir / "dicom"))
        first = cycle.time_points[0].acquisition.acquisition_datetime
        assert first is not None
        calibration = (
            SiteRegistry.load(patient.sites_path).site("milan").calibration_on(first.date())
        )
        peer_s: list[float] = []
        voxel_s: list[float] = []
        spect_s: list[float] = []
        spect_rules = VoxelDosimetryRules.model_validate(
            rules.model_dump() | {"output_grid": "spect"}
        )
        for _ in range(args.repeats):
            mark = time.perf_counter()
            tac = quantify_cycle(cycle, calibration)
            peer_s.append(time.perf_counter() - mark)
            mark = time.perf_counter()
            result = cycle_voxel_dosimetry(cycle, calibration, tac.alignments, rules=rules)
            voxel_s.append(time.perf_counter() - mark)
            mark = time.perf_counter()
            cycle_voxel_dosimetry(cycle, calibration, tac.alignments, rules=spect_rules)
            spect_s.append(time.perf_counter() - mark)
    print(
        f"preset {args.preset}: {len(cycle.time_points)} time points, model {rules.model}, "
        f"methods {', '.join(rules.methods)}, {sum(result.fit_status_counts.values()):,} voxels "
        f"fitted, {args.repeats} interleaved repeats"
    )
    for name, times in (
        ("quantify_cycle (peer)", peer_s),
        (f"voxel dosimetry ({result.dose_grid})", voxel_s),
        ("voxel dosimetry (spect)", spect_s),
    ):
        print(f"  {name:26s} best {min(times):6.2f} s   median {statistics.median(times):6.2f} s")
    print(
        f"  ratio voxel/peer: best {min(voxel_s) / min(peer_s):.2f}, "
        f"median {statistics.median(voxel_s) / statistics.median(peer_s):.2f}"
    )
    print(
        f"  ratio {result.dose_grid} grid / spect grid: best {min(voxel_s) / min(spect_s):.2f}, "
        f"median {statistics.median(voxel_s) / statistics.median(spect_s):.2f}"
    )


if __name__ == "__main__":
    main()
