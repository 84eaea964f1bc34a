"""Analytic anatomy of the digital patient, in patient (DICOM LPS) mm.

+x is the patient's left, +y posterior, +z superior; the patient lies head first supine (HFS). The
origin is the centre of the abdomen, and every shape is chosen to fit the smallest preset's field of
view (±106 mm in z for ``"demo"``) without truncation.

Each voxel carries exactly one label. Precedence: lesion > organ > body > outside; shapes of the
same type do not overlap by construction. A voxel belongs to a shape when its centre lies inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from phantoms.grid import VoxelGrid

OUTSIDE_VALUE = 0
"""Label-map value of air outside the body."""
BODY_VALUE = 255
"""Label-map value of body tissue that belongs to no VOI (the "remainder of body")."""
BODY_LABEL = "body"
"""Name of the remainder-of-body region (not a segment; it has no segment number)."""


class VoiType(StrEnum):
    """What a region is: an organ (organ at risk), a lesion, or the remainder of body."""

    ORGAN = "organ"
    LESION = "lesion"
    BODY = "body"


@dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid (a sphere when all semi-axes are equal), mm."""

    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]

    def contains(
        self, x_mm: NDArray[np.float64], y_mm: NDArray[np.float64], z_mm: NDArray[np.float64]
    ) -> NDArray[np.bool_]:
        """Whether points (broadcast from the coordinate arrays) lie inside, boundary included."""
        (cx, cy, cz), (ax, ay, az) = self.centre_mm, self.semi_axes_mm
        inside: NDArray[np.bool_] = (
            ((x_mm - cx) / ax) ** 2 + ((y_mm - cy) / ay) ** 2 + ((z_mm - cz) / az) ** 2
        ) <= 1.0
        return inside


def sphere(centre_mm: tuple[float, float, float], diameter_mm: float) -> Ellipsoid:
    """Sphere of ``diameter_mm`` centred at ``centre_mm``."""
    radius_mm = diameter_mm / 2.0
    return Ellipsoid(centre_mm=centre_mm, semi_axes_mm=(radius_mm, radius_mm, radius_mm))


@dataclass(frozen=True)
class EllipticCylinder:
    """Elliptic cylinder along z, infinite in z (it spans the whole field of view), mm."""

    centre_xy_mm: tuple[float, float]
    semi_axes_xy_mm: tuple[float, float]

    def contains(
        self, x_mm: NDArray[np.float64], y_mm: NDArray[np.float64], z_mm: NDArray[np.float64]
    ) -> NDArray[np.bool_]:
        """Whether points lie inside, boundary included (``z_mm`` only sets the broadcast shape)."""
        (cx, cy), (ax, ay) = self.centre_xy_mm, self.semi_axes_xy_mm
        inside = (((x_mm - cx) / ax) ** 2 + ((y_mm - cy) / ay) ** 2) <= 1.0
        return np.broadcast_to(inside, np.broadcast_shapes(inside.shape, z_mm.shape))


Shape = Ellipsoid | EllipticCylinder


@dataclass(frozen=True)
class Voi:
    """One labelled region.

    Attributes:
        label: VOI name, also the DICOM SEG SegmentLabel (e.g. ``"kidney_left"``).
        voi_type: organ or lesion (or body for the remainder region).
        shape: its analytic shape in patient mm.
        value: value in label maps; for organs and lesions this is also the SEG segment number.
    """

    label: str
    voi_type: VoiType
    shape: Shape
    value: int


@dataclass(frozen=True)
class Anatomy:
    """The body outline and the VOIs (organs and lesions) inside it, in segment-number order."""

    body: Voi
    vois: tuple[Voi, ...]

    def voi(self, label: str) -> Voi:
        """The VOI (or the body) named ``label``.

        Raises:
            KeyError: when no region has that label.
        """
        for region in (self.body, *self.vois):
            if region.label == label:
                return region
        raise KeyError(f"no VOI named {label!r}; known: {[v.label for v in self.vois]}")


def default_anatomy() -> Anatomy:
    """The standard adult abdomen: body, liver, kidneys, spleen and two lesions.

    Sizes are adult-typical (liver ≈ 1.2 L, each kidney ≈ 150 mL, spleen ≈ 0.3 L); lesion_1 is a
    30 mm sphere inside the liver, lesion_2 a 20 mm sphere in the retroperitoneum (a nodal
    metastasis), clear of every organ.
    """
    organ_shapes: list[tuple[str, Shape]] = [
        ("kidney_left", Ellipsoid(centre_mm=(65.0, 55.0, -50.0), semi_axes_mm=(28.0, 25.0, 50.0))),
        (
            "kidney_right",
            Ellipsoid(centre_mm=(-65.0, 55.0, -50.0), semi_axes_mm=(28.0, 25.0, 50.0)),
        ),
        ("liver", Ellipsoid(centre_mm=(-70.0, 0.0, 35.0), semi_axes_mm=(75.0, 65.0, 60.0))),
        ("spleen", Ellipsoid(centre_mm=(95.0, 30.0, 40.0), semi_axes_mm=(35.0, 45.0, 50.0))),
    ]
    lesion_shapes: list[tuple[str, Shape]] = [
        ("lesion_1", sphere(centre_mm=(-80.0, -10.0, 50.0), diameter_mm=30.0)),
        ("lesion_2", sphere(centre_mm=(15.0, 40.0, -30.0), diameter_mm=20.0)),
    ]
    vois = tuple(
        Voi(label=label, voi_type=voi_type, shape=shape, value=number)
        for number, (label, voi_type, shape) in enumerate(
            [(label, VoiType.ORGAN, shape) for label, shape in organ_shapes]
            + [(label, VoiType.LESION, shape) for label, shape in lesion_shapes],
            start=1,
        )
    )
    body = Voi(
        label=BODY_LABEL,
        voi_type=VoiType.BODY,
        shape=EllipticCylinder(centre_xy_mm=(0.0, 0.0), semi_axes_xy_mm=(160.0, 110.0)),
        value=BODY_VALUE,
    )
    return Anatomy(body=body, vois=vois)


_PAINT_ORDER = {VoiType.BODY: 0, VoiType.ORGAN: 1, VoiType.LESION: 2}


def sample_label_map(anatomy: Anatomy, grid: VoxelGrid) -> NDArray[np.uint8]:
    """Label map on ``grid`` (shape ``grid.shape_zyx``): each voxel gets the label of its centre.

    Values: :data:`OUTSIDE_VALUE`, :data:`BODY_VALUE`, or a VOI's ``value`` (= segment number).
    Later regions are painted over earlier ones in the order body, organs, lesions, which gives the
    precedence lesion > organ > body.
    """
    x_mm, y_mm, z_mm = grid.axis_coordinates_mm()
    x_b, y_b, z_b = x_mm[None, None, :], y_mm[None, :, None], z_mm[:, None, None]
    labels = np.full(grid.shape_zyx, OUTSIDE_VALUE, dtype=np.uint8)
    regions = sorted((anatomy.body, *anatomy.vois), key=lambda v: _PAINT_ORDER[v.voi_type])
    for region in regions:
        labels[region.shape.contains(x_b, y_b, z_b)] = region.value
    return labels
