"""Axis-aligned voxel grids in patient coordinates (DICOM LPS, mm).

Orientation is the identity: columns run along +x, rows along +y, slices along +z. Arrays are
indexed ``[slice, row, column]`` (= ``[k, j, i]``), the order pydicom returns multi-frame pixels in.
The centre of voxel (i, j, k) is ``origin + (i·sx, j·sy, k·sz)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class VoxelGrid:
    """A voxel grid with identity orientation.

    Attributes:
        shape_zyx: (slices, rows, columns).
        spacing_mm_xyz: voxel step along x (between columns), y (rows) and z (slices) in mm.
        origin_mm_xyz: centre of voxel (0, 0, 0) in patient mm; DICOM ImagePositionPatient of the
            first slice.
    """

    shape_zyx: tuple[int, int, int]
    spacing_mm_xyz: tuple[float, float, float]
    origin_mm_xyz: tuple[float, float, float]

    @classmethod
    def centred(cls, shape_zyx: tuple[int, int, int], voxel_mm: float) -> VoxelGrid:
        """Isotropic grid of ``voxel_mm`` whose centre lies at patient (0, 0, 0) mm."""
        return cls.around((0.0, 0.0, 0.0), shape_zyx, (voxel_mm, voxel_mm, voxel_mm))

    @classmethod
    def around(
        cls,
        centre_mm_xyz: tuple[float, float, float],
        shape_zyx: tuple[int, int, int],
        spacing_mm_xyz: tuple[float, float, float],
    ) -> VoxelGrid:
        """Grid of ``shape_zyx`` and ``spacing_mm_xyz`` whose centre lies at ``centre_mm_xyz``."""
        n_slices, n_rows, n_columns = shape_zyx
        origin = tuple(
            centre - (n - 1) / 2.0 * spacing
            for centre, n, spacing in zip(
                centre_mm_xyz, (n_columns, n_rows, n_slices), spacing_mm_xyz, strict=True
            )
        )
        return cls(
            shape_zyx=shape_zyx,
            spacing_mm_xyz=spacing_mm_xyz,
            origin_mm_xyz=(origin[0], origin[1], origin[2]),
        )

    @property
    def n_slices(self) -> int:
        """Number of slices (z)."""
        return self.shape_zyx[0]

    @property
    def n_rows(self) -> int:
        """Number of rows (y)."""
        return self.shape_zyx[1]

    @property
    def n_columns(self) -> int:
        """Number of columns (x)."""
        return self.shape_zyx[2]

    @property
    def spacing_mm_zyx(self) -> tuple[float, float, float]:
        """Voxel size in array-axis order (slice, row, column), mm."""
        x_mm, y_mm, z_mm = self.spacing_mm_xyz
        return (z_mm, y_mm, x_mm)

    @property
    def centre_mm_xyz(self) -> tuple[float, float, float]:
        """Centre of the grid (midpoint between the first and last voxel centres), mm."""
        x0, y0, z0 = self.origin_mm_xyz
        sx, sy, sz = self.spacing_mm_xyz
        return (
            x0 + (self.n_columns - 1) / 2.0 * sx,
            y0 + (self.n_rows - 1) / 2.0 * sy,
            z0 + (self.n_slices - 1) / 2.0 * sz,
        )

    @property
    def field_of_view_mm_xyz(self) -> tuple[float, float, float]:
        """Extent of the grid from the first voxel's outer edge to the last one's, mm."""
        sx, sy, sz = self.spacing_mm_xyz
        return (self.n_columns * sx, self.n_rows * sy, self.n_slices * sz)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (= cm³)."""
        sx, sy, sz = self.spacing_mm_xyz
        return sx * sy * sz / 1000.0

    def axis_coordinates_mm(self) -> tuple[NDArray[np.float64], ...]:
        """Voxel-centre coordinates per axis in mm: (x per column, y per row, z per slice)."""
        n_per_axis = (self.n_columns, self.n_rows, self.n_slices)
        return tuple(
            origin + np.arange(n, dtype=np.float64) * spacing
            for origin, spacing, n in zip(
                self.origin_mm_xyz, self.spacing_mm_xyz, n_per_axis, strict=True
            )
        )

    def refined_in_plane(self, factor: int) -> VoxelGrid:
        """Grid with ``factor``× finer rows and columns, same slices and same first voxel centre.

        Voxel (factor·i, factor·j, k) of the result has exactly the centre of voxel (i, j, k) here
        (the last ``factor - 1`` rows/columns extend past this grid's last centre).
        """
        sx, sy, sz = self.spacing_mm_xyz
        return VoxelGrid(
            shape_zyx=(self.n_slices, self.n_rows * factor, self.n_columns * factor),
            spacing_mm_xyz=(sx / factor, sy / factor, sz),
            origin_mm_xyz=self.origin_mm_xyz,
        )

    def translated(self, offset_mm: tuple[float, float, float]) -> VoxelGrid:
        """The same grid with its origin moved by ``offset_mm`` (x, y, z).

        Sampling an anatomy on ``grid.translated(−s)`` gives, voxel for voxel, that anatomy moved
        by +s on ``grid``: how a patient lying shifted by s in the scanner is imaged.
        """
        x0, y0, z0 = self.origin_mm_xyz
        dx, dy, dz = offset_mm
        return VoxelGrid(
            shape_zyx=self.shape_zyx,
            spacing_mm_xyz=self.spacing_mm_xyz,
            origin_mm_xyz=(x0 + dx, y0 + dy, z0 + dz),
        )
