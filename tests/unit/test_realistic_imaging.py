"""The ``realistic`` imaging mode validated against analytic cases (reconstruction.projector, osem,
acquisition, attenuation, camera) and its plumbing through the generator.

Analytic cases: (a) a uniform water cylinder's projections against attenuated line integrals;
(b) a point source's projected FWHM against the CDR formula at several distances; (c) OSEM with
attenuation correction and resolution modelling recovers a uniform cylinder's concentration;
(d) OSEM sphere recovery grows with volume and stays ≤ 1.05; (e) same seed → same bytes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from concordose.calibration.calibrate import calibrate_site
from concordose.phantoms.acquisition import (
    SCATTER_RESIDUAL_FRACTION,
    SCATTER_TO_PRIMARY,
    RealisticSettings,
    realistic_image,
)
from concordose.phantoms.anatomy import (
    BODY_VALUE,
    CORTICAL_BONE_HU,
    LUNG_HU,
    OUTSIDE_VALUE,
    RIB_HU,
    EllipticCylinder,
    default_anatomy,
    sample_label_map,
)
from concordose.phantoms.attenuation import ct_hu_on_grid, mu_map_from_labels
from concordose.phantoms.camera_model import camera_model, site_reconstruction
from concordose.phantoms.consortium import Realism, generate_consortium
from concordose.phantoms.imaging import ImagingMode, expected_counts, image_counts, stored_counts
from concordose.phantoms.presets import nm_grid_for
from concordose.phantoms.site_profiles import DEFAULT_SITE, GRAND_RAPIDS, MONTPELLIER
from concordose.reconstruction.attenuation import (
    HU_CORTICAL_BONE,
    MU_CORTICAL_BONE_PER_MM,
    MU_WATER_PER_MM,
    mu_per_mm_from_hu,
)
from concordose.reconstruction.camera import DEAD_TIME_PARALYSABLE_S, GE_MEGP, SIEMENS_ME
from concordose.reconstruction.osem import osem
from concordose.reconstruction.projector import FWHM_PER_SIGMA, ProjectionGeometry, SpectProjector


def _cylinder(
    shape_zyx: tuple[int, int, int], voxel_mm: float, radius_mm: float
) -> NDArray[np.float64]:
    nz, ny, nx = shape_zyx
    y, x = np.mgrid[0:ny, 0:nx]
    r = np.hypot((y - (ny - 1) / 2) * voxel_mm, (x - (nx - 1) / 2) * voxel_mm)
    return np.repeat((r <= radius_mm)[None].astype(np.float64), nz, axis=0)


def test_hu_to_mu_is_bilinear_through_air_water_and_bone() -> None:
    mu = mu_per_mm_from_hu(np.array([-1000.0, -500.0, 0.0, 500.0, 1000.0, -2000.0]))
    assert mu[0] == 0.0
    assert mu[5] == 0.0
    assert mu[1] == pytest.approx(MU_WATER_PER_MM / 2)
    assert mu[2] == pytest.approx(MU_WATER_PER_MM)
    assert mu[3] == pytest.approx((MU_WATER_PER_MM + MU_CORTICAL_BONE_PER_MM) / 2)
    assert mu[4] == pytest.approx(MU_CORTICAL_BONE_PER_MM)
    # NIST XCOM water 0.1370 cm²/g at 200 keV, a little less at 208 keV.
    assert 0.0134 < MU_WATER_PER_MM < 0.0137
    with pytest.raises(ValueError, match="no HU"):
        mu_map_from_labels(np.array([[[0, 1, 2]]], dtype=np.uint8), {0: -1000.0, 1: 0.0})
    # the generator paints cortical bone at the model's bone point: its CT and μ map agree
    assert CORTICAL_BONE_HU == HU_CORTICAL_BONE


def test_projector_and_back_projector_are_adjoint() -> None:
    rng = np.random.default_rng(3)
    geometry = ProjectionGeometry((6, 12, 16), 4.0, 5, 150.0)
    mu = rng.uniform(0.0, 0.02, geometry.shape_zyx)
    projector = SpectProjector(geometry, mu_per_mm=mu, camera=camera_model(DEFAULT_SITE))
    image = projector.pad(rng.uniform(size=geometry.shape_zyx))
    projection = rng.uniform(size=geometry.projection_shape[1:])
    for cdr in (True, False):
        forward = projector.forward_view(image, 2, cdr=cdr)
        back = projector.back_view(projection, 2, cdr=cdr)
        assert float((forward * projection).sum()) == pytest.approx(
            float((image * back).sum()),
            rel=1e-5,  # the CDR's FFTs are float32
        )


def test_a_water_cylinder_projects_to_its_attenuated_line_integrals() -> None:
    """(a) Each bin of an unblurred projection of a uniform water cylinder (radius R) is
    ∫ exp(−μ s) ds over the chord 2h = (1 − exp(−2μh))/μ, at every view."""
    voxel_mm, radius_mm = 4.0, 100.0
    geometry = ProjectionGeometry((8, 64, 64), voxel_mm, 12, 250.0)
    cylinder = _cylinder(geometry.shape_zyx, voxel_mm, radius_mm)
    projector = SpectProjector(geometry, mu_per_mm=cylinder * MU_WATER_PER_MM, camera=None)
    projections = projector.forward(cylinder, cdr=False)
    x_mm = (np.arange(64) - 31.5) * voxel_mm
    half_chord = np.sqrt(np.clip(radius_mm**2 - x_mm**2, 0.0, None))
    analytic = (1.0 - np.exp(-2.0 * MU_WATER_PER_MM * half_chord)) / MU_WATER_PER_MM / voxel_mm
    inner = np.abs(x_mm) < 0.8 * radius_mm  # chords of at least 12 voxels
    ratio = projections[:, 4, inner] / analytic[inner]
    assert np.abs(ratio - 1.0).max() < 0.02
    # Without attenuation the projection keeps every count.
    plain = SpectProjector(geometry, mu_per_mm=None, camera=None).forward(cylinder, cdr=False)
    assert plain.sum(axis=(1, 2)) == pytest.approx(
        np.full(12, projector.pad(cylinder).sum()), rel=1e-3
    )


@pytest.mark.parametrize("row_offset", [-20, 0, 20])
def test_a_point_source_projects_with_the_cdr_fwhm_of_its_distance(row_offset: int) -> None:
    """(b) FWHM(d) = sqrt(R_int² + (D (L_eff + d)/L_eff)²) for a point at distance d."""
    voxel_mm, ror_mm = 2.0, 200.0
    geometry = ProjectionGeometry((40, 64, 64), voxel_mm, 4, ror_mm)
    camera = camera_model(DEFAULT_SITE)
    projector = SpectProjector(geometry, mu_per_mm=None, camera=camera)
    point = np.zeros(geometry.shape_zyx)
    point[20, 31 + row_offset, 31] = 1.0
    projection = projector.forward_view(projector.pad(point), 0)
    assert projection.sum() == pytest.approx(1.0, abs=1e-3)
    z_mm = np.arange(40) * voxel_mm
    profile = projection.sum(axis=1)
    mean = (profile * z_mm).sum() / profile.sum()
    sigma_mm = math.sqrt((profile * (z_mm - mean) ** 2).sum() / profile.sum())
    distance_mm = ror_mm - (31 + row_offset - 31.5) * voxel_mm
    expected = math.hypot(
        camera.intrinsic_fwhm_mm,
        SIEMENS_ME.hole_diameter_mm
        * (SIEMENS_ME.effective_length_mm + distance_mm)
        / SIEMENS_ME.effective_length_mm,
    )
    assert camera.system_fwhm_mm(distance_mm) == pytest.approx(expected)
    assert sigma_mm * FWHM_PER_SIGMA == pytest.approx(expected, rel=0.02)


def test_collimators_follow_their_vendor_geometry() -> None:
    assert camera_model(DEFAULT_SITE).collimator is SIEMENS_ME  # Siemens, labelled MEGP
    assert camera_model(MONTPELLIER).collimator is SIEMENS_ME
    assert camera_model(GRAND_RAPIDS).collimator is GE_MEGP
    # The longer GE holes resolve better at the same distance.
    assert GE_MEGP.geometric_fwhm_mm(150.0) < SIEMENS_ME.geometric_fwhm_mm(150.0)


def test_osem_with_attenuation_correction_and_resolution_modelling_recovers_a_cylinder() -> None:
    """(c) Noise-free data of a uniform water cylinder through attenuation and CDR; OSEM with
    AC and RM recovers its concentration in the centre within 3 %."""
    voxel_mm = 8.0
    geometry = ProjectionGeometry((12, 40, 40), voxel_mm, 30, 220.0)
    cylinder = _cylinder(geometry.shape_zyx, voxel_mm, 110.0)
    projector = SpectProjector(
        geometry, mu_per_mm=cylinder * MU_WATER_PER_MM, camera=camera_model(GRAND_RAPIDS)
    )
    concentration = 50.0
    data = projector.forward(cylinder * concentration)
    image = osem(data, projector, iterations=8, subsets=6, resolution_modelling=True)
    centre = image[3:9, 14:26, 14:26]
    assert float(centre.mean()) == pytest.approx(concentration, rel=0.03)
    assert float(image.sum()) == pytest.approx(concentration * cylinder.sum(), rel=0.03)


def test_osem_sphere_recovery_grows_with_volume_and_stays_at_most_one() -> None:
    """(d) Hot spheres in a cold water cylinder, noise-free, AC + RM: the mean over each sphere's
    voxels rises with the sphere's volume and stays ≤ 1.05 (Gibbs overshoot allowed)."""
    voxel_mm = 4.0
    geometry = ProjectionGeometry((16, 64, 64), voxel_mm, 24, 180.0)
    body = _cylinder(geometry.shape_zyx, voxel_mm, 120.0)
    z, y, x = np.mgrid[0:16, 0:64, 0:64]
    z_mm, y_mm, x_mm = (z - 7.5) * voxel_mm, (y - 31.5) * voxel_mm, (x - 31.5) * voxel_mm
    activity = np.zeros(geometry.shape_zyx)
    masks = []
    for diameter_mm, (cy, cx) in zip(
        (12.0, 20.0, 28.0, 40.0),
        ((-60.0, -60.0), (-60.0, 60.0), (60.0, -60.0), (60.0, 60.0)),
        strict=True,
    ):
        mask = (z_mm**2 + (y_mm - cy) ** 2 + (x_mm - cx) ** 2) <= (diameter_mm / 2) ** 2
        activity[mask] = 100.0
        masks.append(mask)
    projector = SpectProjector(
        geometry, mu_per_mm=body * MU_WATER_PER_MM, camera=camera_model(GRAND_RAPIDS)
    )
    image = osem(
        projector.forward(activity), projector, iterations=10, subsets=4, resolution_modelling=True
    )
    recovery = [float(image[mask].mean()) / 100.0 for mask in masks]
    assert all(a < b for a, b in itertools.pairwise(recovery)), recovery
    assert max(recovery) <= 1.05
    # Measured: 0.74, 0.85, 0.88, 0.91 (12, 20, 28, 40 mm; 40 updates).
    assert recovery[0] < 0.8
    assert recovery[-1] > 0.85


def _water_cylinder_activity() -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    voxel_mm = 8.84
    cylinder = _cylinder((16, 32, 32), voxel_mm, 108.0)
    return cylinder * (1000.0 / cylinder.sum()), cylinder * MU_WATER_PER_MM, voxel_mm


def test_realistic_image_is_quantitative_up_to_residual_scatter_and_dead_time() -> None:
    """Noise-free acquisition of 1 GBq in a water cylinder at Grand Rapids (no RR, 6 mm
    post-filter): in the centre the image is CF × T × activity × (1 + residual scatter) × live
    fraction within 3 %; the dead-time loss is the paralysable exp(−nτ) of the views' rates."""
    activity, mu, voxel_mm = _water_cylinder_activity()
    site = GRAND_RAPIDS
    result = realistic_image(
        activity,
        mu,
        site=site,
        voxel_mm=voxel_mm,
        rng=np.random.default_rng(0),
        noise=False,
        settings=RealisticSettings(max_views=30),
    )
    assert result.n_views == 30
    per_mbq = site.calibration_factor_cps_per_mbq * site.acquisition_duration_s
    centre = result.counts[5:11, 12:20, 12:20] / per_mbq / activity[5:11, 12:20, 12:20]
    residual = 1.0 + SCATTER_TO_PRIMARY * SCATTER_RESIDUAL_FRACTION
    assert float(centre.mean()) == pytest.approx(residual * result.live_fraction, rel=0.03)
    rate_cps = result.total_projection_counts / site.acquisition_duration_s
    assert result.live_fraction == pytest.approx(
        math.exp(-rate_cps / result.live_fraction * DEAD_TIME_PARALYSABLE_S), rel=1e-3
    )
    # Ten times the activity: ten times the rate, more dead-time loss.
    hot = realistic_image(
        activity * 10.0,
        mu,
        site=site,
        voxel_mm=voxel_mm,
        rng=np.random.default_rng(0),
        noise=False,
        settings=RealisticSettings(max_views=30),
    )
    assert hot.live_fraction == pytest.approx(result.live_fraction**10, rel=1e-6)


def test_same_seed_same_bytes_other_seed_other_noise() -> None:
    """(e) Determinism of the realistic mode."""
    activity, mu, voxel_mm = _water_cylinder_activity()

    def run(seed: int) -> bytes:
        return realistic_image(
            activity,
            mu,
            site=DEFAULT_SITE,
            voxel_mm=voxel_mm,
            rng=np.random.default_rng(seed),
            noise=True,
            settings=RealisticSettings(max_views=12),
        ).counts.tobytes()

    assert run(5) == run(5)
    assert run(5) != run(6)
    corner = np.zeros_like(activity)
    corner[:, 0, 0] = 1.0  # 193 mm from the axis, beyond the 155 mm circle of a 32-voxel plane
    with pytest.raises(ValueError, match="from the rotation axis"):
        realistic_image(
            activity + corner,
            mu,
            site=DEFAULT_SITE,
            voxel_mm=voxel_mm,
            rng=np.random.default_rng(0),
            noise=False,
        )
    with pytest.raises(ValueError, match="max_views"):
        realistic_image(
            activity,
            mu,
            site=DEFAULT_SITE,
            voxel_mm=voxel_mm,
            rng=np.random.default_rng(0),
            noise=False,
            settings=RealisticSettings(max_views=0),
        )


def test_blur_mode_draws_exactly_as_before() -> None:
    activity, _, voxel_mm = _water_cylinder_activity()
    labels = (activity > 0).astype(np.uint8)
    formed = image_counts(
        activity,
        mode=ImagingMode.BLUR,
        site=DEFAULT_SITE,
        voxel_mm_zyx=(voxel_mm,) * 3,
        blur_fwhm_mm=10.0,
        hu_on_grid=lambda: np.where(labels > 0, 0.0, -1000.0),
        rng=np.random.default_rng(9),
        noise=True,
        where="test",
    )
    expected = expected_counts(
        activity,
        calibration_factor_cps_per_mbq=DEFAULT_SITE.calibration_factor_cps_per_mbq,
        acquisition_duration_s=DEFAULT_SITE.acquisition_duration_s,
        fwhm_mm=10.0,
        voxel_mm_zyx=(voxel_mm,) * 3,
    )
    before = stored_counts(expected, np.random.default_rng(9), noise=True, where="test")
    assert formed.counts.tobytes() == before.tobytes()
    assert formed.dead_time_live_fraction is None


def test_realistic_consortium_records_its_mode_and_calibrates_consistently(
    tmp_path: Path,
) -> None:
    """Patients and phantom scans of a site go through the same realistic image formation, and
    the truths say so."""
    generated = generate_consortium(
        tmp_path / "c",
        preset="test",
        sites=(GRAND_RAPIDS,),
        realism=Realism(imaging=ImagingMode.REALISTIC, realistic_max_views=12),
    )
    index = json.loads(generated.index_path.read_text(encoding="utf-8"))
    assert index["realism"]["imaging"] == "realistic"
    assert index["realism"]["realistic_max_views"] == 12
    (site,) = generated.sites
    truth = json.loads(site.ground_truth_paths[0].read_text(encoding="utf-8"))
    assert truth["realism"]["imaging"] == "realistic"
    assert truth["site"]["effective_fwhm_mm"] is None
    live = truth["cycles"][0]["dead_time_live_fraction"]
    assert all(0.9 < f < 1.0 for f in live)
    assert live == sorted(live)  # activity falls: later time points lose less
    for scan in site.phantom_scans:
        phantom_truth = json.loads(scan.truth_path.read_text(encoding="utf-8"))
        assert phantom_truth["imaging"] == "realistic"
        assert 0.9 < phantom_truth["dead_time_live_fraction"] < 1.0
    cylinder = site.phantom_scans[0]
    cylinder_truth = json.loads(cylinder.truth_path.read_text(encoding="utf-8"))
    # The reconstruction's total matches CF × T × activity to within residual scatter,
    # dead time and noise.
    assert float(cylinder.expected_counts.sum()) == pytest.approx(
        cylinder_truth["expected_total_counts"], rel=0.05
    )
    # `concordose calibrate` derives the site's CF and recovery from these realistic scans: the
    # sheet's traceability block removes the dose calibrator's bias, so the CF is the camera's
    # true one within residual scatter and dead time (a few per cent). Given the site's
    # reconstruction (its protocol's, at the views simulated) it also fits the window's
    # scatter-to-primary ratio on the NEMA lung insert: the generator's, within the noise.
    calibration = calibrate_site(
        site_id=GRAND_RAPIDS.site_id,
        cylinder_sheet=site.phantom_scans[0].sheet_path,
        nema_sheet=site.phantom_scans[1].sheet_path,
        record_id="grandrapids-realistic",
        valid_from=dt.date(2026, 1, 1),
        ledger=None,
        reconstruction=site_reconstruction(GRAND_RAPIDS).model_copy(update={"n_views": 12}),
    )
    record = calibration.record
    assert record.calibration_factor_cps_per_mbq == pytest.approx(
        GRAND_RAPIDS.calibration_factor_cps_per_mbq, rel=0.05
    )
    assert record.recovery_a_ml is not None
    assert record.recovery_a_ml > 0.0
    fit = calibration.nema.scatter
    assert fit is not None
    assert fit.lung_ratio_measured > fit.lung_ratio_without + 0.01
    correction = record.scatter_correction()
    assert correction is not None
    assert correction.scatter_to_primary == pytest.approx(
        fit.correction.scatter_to_primary, abs=1e-6
    )
    assert correction.kernel_fwhm_mm == fit.correction.kernel_fwhm_mm
    assert correction.scatter_to_primary == pytest.approx(SCATTER_TO_PRIMARY, abs=0.12)


def test_the_mu_map_sees_the_ct_only_tissues() -> None:
    """The μ map's HU are the CT's as painted, sampled on the SPECT grid: the clinical CT's
    lungs and spine, the smaller presets' ribs."""
    anatomy = default_anatomy()
    grid = nm_grid_for(DEFAULT_SITE, "test")
    labels = sample_label_map(anatomy, grid)
    hu_by_value = {r.value: 40.0 for r in anatomy.vois} | {BODY_VALUE: 40.0, OUTSIDE_VALUE: -1000.0}
    assert isinstance(anatomy.body.shape, EllipticCylinder)
    clinical = ct_hu_on_grid(
        labels,
        grid,
        hu_by_value,
        body=anatomy.body.shape,
        paint_over=(BODY_VALUE,),
        anatomical=True,
    )
    assert (clinical == LUNG_HU).any()
    assert (clinical >= 250.0).any()  # vertebral bone
    ribbed = ct_hu_on_grid(
        labels, grid, hu_by_value, body=anatomy.body.shape, paint_over=(BODY_VALUE,), ribs=True
    )
    assert (ribbed == RIB_HU).any()
    assert not (ribbed == LUNG_HU).any()
    plain = ct_hu_on_grid(labels, grid, hu_by_value)
    assert set(np.unique(plain).tolist()) == {-1000.0, 40.0}
    assert mu_per_mm_from_hu(clinical).min() == 0.0
