"""The flow's voxel dosimetry onto the CT grid (``voxel_dosimetry.output_grid: ct``): doses, VOI
metrics and CT-density masses on a CT grid of another origin and spacing, the ``_density`` VSV
variants, and ``voxel_dose`` v1 rows read as v2."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from concordose.calibration.protocol import VoxelDosimetryRules, load_protocol
from concordose.dicom.geometry import VolumeGeometry
from concordose.dicom.seg import VoiType
from concordose.dose.methods.local_deposition import ldm_gy_per_mbq_h_per_g
from concordose.dose.models import VoxelDoseInput
from concordose.dose.registry import VOXEL_DOSE_METHODS
from concordose.dose.resampling import average_onto_grid
from concordose.dose.voxel_dosimetry import CtDoseGrid, CycleVoxelDose, voxel_dose_from_maps
from concordose.errors import ConfigurationError
from concordose.schemas.tables import VOXEL_DOSE, upgrade_table

TIME_H = np.array([4.0, 24.0, 72.0, 168.0])
LAMBDA_PER_H = np.log(2.0) / 60.0  # T_eff 60 h
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
SPECT = VolumeGeometry(
    origin_mm=(0.0, 0.0, 0.0), spacing_mm=(4.0, 4.0, 4.0), direction=IDENTITY, shape=(24, 24, 24)
)
# finer in-plane, coarser along z, shifted by a fraction of a voxel: nothing aligned with SPECT
CT = VolumeGeometry(
    origin_mm=(-1.3, -0.7, -2.1), spacing_mm=(1.5, 1.5, 5.0), direction=IDENTITY, shape=(19, 64, 64)
)
ORGAN_MM = (26.0, 66.0)  # SPECT voxels 7..16 (centres 28..64 mm), edges ±2 mm: a 64 mL cube
LESION_MM = (42.0, 54.0)  # voxels 11..13: 1.728 mL
ORGAN_HU, LESION_HU = 60.0, 50.0  # water-equivalent line: 1.06 and 1.05 g/mL
METHODS = ["ldm", "vsv_4.42mm", "vsv_4.42mm_density"]


def _inside(geometry: VolumeGeometry, bounds_mm: tuple[float, float]) -> np.ndarray:
    """Voxels of an identity-direction grid whose centre lies in the cube bounds³ (z, y, x)."""
    axes = [
        geometry.origin_mm[axis] + geometry.spacing_mm[axis] * np.arange(geometry.shape[2 - axis])
        for axis in (2, 1, 0)
    ]
    inside = [(c >= bounds_mm[0]) & (c < bounds_mm[1]) for c in axes]
    mask: np.ndarray = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None]
    return mask


def _run(methods: list[str], *, on_ct: bool) -> tuple[CycleVoxelDose, np.ndarray, np.ndarray]:
    """Organ (0.1 MBq/voxel at injection) containing a lesion (1 MBq/voxel), noise-free maps."""
    organ, lesion = _inside(SPECT, ORGAN_MM), _inside(SPECT, LESION_MM)
    a0 = np.where(lesion, 1.0, np.where(organ, 0.1, 0.0))
    maps = a0[None] * np.exp(-LAMBDA_PER_H * TIME_H)[:, None, None, None]
    ct_organ, ct_lesion = _inside(CT, ORGAN_MM), _inside(CT, LESION_MM)
    hu = np.where(ct_lesion, LESION_HU, np.where(ct_organ, ORGAN_HU, 0.0))
    ct_grid = CtDoseGrid.from_masks(SPECT, CT, hu, np.stack([ct_organ, ct_lesion]))
    result = voxel_dose_from_maps(
        TIME_H,
        maps,
        (4.0, 4.0, 4.0),
        np.stack([organ, lesion]),
        labels=("liver", "lesion_1"),
        voi_types=(VoiType.ORGAN, VoiType.LESION),
        rules=VoxelDosimetryRules(methods=methods),
        ct_grid=ct_grid if on_ct else None,
    )
    return result, hu, np.stack([ct_organ, ct_lesion])


def _mean(result: CycleVoxelDose, method: str) -> np.ndarray:
    (dose,) = [d for d in result.doses if d.method == method]
    return dose.mean_dose_gy


def test_ct_grid_agrees_with_spect_grid_for_a_large_voi_and_masses_come_from_ct_density() -> None:
    on_ct, hu, ct_masks = _run(METHODS, on_ct=True)
    on_spect, _, _ = _run(METHODS[:2], on_ct=False)
    assert (on_ct.dose_grid, on_spect.dose_grid) == ("ct", "spect")
    assert on_ct.status == on_spect.status == ("ok", "ok")
    # masses: Σ ρ(HU) × CT voxel volume over the CT masks (1 + HU/1000 g/mL)
    voxel_ml = CT.voxel_volume_ml
    expected = [float(((1.0 + hu / 1000.0) * m).sum() * voxel_ml) for m in ct_masks]
    np.testing.assert_allclose(on_ct.mass_g, expected, rtol=1e-12)
    # the CT masks sample the 64 mL cube at 1.5 × 1.5 × 5 mm: its volume within one CT voxel
    # layer per face (~8 %), then × 1.06 g/mL (unit density on the SPECT grid: 64 g)
    assert on_spect.mass_g[0] == pytest.approx(64.0)
    assert on_ct.mass_g[0] / float(ct_masks[0].sum() * voxel_ml) == pytest.approx(1.06, rel=2e-3)
    # TIA stays on the SPECT grid, where the voxels were fitted
    np.testing.assert_allclose(on_ct.tia_mbq_h, on_spect.tia_mbq_h, rtol=1e-12)
    # Large VOI (64 mL organ): soft-tissue VSV dose is the same dose field, only averaged onto
    # other voxels; its mean differs by the boundary layer, whose CT voxels straddle the SPECT
    # edges and the cube's (5 mm CT slices) (measured 1.1 %; tolerance 2 %).
    assert _mean(on_ct, "vsv_4.42mm")[0] == pytest.approx(
        _mean(on_spect, "vsv_4.42mm")[0], rel=0.02
    )
    # LDM deposits in the CT mass: the VOI's energy (mean dose × mass) is k × the TIA averaged
    # onto the CT voxels of the mask (exact-overlap averaging conserves it; 1e-6: the voxel
    # fits' TIA vs the analytic A0/λ) ...
    k = ldm_gy_per_mbq_h_per_g()
    organ, lesion = _inside(SPECT, ORGAN_MM), _inside(SPECT, LESION_MM)
    tia_per_ml = np.where(lesion, 1.0, np.where(organ, 0.1, 0.0)) / LAMBDA_PER_H / 0.064
    on_ct_tia = average_onto_grid(tia_per_ml, SPECT, CT) * voxel_ml
    energy_ct = _mean(on_ct, "ldm") * on_ct.mass_g
    np.testing.assert_allclose(energy_ct, [k * on_ct_tia[m].sum() for m in ct_masks], rtol=1e-6)
    # ... which is the SPECT grid's k × TIA up to the mask's boundary layer (measured 3.2 % low
    # for the organ: the 5 mm CT slices cut the cube's faces; tolerance 5 %)
    np.testing.assert_allclose(_mean(on_spect, "ldm") * on_spect.mass_g, k * on_spect.tia_mbq_h)
    assert energy_ct[0] == pytest.approx(k * on_ct.tia_mbq_h[0], rel=0.05)
    # density-corrected VSV: D · ρ_water / ρ; the organ's mass-weighted mean is Σ D / Σ ρ, i.e.
    # the plain VSV mean / 1.06 up to the 1.05 g/mL lesion inside (< 0.1 % of the organ's mass)
    ratio = _mean(on_ct, "vsv_4.42mm_density") / _mean(on_ct, "vsv_4.42mm")
    assert ratio[0] == pytest.approx(1 / 1.06, rel=2e-3)
    assert ratio[1] == pytest.approx(1 / 1.05, rel=1e-9)  # uniform density in the lesion
    # uncertainty still published (calibration part 0 here, fits exact: SD ≥ 0, finite)
    for dose in on_ct.doses:
        assert all(np.isfinite(v.dose_sd_gy) for v in dose.vois)


def test_density_methods_need_the_ct_grid_and_the_default_is_ct() -> None:
    with pytest.raises(ConfigurationError, match="CT density map"):
        _run(["vsv_4.42mm_density"], on_ct=False)
    rules = load_protocol("milan").voxel_dosimetry
    assert rules.output_grid == "ct"
    assert not any(name.endswith("_density") for name in rules.methods)
    with pytest.raises(ValueError, match="output_grid"):
        VoxelDosimetryRules.model_validate({"output_grid": "pet"})


def test_voxel_dose_v1_rows_read_as_v2_on_the_spect_grid() -> None:
    v1 = VOXEL_DOSE.schema_of(1)
    assert "dose_grid" not in v1.names
    row: dict[str, object] = {}
    for schema_field in v1:
        if pa.types.is_string(schema_field.type):
            row[schema_field.name] = "x"
        elif pa.types.is_list(schema_field.type):
            row[schema_field.name] = []
        elif pa.types.is_timestamp(schema_field.type):
            row[schema_field.name] = None
        else:
            row[schema_field.name] = 1
    old = pa.Table.from_pylist([row], schema=v1)
    upgraded = upgrade_table(VOXEL_DOSE, old, 1)
    assert upgraded.schema.equals(VOXEL_DOSE.schema)
    assert upgraded.column("dose_grid").to_pylist() == ["spect"]
    assert upgraded.column("schema_version").to_pylist() == [1]


@pytest.mark.parametrize("method_name", ["ldm", "vsv_4.42mm", "vsv_4.42mm_density"])
def test_a_placed_dose_on_a_vois_box_equals_the_whole_ct_grids_dose_there(
    method_name: str,
) -> None:
    """What the CT-grid path relies on to hold one VOI's box at a time: averaging the method's
    placed dose onto a sub-grid gives exactly the whole-grid dose map cut to that sub-grid."""
    organ, lesion = _inside(SPECT, ORGAN_MM), _inside(SPECT, LESION_MM)
    tia = np.where(lesion, 50.0, np.where(organ, 5.0, 0.0))
    hu = np.where(_inside(CT, LESION_MM), LESION_HU, np.where(_inside(CT, ORGAN_MM), ORGAN_HU, 0.0))
    density = 1.0 + hu / 1000.0
    method = VOXEL_DOSE_METHODS.get(method_name)
    whole = method.compute_map(
        VoxelDoseInput(
            tia, (4.0, 4.0, 4.0), density_g_per_ml=density, geometry=SPECT, output_geometry=CT
        )
    ).dose_gy
    box = (slice(3, 11), slice(20, 41), slice(17, 30))
    placed = method.placed_dose(VoxelDoseInput(tia, (4.0, 4.0, 4.0), geometry=SPECT))
    on_box = placed.on_grid(CT.cropped(box), density[box])
    assert whole[box].max() > 0
    np.testing.assert_allclose(on_box, whole[box], rtol=1e-12, atol=1e-15)
