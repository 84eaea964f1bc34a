"""VSV dose of a 256³ TIA map: FFT (``VoxelSValue``, scipy.fft) vs direct
``scipy.ndimage.convolve`` with the same 11³ kernel, in one run.

Run: ``.venv/bin/python -m benchmarks.bench_vsv_convolution [--size 256] [--peer-slices 32]
[--repeats 5]``.

The direct peer is slow (256³ × 11³ ≈ 2.2·10¹⁰ multiply-adds), so by default it is timed on a
slab of ``--peer-slices`` z-slices (with the 5-slice margins the kernel needs, so the slab's
values equal those of the full convolution) and its time is extrapolated linearly to the whole
volume; ``--peer-slices 0`` times the peer on the whole volume (once per repeat). Both sides do
the same physics: the registry's ``vsv_2.21mm`` (kernel + local conversion/Auger term) against
``ndimage.convolve`` + the same local term.

Robust on a shared machine: each repeat runs, back to back, the FFT path cold (kernel spectrum
for the map's size not cached: a new study's first call), the FFT path warm (cached), and the
peer, so load changes hit all three alike; the order rotates between repeats. Reported per path:
best and median of ``--repeats`` (≥ 5 by default) and every time; speed-ups best/best and
median/median, and per repeat (the peer and the FFT of the same repeat). Also: the largest
disagreement (relative to the largest dose, and per voxel where the dose exceeds 1e-6 of the
maximum) and peak memory of the FFT path (tracemalloc, numpy buffers).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from concordose.dose.methods.voxel_s_value import (
    VoxelSValue,
    kernel_spectrum,
    local_conversion_auger_gy_per_mbq_h_per_g,
)
from concordose.dose.models import VoxelDoseInput
from concordose.dose.vsv_kernels import vsv_kernel

MARGIN = 5  # kernel half-width in voxels
FloatArray = npt.NDArray[np.float64]


def _timed(run: Callable[[], FloatArray]) -> tuple[float, FloatArray]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def _summary(times: list[float]) -> str:
    every = ", ".join(f"{t:.2f}" for t in times)
    return f"best {min(times):6.2f} s, median {statistics.median(times):6.2f} s ({every})"


def main() -> None:
    """Time the three paths interleaved, print best/median, ratios, agreement and memory."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--peer-slices", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (≥ 5)")
    args = parser.parse_args()
    n = args.size
    rng = np.random.default_rng(0)
    # A realistic map: smooth background with hot spheres (lesions) and zero air outside a body.
    z, y, x = np.ogrid[:n, :n, :n]
    body = ((y - n / 2) ** 2 / (0.4 * n) ** 2 + (x - n / 2) ** 2 / (0.45 * n) ** 2) <= 1
    tia = np.where(body, rng.gamma(4.0, 0.25, (n, n, n)), 0.0) * 1e-3
    for _ in range(12):
        cz, cy, cx = rng.uniform(0.2 * n, 0.8 * n, 3)
        radius = rng.uniform(3, 12)
        tia[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius**2] += 0.05
    kernel = vsv_kernel("2.21mm")
    method = VoxelSValue("2.21mm")
    local_gy_per_mbq_h = local_conversion_auger_gy_per_mbq_h_per_g() / (
        kernel.spacing_mm**3 / 1000.0
    )
    dose_input = VoxelDoseInput(tia, (kernel.spacing_mm,) * 3)

    if args.peer_slices <= 0 or args.peer_slices >= n:
        lo, hi, slab = 0, n, tia
        extrapolation = 1.0
    else:
        lo = (n - args.peer_slices) // 2
        hi = lo + args.peer_slices
        slab = tia[lo - MARGIN : hi + MARGIN]
        # the slab holds peer_slices + 2·MARGIN slices and the peer computes all of them
        extrapolation = n / (args.peer_slices + 2 * MARGIN)

    def cold() -> FloatArray:
        kernel_spectrum.cache_clear()
        return method.compute_map(dose_input).dose_gy

    def warm() -> FloatArray:
        return method.compute_map(dose_input).dose_gy

    def peer() -> FloatArray:
        direct: FloatArray = ndimage.convolve(slab, kernel.gy_per_mbq_h, mode="constant", cval=0.0)
        direct += slab * local_gy_per_mbq_h
        return direct

    method.compute_map(VoxelDoseInput(tia[:32, :32, :32], dose_input.spacing_mm))  # warm-up
    paths: dict[str, Callable[[], FloatArray]] = {"cold": cold, "warm": warm, "peer": peer}
    times: dict[str, list[float]] = {name: [] for name in paths}
    results: dict[str, FloatArray] = {}
    order = list(paths)
    for repeat in range(args.repeats):
        rotated = order[repeat % 3 :] + order[: repeat % 3]
        for name in rotated:
            if name == "warm" and not times["cold"]:
                cold()  # warm means the spectrum is cached: make sure it is
            seconds, results[name] = _timed(paths[name])
            times[name].append(seconds * (extrapolation if name == "peer" else 1.0))
    fft_dose = results["warm"]
    direct = results["peer"] if lo == 0 and hi == n else results["peer"][MARGIN:-MARGIN]

    tracemalloc.start()  # after timing: tracemalloc slows allocation
    cold()
    _, cold_peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    warm()
    _, fft_peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    compared = fft_dose[lo:hi]
    max_dose = float(np.abs(direct).max())
    relative_to_max = float(np.abs(compared - direct).max()) / max_dose
    significant = np.abs(direct) > 1e-6 * max_dose
    per_voxel = float(np.max(np.abs(compared[significant] / direct[significant] - 1)))

    print(f"TIA map {n}³ float64 ({tia.nbytes / 2**20:.0f} MiB), kernel 11³ ({kernel.name})")
    print(f"{args.repeats} interleaved repeats (cold, warm, peer; order rotated each repeat)")
    print(f"FFT VSV, warm (kernel spectrum cached): {_summary(times['warm'])}")
    print(f"FFT VSV, cold (first call, new size):   {_summary(times['cold'])}")
    label = f"extrapolated from {args.peer_slices} slices" if lo > 0 else "whole volume"
    print(f"ndimage.convolve ({label}): {_summary(times['peer'])}")
    for name in ("warm", "cold"):
        best = min(times["peer"]) / min(times[name])
        median = statistics.median(times["peer"]) / statistics.median(times[name])
        per_repeat = ", ".join(
            f"{p / f:.1f}" for p, f in zip(times["peer"], times[name], strict=True)
        )
        print(
            f"speed-up {name}: best/best {best:.1f}x, median/median {median:.1f}x "
            f"(per repeat: {per_repeat})"
        )
    print(f"max |FFT - direct| / max dose:          {relative_to_max:.2e}")
    print(f"max per-voxel relative (dose > 1e-6 max): {per_voxel:.2e}")
    print(
        f"peak numpy memory of one VSV call: cold {cold_peak_bytes / 2**20:.0f} MiB, "
        f"warm {fft_peak_bytes / 2**20:.0f} MiB (input map {tia.nbytes / 2**20:.0f} MiB, "
        "not counted: allocated before tracing)"
    )
    print(f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
