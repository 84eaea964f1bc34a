"""Voxel S-value (VSV) convolution: dose map = TIA map ⊛ kernel (MIRD Pamphlet 17).

Steps, for a TIA map on a CT/SPECT grid of any voxel size:

1. rebin the TIA map onto a grid of the kernel's voxel size sharing the map's corner, with exact
   activity conservation (overlap weights, :mod:`concordose.dose.resampling`);
2. convolve with the mirrored 11³ kernel by FFT (``scipy.fft`` real transforms on a zero-padded
   fast length, i.e. linear, not circular, convolution; zero activity outside the map). The
   kernel's spectrum is real (the kernel is mirror-symmetric) and computed as separable cosine
   sums, so a first call on a new map size costs little more than a repeated one. Measured on
   256³: see benchmarks/bench_vsv_convolution.py and benchmarks/README.md;
3. average the dose back onto the input grid (mean of the kernel-grid dose over each voxel), or,
   when the input names an ``output_geometry`` (the CT grid: other origin, spacing and extent,
   same direction), onto that grid: the TIA on the kernel grid is padded by the kernel's
   half-width so the convolution holds the dose's whole support, then averaged over each output
   voxel by exact overlap (:func:`concordose.dose.resampling.average_onto_grid`). The TIA's
   total is conserved on the way in (exact rebinning) and Σ dose · mass on the way out;
4. optional density correction: D · ρ_water / ρ (kernels are for soft tissue ≈ 1 g/mL; this
   first-order mass scaling is the common one, e.g. Dieudonné et al. 2013, JNM 54:236).

Kernels are truncated at 5 voxels (see :mod:`concordose.dose.vsv_kernels`).

In slabs (:func:`convolve_kernel_in_slabs`): the kernel-grid TIA is cut along its first axis
into slabs of :data:`VSV_SLAB_SLICES` slices, each shipped with the kernel's half-width of
slices on either side (its halo; none beyond the map, where the activity is zero anyway), and
each slab is convolved on its own through a :class:`~concordose.chunk_map.ChunkMap` (a Dask
cluster may convolve them on its workers). An output slice needs the input within the
kernel's half-width of it, which its slab holds, so the slabs' doses are the whole map's
exactly; only the FFT's round-off differs (other transform lengths: measured ≤ 5e-16 of the
largest dose, ``tests/unit/test_voxel_chunks.py``). The slab plan depends only on the map's
shape, so every map (serial or Dask) gives bit-identical doses.

Missing conversion and Auger electrons (local term, on by default). Summed over the kernel and
multiplied by the voxel mass, the packaged kernels carry 0.911 (2.21 mm) and 0.921 (4.42 mm) of
the ICRP-107 electron energy per decay (147.92 keV, the LDM energy). Their part within the
electron range (the 3 × 3 × 3 voxels round the source; Lu-177 beta maximum range ≈ 1.8 mm in
soft tissue, shorter than one voxel) is 0.903 and 0.904, which matches the ICRP-107 *beta*
fraction 133.27 / 147.92 = 0.901 and is 0.10 short of beta + conversion + Auger; the rest of the
kernel (≥ 2 voxels away, photons only) is 0.008 and 0.017. So the kernels are beta + photon
kernels without the conversion (13.52 keV) and Auger (1.13 keV) electrons, 9.9 % of the electron
energy (our inference from that energy balance: ``tests/unit/test_dose_vsv.py`` checks it; the
sources' files do not say which emissions were simulated). Those electrons stop well inside one
voxel: the main conversion lines (icrp107-database) are 47.5 keV (K, 113 keV gamma),
102–111 keV (L/M, 113 keV) and 143 keV (K, 208 keV), CSDA ranges in water ≈ 0.04, 0.14 and
0.28 mm (NIST ESTAR); Auger electrons are ≤ 62 keV. So the method adds them as local deposition
in the source voxel of the kernel grid: D_local = TIA · E_(CE+Auger) · 3.6e9 / m_voxel, with the
energies from the ``icrp107-database`` package (:func:`concordose.nuclides.emission_energies`).
A large uniform region then gets LDM × (1 + photon share of the kernel) instead of 0.91 × LDM.
``VoxelSValue(..., local_conversion_auger=False)`` turns the term off (the kernel alone, as
published).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import scipy.fft

from concordose.chunk_map import ChunkMap, serial_map
from concordose.dose.methods.local_deposition import DECAYS_PER_MBQ_H, J_PER_KEV, KG_PER_G
from concordose.dose.models import PlacedDose, VoxelDoseInput, VoxelDoseMap
from concordose.dose.resampling import (
    aligned_grid,
    average_intensive_back,
    rebin_extensive,
)
from concordose.dose.vsv_kernels import VsvKernel, vsv_kernel
from concordose.errors import ConcordoseError
from concordose.kinetics.models import settings_hash
from concordose.nuclides import emission_energies

FloatArray = npt.NDArray[np.float64]


def _cosine_matrix(n_padded: int, half_width: int, n_frequencies: int) -> FloatArray:
    """(n_frequencies, half_width + 1): weight · cos(2π·f·d / n_padded) for offset d ≥ 0.

    The weight is 1 for d = 0 and 2 for d > 0: the offsets +d and −d of a mirrored kernel
    contribute the same cosine and their sines cancel.
    """
    frequency = np.arange(n_frequencies, dtype=np.float64)[:, None]
    offset = np.arange(half_width + 1, dtype=np.float64)[None, :]
    weight = np.where(offset == 0, 1.0, 2.0)
    matrix: FloatArray = weight * np.cos(2.0 * np.pi * frequency * offset / n_padded)
    return matrix


@lru_cache(maxsize=8)
def kernel_spectrum(kernel_name: str, shape: tuple[int, int, int]) -> FloatArray:
    """Real DFT, on the padded ``shape`` (rfft layout), of the kernel centred on voxel 0.

    The kernel is mirror-symmetric along every axis (built from one octant), so with its centre
    on voxel 0 (negative offsets wrapping round) its DFT is real and separable into cosine sums:
    ``K̂(u, v, w) = Σ_abc octant[a, b, c] · C0[u, a] · C1[v, b] · C2[w, c]``. Three small
    matrix products (the last (n0 × 6) · (6 × n1·n2/2)) cost ~0.1 s at 270³ instead of a full
    3-D FFT of the zero-padded kernel, and the real spectrum takes half the memory of a complex
    one. Cached: every map of one study shares the shape (its slabs a few shapes). Read-only.
    """
    full = vsv_kernel(kernel_name).gy_per_mbq_h
    half = full.shape[0] // 2
    octant = full[half:, half:, half:]  # offsets 0..half along each axis
    n0, n1, n2 = shape
    c0 = _cosine_matrix(n0, half, n0)
    c1 = _cosine_matrix(n1, half, n1)
    c2 = _cosine_matrix(n2, half, n2 // 2 + 1)
    along_w = np.einsum("abc,wc->abw", octant, c2)
    along_vw = np.einsum("abw,vb->avw", along_w, c1)
    spectrum: FloatArray = (c0 @ along_vw.reshape(half + 1, -1)).reshape(n0, n1, n2 // 2 + 1)
    spectrum.setflags(write=False)
    return spectrum


def padded_shape(shape: tuple[int, ...], half_width: int) -> tuple[int, int, int]:
    """Fast FFT lengths ≥ n + half_width per axis: enough for a linear (not circular)
    convolution with a kernel centred on voxel 0 (offsets −half..half wrap onto zeros)."""
    n0, n1, n2 = (scipy.fft.next_fast_len(n + half_width, real=True) for n in shape)
    return (n0, n1, n2)


def convolve_kernel(tia_mbq_h: FloatArray, kernel: VsvKernel, *, workers: int = -1) -> FloatArray:
    """Dose (Gy) on the kernel's grid: linear FFT convolution, output the input's shape.

    Equals ``scipy.ndimage.convolve(tia, kernel, mode="constant")`` for the odd, centred,
    mirror-symmetric kernel (to ~1e-15 of the largest dose). float64 throughout. Memory: the
    padded complex spectrum of the map (transformed in place), the cached real kernel spectrum
    and the output; ``workers`` threads for the FFTs (-1: all cores).
    """
    if tia_mbq_h.ndim != 3:
        raise ValueError(f"TIA map must be 3-D; got shape {tia_mbq_h.shape}")
    half = kernel.gy_per_mbq_h.shape[0] // 2
    shape = padded_shape(tia_mbq_h.shape, half)
    spectrum = scipy.fft.rfftn(tia_mbq_h, s=shape, workers=workers)
    spectrum *= kernel_spectrum(kernel.name, shape)
    full = scipy.fft.irfftn(spectrum, s=shape, overwrite_x=True, workers=workers)
    del spectrum
    n0, n1, n2 = tia_mbq_h.shape
    # FFT round-off leaves ±1e-16-relative noise where the true dose is 0; dose is never negative.
    dose: FloatArray = np.clip(full[:n0, :n1, :n2], 0.0, None)
    return dose


VSV_SLAB_SLICES = 48
"""Kernel-grid slices per slab of a chunked convolution (10.6 cm at 2.21 mm): with the halo
(2 × 5 slices) a slab's transforms are ≤ 1.2 × its share of the whole map's, and a slab of a
clinical map (288² in-plane) holds ~40 MB of spectrum."""


@dataclass(frozen=True)
class KernelSlab:
    """One slab of a kernel-grid TIA map with its halo (what is shipped to a worker).

    Attributes:
        kernel_name: the packaged kernel (:func:`concordose.dose.vsv_kernels.vsv_kernel`).
        tia_mbq_h: the slab's slices plus up to the kernel's half-width of slices on either
            side (fewer at the map's ends), MBq·h per kernel voxel.
        keep: the slices ``[start, stop)`` of ``tia_mbq_h`` whose dose the slab returns.
    """

    kernel_name: str
    tia_mbq_h: FloatArray
    keep: tuple[int, int]


def convolve_slab(slab: KernelSlab) -> FloatArray:
    """The dose (Gy) of the slab's kept slices: :func:`convolve_kernel` on the slab and its
    halo (zero beyond them), cut to ``keep``."""
    dose = convolve_kernel(slab.tia_mbq_h, vsv_kernel(slab.kernel_name))
    start, stop = slab.keep
    return np.ascontiguousarray(dose[start:stop])


def kernel_slabs(
    tia_mbq_h: FloatArray, kernel: VsvKernel, slab_slices: int = VSV_SLAB_SLICES
) -> Iterator[KernelSlab]:
    """The slabs of ``tia_mbq_h`` (first axis), each with its halo, in order (lazily)."""
    if slab_slices < 1:
        raise ValueError(f"slab_slices must be at least 1; found {slab_slices}")
    half = kernel.gy_per_mbq_h.shape[0] // 2
    n_slices = tia_mbq_h.shape[0]
    for first in range(0, n_slices, slab_slices):
        last = min(first + slab_slices, n_slices)
        low, high = max(0, first - half), min(n_slices, last + half)
        yield KernelSlab(
            kernel.name, np.ascontiguousarray(tia_mbq_h[low:high]), (first - low, last - low)
        )


def convolve_kernel_in_slabs(
    tia_mbq_h: FloatArray,
    kernel: VsvKernel,
    *,
    map_chunks: ChunkMap = serial_map,
    slab_slices: int = VSV_SLAB_SLICES,
) -> FloatArray:
    """:func:`convolve_kernel` slab by slab (see the module docstring): the same dose to the
    FFT's round-off, each slab through ``map_chunks``."""
    if tia_mbq_h.ndim != 3:
        raise ValueError(f"TIA map must be 3-D; got shape {tia_mbq_h.shape}")
    dose = np.empty(tia_mbq_h.shape, dtype=np.float64)
    first = 0
    for part in map_chunks(convolve_slab, kernel_slabs(tia_mbq_h, kernel, slab_slices)):
        dose[first : first + part.shape[0]] = part
        first += part.shape[0]
    return dose


def local_conversion_auger_gy_per_mbq_h_per_g(nuclide: str = "Lu-177") -> float:
    """Dose per TIA per mass from the conversion and Auger electrons deposited locally,
    Gy·g/(MBq·h): ICRP-107 (13.52 + 1.13) keV · 1.602e-16 J/keV · 3.6e9 / 1e-3 kg = 0.00845
    for Lu-177 (9.9 % of the LDM constant)."""
    energies = emission_energies(nuclide)
    energy_kev = energies.conversion_electron_kev + energies.auger_kev
    return energy_kev * J_PER_KEV * DECAYS_PER_MBQ_H / KG_PER_G


class VoxelSValue:
    """Registry entries ``vsv_2.21mm`` and ``vsv_4.42mm`` (voxel level).

    Args:
        kernel: packaged kernel name (``"2.21mm"`` or ``"4.42mm"``).
        density_correction: divide the dose by the density map when the input has one.
        local_conversion_auger: add the conversion and Auger electrons the kernels lack as local
            deposition (see the module docstring); ``False``: the published kernel alone.
    """

    version = "2"

    def __init__(
        self,
        kernel: str = "2.21mm",
        density_correction: bool = False,
        local_conversion_auger: bool = True,
    ) -> None:
        self.kernel = kernel
        self.density_correction = density_correction
        self.local_conversion_auger = local_conversion_auger
        self.name = (
            f"vsv_{kernel}"
            + ("_density" if density_correction else "")
            + ("" if local_conversion_auger else "_kernel_only")
        )

    def settings(self) -> dict[str, object]:
        """Kernel, convolution, resampling and the local electron term used."""
        return {
            "kernel": f"Lu-177 soft tissue {self.kernel}",
            "convolution": "scipy.fft rfftn (linear, zero-padded)",
            "resampling": "activity-conserving overlap rebinning; dose averaged back",
            "density_correction": self.density_correction,
            "local_conversion_auger": (
                "ICRP-107 conversion + Auger electrons (icrp107-database) deposited locally"
                if self.local_conversion_auger
                else "none (kernel as published: beta + photons)"
            ),
        }

    def dose_on_kernel_grid(
        self, tia_on_kernel_mbq_h: FloatArray, *, map_chunks: ChunkMap = serial_map
    ) -> FloatArray:
        """Dose (Gy) on the kernel's grid from TIA (MBq·h) on that grid: the convolution (in
        slabs through ``map_chunks``) plus, when on, the local conversion/Auger term in each
        source voxel (unit density)."""
        kernel = vsv_kernel(self.kernel)
        dose = convolve_kernel_in_slabs(tia_on_kernel_mbq_h, kernel, map_chunks=map_chunks)
        if self.local_conversion_auger:
            kernel_voxel_g = kernel.spacing_mm**3 / 1000.0  # unit density, 1 mL = 1000 mm³
            dose += tia_on_kernel_mbq_h * (
                local_conversion_auger_gy_per_mbq_h_per_g() / kernel_voxel_g
            )
        return dose

    def placed_dose(
        self, dose_input: VoxelDoseInput, *, map_chunks: ChunkMap = serial_map
    ) -> PlacedDose:
        """The dose on the kernel's grid (TIA rebinned onto it, widened by the kernel's
        half-width so the whole dose is there), divided by the output grid's density once placed
        only for the ``_density`` variants. ``map_chunks`` runs the convolution's slabs."""
        if dose_input.geometry is None:
            raise ConcordoseError("a placed dose needs the TIA map's geometry")
        kernel = vsv_kernel(self.kernel)
        tia = np.asarray(dose_input.tia_map_mbq_h, dtype=np.float64)
        kernel_spacing = (kernel.spacing_mm,) * 3
        tia_on_kernel = rebin_extensive(tia, dose_input.spacing_mm, kernel_spacing)
        margin = kernel.gy_per_mbq_h.shape[0] // 2
        return PlacedDose(
            dose_gy=self.dose_on_kernel_grid(np.pad(tia_on_kernel, margin), map_chunks=map_chunks),
            geometry=aligned_grid(dose_input.geometry, kernel.spacing_mm, margin_voxels=margin),
            divide_by_density=self.density_correction,
        )

    def compute_map(
        self, dose_input: VoxelDoseInput, *, map_chunks: ChunkMap = serial_map
    ) -> VoxelDoseMap:
        """Dose per voxel (Gy) on the input grid, or on ``dose_input.output_geometry``;
        ``map_chunks`` runs the convolution's slabs."""
        if dose_input.output_geometry is not None:
            dose = self.placed_dose(dose_input, map_chunks=map_chunks).on_grid(
                dose_input.output_geometry, dose_input.density_g_per_ml
            )
        else:
            kernel = vsv_kernel(self.kernel)
            tia = np.asarray(dose_input.tia_map_mbq_h, dtype=np.float64)
            kernel_spacing = (kernel.spacing_mm,) * 3
            tia_on_kernel = rebin_extensive(tia, dose_input.spacing_mm, kernel_spacing)
            dose = average_intensive_back(
                self.dose_on_kernel_grid(tia_on_kernel, map_chunks=map_chunks),
                tia.shape,
                dose_input.spacing_mm,
                kernel_spacing,
            )
            if self.density_correction and dose_input.density_g_per_ml is not None:
                dose = dose / dose_input.density_g_per_ml
        return VoxelDoseMap(
            method=self.name,
            method_version=self.version,
            parameters_hash=settings_hash(self.settings()),
            dose_gy=dose,
            spacing_mm=dose_input.dose_spacing_mm,
            geometry=dose_input.dose_geometry,
        )
