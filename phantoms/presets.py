"""Size presets: how large a SPECT grid to generate for a given site.

``"demo"`` uses the site's own reconstruction grid. ``"test"`` is a 48×48×32 grid with voxels twice
the site's edge (as a 64-matrix reconstruction would have), so that an adult abdomen still fits
while a whole patient generates in well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass

from phantoms.grid import VoxelGrid
from phantoms.site_profiles import SiteProfile


@dataclass(frozen=True)
class Preset:
    """A named grid size.

    Attributes:
        name: preset name.
        nm_matrix: SPECT matrix (columns, rows, slices); ``None`` means the site's own matrix.
        voxel_scale: SPECT voxel edge as a multiple of the site's ``nm_voxel_mm``.
    """

    name: str
    nm_matrix: tuple[int, int, int] | None
    voxel_scale: int


PRESETS: dict[str, Preset] = {
    "test": Preset(name="test", nm_matrix=(48, 48, 32), voxel_scale=2),
    "demo": Preset(name="demo", nm_matrix=None, voxel_scale=1),
}


def nm_grid_for(site: SiteProfile, preset: str) -> VoxelGrid:
    """Return the SPECT grid (identity orientation, centred on the patient origin) for a preset.

    Raises:
        ValueError: when ``preset`` is not one of :data:`PRESETS`.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    chosen = PRESETS[preset]
    n_columns, n_rows, n_slices = chosen.nm_matrix or site.nm_matrix
    return VoxelGrid.centred(
        shape_zyx=(n_slices, n_rows, n_columns), voxel_mm=site.nm_voxel_mm * chosen.voxel_scale
    )
