"""Voxel S-value convolution: kernel, point source, uniform region vs LDM, resampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.fft
from scipy import ndimage

from concordose.dose.methods.local_deposition import ldm_gy_per_mbq_h_per_g
from concordose.dose.methods.voxel_s_value import (
    VoxelSValue,
    convolve_kernel,
    kernel_spectrum,
    local_conversion_auger_gy_per_mbq_h_per_g,
)
from concordose.dose.models import VoxelDoseInput
from concordose.dose.resampling import average_intensive_back, rebin_extensive
from concordose.dose.vsv_kernels import KERNEL_FILES, vsv_kernel
from concordose.nuclides import emission_energies

SHARED_REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
PACKAGED_DATA = Path(__file__).resolve().parents[2] / "concordose" / "data"


@pytest.mark.skipif(not SHARED_REFERENCE.is_dir(), reason="shared/reference not beside checkout")
def test_packaged_reference_data_equal_the_shared_copies() -> None:
    names = [file_name for _, file_name in KERNEL_FILES.values()]
    names += [
        f"opendose_icrp110/{p.name}" for p in (SHARED_REFERENCE / "opendose_icrp110").glob("*.json")
    ]
    assert len(names) == 10
    for name in names:
        assert (PACKAGED_DATA / name).read_bytes() == (SHARED_REFERENCE / name).read_bytes(), name


@pytest.mark.parametrize("name", ["2.21mm", "4.42mm"])
def test_kernel_is_the_mirrored_octant_in_gy_per_mbq_h(name: str) -> None:
    kernel = vsv_kernel(name)
    assert kernel.gy_per_mbq_h.shape == (11, 11, 11)
    np.testing.assert_array_equal(kernel.gy_per_mbq_h, kernel.gy_per_mbq_h[::-1, :, :])
    np.testing.assert_array_equal(kernel.gy_per_mbq_h, kernel.gy_per_mbq_h[:, ::-1, ::-1])
    # file row "0 0 0" in mGy/(MBq·s) → Gy/(MBq·h): ×3600/1000
    centre = {"2.21mm": 1.66, "4.42mm": 2.26e-1}[name]
    assert kernel.gy_per_mbq_h[5, 5, 5] == pytest.approx(centre * 3.6, rel=1e-12)


@pytest.mark.parametrize("name", ["2.21mm", "4.42mm"])
@pytest.mark.parametrize("local", [True, False])
def test_point_source_reproduces_the_kernel(name: str, local: bool) -> None:
    # The kernel around the source, plus (when on) the conversion/Auger electrons in the
    # source voxel only: TIA · 0.00845 Gy·g/(MBq·h) / voxel mass.
    kernel = vsv_kernel(name)
    tia = np.zeros((21, 23, 25))
    tia[10, 11, 12] = 3.0
    spacing = (kernel.spacing_mm,) * 3
    method = VoxelSValue(name, local_conversion_auger=local)
    dose = method.compute_map(VoxelDoseInput(tia, spacing)).dose_gy
    expected = 3.0 * kernel.gy_per_mbq_h.copy()
    if local:
        voxel_g = kernel.spacing_mm**3 / 1000.0
        expected[5, 5, 5] += 3.0 * local_conversion_auger_gy_per_mbq_h_per_g() / voxel_g
    block = dose[5:16, 6:17, 7:18]
    np.testing.assert_allclose(block, expected, rtol=1e-9, atol=1e-12)
    outside = dose.copy()
    outside[5:16, 6:17, 7:18] = 0.0
    assert np.abs(outside).max() < 1e-12
    assert method.name == f"vsv_{name}" + ("" if local else "_kernel_only")


def _kernel_energy_shares(name: str) -> tuple[float, float]:
    """(within the electron range, beyond it) of the kernel's energy, as fractions of LDM:
    Σ S · m over the 3³ voxels round the source and over the rest."""
    kernel = vsv_kernel(name).gy_per_mbq_h
    per_ldm = vsv_kernel(name).spacing_mm ** 3 / 1000.0 / ldm_gy_per_mbq_h_per_g()
    near = float(kernel[4:7, 4:7, 4:7].sum()) * per_ldm
    return near, float(kernel.sum()) * per_ldm - near


@pytest.mark.parametrize("name", ["2.21mm", "4.42mm"])
def test_kernels_carry_the_beta_energy_without_conversion_and_auger_electrons(name: str) -> None:
    # Lu-177 betas stop within ~1.8 mm (< 1 voxel): the 3³ block round the source holds every
    # beta plus a little photon energy. It matches the ICRP-107 beta share (133.27/147.92 =
    # 0.901) within 0.5 %, and is ~10 % short of all electrons: the kernels lack the
    # conversion (13.52 keV) and Auger (1.13 keV) electrons, which the method adds locally.
    energies = emission_energies("Lu-177")
    beta_share = energies.beta_kev / energies.electron_kev
    assert beta_share == pytest.approx(0.901, abs=5e-4)
    near, far = _kernel_energy_shares(name)
    assert near == pytest.approx(beta_share, abs=5e-3)
    assert near < 0.95  # not beta + conversion + Auger (1.0)
    assert 0.005 < far < 0.02  # the photon tail: 35.10 keV/decay emitted, a small part absorbed
    local = local_conversion_auger_gy_per_mbq_h_per_g() / ldm_gy_per_mbq_h_per_g()
    assert local == pytest.approx(1 - beta_share, rel=1e-9)


def test_fft_convolution_equals_direct_convolution() -> None:
    kernel = vsv_kernel("2.21mm")
    tia = np.random.default_rng(1).gamma(2.0, 1.0, (24, 20, 22))
    method = VoxelSValue("2.21mm", local_conversion_auger=False)
    fft = method.compute_map(VoxelDoseInput(tia, (2.21,) * 3)).dose_gy
    direct = ndimage.convolve(tia, kernel.gy_per_mbq_h, mode="constant", cval=0.0)
    np.testing.assert_allclose(fft, direct, rtol=1e-9)


@pytest.mark.parametrize("name", ["2.21mm", "4.42mm"])
def test_cosine_kernel_spectrum_equals_the_fft_of_the_centred_kernel(name: str) -> None:
    kernel = vsv_kernel(name)
    shape = (30, 27, 32)  # odd and even lengths: the rfft half-axis differs
    padded = np.zeros(shape)
    offsets = np.arange(-5, 6)
    padded[np.ix_(offsets % 30, offsets % 27, offsets % 32)] = kernel.gy_per_mbq_h
    expected = scipy.fft.rfftn(padded)
    spectrum = kernel_spectrum(name, shape)
    np.testing.assert_allclose(spectrum, expected.real, rtol=0, atol=1e-12 * spectrum.max())
    assert np.abs(expected.imag).max() < 1e-12 * spectrum.max()  # real: mirror-symmetric kernel


@pytest.mark.parametrize("shape", [(7, 50, 13), (1, 12, 12), (31, 6, 40)])
def test_fft_convolution_equals_direct_on_odd_and_thin_maps(shape: tuple[int, int, int]) -> None:
    kernel = vsv_kernel("2.21mm")
    tia = np.random.default_rng(2).gamma(2.0, 1.0, shape)
    fft = convolve_kernel(tia, kernel)
    direct = ndimage.convolve(tia, kernel.gy_per_mbq_h, mode="constant", cval=0.0)
    np.testing.assert_allclose(fft, direct, rtol=1e-9)


@pytest.mark.parametrize("name", ["2.21mm", "4.42mm"])
def test_large_uniform_region_tends_to_ldm_plus_the_photon_share(name: str) -> None:
    # Centre of a uniform cube: dose = (kernel sum + local term) × TIA per voxel exactly, once
    # the cube is wider than the kernel. With the conversion/Auger term, that is LDM (all
    # electrons) plus the photons the kernel absorbs: LDM × (1 + photon tail share) within
    # 0.5 % (the 3³ block also holds a little photon energy: measured +0.17 % for 2.21 mm,
    # +0.26 % for 4.42 mm). Without the term, the published kernel alone gives 0.91–0.92.
    kernel = vsv_kernel(name)
    spacing = kernel.spacing_mm
    ldm_gy = 1.0 * ldm_gy_per_mbq_h_per_g() / (spacing**3 / 1000.0)
    _, photon_share = _kernel_energy_shares(name)
    ratios = []
    for size in (3, 7, 15):
        tia = np.zeros((size + 12,) * 3)
        tia[6:-6, 6:-6, 6:-6] = 1.0
        dose = VoxelSValue(name).compute_map(VoxelDoseInput(tia, (spacing,) * 3)).dose_gy
        centre = (size + 12) // 2
        ratios.append(dose[centre, centre, centre] / ldm_gy)
    assert ratios[0] < ratios[1] <= ratios[2]
    assert ratios[2] == pytest.approx(1.0 + photon_share, rel=5e-3)
    kernel_only = VoxelSValue(name, local_conversion_auger=False).compute_map(
        VoxelDoseInput(tia, (spacing,) * 3)
    )
    alone = kernel_only.dose_gy[centre, centre, centre] / ldm_gy
    assert alone == pytest.approx(kernel.gy_per_mbq_h.sum() / ldm_gy, rel=1e-9)
    assert 0.90 < alone < 0.93
    assert ratios[2] - alone == pytest.approx(1 - 133.27 / 147.92, abs=1e-3)


def test_rebinning_conserves_activity_on_any_grid() -> None:
    tia = np.random.default_rng(2).uniform(0, 1, (9, 10, 11))
    for target in ((2.21, 2.21, 2.21), (4.42, 4.42, 4.42), (1.0, 7.3, 2.5)):
        rebinned = rebin_extensive(tia, (3.0, 4.0, 4.8), target)
        assert rebinned.sum() == pytest.approx(tia.sum(), rel=1e-12)
    # averaging back a constant field returns the constant on every original voxel
    fine = np.full(rebin_extensive(tia, (3.0, 4.0, 4.8), (2.21,) * 3).shape, 5.0)
    back = average_intensive_back(fine, tia.shape, (3.0, 4.0, 4.8), (2.21,) * 3)
    np.testing.assert_allclose(back, 5.0, rtol=1e-12)


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((15, 15, 15), (4.42, 4.42, 4.42)), ((12, 40, 36), (3.0, 0.98, 1.1))],
)
def test_energy_is_conserved_through_resampling_to_the_kernel_grid(
    shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> None:
    # Sources on a SPECT-like or anisotropic CT-like grid, dosed with the 2.21 mm kernel: Σ D·m
    # on the input grid equals the energy the kernel deposits, TIA × Σ kernel × kernel-voxel
    # mass, plus the local conversion/Auger term TIA × 0.00845 Gy·g/(MBq·h) (all inside the map).
    tia = np.zeros(shape)
    centre = tuple(n // 2 for n in shape)
    tia[centre] = 10.0
    tia[centre[0] - 1, centre[1], centre[2] + 1] = 5.0
    dose = VoxelSValue("2.21mm").compute_map(VoxelDoseInput(tia, spacing)).dose_gy
    kernel = vsv_kernel("2.21mm")
    deposited = dose.sum() * float(np.prod(spacing)) / 1000.0
    local = local_conversion_auger_gy_per_mbq_h_per_g()
    expected = tia.sum() * (kernel.gy_per_mbq_h.sum() * 2.21**3 / 1000.0 + local)
    assert deposited == pytest.approx(expected, rel=1e-9)


def test_density_correction_divides_by_density() -> None:
    tia = np.zeros((11, 11, 11))
    tia[5, 5, 5] = 1.0
    density = np.full(tia.shape, 1.5)
    plain = VoxelSValue("4.42mm").compute_map(VoxelDoseInput(tia, (4.42,) * 3, density))
    corrected = VoxelSValue("4.42mm", density_correction=True).compute_map(
        VoxelDoseInput(tia, (4.42,) * 3, density)
    )
    np.testing.assert_allclose(corrected.dose_gy, plain.dose_gy / 1.5)
    assert corrected.method == "vsv_4.42mm_density"
