"""VSV dose of a 256³ TIA map: FFT (``VoxelSValue``, scipy.fft) vs direct
``scipy.ndimage.convolve`` with the same 11³ kernel, in one run.

Run: ``.venv/bin/python -m benchmarks.bench_vsv_convolution [--size 256] [--peer-slices 32]``.

The direct peer is slow (256³ × 11³ ≈ 2.2·10¹⁰ multiply-adds), so by default it is timed on a
slab of ``--peer-slices`` z-slices (with the 5-slice margins the kernel needs, so the slab's
values equal those of the full convolution) and its time is extrapolated linearly to the whole
volume; ``--peer-slices 0`` times the peer on the whole volume (once). Each timing is the best of
``--repeats`` runs, since the development machine is shared; the FFT path is timed cold (kernel
spectrum for the map's size not cached: a new study's first call) and warm (cached), alternating.
Reported: wall times, speed-ups (best and per repeat),
largest disagreement (relative to the largest dose, and per voxel where the dose exceeds
1e-6 of the maximum), and peak memory of the FFT path (tracemalloc, numpy buffers).
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
from scipy import ndimage

from concordose.dose.methods.voxel_s_value import VoxelSValue, kernel_spectrum
from concordose.dose.models import VoxelDoseInput
from concordose.dose.vsv_kernels import vsv_kernel

MARGIN = 5  # kernel half-width in voxels


def main() -> None:
    """Time both, print the ratio, the agreement and the memory."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--peer-slices", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="best of N (shared machine)")
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
    dose_input = VoxelDoseInput(tia, (kernel.spacing_mm,) * 3)

    method.compute_map(VoxelDoseInput(tia[:32, :32, :32], dose_input.spacing_mm))  # warm-up
    # Cold: the kernel spectrum for this map size is not cached (a new study's first call).
    # Warm: it is (every further map of the study). Alternated, so load changes hit both.
    cold_times, fft_times = [], []
    for _ in range(args.repeats):
        kernel_spectrum.cache_clear()
        start = time.perf_counter()
        fft_dose = method.compute_map(dose_input).dose_gy
        cold_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        method.compute_map(dose_input)
        fft_times.append(time.perf_counter() - start)
    fft_s = min(fft_times)
    cold_s = min(cold_times)
    tracemalloc.start()  # after timing: tracemalloc slows allocation
    kernel_spectrum.cache_clear()
    method.compute_map(dose_input)
    _, cold_peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    method.compute_map(dose_input)
    _, fft_peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    if args.peer_slices <= 0 or args.peer_slices >= n:
        lo, hi = 0, n
        start = time.perf_counter()
        direct = ndimage.convolve(tia, kernel.gy_per_mbq_h, mode="constant", cval=0.0)
        peer_s = time.perf_counter() - start
        extrapolated = False
    else:
        lo = (n - args.peer_slices) // 2
        hi = lo + args.peer_slices
        slab = tia[lo - MARGIN : hi + MARGIN]
        peer_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            direct_slab = ndimage.convolve(slab, kernel.gy_per_mbq_h, mode="constant", cval=0.0)
            peer_times.append(time.perf_counter() - start)
        # the slab holds peer_slices + 2·MARGIN slices and the peer computes all of them
        peer_s = min(peer_times) * n / (args.peer_slices + 2 * MARGIN)
        direct = direct_slab[MARGIN:-MARGIN]
        extrapolated = True
    compared = fft_dose[lo:hi]
    max_dose = float(np.abs(direct).max())
    relative_to_max = float(np.abs(compared - direct).max()) / max_dose
    significant = np.abs(direct) > 1e-6 * max_dose
    per_voxel = float(np.max(np.abs(compared[significant] / direct[significant] - 1)))

    print(f"TIA map {n}³ float64 ({tia.nbytes / 2**20:.0f} MiB), kernel 11³ ({kernel.name})")
    warm = ", ".join(f"{t:.2f}" for t in fft_times)
    cold = ", ".join(f"{t:.2f}" for t in cold_times)
    print(
        f"FFT VSV, warm (kernel spectrum cached): {fft_s:6.2f} s (best of {args.repeats}: {warm})"
    )
    print(
        f"FFT VSV, cold (first call, new size):   {cold_s:6.2f} s (best of {args.repeats}: {cold})"
    )
    label = f"extrapolated from {args.peer_slices} slices" if extrapolated else "whole volume"
    print(f"ndimage.convolve ({label}): {peer_s:9.1f} s")
    print(
        f"speed-up: warm {peer_s / fft_s:.1f}x (per repeat: "
        + ", ".join(f"{peer_s / t:.1f}" for t in fft_times)
        + f"); cold {peer_s / cold_s:.1f}x (per repeat: "
        + ", ".join(f"{peer_s / t:.1f}" for t in cold_times)
        + ")"
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
