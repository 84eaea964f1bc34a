"""How much memory processing a cycle needs, estimated from its headers before any pixel is read.

The estimate is linear in what dominates: the largest CT (registration reads it; voxel
dosimetry puts the dose on the first one; the SEG's masks are on its grid) and the SPECT voxels
over all time points (activity maps, voxel fits), on top of a fixed base (interpreter, Prefect,
Great Expectations). The coefficients are measured, not derived: on the clinical preset
(SPECT 128×128×96 × 6 time points, CT 512×512×142, 6 VOIs, CT-grid voxel dosimetry) one
cycle peaked at 1.72 GB (``benchmarks/bench_clinical_cycle.py``), which this model reproduces;
they are set a little above the measurement so that the estimate errs on the safe side.

A worker refuses (holds, with this estimate in the reason) a cycle whose estimate exceeds its
memory budget rather than being killed by the kernel halfway through; the sweep runs cycles side
by side only while their estimates fit the budget together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from concordose.pipeline.assembly import CycleStudy

BASE_BYTES = 0.6e9
"""Interpreter, Prefect, Great Expectations and the tables, measured at ~0.5 GB."""
BYTES_PER_CT_VOXEL = 32.0
"""Per voxel of the largest CT: its HU as read, the registration copies, the SEG masks on its
grid and the CT-grid dose maps inside the VOIs' box (measured ≈ 30 B on the clinical preset)."""
BYTES_PER_SPECT_VOXEL = 24.0
"""Per SPECT voxel per time point: counts, activity maps on the first grid, voxel fits."""
DEFAULT_BUDGET_FRACTION = 0.5
"""Without a configured budget: half of the machine's physical memory."""


@dataclass(frozen=True)
class WorkingSet:
    """A cycle's estimated peak memory and what it is made of.

    Attributes:
        estimated_bytes: the estimate, bytes.
        ct_shape: (slices, rows, columns) of the largest CT series (None without CT).
        spect_shape: (slices, rows, columns) of the first SPECT.
        n_time_points: SPECT time points.
    """

    estimated_bytes: float
    ct_shape: tuple[int, int, int] | None
    spect_shape: tuple[int, int, int]
    n_time_points: int

    def describe(self) -> str:
        """One line with the sizes (GB, matrices)."""
        ct = "no CT" if self.ct_shape is None else "CT " + "×".join(map(str, self.ct_shape[::-1]))
        spect = "×".join(map(str, self.spect_shape[::-1]))
        return (
            f"estimated working set {self.estimated_bytes / 1e9:.1f} GB ({ct} at the largest "
            f"time point, SPECT {spect} × {self.n_time_points} time points)"
        )


def _ct_shape(files: tuple[Path, ...]) -> tuple[int, int, int] | None:
    if not files:
        return None
    header = dcmread(files[0], stop_before_pixels=True, specific_tags=["Rows", "Columns"])
    return (len(files), int(header.Rows), int(header.Columns))


def estimate_working_set(study: CycleStudy) -> WorkingSet:
    """The cycle's working set from its headers (one CT header per time point)."""
    ct_shapes = [shape for p in study.time_points if (shape := _ct_shape(p.ct_files))]
    largest_ct = max(ct_shapes, key=lambda s: s[0] * s[1] * s[2], default=None)
    spect_shape = study.time_points[0].acquisition.geometry.shape
    spect_voxels = sum(
        int(p.acquisition.geometry.shape[0])
        * int(p.acquisition.geometry.shape[1])
        * int(p.acquisition.geometry.shape[2])
        for p in study.time_points
    )
    ct_voxels = 0 if largest_ct is None else largest_ct[0] * largest_ct[1] * largest_ct[2]
    estimate = BASE_BYTES + BYTES_PER_CT_VOXEL * ct_voxels + BYTES_PER_SPECT_VOXEL * spect_voxels
    return WorkingSet(estimate, largest_ct, spect_shape, len(study.time_points))


def memory_budget_bytes(budget_gb: float | None) -> float:
    """The configured budget in bytes, or half of the physical memory when none is set."""
    if budget_gb is not None:
        return budget_gb * 1e9
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return DEFAULT_BUDGET_FRACTION * physical
