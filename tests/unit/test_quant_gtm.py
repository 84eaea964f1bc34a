"""Geometric transfer matrix PVC (``quant.gtm``) on analytic images with a known Gaussian PSF."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from concordose.quant.gtm import (
    FWHM_PER_SIGMA,
    NO_VOXELS,
    body_outline,
    gtm_correct,
    gtm_fwhm_sensitivity,
    voi_crops,
)
from concordose.quant.pvc import STATUS_OK

SPACING_MM = (4.0, 4.0, 4.0)
VOXEL_ML = 0.064


def _blur(image: np.ndarray, fwhm_mm: float) -> np.ndarray:
    sigma = fwhm_mm / FWHM_PER_SIGMA / np.asarray(SPACING_MM)
    blurred: np.ndarray = ndimage.gaussian_filter(image, sigma=sigma, mode="nearest")
    return blurred


def _sphere_occupancy(
    shape: tuple[int, int, int], radius_mm: float, supersample: int = 4
) -> np.ndarray:
    """Fraction of each 4 mm voxel inside a sphere centred on the grid's centre."""
    centre = (np.asarray(shape) - 1) / 2.0
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    occupancy = np.zeros(shape)
    k, j, i = np.indices(shape, dtype=np.float64)
    for dz in offsets:
        for dy in offsets:
            for dx in offsets:
                d2 = (
                    ((k + dz - centre[0]) * SPACING_MM[0]) ** 2
                    + ((j + dy - centre[1]) * SPACING_MM[1]) ** 2
                    + ((i + dx - centre[2]) * SPACING_MM[2]) ** 2
                )
                occupancy += d2 <= radius_mm**2
    return occupancy / supersample**3


def test_two_adjacent_regions_and_background_are_recovered_within_1_percent() -> None:
    shape = (30, 30, 40)
    truth = np.zeros(shape)
    body = np.zeros(shape, dtype=bool)
    body[3:27, 3:27, 3:37] = True
    left = np.zeros(shape, dtype=bool)
    left[10:20, 10:20, 8:20] = True
    right = np.zeros(shape, dtype=bool)
    right[10:20, 10:20, 20:26] = True  # touches ``left``: spill both ways
    truth[body] = 0.5
    truth[left] = 4.0
    truth[right] = 1.5
    image = _blur(truth, 12.0)
    corrected = gtm_correct(
        image,
        voi_crops(np.stack([left, right])),
        body=body,
        spacing_mm_zyx=SPACING_MM,
        fwhm_mm=12.0,
    )
    assert corrected.status == (STATUS_OK, STATUS_OK)
    measured = corrected.measured_concentration_mbq_per_ml
    assert abs(measured[1] / 1.5 - 1.0) > 0.05  # the blur biases the plain mean
    np.testing.assert_allclose(corrected.concentration_mbq_per_ml, [4.0, 1.5], rtol=0.01)
    assert corrected.background_mbq_per_ml == pytest.approx(0.5, rel=0.01)
    np.testing.assert_allclose(
        corrected.activity_mbq, [4.0 * left.sum() * VOXEL_ML, 1.5 * right.sum() * VOXEL_ML], 0.01
    )


def test_lesion_spill_in_to_the_liver_is_removed() -> None:
    shape = (40, 48, 48)
    body = np.zeros(shape, dtype=bool)
    body[2:38, 2:46, 2:46] = True
    liver = np.zeros(shape, dtype=bool)
    liver[8:32, 10:38, 8:40] = True  # ≈ 1.4 L
    lesion = _sphere_occupancy(shape, 14.0) > 0.5  # ≈ 11 mL at the centre, inside the liver
    truth = np.where(body, 0.05, 0.0)
    truth[liver] = 0.3
    truth[lesion] = 6.0
    image = _blur(truth, 14.0)
    without_lesion = _blur(np.where(lesion, 0.3, truth), 14.0)
    # The liver's VOI as segmented includes the lesion's voxels: the smaller VOI wins them.
    vois = voi_crops(np.stack([liver, lesion]))
    liver_only = liver & ~lesion
    corrected = gtm_correct(image, vois, body=body, spacing_mm_zyx=SPACING_MM, fwhm_mm=14.0)
    true_liver_mbq = 0.3 * liver_only.sum() * VOXEL_ML + 6.0 * lesion.sum() * VOXEL_ML
    spill_in = image[liver_only].mean() / without_lesion[liver_only].mean() - 1.0
    assert spill_in > 0.05  # the lesion raises the plain liver mean by > 5 %
    assert corrected.activity_mbq[0] == pytest.approx(true_liver_mbq, rel=0.005)
    assert corrected.concentration_mbq_per_ml[1] == pytest.approx(6.0, rel=0.01)
    regions = gtm_correct(
        image,
        voi_crops(np.stack([liver_only, lesion])),
        body=body,
        spacing_mm_zyx=SPACING_MM,
        fwhm_mm=14.0,
    )
    assert regions.concentration_mbq_per_ml[0] == pytest.approx(0.3, rel=0.005)


def _sphere_series(*, continuous: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spheres 0.3–300 mL (4 mm voxels) at 4 MBq/mL in a 0.2 MBq/mL body, FWHM 10 mm, each VOI
    the voxels whose centre lies in the sphere. ``continuous``: the object is the true sphere
    (fractional voxels); otherwise exactly the VOI's voxels. Returns volumes (mL) and the
    GTM-corrected and measured activities over the true ones."""
    volumes_ml = np.geomspace(0.3, 300.0, 28)
    shape = (48, 48, 48)
    body = np.ones(shape, dtype=bool)
    gtm_ratio, measured_ratio = [], []
    for volume in volumes_ml:
        radius_mm = (3.0 * volume * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
        voi = _sphere_occupancy(shape, radius_mm, supersample=1) > 0.5
        occupancy = _sphere_occupancy(shape, radius_mm) if continuous else voi.astype(float)
        true_mbq = 4.0 * occupancy.sum() * VOXEL_ML
        image = _blur(0.2 + (4.0 - 0.2) * occupancy, 10.0)
        corrected = gtm_correct(
            image, voi_crops(voi[None]), body=body, spacing_mm_zyx=SPACING_MM, fwhm_mm=10.0
        )
        gtm_ratio.append(corrected.activity_mbq[0] / true_mbq)
        measured_ratio.append(image[voi].sum() * VOXEL_ML / true_mbq)
    return volumes_ml, np.asarray(gtm_ratio), np.asarray(measured_ratio)


def test_every_volume_from_0_3_to_300_ml_is_corrected_without_a_cliff() -> None:
    """Objects that are exactly their VOIs: the GTM is exact at every size, inside and outside
    the NEMA spheres' 0.52-26.5 mL where the RC curves stop (NaN)."""
    _, gtm_ratio, measured_ratio = _sphere_series(continuous=False)
    np.testing.assert_allclose(gtm_ratio, 1.0, atol=0.005)
    assert measured_ratio.min() < 0.3  # the smallest lose most of their activity uncorrected


def test_true_spheres_are_corrected_continuously_up_to_voxelisation() -> None:
    """True (continuous) spheres: the corrected activity is closer to the truth than the
    measured one at every volume and within 6 % from 8 mL up. Below, the VOI's voxelisation
    dominates: at 4 mm voxels a 0.3-1.5 mL sphere's voxel-centre VOI holds 0.5-1.7× its
    volume, which the GTM takes as the object (measured: corrected/true 0.72-1.05)."""
    volumes_ml, gtm_ratio, measured_ratio = _sphere_series(continuous=True)
    assert np.all(np.isfinite(gtm_ratio))
    assert np.all(np.abs(gtm_ratio - 1.0) < np.abs(measured_ratio - 1.0))
    assert np.all(np.abs(gtm_ratio[volumes_ml >= 8.0] - 1.0) < 0.06)
    assert np.all(np.abs(gtm_ratio - 1.0) < 0.3)


def test_large_vois_tend_to_no_correction() -> None:
    """corrected/measured → 1 as a region grows: ~1/radius (surface over volume)."""
    factors = []
    for edge in (4, 8, 16, 32):  # cubes of 4 mm voxels: 4 mL to 2.1 L
        shape = (edge + 16,) * 3
        region = np.zeros(shape, dtype=bool)
        region[8 : 8 + edge, 8 : 8 + edge, 8 : 8 + edge] = True
        image = _blur(np.where(region, 2.0, 0.1), 10.0)
        corrected = gtm_correct(
            image,
            voi_crops(region[None]),
            body=np.ones(shape, dtype=bool),
            spacing_mm_zyx=SPACING_MM,
            fwhm_mm=10.0,
        )
        factors.append(corrected.activity_mbq[0] / (image[region].sum() * VOXEL_ML))
    deviation = np.abs(np.asarray(factors) - 1.0)
    assert np.all(np.diff(deviation) < 0)
    assert deviation[-1] < 0.1
    assert deviation[-1] < 0.25 * deviation[0]


def test_empty_voi_and_ill_conditioned_system_say_why() -> None:
    shape = (20, 20, 20)
    image = np.ones(shape)
    a = np.zeros(shape, dtype=bool)
    a[10, 10, 10] = True
    b = np.zeros(shape, dtype=bool)
    b[10, 10, 11] = True
    empty = np.zeros(shape, dtype=bool)
    corrected = gtm_correct(
        image,
        voi_crops(np.stack([a, b, empty])),
        body=np.ones(shape, dtype=bool),
        spacing_mm_zyx=SPACING_MM,
        fwhm_mm=40.0,
    )
    assert corrected.condition_number > 1e3
    assert "ill-conditioned" in corrected.status[0]
    assert corrected.status[2] == NO_VOXELS
    assert np.all(np.isnan(corrected.activity_mbq))


def test_fwhm_sd_propagates_to_the_activity_sd() -> None:
    shape = (30, 30, 30)
    occupancy = _sphere_occupancy(shape, 10.0)
    image = _blur(0.1 + 3.0 * occupancy, 10.0)
    vois = voi_crops((occupancy > 0.5)[None])
    body = np.ones(shape, dtype=bool)
    kwargs = {"body": body, "spacing_mm_zyx": SPACING_MM, "fwhm_mm": 10.0}
    central, sd = gtm_fwhm_sensitivity(image, vois, fwhm_sd_mm=0.5, **kwargs)  # type: ignore[arg-type]
    wider = gtm_correct(image, vois, body=body, spacing_mm_zyx=SPACING_MM, fwhm_mm=10.5)
    assert sd[0] > 0
    # First order: the SD is the activity's change over one SD of the FWHM.
    assert sd[0] == pytest.approx(abs(wider.activity_mbq[0] - central.activity_mbq[0]), rel=0.15)
    _, none = gtm_fwhm_sensitivity(image, vois, fwhm_sd_mm=0.0, **kwargs)  # type: ignore[arg-type]
    assert none[0] == 0.0


def test_the_other_phantom_fit_adds_half_the_difference_in_quadrature() -> None:
    shape = (30, 30, 30)
    occupancy = _sphere_occupancy(shape, 6.0)  # a 0.9 mL sphere: the two FWHMs disagree on it
    image = _blur(0.1 + 3.0 * occupancy, 10.0)
    vois = voi_crops((occupancy > 0.5)[None])
    body = np.ones(shape, dtype=bool)
    kwargs = {"body": body, "spacing_mm_zyx": SPACING_MM, "fwhm_mm": 10.0, "fwhm_sd_mm": 0.5}
    central, psf_only = gtm_fwhm_sensitivity(image, vois, **kwargs)  # type: ignore[arg-type]
    _, both = gtm_fwhm_sensitivity(image, vois, alternative_fwhm_mm=14.0, **kwargs)  # type: ignore[arg-type]
    other = gtm_correct(image, vois, body=body, spacing_mm_zyx=SPACING_MM, fwhm_mm=14.0)
    half_difference = 0.5 * abs(other.activity_mbq[0] - central.activity_mbq[0])
    assert half_difference > 0.1 * central.activity_mbq[0]
    assert both[0] == pytest.approx(np.hypot(psf_only[0], half_difference), rel=1e-9)
    _, same = gtm_fwhm_sensitivity(image, vois, alternative_fwhm_mm=10.0, **kwargs)  # type: ignore[arg-type]
    assert same[0] == psf_only[0]


def test_body_outline_follows_a_warm_body_not_the_hot_spots() -> None:
    shape = (30, 40, 40)
    truth = np.zeros(shape)
    truth[5:25, 8:32, 6:34] = 0.05
    truth[12:16, 15:19, 15:19] = 50.0  # a hot lesion 1000× the background
    image = _blur(truth, 10.0)
    outline = body_outline(image)
    true_body = truth > 0
    assert abs(outline.sum() / true_body.sum() - 1.0) < 0.1


def test_a_negative_solution_is_left_as_measured_with_its_reason() -> None:
    # A cold VOI beside a hot one, imaged with less blur than the GTM assumes: the model
    # over-subtracts the hot neighbour's spill-in and the cold VOI's solution goes negative.
    shape = (30, 30, 40)
    truth = np.zeros(shape)
    body = np.zeros(shape, dtype=bool)
    body[3:27, 3:27, 3:37] = True
    hot = np.zeros(shape, dtype=bool)
    hot[10:20, 10:20, 8:20] = True
    cold = np.zeros(shape, dtype=bool)
    cold[12:18, 12:18, 20:23] = True
    truth[hot] = 10.0
    image = _blur(truth, 6.0)
    corrected = gtm_correct(
        image,
        voi_crops(np.stack([hot, cold])),
        body=body,
        spacing_mm_zyx=SPACING_MM,
        fwhm_mm=16.0,
    )
    assert corrected.status[0] == STATUS_OK
    assert np.isfinite(corrected.activity_mbq[0])
    assert "negative activity" in corrected.status[1]
    assert corrected.status[1].endswith("left as measured")
    assert np.isnan(corrected.activity_mbq[1])
    assert np.isnan(corrected.concentration_mbq_per_ml[1])
