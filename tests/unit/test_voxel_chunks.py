"""Voxel work in chunks (issue 19): the voxel fits in blocks of curves and the VSV convolution in
slabs with their halo give the unchunked results — bit for bit for the fits (each block is the
batch the engine fits anyway, and a curve's fit does not depend on the others in its batch), to
the FFT's round-off for the convolution (other transform lengths) — and any map (here, one that
ships every chunk and result through pickle, as a Dask cluster does, and runs them in reverse
order) gives bit-identical results to the serial one."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import numpy as np
import pytest
from scipy import ndimage

from concordose.calibration.protocol import VoxelDosimetryRules
from concordose.chunk_map import serial_map
from concordose.dicom.seg import VoiType
from concordose.dose.methods.voxel_s_value import (
    KernelSlab,
    VoxelSValue,
    convolve_kernel,
    convolve_kernel_in_slabs,
    kernel_slabs,
)
from concordose.dose.models import VoxelDoseInput
from concordose.dose.voxel_dosimetry import voxel_dose_from_maps
from concordose.dose.vsv_kernels import vsv_kernel
from concordose.kinetics.fitting import ALL_MODELS, fit_exponential
from concordose.kinetics.voxel import VOXEL_FIT_SETTINGS, VoxelFitChunk, fit_voxels

ChunkT = TypeVar("ChunkT")
ResultT = TypeVar("ResultT")
SIX_H = np.array([4.0, 24.0, 48.0, 96.0, 168.0, 240.0])
MONO = next(model for model in ALL_MODELS if model.name == "mono_exponential")


class ShippingMap:
    """Like a Dask cluster: every function, chunk and result goes through pickle; the chunks
    run in reverse order (the results still come back in the chunks' order)."""

    def __init__(self) -> None:
        self.chunks: list[object] = []

    def __call__(
        self, function: Callable[[ChunkT], ResultT], chunks: Iterable[ChunkT], /
    ) -> Iterator[ResultT]:
        shipped = [pickle.loads(pickle.dumps(chunk)) for chunk in chunks]
        self.chunks.extend(shipped)
        remote = pickle.loads(pickle.dumps(function))
        results = [pickle.dumps(remote(chunk)) for chunk in reversed(shipped)]
        return iter([pickle.loads(result) for result in reversed(results)])


def _noisy_maps(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lam = rng.uniform(0.005, 0.05, shape)
    a0 = rng.uniform(1.0, 10.0, shape)
    clean = a0[None] * np.exp(-lam[None] * SIX_H[:, None, None, None])
    maps: np.ndarray = clean * (1 + rng.normal(0.0, 0.05, clean.shape))
    return maps


def test_voxel_fits_in_chunks_are_the_unchunked_fit_bit_for_bit() -> None:
    maps = _noisy_maps((6, 7, 8), seed=3)
    mask = np.zeros((6, 7, 8), dtype=bool)
    mask[1:, 2:, 1:7] = True
    shipping = ShippingMap()
    chunked = fit_voxels(SIX_H, maps, mask, MONO, chunk_voxels=11, map_chunks=shipping)
    # unchunked: every curve of the mask in one batch
    curves = maps.reshape(6, -1).T[mask.ravel()]
    whole = fit_exponential(SIX_H, curves, MONO, settings=VOXEL_FIT_SETTINGS)
    np.testing.assert_array_equal(chunked.tia_mbq_h[mask], whole.tia_mbq_h)
    np.testing.assert_array_equal(chunked.tia_sd_mbq_h[mask], whole.tia_sd_mbq_h)
    assert np.isnan(chunked.tia_mbq_h[~mask]).all()
    assert sum(chunked.status_counts.values()) == mask.sum()
    # each chunk carried its curves only (at most 11 × 6 values), never the maps
    assert len(shipping.chunks) == -(-int(mask.sum()) // 11)
    assert all(isinstance(chunk, VoxelFitChunk) for chunk in shipping.chunks)
    assert max(chunk.curves_mbq.shape[0] for chunk in shipping.chunks) == 11  # type: ignore[attr-defined]
    serial = fit_voxels(SIX_H, maps, mask, MONO, chunk_voxels=11, map_chunks=serial_map)
    np.testing.assert_array_equal(serial.tia_mbq_h, chunked.tia_mbq_h)


@pytest.mark.parametrize("slab_slices", [1, 4, 7, 48])
def test_convolution_in_slabs_equals_the_whole_map_across_slab_edges(slab_slices: int) -> None:
    kernel = vsv_kernel("2.21mm")
    tia = np.random.default_rng(4).gamma(2.0, 1.0, (23, 17, 19))
    # point sources on the slices either side of every slab edge: their dose crosses the edge
    # and is only right if the neighbouring slab's halo carries them
    for edge in range(slab_slices, tia.shape[0], slab_slices):
        tia[edge - 1, 8, 9] += 500.0
        tia[edge, 3, 4] += 500.0
    whole = convolve_kernel(tia, kernel)
    slabs = convolve_kernel_in_slabs(tia, kernel, slab_slices=slab_slices)
    direct = ndimage.convolve(tia, kernel.gy_per_mbq_h, mode="constant", cval=0.0)
    # the same linear convolution; only the FFT's round-off differs (measured ≤ 5e-16 of the
    # largest dose)
    np.testing.assert_allclose(slabs, whole, rtol=0, atol=1e-12 * whole.max())
    np.testing.assert_allclose(slabs, direct, rtol=1e-9)


def test_a_slab_ships_its_slices_and_halo_only() -> None:
    kernel = vsv_kernel("4.42mm")
    half = kernel.gy_per_mbq_h.shape[0] // 2
    tia = np.ones((30, 4, 5))
    slabs = list(kernel_slabs(tia, kernel, slab_slices=10))
    assert [slab.keep for slab in slabs] == [(0, 10), (half, half + 10), (half, half + 10)]
    assert [slab.tia_mbq_h.shape[0] for slab in slabs] == [10 + half, 10 + 2 * half, 10 + half]
    assert all(isinstance(slab, KernelSlab) for slab in slabs)
    with pytest.raises(ValueError, match="at least 1"):
        list(kernel_slabs(tia, kernel, slab_slices=0))


def test_vsv_doses_do_not_depend_on_the_map() -> None:
    tia = np.random.default_rng(5).gamma(2.0, 1.0, (60, 20, 22))
    method = VoxelSValue("2.21mm")
    shipping = ShippingMap()
    serial = method.compute_map(VoxelDoseInput(tia, (2.21,) * 3)).dose_gy
    shipped = method.compute_map(VoxelDoseInput(tia, (2.21,) * 3), map_chunks=shipping).dose_gy
    np.testing.assert_array_equal(shipped, serial)
    assert len(shipping.chunks) == 2  # 60 slices in slabs of 48


def test_voxel_dosimetry_through_a_shipping_map_is_identical() -> None:
    a0 = np.zeros((24, 24, 24))
    organ = np.zeros(a0.shape, dtype=bool)
    organ[7:17, 7:17, 7:17] = True
    lesion = np.zeros(a0.shape, dtype=bool)
    lesion[11:14, 11:14, 11:14] = True
    a0[organ], a0[lesion] = 0.1, 1.0
    rng = np.random.default_rng(6)
    clean = a0[None] * np.exp(-0.01 * SIX_H[:, None, None, None])
    maps = clean * (1 + rng.normal(0.0, 0.05, clean.shape))
    arguments = (SIX_H, maps, (4.0, 4.0, 4.0), np.stack([organ, lesion]))
    rules = VoxelDosimetryRules(methods=["ldm", "vsv_4.42mm"])
    keywords = {
        "labels": ("liver", "lesion_1"),
        "voi_types": (VoiType.ORGAN, VoiType.LESION),
        "rules": rules,
    }
    serial = voxel_dose_from_maps(*arguments, **keywords)  # type: ignore[arg-type]
    shipping = ShippingMap()
    shipped = voxel_dose_from_maps(
        *arguments,
        **keywords,  # type: ignore[arg-type]
        fit=lambda *fit_args: fit_voxels(*fit_args, map_chunks=shipping),
        map_chunks=shipping,
    )
    np.testing.assert_array_equal(shipped.tia_mbq_h, serial.tia_mbq_h)
    np.testing.assert_array_equal(shipped.tia_sd_mbq_h, serial.tia_sd_mbq_h)
    for a, b in zip(serial.doses, shipped.doses, strict=True):
        np.testing.assert_array_equal(b.mean_dose_gy, a.mean_dose_gy)
        np.testing.assert_array_equal(b.mean_dose_sd_gy, a.mean_dose_sd_gy)
    kinds = {type(chunk).__name__ for chunk in shipping.chunks}
    assert kinds == {"VoxelFitChunk", "KernelSlab"}
