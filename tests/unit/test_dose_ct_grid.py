"""Voxel dose onto the CT grid: TIA map → kernel grid (activity conserved) → dose on a grid of
another origin, spacing and extent (``VoxelDoseInput.output_geometry``)."""

from __future__ import annotations

import numpy as np
import pytest

from concordose.dicom.geometry import VolumeGeometry
from concordose.dose.methods.local_deposition import VoxelLocalDeposition
from concordose.dose.methods.voxel_s_value import (
    VoxelSValue,
    local_conversion_auger_gy_per_mbq_h_per_g,
)
from concordose.dose.models import VoxelDoseInput
from concordose.dose.resampling import aligned_grid, average_onto_grid, rebin_extensive
from concordose.dose.vsv_kernels import vsv_kernel
from concordose.errors import ConcordoseError

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _grid(
    origin: tuple[float, float, float],
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
    direction: tuple[float, ...] = IDENTITY,
) -> VolumeGeometry:
    return VolumeGeometry(origin_mm=origin, spacing_mm=spacing, direction=direction, shape=shape)


def _zyx(geometry: VolumeGeometry) -> tuple[float, float, float]:
    x, y, z = geometry.spacing_mm
    return (z, y, x)


def _centres_mm(geometry: VolumeGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates (z, y, x grids) of an identity-direction grid."""
    nz, ny, nx = geometry.shape
    ox, oy, oz = geometry.origin_mm
    sx, sy, sz = geometry.spacing_mm
    return np.meshgrid(
        oz + sz * np.arange(nz), oy + sy * np.arange(ny), ox + sx * np.arange(nx), indexing="ij"
    )


def test_average_onto_grid_handles_known_offsets_exactly() -> None:
    source = _grid((1.0, 0.0, 0.0), (2.0, 1.0, 1.0), (1, 1, 10))  # x voxels cover [0, 20) mm
    values = np.arange(10.0).reshape(1, 1, 10)
    shifted = _grid((3.0, 0.0, 0.0), (2.0, 1.0, 1.0), (1, 1, 10))  # one voxel further along x
    np.testing.assert_allclose(
        average_onto_grid(values, source, shifted)[0, 0, :-1], values[0, 0, 1:]
    )
    assert average_onto_grid(values, source, shifted)[0, 0, -1] == 0.0  # outside the source
    half = _grid((2.0, 0.0, 0.0), (2.0, 1.0, 1.0), (1, 1, 10))  # half a voxel along x
    mixed = average_onto_grid(values, source, half)[0, 0]
    np.testing.assert_allclose(mixed[:-1], (values[0, 0, :-1] + values[0, 0, 1:]) / 2)
    assert mixed[-1] == pytest.approx(4.5)  # half covered by the last voxel (9), half outside
    fine = _grid((0.5, 0.0, 0.0), (1.0, 1.0, 1.0), (1, 1, 20))
    np.testing.assert_allclose(average_onto_grid(values, source, fine)[0, 0], np.repeat(values, 2))


def test_average_onto_grid_keeps_uniform_fields_and_the_integral() -> None:
    rng = np.random.default_rng(5)
    source = _grid((-20.0, 5.0, 7.5), (4.42, 4.42, 4.42), (9, 10, 11))
    target = _grid((-30.3, -8.1, 1.9), (0.98, 1.3, 3.0), (16, 46, 62))  # covers the source
    values = rng.uniform(0.0, 2.0, source.shape)
    moved = average_onto_grid(values, source, target)
    assert moved.sum() * target.voxel_volume_ml == pytest.approx(
        values.sum() * source.voxel_volume_ml, rel=1e-12
    )
    constant = average_onto_grid(np.full(source.shape, 3.0), source, target)
    z, y, x = _centres_mm(target)
    inside = (
        (np.abs(x - (-20.0 + 4.42 * 5)) < 4.42 * 4)
        & (np.abs(y - (5.0 + 4.42 * 4.5)) < 4.42 * 3.5)
        & (np.abs(z - (7.5 + 4.42 * 4)) < 4.42 * 3)
    )
    assert inside.sum() > 1000
    np.testing.assert_allclose(constant[inside], 3.0, rtol=1e-12)


def test_average_onto_grid_works_in_a_rotated_frame() -> None:
    # Both grids rotated 90° about z (patient space): the same arrays as in the identity frame,
    # since only the offsets along the grids' own axes matter.
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    direction = tuple(float(v) for v in rotation.ravel())
    values = np.random.default_rng(6).uniform(0, 1, (5, 6, 7))
    source_origin, target_origin = (1.0, 2.0, 3.0), (-2.3, 0.7, 4.1)
    source = _grid(source_origin, (2.0, 2.5, 3.0), (5, 6, 7))
    target = _grid(target_origin, (1.1, 0.9, 2.0), (9, 20, 16))
    rotated_source = _grid(tuple(rotation @ source_origin), (2.0, 2.5, 3.0), (5, 6, 7), direction)
    rotated_target = _grid(tuple(rotation @ target_origin), (1.1, 0.9, 2.0), (9, 20, 16), direction)
    np.testing.assert_allclose(
        average_onto_grid(values, rotated_source, rotated_target),
        average_onto_grid(values, source, target),
        rtol=1e-12,
        atol=1e-15,
    )
    assert average_onto_grid(values, source, target).max() > 0  # the grids overlap


def test_grids_of_different_direction_are_refused() -> None:
    source = _grid((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), (4, 4, 4))
    rotated = _grid((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), (4, 4, 4), (0, -1, 0, 1, 0, 0, 0, 0, 1))
    with pytest.raises(ConcordoseError, match="same direction"):
        average_onto_grid(np.ones((4, 4, 4)), source, rotated)
    with pytest.raises(ConcordoseError, match="geometry too"):
        VoxelDoseInput(np.ones((4, 4, 4)), (2.0, 2.0, 2.0), output_geometry=source)
    with pytest.raises(ConcordoseError, match="geometry has shape"):
        VoxelDoseInput(np.ones((4, 4, 5)), (2.0, 2.0, 2.0), geometry=source)


def test_vsv_point_source_on_a_shifted_grid_is_the_shifted_kernel() -> None:
    # TIA grid = kernel grid (2.21 mm); the "CT" grid has the same spacing, one voxel further
    # along x and half a voxel along y: its dose is the SPECT-grid dose moved by one voxel in x
    # and averaged over two neighbours in y.
    spect = _grid((10.0, -4.0, 3.0), (2.21, 2.21, 2.21), (15, 16, 17))
    ct = _grid((10.0 + 2.21, -4.0 + 1.105, 3.0), (2.21, 2.21, 2.21), (15, 16, 17))
    tia = np.zeros(spect.shape)
    tia[7, 8, 8] = 2.0
    method = VoxelSValue("2.21mm")
    on_spect = method.compute_map(VoxelDoseInput(tia, _zyx(spect))).dose_gy
    on_ct = method.compute_map(VoxelDoseInput(tia, _zyx(spect), geometry=spect, output_geometry=ct))
    expected = (on_spect[:, :-1, 1:] + on_spect[:, 1:, 1:]) / 2
    np.testing.assert_allclose(on_ct.dose_gy[:, :-1, :-1], expected, rtol=1e-9, atol=1e-12)
    assert on_ct.geometry == ct
    assert on_ct.spacing_mm == (2.21, 2.21, 2.21)


@pytest.fixture(scope="module")
def spect_and_ct() -> tuple[VolumeGeometry, VolumeGeometry, np.ndarray]:
    """A 4.8 mm SPECT grid with a large uniform region and a hot sphere, and a CT grid of
    0.98 × 0.98 × 3 mm voxels whose corner is offset from the SPECT's and which covers it with
    room to spare (as a CT's field of view does)."""
    spect = _grid((-60.0, -50.0, 20.0), (4.8, 4.8, 4.8), (24, 22, 26))
    ct = _grid((-90.3, -80.7, -5.6), (0.98, 0.98, 3.0), (58, 165, 186))
    z, y, x = _centres_mm(spect)
    centre = (20.0 + 4.8 * 11.5, -50.0 + 4.8 * 10.5, -60.0 + 4.8 * 12.5)
    uniform = (
        (np.abs(z - centre[0]) < 40.0)
        & (np.abs(y - centre[1]) < 38.0)
        & (np.abs(x - centre[2]) < 45.0)
    )
    hot = (z - centre[0]) ** 2 + (y - centre[1] - 10) ** 2 + (x - centre[2] + 12) ** 2 < 12.0**2
    tia = np.where(uniform, 0.5, 0.0) + np.where(hot, 4.0, 0.0)
    return spect, ct, tia


@pytest.mark.parametrize(
    "method", [VoxelSValue("4.42mm"), VoxelSValue("2.21mm"), VoxelLocalDeposition()]
)
def test_dose_on_the_ct_grid_agrees_with_the_spect_grid(
    spect_and_ct: tuple[VolumeGeometry, VolumeGeometry, np.ndarray], method: VoxelSValue
) -> None:
    spect, ct, tia = spect_and_ct
    on_spect = method.compute_map(VoxelDoseInput(tia, _zyx(spect))).dose_gy
    on_ct = method.compute_map(
        VoxelDoseInput(tia, _zyx(spect), geometry=spect, output_geometry=ct)
    ).dose_gy
    assert on_ct.shape == ct.shape
    # mean dose in a large VOI (a 57.6 × 57.6 × 67.2 mm box round the centre, holding the hot
    # sphere): equal within 0.1 % (the CT's VOI faces lie within a CT voxel of the box's;
    # measured ≤ 0.011 %)
    centre = (20.0 + 4.8 * 11.5, -50.0 + 4.8 * 10.5, -60.0 + 4.8 * 12.5)
    half = (28.8, 28.8, 33.6)  # on SPECT voxel faces: the SPECT VOI is exactly the box

    def in_box(grid: VolumeGeometry) -> np.ndarray:
        z, y, x = _centres_mm(grid)
        return (
            (np.abs(z - centre[0]) < half[0])
            & (np.abs(y - centre[1]) < half[1])
            & (np.abs(x - centre[2]) < half[2])
        )

    assert on_ct[in_box(ct)].mean() == pytest.approx(on_spect[in_box(spect)].mean(), rel=1e-3)
    # Σ dose · mass over the CT grid (it covers the dose's support) equals that on the SPECT
    # grid up to what the SPECT grid crops (VSV: the kernel tail outside the map)
    ct_energy = on_ct.sum() * ct.voxel_volume_ml
    spect_energy = on_spect.sum() * spect.voxel_volume_ml
    assert ct_energy >= spect_energy * (1 - 1e-12)
    assert ct_energy == pytest.approx(spect_energy, rel=1e-3)  # measured ≤ 0.035 %


def test_uniform_region_stays_uniform_on_the_ct_grid_and_energy_is_conserved(
    spect_and_ct: tuple[VolumeGeometry, VolumeGeometry, np.ndarray],
) -> None:
    spect, ct, _ = spect_and_ct
    tia = np.full(spect.shape, 0.5)
    kernel = vsv_kernel("4.42mm")
    # activity conserved on the way in: the 4.8 mm map rebinned onto 4.42 mm voxels
    assert rebin_extensive(tia, _zyx(spect), (4.42,) * 3).sum() == pytest.approx(
        tia.sum(), rel=1e-12
    )
    dose = VoxelSValue("4.42mm").compute_map(
        VoxelDoseInput(tia, _zyx(spect), geometry=spect, output_geometry=ct)
    )
    # interior: farther than the kernel's reach (5 voxels of 4.42 mm) plus a kernel voxel from
    # every face of the SPECT field of view: the same dose everywhere, LDM × 1.02
    z, y, x = _centres_mm(ct)
    margin = 6 * 4.42 + 4.8
    inside = (
        (z > 20.0 - 2.4 + margin)
        & (z < 20.0 - 2.4 + 24 * 4.8 - margin)
        & (y > -50.0 - 2.4 + margin)
        & (y < -50.0 - 2.4 + 22 * 4.8 - margin)
        & (x > -60.0 - 2.4 + margin)
        & (x < -60.0 - 2.4 + 26 * 4.8 - margin)
    )
    assert inside.sum() > 10_000
    interior = dose.dose_gy[inside]
    assert interior.std() / interior.mean() < 1e-9
    # Σ D·m on the CT grid = deposited energy per TIA: kernel + local term, all of it
    # (the CT grid covers the SPECT field of view plus the kernel's reach)
    grid = aligned_grid(spect, 4.42, margin_voxels=5)
    for axis in range(3):  # (x, y, z)
        ct_low = ct.origin_mm[axis] - ct.spacing_mm[axis] / 2
        grid_low = grid.origin_mm[axis] - grid.spacing_mm[axis] / 2
        ct_extent = ct.spacing_mm[axis] * ct.shape[2 - axis]
        grid_extent = grid.spacing_mm[axis] * grid.shape[2 - axis]
        assert ct_low < grid_low
        assert grid_low + grid_extent < ct_low + ct_extent
    per_tia = (
        kernel.gy_per_mbq_h.sum() * 4.42**3 / 1000 + local_conversion_auger_gy_per_mbq_h_per_g()
    )
    deposited = dose.dose_gy.sum() * ct.voxel_volume_ml
    assert deposited == pytest.approx(tia.sum() * per_tia, rel=1e-9)


def test_density_on_the_output_grid_divides_the_dose(
    spect_and_ct: tuple[VolumeGeometry, VolumeGeometry, np.ndarray],
) -> None:
    spect, ct, tia = spect_and_ct
    density = np.full(ct.shape, 1.25)
    plain = VoxelSValue("4.42mm").compute_map(
        VoxelDoseInput(tia, _zyx(spect), geometry=spect, output_geometry=ct)
    )
    corrected = VoxelSValue("4.42mm", density_correction=True).compute_map(
        VoxelDoseInput(tia, _zyx(spect), density, geometry=spect, output_geometry=ct)
    )
    np.testing.assert_allclose(corrected.dose_gy, plain.dose_gy / 1.25, rtol=1e-12)
    with pytest.raises(ConcordoseError, match="output grid"):
        VoxelDoseInput(tia, _zyx(spect), np.ones(spect.shape), geometry=spect, output_geometry=ct)
