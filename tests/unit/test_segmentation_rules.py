"""Per-site segmentation rules (``phantoms.segmentation_rules``) on analytic cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from concordose.phantoms.anatomy import (
    Anatomy,
    Ellipsoid,
    Voi,
    VoiType,
    default_anatomy,
    sample_label_map,
    sphere,
)
from concordose.phantoms.grid import VoxelGrid
from concordose.phantoms.imaging import FWHM_PER_SIGMA, gaussian_blur
from concordose.phantoms.segmentation_rules import (
    CtOrganOutline,
    FixedThreshold,
    ManualMargin,
    SegmentationRule,
    TrueOutline,
    nm_mask_on_ct,
    site_voi_labels,
    threshold_mask,
)
from concordose.phantoms.site_profiles import CONSORTIUM_SITES


def _ball_ml(radius_mm: float) -> float:
    return 4.0 / 3.0 * math.pi * radius_mm**3 / 1000.0


RADIUS_MM = 15.0


def _one_voi(voi_type: VoiType, grid: VoxelGrid) -> tuple[list[Voi], np.ndarray]:
    voi = Voi(
        "lesion_1" if voi_type is VoiType.LESION else "kidney_left",
        voi_type,
        sphere((0.3, -0.7, 0.4), 2.0 * RADIUS_MM),
        1,
    )
    anatomy = Anatomy(body=default_anatomy().body, vois=(voi,))
    return [voi], sample_label_map(anatomy, grid)


def _segment(rule: SegmentationRule, grid: VoxelGrid, voi_type: VoiType = VoiType.LESION) -> float:
    vois, labels = _one_voi(voi_type, grid)
    drawn = site_voi_labels(
        rule,
        vois=vois,
        ct_labels=labels,
        ct_grid=grid,
        nm_labels=labels,
        nm_counts=np.zeros(labels.shape, dtype=np.uint16),
        nm_grid=grid,
    )
    return float(np.count_nonzero(drawn == 1) * grid.voxel_volume_ml)


FINE_CT = VoxelGrid.centred(shape_zyx=(30, 40, 40), voxel_mm=2.0)
COARSE_CT = VoxelGrid(  # the ``test`` preset's CT: 4.42 mm pixels, 8.84 mm slices
    shape_zyx=(10, 24, 24), spacing_mm_xyz=(4.42, 4.42, 8.84), origin_mm_xyz=(-50.8, -50.8, -39.8)
)


def _sampled_ball_ml(grid: VoxelGrid, radius_mm: float) -> float:
    x_mm, y_mm, z_mm = grid.axis_coordinates_mm()
    distance = np.sqrt(
        (x_mm[None, None, :] - 0.3) ** 2
        + (y_mm[None, :, None] + 0.7) ** 2
        + (z_mm[:, None, None] - 0.4) ** 2
    )
    return float(np.count_nonzero(distance <= radius_mm) * grid.voxel_volume_ml)


def test_a_margin_site_differs_from_the_truth_by_the_shell() -> None:
    truth_ml = _segment(TrueOutline(), FINE_CT)
    for margin_mm in (3.0, -2.0):
        shell_ml = _ball_ml(RADIUS_MM + margin_mm) - _ball_ml(RADIUS_MM)
        drawn_ml = _segment(ManualMargin(margin_mm=margin_mm), FINE_CT)
        assert drawn_ml - truth_ml == pytest.approx(shell_ml, rel=0.03)


@pytest.mark.parametrize("grid", [FINE_CT, COARSE_CT], ids=["2mm", "test-preset-CT"])
def test_a_margin_is_applied_to_the_true_shape_not_to_its_voxels(grid: VoxelGrid) -> None:
    # A sphere grown by m is the sphere of radius R + m: the site's VOI is its voxel centres,
    # even where the margin is less than a voxel (4.42 × 8.84 mm CT voxels, 3 mm margin).
    for margin_mm in (3.0, -2.0):
        drawn_ml = _segment(ManualMargin(margin_mm=margin_mm), grid)
        expected_ml = _sampled_ball_ml(grid, RADIUS_MM + margin_mm)
        assert abs(drawn_ml - expected_ml) <= max(0.01 * expected_ml, 3.5 * grid.voxel_volume_ml)
    assert _segment(ManualMargin(margin_mm=3.0), grid) > _segment(TrueOutline(), grid)


def test_ct_organ_outline_smooths_and_erodes_organs_only() -> None:
    rule = CtOrganOutline(smoothing_sigma_mm=3.0, erosion_mm=2.0)
    organ_ml = _segment(rule, FINE_CT, VoiType.ORGAN)
    # Smoothing moves a sphere's 0.5 level inward by ≈ σ²/R (0.6 mm here), erosion by 2 mm.
    assert _ball_ml(RADIUS_MM - 3.0) < organ_ml < _ball_ml(RADIUS_MM - 2.0)
    assert _segment(rule, FINE_CT, VoiType.LESION) == _segment(TrueOutline(), FINE_CT)


def _blurred_sphere_profile(radius_mm: float, sigma_mm: float, r: float) -> float:
    root2 = math.sqrt(2.0) * sigma_mm
    return 0.5 * (
        math.erf((radius_mm - r) / root2) + math.erf((radius_mm + r) / root2)
    ) - sigma_mm / (r * math.sqrt(2.0 * math.pi)) * (
        math.exp(-((radius_mm - r) ** 2) / (2 * sigma_mm**2))
        - math.exp(-((radius_mm + r) ** 2) / (2 * sigma_mm**2))
    )


def test_fixed_threshold_gives_the_analytic_volume_of_a_blurred_sphere() -> None:
    radius_mm, fwhm_mm = 20.0, 10.0
    sigma_mm = fwhm_mm / FWHM_PER_SIGMA
    grid = VoxelGrid.centred(shape_zyx=(71, 71, 71), voxel_mm=1.0)
    anatomy = Anatomy(
        body=default_anatomy().body,
        vois=(Voi("lesion_1", VoiType.LESION, sphere((0.0, 0.0, 0.0), 2 * radius_mm), 1),),
    )
    labels = sample_label_map(anatomy, grid)
    image = gaussian_blur(
        (labels == 1).astype(np.float64), fwhm_mm=fwhm_mm, voxel_mm_zyx=(1.0,) * 3
    )
    peak = _blurred_sphere_profile(radius_mm, sigma_mm, 1e-6)
    r40 = brentq(
        lambda r: _blurred_sphere_profile(radius_mm, sigma_mm, r) - 0.4 * peak, 1.0, 2 * radius_mm
    )
    mask = threshold_mask(image, np.ones(labels.shape, dtype=bool), 0.40)
    assert np.count_nonzero(mask) * grid.voxel_volume_ml == pytest.approx(_ball_ml(r40), rel=0.02)
    # A hotter neighbour inside the search region but not connected is not taken.
    image[:, :, :3] = 10.0 * image.max()
    region = np.ones(labels.shape, dtype=bool)
    region[:, :, :3] = False
    assert np.array_equal(threshold_mask(image, region, 0.40), mask)
    # Or inside it: the maximum is the lesion's (the operator clicks the lesion).
    everywhere = np.ones(labels.shape, dtype=bool)
    assert np.array_equal(threshold_mask(image, everywhere, 0.40, peak_region=labels == 1), mask)


def test_a_spect_mask_lands_on_the_twice_finer_ct_voxel_for_voxel() -> None:
    nm_grid = VoxelGrid.centred(shape_zyx=(20, 20, 20), voxel_mm=4.42)
    ct_grid = nm_grid.refined_in_plane(2)
    nm_mask = np.zeros(nm_grid.shape_zyx, dtype=bool)
    nm_mask[8:12, 5:9, 7:10] = True
    ct_mask = nm_mask_on_ct(nm_mask, nm_grid, ct_grid)
    assert np.count_nonzero(ct_mask) * ct_grid.voxel_volume_ml == pytest.approx(
        np.count_nonzero(nm_mask) * nm_grid.voxel_volume_ml, rel=1e-12
    )


def test_threshold_site_segments_lesions_on_its_spect_and_keeps_organs() -> None:
    nm_grid = VoxelGrid.centred(shape_zyx=(24, 24, 24), voxel_mm=4.0)
    ct_grid = nm_grid.refined_in_plane(2)
    organ = Voi("kidney_left", VoiType.ORGAN, Ellipsoid((-25.0, 0.0, 0.0), (15.0, 12.0, 20.0)), 1)
    lesion = Voi("lesion_1", VoiType.LESION, sphere((20.0, 0.0, 0.0), 24.0), 2)
    anatomy = Anatomy(body=default_anatomy().body, vois=(organ, lesion))
    nm_labels = sample_label_map(anatomy, nm_grid)
    ct_labels = sample_label_map(anatomy, ct_grid)
    counts = gaussian_blur(
        np.where(nm_labels == 2, 1000.0, 0.0), fwhm_mm=10.0, voxel_mm_zyx=(4.0,) * 3
    )
    drawn = site_voi_labels(
        FixedThreshold(),
        vois=anatomy.vois,
        ct_labels=ct_labels,
        ct_grid=ct_grid,
        nm_labels=nm_labels,
        nm_counts=np.rint(counts).astype(np.uint16),
        nm_grid=nm_grid,
    )
    assert np.array_equal(drawn == 1, ct_labels == 1)
    threshold = threshold_mask(counts, np.ones(counts.shape, dtype=bool), 0.40)
    assert np.count_nonzero(drawn == 2) * ct_grid.voxel_volume_ml == pytest.approx(
        np.count_nonzero(threshold) * nm_grid.voxel_volume_ml, rel=1e-12
    )
    assert not np.array_equal(drawn == 2, ct_labels == 2)


def test_sites_segment_by_different_rules() -> None:
    rules = {site.site_id: site.segmentation for site in CONSORTIUM_SITES}
    assert rules == {
        "milan": ManualMargin(margin_mm=3.0),
        "brussels": FixedThreshold(fraction_of_max=0.40, search_margin_mm=10.0),
        "montpellier": CtOrganOutline(smoothing_sigma_mm=3.0, erosion_mm=2.0),
        "grandrapids": ManualMargin(margin_mm=-2.0),
    }
