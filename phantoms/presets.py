"""Size presets: how large a SPECT grid, and which CT grid, to generate for a given site.

``"demo"`` uses the site's own reconstruction grid. ``"test"`` is a 48×48×32 grid with voxels twice
the site's edge (as a 64-matrix reconstruction would have), so that an adult abdomen still fits
while a whole patient generates in well under a second. For both the CT is the SPECT grid refined
2× in plane, on the SPECT's slices.

``"clinical"`` is the size of a real post-therapy SPECT/CT: a 128×128 SPECT of at least 96 slices
at the site's own voxel size, and a CT decoupled from it: 512×512 over the SPECT's in-plane field
of view (pixels ≤ 1.2 mm) with slices ≤ 3 mm over its axial field of view, showing the anatomy
a real CT shows (ribs, spine, lungs, subcutaneous fat; :mod:`phantoms.ct_image`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from concordose.phantoms.grid import VoxelGrid
from concordose.phantoms.site_profiles import SiteProfile

CT_IN_PLANE_REFINEMENT = 2
"""``test``/``demo``: CT pixels are this many times finer in plane than SPECT voxels (same
slices)."""
CT_MAX_SLICE_MM = 3.0
"""Largest slice spacing of a decoupled (``clinical``) CT, mm."""
CT_MAX_PIXEL_MM = 1.2
"""Largest in-plane pixel of a decoupled (``clinical``) CT, mm."""


@dataclass(frozen=True)
class Preset:
    """A named grid size.

    Attributes:
        name: preset name.
        nm_matrix: SPECT matrix (columns, rows, slices); ``None`` means the site's own matrix. A
            site whose own matrix has the same columns and rows but more slices keeps its slices.
        voxel_scale: SPECT voxel edge as a multiple of the site's ``nm_voxel_mm``.
        ct_matrix: ``None``: the CT is the SPECT grid refined :data:`CT_IN_PLANE_REFINEMENT`× in
            plane on the SPECT's slices. A number N: an N×N CT over the SPECT's in-plane field
            of view, with slices of at most :data:`CT_MAX_SLICE_MM` over its axial one.
        anatomical_ct: whether the CT shows the CT-only anatomy (ribs, spine, lungs, fat) with
            realistic HU, drawn slab by slab, and the SEG keeps only frames holding a segment.
    """

    name: str
    nm_matrix: tuple[int, int, int] | None
    voxel_scale: int
    ct_matrix: int | None = None
    anatomical_ct: bool = False


PRESETS: dict[str, Preset] = {
    "test": Preset(name="test", nm_matrix=(48, 48, 32), voxel_scale=2),
    "demo": Preset(name="demo", nm_matrix=None, voxel_scale=1),
    "clinical": Preset(
        name="clinical",
        nm_matrix=(128, 128, 96),
        voxel_scale=1,
        ct_matrix=512,
        anatomical_ct=True,
    ),
}


def preset_named(preset: str) -> Preset:
    """The grid preset called ``preset``.

    Raises:
        ValueError: when ``preset`` is not one of :data:`PRESETS`.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[preset]


def nm_grid_for(site: SiteProfile, preset: str) -> VoxelGrid:
    """Return the SPECT grid (identity orientation, centred on the patient origin) for a preset.

    Raises:
        ValueError: when ``preset`` is not one of :data:`PRESETS`.
    """
    chosen = preset_named(preset)
    n_columns, n_rows, n_slices = chosen.nm_matrix or site.nm_matrix
    if (n_columns, n_rows) == site.nm_matrix[:2]:
        n_slices = max(n_slices, site.nm_matrix[2])
    return VoxelGrid.centred(
        shape_zyx=(n_slices, n_rows, n_columns), voxel_mm=site.nm_voxel_mm * chosen.voxel_scale
    )


def ct_grid_for(nm_grid: VoxelGrid, preset: str, *, max_slice_mm: float | None = None) -> VoxelGrid:
    """The CT grid that goes with the SPECT grid ``nm_grid`` of ``preset`` (same frame).

    ``test``/``demo``: ``nm_grid`` refined in plane (CT voxel (2i, 2j, k) has the centre of SPECT
    voxel (i, j, k)). ``clinical``: square pixels of (larger in-plane field of view) / matrix and
    the fewest slices of at most :data:`CT_MAX_SLICE_MM` that tile the axial field of view, centred
    on the SPECT grid, so that the CT's field of view covers the SPECT's exactly.
    ``max_slice_mm`` replaces :data:`CT_MAX_SLICE_MM` for a decoupled CT (thinner slices: more of
    them over the same field of view, e.g. 1.415 mm → 300 slices for the default site).

    Raises:
        ValueError: unknown preset, a SPECT field of view too wide for pixels of at most
            :data:`CT_MAX_PIXEL_MM`, or ``max_slice_mm`` not positive or given for a preset whose
            CT is on the SPECT's slices.
    """
    chosen = preset_named(preset)
    if max_slice_mm is not None and (chosen.ct_matrix is None or not max_slice_mm > 0):
        raise ValueError(
            f"max_slice_mm {max_slice_mm}: only a positive value, for a preset with a decoupled "
            f"CT (not {preset!r})"
        )
    if chosen.ct_matrix is None:
        return nm_grid.refined_in_plane(CT_IN_PLANE_REFINEMENT)
    fov_x_mm, fov_y_mm, fov_z_mm = nm_grid.field_of_view_mm_xyz
    pixel_mm = max(fov_x_mm, fov_y_mm) / chosen.ct_matrix
    if pixel_mm > CT_MAX_PIXEL_MM:
        raise ValueError(
            f"a {chosen.ct_matrix}-matrix CT over the SPECT's {max(fov_x_mm, fov_y_mm):.0f} mm "
            f"field of view has {pixel_mm:.3f} mm pixels, more than {CT_MAX_PIXEL_MM} mm"
        )
    n_slices = math.ceil(fov_z_mm / (max_slice_mm or CT_MAX_SLICE_MM))
    return VoxelGrid.around(
        nm_grid.centre_mm_xyz,
        (n_slices, chosen.ct_matrix, chosen.ct_matrix),
        (pixel_mm, pixel_mm, fov_z_mm / n_slices),
    )
