"""Tests of the ``clinical`` preset (issue 13): clinical-size grids, the CT's anatomy and HU, and
clinical patients generated at two time points (the fewest that show a series over time)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from typer.testing import CliRunner

from concordose.cli import app
from concordose.phantoms import DEFAULT_SITE, GeneratedPatient, generate_patient
from concordose.phantoms.anatomy import (
    BODY_VALUE,
    OUTSIDE_VALUE,
    CtTissues,
    EllipticCylinder,
    ct_tissues,
    default_anatomy,
    sample_label_map,
)
from concordose.phantoms.consortium import Realism, generate_consortium
from concordose.phantoms.dicom_ct import anatomical_hu_slices, hu_map
from concordose.phantoms.grid import VoxelGrid
from concordose.phantoms.phantom_scans import scan_cylinder
from concordose.phantoms.presets import ct_grid_for, nm_grid_for
from concordose.phantoms.protocols import protocol
from concordose.phantoms.site_profiles import CONSORTIUM_SITES, consortium_site
from concordose.phantoms.virtual_patient import draw_virtual_patient

TIME_POINTS_H = (4.0, 24.0)


def _clinical_grids(site: Any = DEFAULT_SITE) -> tuple[VoxelGrid, VoxelGrid]:
    nm_grid = nm_grid_for(site, "clinical")
    return nm_grid, ct_grid_for(nm_grid, "clinical")


# --- grids ------------------------------------------------------------------------------------


def test_clinical_spect_is_128_square_with_96_slices_at_each_sites_voxel() -> None:
    for site in CONSORTIUM_SITES:
        grid = nm_grid_for(site, "clinical")
        assert grid.shape_zyx == (96, 128, 128), site.site_id
        assert grid.spacing_mm_xyz == (site.nm_voxel_mm,) * 3
        assert grid.centre_mm_xyz == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
    # A site reconstructing natively at 128×128 keeps its own (larger) number of slices.
    native = dataclasses.replace(DEFAULT_SITE, nm_matrix=(128, 128, 120))
    assert nm_grid_for(native, "clinical").shape_zyx == (120, 128, 128)


def test_clinical_ct_is_512_square_with_thin_slices_over_the_spect_field_of_view() -> None:
    for site in CONSORTIUM_SITES:
        nm_grid, ct_grid = _clinical_grids(site)
        assert ct_grid.shape_zyx[1:] == (512, 512)
        pixel_x, pixel_y, slice_mm = ct_grid.spacing_mm_xyz
        assert pixel_x == pixel_y <= 1.2
        assert slice_mm <= 3.0
        # The fewest such slices: one fewer would be thicker than 3 mm.
        assert nm_grid.field_of_view_mm_xyz[2] / (ct_grid.n_slices - 1) > 3.0
        assert ct_grid.field_of_view_mm_xyz == pytest.approx(nm_grid.field_of_view_mm_xyz)
        assert ct_grid.centre_mm_xyz == pytest.approx(nm_grid.centre_mm_xyz, abs=1e-9)
        # Decoupled: the CT's first slice is not the SPECT's.
        assert ct_grid.origin_mm_xyz[2] != pytest.approx(nm_grid.origin_mm_xyz[2])
    _, milan_ct = _clinical_grids()
    assert milan_ct.shape_zyx == (142, 512, 512)
    assert milan_ct.spacing_mm_xyz == pytest.approx((1.105, 1.105, 96 * 4.42 / 142))
    wide = dataclasses.replace(DEFAULT_SITE, nm_voxel_mm=5.0)
    with pytest.raises(ValueError, match=r"pixels, more than 1.2 mm"):
        ct_grid_for(nm_grid_for(wide, "clinical"), "clinical")


def test_clinical_ct_slice_spacing_can_be_thinner() -> None:
    nm_grid, default_ct = _clinical_grids()
    assert ct_grid_for(nm_grid, "clinical", max_slice_mm=3.0) == default_ct
    thin = ct_grid_for(nm_grid, "clinical", max_slice_mm=1.415)
    assert thin.shape_zyx == (300, 512, 512)
    assert thin.spacing_mm_xyz == pytest.approx((1.105, 1.105, 96 * 4.42 / 300))
    assert thin.field_of_view_mm_xyz == pytest.approx(nm_grid.field_of_view_mm_xyz)
    assert thin.centre_mm_xyz == pytest.approx(nm_grid.centre_mm_xyz, abs=1e-9)
    with pytest.raises(ValueError, match="decoupled"):
        ct_grid_for(nm_grid, "clinical", max_slice_mm=0.0)
    with pytest.raises(ValueError, match="decoupled"):
        ct_grid_for(nm_grid_for(DEFAULT_SITE, "demo"), "demo", max_slice_mm=1.0)


def test_smaller_presets_keep_the_ct_refined_from_the_spect() -> None:
    for preset in ("test", "demo"):
        nm_grid = nm_grid_for(DEFAULT_SITE, preset)
        assert ct_grid_for(nm_grid, preset) == nm_grid.refined_in_plane(2)
    with pytest.raises(ValueError, match="unknown preset"):
        ct_grid_for(nm_grid_for(DEFAULT_SITE, "demo"), "huge")


def test_voxel_grid_around_a_centre() -> None:
    grid = VoxelGrid.around((10.0, -5.0, 3.0), (2, 3, 4), (1.0, 2.0, 3.0))
    assert grid.origin_mm_xyz == (8.5, -7.0, 1.5)
    assert grid.centre_mm_xyz == (10.0, -5.0, 3.0)
    assert grid.field_of_view_mm_xyz == (4.0, 6.0, 6.0)
    assert VoxelGrid.centred((3, 4, 5), 2.5) == VoxelGrid.around(
        (0.0, 0.0, 0.0), (3, 4, 5), (2.5, 2.5, 2.5)
    )


def test_label_maps_from_bounding_boxes_equal_full_grid_evaluation() -> None:
    anatomy = draw_virtual_patient(5, 1, protocol=protocol("lumen"), max_cycles=1).anatomy
    regions = [anatomy.body, *anatomy.vois]  # painted in this order: body, organs, lesions
    for grid in (
        VoxelGrid.around((3.3, -7.1, 20.0), (40, 50, 70), (4.7, 4.1, 3.3)),  # shapes cut off
        VoxelGrid.around((0.0, 0.0, 900.0), (4, 30, 30), (5.0, 5.0, 5.0)),  # only the body
    ):
        x_mm, y_mm, z_mm = grid.axis_coordinates_mm()
        expected = np.zeros(grid.shape_zyx, dtype=np.uint8)
        for region in regions:
            inside = region.shape.contains(
                x_mm[None, None, :], y_mm[None, :, None], z_mm[:, None, None]
            )
            expected[inside] = region.value
        np.testing.assert_array_equal(sample_label_map(anatomy, grid), expected)


# --- CT values --------------------------------------------------------------------------------


def test_hu_map_made_slab_by_slab_equals_one_draw_for_the_volume() -> None:
    labels = np.random.default_rng(1).integers(0, 3, size=(21, 9, 7)).astype(np.uint8)
    hu_by_value = {0: -1000.0, 1: 40.0, 2: 60.0}
    made = hu_map(labels, hu_by_value, noise_sd_hu=5.0, rng=np.random.default_rng(2))
    mean = np.array([-1000.0, 40.0, 60.0])[labels]
    noisy = mean + np.random.default_rng(2).normal(0.0, 5.0, size=labels.shape)
    np.testing.assert_array_equal(made, np.clip(np.rint(noisy), -1024, 3071).astype(np.int16))
    with pytest.raises(KeyError, match=r"\[2\]"):
        hu_map(labels, {0: -1000.0, 1: 40.0}, noise_sd_hu=5.0, rng=np.random.default_rng(2))


@pytest.fixture(scope="module")
def clinical_ct() -> tuple[NDArray[np.uint8], NDArray[np.int16], CtTissues, dict[str, int]]:
    """Consortium patient 1 on milan's clinical CT grid: labels, HU, CT-only tissues."""
    anatomy = draw_virtual_patient(5, 1, protocol=protocol("lumen"), max_cycles=1).anatomy
    _, ct_grid = _clinical_grids()
    labels = sample_label_map(anatomy, ct_grid)
    values = {r.label: r.value for r in (anatomy.body, *anatomy.vois)}
    hu_by_value = {v: 50.0 for v in values.values()} | {
        OUTSIDE_VALUE: -1000.0,
        BODY_VALUE: 40.0,
        values["liver"]: 60.0,
        values["bone_marrow"]: 250.0,
    }
    assert isinstance(anatomy.body.shape, EllipticCylinder)
    hu = np.stack(
        list(
            anatomical_hu_slices(
                labels,
                ct_grid,
                hu_by_value,
                body=anatomy.body.shape,
                paint_over=(BODY_VALUE, values["bone_marrow"]),
                noise_sd_hu=5.0,
                rng=np.random.default_rng(3),
            )
        )
    )
    tissues = ct_tissues(anatomy.body.shape, *ct_grid.axis_coordinates_mm())
    return labels, hu, tissues, values


def test_clinical_ct_shows_bone_lungs_fat_and_soft_tissue_at_realistic_hu(
    clinical_ct: tuple[NDArray[np.uint8], NDArray[np.int16], CtTissues, dict[str, int]],
) -> None:
    labels, hu, tissues, values = clinical_ct
    assert hu.dtype == np.int16
    body = labels == BODY_VALUE
    marrow = labels == values["bone_marrow"]
    spine = tissues.cortical | tissues.trabecular | tissues.disc
    ribs = tissues.rib & body & ~spine
    cortex = tissues.cortical & (body | marrow)
    lung = tissues.lung & body & ~tissues.rib
    assert min(ribs.sum(), cortex.sum()) > 10_000
    assert lung.sum() > 100_000
    assert min((hu[ribs] > 300).mean(), (hu[cortex] > 300).mean()) > 0.99
    assert np.mean(hu[ribs]) == pytest.approx(600.0, abs=2.0)
    assert np.mean(hu[cortex]) == pytest.approx(1000.0, abs=2.0)
    assert np.mean(hu[tissues.trabecular & (body | marrow)]) == pytest.approx(250.0, abs=2.0)
    assert np.mean(hu[tissues.disc & (body | marrow)]) == pytest.approx(80.0, abs=2.0)
    assert (hu[lung] < -500).all()
    assert np.mean(hu[lung]) == pytest.approx(-800.0, abs=2.0)
    assert np.mean(hu[tissues.fat & body]) == pytest.approx(-100.0, abs=2.0)
    assert np.mean(hu[labels == OUTSIDE_VALUE]) == pytest.approx(-1000.0, abs=2.0)
    soft = body & ~(
        tissues.rib | tissues.cortical | tissues.trabecular | tissues.disc | lung | tissues.fat
    )
    assert 0.0 <= np.mean(hu[soft]) <= 60.0
    assert (np.abs(hu[soft] - 40.0) <= 30).all()
    liver = hu[labels == values["liver"]]
    assert np.mean(liver) == pytest.approx(60.0, abs=1.0)
    assert np.std(liver) == pytest.approx(5.0, rel=0.1)
    # The marrow proxy lies in the vertebral bodies: only bone and discs replace it.
    assert (hu[marrow & ~spine] < 300).all()
    # VOIs other than the marrow keep their own HU (the CT-only anatomy is painted around them).
    assert np.mean(hu[labels == values["kidney_left"]]) == pytest.approx(50.0, abs=1.0)


def test_clinical_ct_is_the_same_for_the_same_seed() -> None:
    anatomy = default_anatomy()
    _, ct_grid = _clinical_grids()
    grid = dataclasses.replace(ct_grid, shape_zyx=(10, 512, 512))  # its first 10 slices
    labels = sample_label_map(anatomy, grid)
    body = anatomy.body.shape
    assert isinstance(body, EllipticCylinder)

    def ct(seed: int) -> NDArray[np.int16]:
        return np.stack(
            list(
                anatomical_hu_slices(
                    labels,
                    grid,
                    {OUTSIDE_VALUE: -1000.0, BODY_VALUE: 40.0}
                    | {v.value: 50.0 for v in anatomy.vois},
                    body=body,
                    paint_over=(BODY_VALUE,),
                    noise_sd_hu=5.0,
                    rng=np.random.default_rng(seed),
                )
            )
        )

    first = ct(4)
    np.testing.assert_array_equal(first, ct(4))
    assert not np.array_equal(first, ct(5))


# --- clinical patients ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clinical_patient(tmp_path_factory: pytest.TempPathFactory) -> GeneratedPatient:
    return generate_patient(
        tmp_path_factory.mktemp("clinical"), seed=7, preset="clinical", time_points_h=TIME_POINTS_H
    )


def test_clinical_patient_files_grids_seg_and_truth(clinical_patient: GeneratedPatient) -> None:
    nm_grid, ct_grid = _clinical_grids()
    assert len(clinical_patient.dicom_files) == 2 * (1 + ct_grid.n_slices) + 1
    for nm_path in clinical_patient.nm_files:
        nm = pydicom.dcmread(nm_path)
        assert nm.pixel_array.shape == nm_grid.shape_zyx
        ct_paths = sorted((nm_path.parent / "ct").glob("*.dcm"))
        assert len(ct_paths) == ct_grid.n_slices
        first, last = pydicom.dcmread(ct_paths[0]), pydicom.dcmread(ct_paths[-1])
        assert first.FrameOfReferenceUID == nm.FrameOfReferenceUID
        assert (first.Rows, first.Columns) == (512, 512)
        assert [float(v) for v in first.PixelSpacing] == pytest.approx(ct_grid.spacing_mm_xyz[:2])
        assert float(first.SliceThickness) == pytest.approx(ct_grid.spacing_mm_xyz[2], abs=1e-4)
        assert [float(v) for v in first.ImagePositionPatient] == pytest.approx(
            ct_grid.origin_mm_xyz, abs=1e-5
        )
        assert float(last.ImagePositionPatient[2]) == pytest.approx(
            ct_grid.axis_coordinates_mm()[2][-1], abs=1e-5
        )
        assert (first.RescaleSlope, first.RescaleIntercept, first.PixelRepresentation) == (
            1,
            -1024,
            1,
        )
        assert first.pixel_array.dtype == np.int16

    seg = hd.seg.segread(clinical_patient.seg_path)
    assert seg.BitsAllocated == 1
    ct_labels = sample_label_map(default_anatomy(), ct_grid)
    with_a_segment = sum(
        int(np.any(ct_labels[k] == number))
        for number in seg.segment_numbers
        for k in range(ct_grid.n_slices)
    )
    assert seg.NumberOfFrames == with_a_segment < len(seg.segment_numbers) * ct_grid.n_slices
    volume = seg.get_volume(combine_segments=True).to_patient_orientation("HPL")
    k0 = round((volume.affine[2, 3] - ct_grid.origin_mm_xyz[2]) / ct_grid.spacing_mm_xyz[2])
    segment_slices = ct_labels[k0 : k0 + volume.array.shape[0]]
    expected = np.where(np.isin(segment_slices, seg.segment_numbers), segment_slices, 0)
    np.testing.assert_array_equal(volume.array, expected)

    truth = json.loads(clinical_patient.ground_truth_path.read_text(encoding="utf-8"))
    assert truth["preset"] == "clinical"
    assert truth["time_points_h"] == list(TIME_POINTS_H)
    assert truth["nm_voxel_mm"] == DEFAULT_SITE.nm_voxel_mm
    nm_labels = sample_label_map(default_anatomy(), nm_grid)
    for region in truth["vois"]:
        assert region["n_voxels_nm"] == int(np.sum(nm_labels == region["segment_number"]))
        assert region["volume_ml"] == pytest.approx(region["n_voxels_nm"] * nm_grid.voxel_volume_ml)
    counts = pydicom.dcmread(clinical_patient.nm_files[0]).pixel_array
    assert int(counts[nm_labels == OUTSIDE_VALUE].sum()) == 0


def test_clinical_patient_is_byte_identical_for_the_same_seed(
    clinical_patient: GeneratedPatient, tmp_path: Path
) -> None:
    again = generate_patient(tmp_path, seed=7, preset="clinical", time_points_h=TIME_POINTS_H)
    for path_a, path_b in zip(clinical_patient.dicom_files, again.dicom_files, strict=True):
        assert path_a.read_bytes() == path_b.read_bytes(), path_a.name
    assert clinical_patient.ground_truth_path.read_bytes() == again.ground_truth_path.read_bytes()


def test_clinical_consortium_patient_and_phantom_scan(tmp_path: Path) -> None:
    site = consortium_site("montpellier")
    generated = generate_consortium(
        tmp_path,
        seed=5,
        preset="clinical",
        sites=(site,),
        protocol="lutadose",  # two time points in cycle 1
        realism=Realism(blur=True, noise=True, ct_shift_max_mm=5.0),
        phantoms=False,
    )
    nm_grid, ct_grid = _clinical_grids(site)
    truth = json.loads(generated.sites[0].ground_truth_paths[0].read_text(encoding="utf-8"))
    assert truth["preset"] == "clinical"
    assert truth["site"]["nm_matrix"] == [128, 128, 96]
    assert truth["site"]["nm_voxel_mm"] == site.nm_voxel_mm
    (cycle,) = [c for c in truth["cycles"] if c["imaged"]]
    assert len(cycle["time_points_h"]) == 2
    cycle_dir = generated.sites[0].folder / "patients" / "P001" / cycle["folder"]
    for tp_dir in sorted(cycle_dir.glob("tp*")):
        assert pydicom.dcmread(tp_dir / "nm.dcm").pixel_array.shape == nm_grid.shape_zyx
        assert len(list((tp_dir / "ct").glob("*.dcm"))) == ct_grid.n_slices
    # Spine and ribs on the first CT: bone above 300 HU in most slices (not in discs between ribs).
    ct = [pydicom.dcmread(p) for p in sorted((cycle_dir / "tp01" / "ct").glob("*.dcm"))]
    hu = np.stack([ds.pixel_array for ds in ct]).astype(np.int32) - 1024
    assert np.mean([(slice_hu > 300).sum() > 100 for slice_hu in hu]) > 0.7
    assert (hu < -500).sum() > 0  # air and lungs
    seg = hd.seg.segread(cycle_dir / "seg.dcm")
    assert {d.segment_label for d in map(seg.get_segment_description, seg.segment_numbers)} >= {
        "liver",
        "bone_marrow",
    }

    scan = scan_cylinder(site, tmp_path / "cylinder", seed=5, preset="clinical", noise=True)
    assert scan.grid == nm_grid
    assert len(scan.ct_paths) == ct_grid.n_slices
    assert pydicom.dcmread(scan.ct_paths[0]).Rows == 512


def test_cli_names_the_clinical_preset() -> None:
    result = CliRunner().invoke(app, ["generate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "'clinical'" in result.output
