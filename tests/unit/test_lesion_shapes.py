"""Irregular, heterogeneous lesions (``phantoms.lesion_shapes``): shape, exact truth, texture."""

from __future__ import annotations

import math

import numpy as np
import pytest

from concordose.phantoms.anatomy import (
    Anatomy,
    LesionVolumeSampling,
    Voi,
    VoiType,
    default_anatomy,
    sample_label_map,
    shape_volume_ml,
)
from concordose.phantoms.anatomy_realism import realistic_activity_map
from concordose.phantoms.grid import VoxelGrid
from concordose.phantoms.imaging import region_activity_map
from concordose.phantoms.lesion_shapes import (
    NECROSIS_MIN_VOLUME_ML,
    IrregularLesion,
    draw_irregular_lesion,
    heterogeneous_lesion_activity,
)
from concordose.phantoms.protocols import protocol
from concordose.phantoms.virtual_patient import cycle_truth, draw_virtual_patient


def _lesion_anatomy(lesion: IrregularLesion) -> Anatomy:
    body = default_anatomy().body
    return Anatomy(body=body, vois=(Voi("lesion_1", VoiType.LESION, lesion, 1),))


def test_lobulated_lesions_are_not_spheres_and_keep_the_drawn_volume() -> None:
    rng = np.random.default_rng(3)
    for volume_ml in (0.5, 2.0, 10.0, 50.0, 200.0):
        for _ in range(4):
            lesion = draw_irregular_lesion(rng, volume_ml)
            assert lesion.sphericity < 0.95
            assert lesion.volume_ml == pytest.approx(volume_ml, rel=1e-9)
            assert lesion.extent_radius_mm <= lesion.bounding_radius_mm
    sphere = IrregularLesion(centre_mm=(0.0, 0.0, 0.0), base_radius_mm=10.0, modes=())
    assert sphere.sphericity > 0.999
    assert sphere.volume_ml == pytest.approx(4.0 / 3.0 * math.pi, rel=1e-12)


def test_voxel_centres_inside_converge_to_the_analytic_volume() -> None:
    lesion = draw_irregular_lesion(np.random.default_rng(8), 30.0)
    grid = VoxelGrid.centred(shape_zyx=(90, 90, 90), voxel_mm=1.0)
    labels = sample_label_map(_lesion_anatomy(lesion), grid)
    assert np.count_nonzero(labels == 1) * grid.voxel_volume_ml == pytest.approx(30.0, rel=0.01)


def _cov(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


def test_lesion_activity_is_exactly_its_truth_and_heterogeneous_with_a_necrotic_core() -> None:
    lesion = draw_irregular_lesion(np.random.default_rng(11), 60.0)
    assert lesion.necrotic_core_fraction > 0.0
    grid = VoxelGrid.centred(shape_zyx=(40, 40, 40), voxel_mm=2.0)
    anatomy = _lesion_anatomy(lesion)
    labels = sample_label_map(anatomy, grid)
    uniform, _ = region_activity_map(labels, {1: 123.456, 255: 1000.0})
    inside = labels == 1
    assert np.ptp(uniform[inside]) == 0.0  # off: uniform, CoV 0

    activity = realistic_activity_map(uniform, labels, anatomy, grid, respiratory_motion=False)
    assert activity[inside].sum() == pytest.approx(123.456, rel=1e-9, abs=0.0)
    assert np.array_equal(activity[~inside], uniform[~inside])
    assert _cov(activity[inside]) > 0.2
    x_mm, y_mm, z_mm = grid.axis_coordinates_mm()
    where = np.nonzero(inside)
    offset = np.stack([x_mm[where[2]], y_mm[where[1]], z_mm[where[0]]], axis=-1) - np.asarray(
        lesion.centre_mm
    )
    distance = np.linalg.norm(offset, axis=-1)
    unit = offset / np.maximum(distance, 1e-12)[:, None]
    relative = distance / lesion.surface_radius_mm(unit)
    core = relative < lesion.necrotic_core_fraction
    assert core.any()
    assert activity[where][core].mean() < 0.5 * activity[where][~core].mean()


def test_small_lesions_have_no_core_and_texture_alone_varies() -> None:
    small = draw_irregular_lesion(np.random.default_rng(5), NECROSIS_MIN_VOLUME_ML / 2)
    assert small.necrotic_core_fraction == 0.0
    assert small.necrotic_uptake_ratio == 1.0
    grid = VoxelGrid.centred(shape_zyx=(30, 30, 30), voxel_mm=1.0)
    labels = sample_label_map(_lesion_anatomy(small), grid)
    uniform, _ = region_activity_map(labels, {1: 10.0, 255: 1.0})
    textured = heterogeneous_lesion_activity(
        uniform, labels, {1: small}, grid.axis_coordinates_mm()
    )
    assert textured[labels == 1].sum() == pytest.approx(10.0, rel=1e-12)
    assert _cov(textured[labels == 1]) > 0.02


def test_virtual_patients_with_anatomy_realism_keep_organs_counts_and_volumes() -> None:
    schedule = protocol("lumen")
    plain = draw_virtual_patient(5, 2, protocol=schedule, max_cycles=1)
    real = draw_virtual_patient(5, 2, protocol=schedule, max_cycles=1, anatomy_realism=True)
    assert [v.label for v in plain.anatomy.vois] == [v.label for v in real.anatomy.vois]
    for before, after in zip(plain.anatomy.vois, real.anatomy.vois, strict=True):
        if before.voi_type is VoiType.ORGAN:
            assert before.shape == after.shape
        else:
            assert isinstance(after.shape, IrregularLesion)
            # Same drawn volume unless the larger extent forced a halving.
            ratio = shape_volume_ml(after.shape) / shape_volume_ml(before.shape)
            assert any(math.isclose(ratio, 2.0**-k, rel_tol=1e-9) for k in range(6))
    again = draw_virtual_patient(5, 2, protocol=schedule, max_cycles=1, anatomy_realism=True)
    assert again.anatomy == real.anatomy


def test_the_truth_is_the_integral_of_the_activity_map_for_every_lesion() -> None:
    patient = draw_virtual_patient(
        9, 1, protocol=protocol("lumen"), max_cycles=1, anatomy_realism=True
    )
    grid = VoxelGrid.centred(shape_zyx=(48, 64, 80), voxel_mm=4.42)
    labels = sample_label_map(patient.anatomy, grid)
    truth = cycle_truth(patient, 1)
    regions = (*patient.anatomy.vois, patient.anatomy.body)
    by_label = {r["label"]: r for r in [*truth["vois"], truth["body_remainder"]]}
    uniform, _ = region_activity_map(
        labels, {r.value: by_label[r.label]["activity_mbq"][0] for r in regions}
    )
    still = realistic_activity_map(uniform, labels, patient.anatomy, grid, respiratory_motion=False)
    for region in regions:
        assert still[labels == region.value].sum() == pytest.approx(
            by_label[region.label]["activity_mbq"][0], rel=1e-9, abs=0.0
        )
    moving = realistic_activity_map(uniform, labels, patient.anatomy, grid)
    assert moving.sum() == pytest.approx(uniform.sum(), rel=1e-12)


def test_log_spaced_volumes_span_the_range_in_every_patient() -> None:
    lesions = []
    for number in range(1, 5):
        patient = draw_virtual_patient(
            20261124,
            number,
            protocol=protocol("lumen"),
            max_cycles=1,
            n_lesions_range=(5, 6),
            lesion_volume_sampling=LesionVolumeSampling.LOG_SPACED,
            anatomy_realism=True,
        )
        volumes = [
            shape_volume_ml(v.shape) for v in patient.anatomy.vois if v.voi_type is VoiType.LESION
        ]
        assert min(volumes) == pytest.approx(0.5, rel=1e-9)
        lesions += volumes
    assert len(lesions) >= 20
    assert max(lesions) == pytest.approx(200.0, rel=1e-9)
