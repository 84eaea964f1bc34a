"""Voxel-grid geometry of a volume in patient coordinates (LPS, mm)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk


@dataclass(frozen=True)
class VolumeGeometry:
    """Where a (slice, row, column) voxel array sits in patient space.

    Attributes:
        origin_mm: patient (LPS) position of the centre of voxel (0, 0, 0), in mm.
        spacing_mm: voxel size along (column, row, slice), i.e. (x, y, z) index axes, in mm.
        direction: 3×3 matrix whose columns are the unit vectors of the column, row and slice
            index axes in patient space (SimpleITK's convention, row-major flattened there).
        shape: array shape (slices, rows, columns).
    """

    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]
    direction: tuple[float, ...]
    shape: tuple[int, int, int]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (1 mL = 1000 mm³)."""
        return float(np.prod(self.spacing_mm)) / 1000.0

    def cropped(self, box: tuple[slice, slice, slice]) -> VolumeGeometry:
        """The sub-grid ``box`` (slices, rows, columns index ranges, step 1) of this grid."""
        start = np.array([box[2].start or 0, box[1].start or 0, box[0].start or 0], dtype=float)
        stop = [box[i].indices(self.shape[i])[1] for i in range(3)]
        shape = tuple(int(b - a) for a, b in zip((s.start or 0 for s in box), stop, strict=True))
        columns = np.asarray(self.direction, dtype=float).reshape(3, 3)
        origin = np.asarray(self.origin_mm) + columns @ (start * np.asarray(self.spacing_mm))
        return VolumeGeometry(
            origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
            spacing_mm=self.spacing_mm,
            direction=self.direction,
            shape=(shape[0], shape[1], shape[2]),
        )

    def to_sitk(self, array: npt.NDArray[np.generic]) -> sitk.Image:
        """Wrap ``array`` (slices, rows, columns) as a SimpleITK image with this geometry."""
        if array.shape != self.shape:
            raise ValueError(f"array shape {array.shape} does not match geometry {self.shape}")
        image = sitk.GetImageFromArray(array)
        image.SetOrigin(self.origin_mm)
        image.SetSpacing(self.spacing_mm)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> VolumeGeometry:
        """Geometry of a SimpleITK image."""
        size = image.GetSize()
        return cls(
            origin_mm=tuple(float(v) for v in image.GetOrigin()),  # type: ignore[arg-type]
            spacing_mm=tuple(float(v) for v in image.GetSpacing()),  # type: ignore[arg-type]
            direction=tuple(float(v) for v in image.GetDirection()),
            shape=(int(size[2]), int(size[1]), int(size[0])),
        )

    @classmethod
    def from_plane(
        cls,
        *,
        image_position_mm: tuple[float, float, float],
        image_orientation: tuple[float, float, float, float, float, float],
        pixel_spacing_mm: tuple[float, float],
        slice_spacing_mm: float,
        shape: tuple[int, int, int],
    ) -> VolumeGeometry:
        """Geometry from DICOM plane attributes of the first slice.

        Args:
            image_position_mm: ImagePositionPatient of the first frame (centre of first voxel).
            image_orientation: ImageOrientationPatient (row direction cosines, then column).
            pixel_spacing_mm: PixelSpacing as DICOM orders it: (between rows, between columns).
            slice_spacing_mm: distance between frames, along row × column (right-handed).
            shape: (frames, rows, columns).
        """
        row_cosines = np.asarray(image_orientation[:3], dtype=float)
        column_cosines = np.asarray(image_orientation[3:], dtype=float)
        slice_cosines = np.cross(row_cosines, column_cosines)
        direction = np.column_stack([row_cosines, column_cosines, slice_cosines])
        return cls(
            origin_mm=image_position_mm,
            spacing_mm=(pixel_spacing_mm[1], pixel_spacing_mm[0], slice_spacing_mm),
            direction=tuple(float(v) for v in direction.ravel()),
            shape=shape,
        )


def voxel_centres_mm(geometry: VolumeGeometry) -> tuple[npt.NDArray[np.float64], ...]:
    """x, y, z patient coordinates (mm) of every voxel centre, each shaped like the volume."""
    direction = np.asarray(geometry.direction).reshape(3, 3)
    k, j, i = np.indices(geometry.shape, dtype=np.float64)
    steps = np.stack([i, j, k], axis=-1) * np.asarray(geometry.spacing_mm)
    positions = np.asarray(geometry.origin_mm) + steps @ direction.T
    return positions[..., 0], positions[..., 1], positions[..., 2]
