"""Cropping a grid to the VOIs: the sub-grid sits exactly where its voxels were."""

from __future__ import annotations

import numpy as np

from concordose.dicom.geometry import VolumeGeometry


def test_a_cropped_grid_places_its_voxels_where_they_were() -> None:
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # rotated frame
    geometry = VolumeGeometry(
        origin_mm=(10.0, -20.0, 5.0),
        spacing_mm=(1.1, 1.2, 3.0),
        direction=tuple(rotation.ravel()),
        shape=(40, 30, 20),
    )
    box = (slice(5, 25), slice(3, 17), slice(2, 19))
    crop = geometry.cropped(box)
    assert crop.shape == (20, 14, 17)
    full = geometry.to_sitk(np.zeros(geometry.shape, dtype=np.float32))
    sub = crop.to_sitk(np.zeros(crop.shape, dtype=np.float32))
    # voxel (k, j, i) of the crop is voxel (k + 5, j + 3, i + 2) of the full grid
    for k, j, i in ((0, 0, 0), (19, 13, 16), (7, 2, 11)):
        np.testing.assert_allclose(
            sub.TransformIndexToPhysicalPoint((i, j, k)),
            full.TransformIndexToPhysicalPoint((i + 2, j + 3, k + 5)),
            atol=1e-9,
        )
