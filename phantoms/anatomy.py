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


# --- The virtual consortium's richer anatomy --------------------------------------------------

BONE_MARROW_LABEL = "bone_marrow"
"""Red-marrow proxy: the lumbar vertebral bodies as one ellipsoidal column."""
LESION_FOV_HALF_Z_MM = 95.0
"""Lesions stay within |z| ≤ this (mm), inside every site's axial field of view (≥ ±106 mm)
with room for the per-time-point rigid shifts."""
_LESION_MARGIN_MM = 4.0
_HEPATIC_FRACTION = 0.6


def _sphere_points(centre: NDArray[np.float64], radius_mm: float) -> NDArray[np.float64]:
    """Centre, a half-radius shell and the surface of a sphere (Fibonacci points), (n, 3) mm."""
    n = 96
    index = np.arange(n) + 0.5
    polar = np.arccos(1.0 - 2.0 * index / n)
    azimuth = np.pi * (1.0 + 5.0**0.5) * index
    unit = np.stack(
        [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], axis=1
    )
    points = np.concatenate([unit * radius_mm, unit[::4] * radius_mm / 2.0, np.zeros((1, 3))])
    placed: NDArray[np.float64] = points + centre
    return placed


def _inside(shape: Shape, points: NDArray[np.float64]) -> NDArray[np.bool_]:
    return shape.contains(points[:, 0], points[:, 1], points[:, 2])


def _place_lesion(
    rng: np.random.Generator,
    *,
    volume_ml: float,
    organs: list[tuple[str, Shape]],
    liver: Shape,
    body_inner: Shape,
    placed: list[tuple[NDArray[np.float64], float]],
    max_attempts: int,
) -> tuple[NDArray[np.float64], float] | None:
    """Centre and radius (mm) of a lesion of ``volume_ml`` placed by rejection, or ``None``."""
    radius_mm = float((3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0))
    hepatic = rng.uniform() < _HEPATIC_FRACTION
    for attempt in range(max_attempts):
        # Switch location after half the attempts: a large lesion may fit only elsewhere.
        in_liver = hepatic if attempt < max_attempts // 2 else not hepatic
        if in_liver and isinstance(liver, Ellipsoid):
            room_mm = np.clip(np.asarray(liver.semi_axes_mm) - radius_mm, 0.0, None)
            centre = np.asarray(liver.centre_mm) + rng.uniform(-1, 1, 3) * room_mm
        else:
            centre = np.array([rng.uniform(-130, 130), rng.uniform(-80, 80), rng.uniform(-90, 90)])
        if abs(centre[2]) + radius_mm > LESION_FOV_HALF_Z_MM:
            continue
        points = _sphere_points(centre, radius_mm + _LESION_MARGIN_MM)
        if in_liver:
            if not _inside(liver, points).all():
                continue
        elif not _inside(body_inner, points).all() or any(
            _inside(shape, points).any() for _, shape in organs
        ):
            continue
        if any(
            np.linalg.norm(centre - other) < radius_mm + other_r + _LESION_MARGIN_MM
            for other, other_r in placed
        ):
            continue
        return centre, radius_mm
    return None


def virtual_patient_anatomy(
    rng: np.random.Generator,
    *,
    n_lesions_range: tuple[int, int] = (3, 10),
    lesion_volume_range_ml: tuple[float, float] = (0.5, 200.0),
    max_attempts: int = 400,
) -> Anatomy:
    """A randomised adult abdomen: organs of :func:`default_anatomy` scaled ±10 %, a lumbar
    red-marrow proxy, and 3-10 spherical lesions (volumes log-uniform in the range, mL; a lesion
    that fits nowhere in the crowded abdomen is halved until it does).

    About 60 % of lesions are hepatic (wholly inside the liver), the rest nodal or peritoneal
    (in the body, clear of every organ by ≥ 4 mm); lesions never touch each other. Segment numbers:
    organs 1-5 (kidney_left, kidney_right, liver, spleen, bone_marrow), then lesion_1… by
    decreasing volume.

    Raises:
        ValueError: when a lesion cannot be placed in ``max_attempts`` tries (ranges too large).
    """
    base = default_anatomy()
    organs: list[tuple[str, Shape]] = []
    for voi in base.vois:
        if voi.voi_type is not VoiType.ORGAN or not isinstance(voi.shape, Ellipsoid):
            continue
        scale = rng.uniform(0.9, 1.1, size=3)
        semi = tuple(float(a * s) for a, s in zip(voi.shape.semi_axes_mm, scale, strict=True))
        organs.append(
            (
                voi.label,
                Ellipsoid(centre_mm=voi.shape.centre_mm, semi_axes_mm=(semi[0], semi[1], semi[2])),
            )
        )
    organs.append(
        (
            BONE_MARROW_LABEL,
            Ellipsoid(centre_mm=(0.0, 80.0, -35.0), semi_axes_mm=(20.0, 15.0, 60.0)),
        )
    )
    liver = dict(organs)["liver"]
    body_inner = EllipticCylinder(centre_xy_mm=(0.0, 0.0), semi_axes_xy_mm=(145.0, 95.0))

    n_lesions = int(rng.integers(n_lesions_range[0], n_lesions_range[1] + 1))
    low, high = np.log(lesion_volume_range_ml[0]), np.log(lesion_volume_range_ml[1])
    volumes_ml = np.sort(np.exp(rng.uniform(low, high, size=n_lesions)))[::-1]
    placed: list[tuple[NDArray[np.float64], float]] = []
    for drawn_ml in volumes_ml:
        volume_ml = float(drawn_ml)
        while True:
            where = _place_lesion(
                rng,
                volume_ml=volume_ml,
                organs=organs,
                liver=liver,
                body_inner=body_inner,
                placed=placed,
                max_attempts=max_attempts,
            )
            if where is not None:
                placed.append(where)
                break
            if volume_ml / 2.0 < lesion_volume_range_ml[0]:
                raise ValueError(
                    f"could not place a {volume_ml:.2f} mL lesion in {max_attempts} attempts; "
                    f"reduce lesion_volume_range_ml {lesion_volume_range_ml} or the lesion count"
                )
            # Crowded abdomen: a lesion that fits nowhere is halved, as often as needed.
            volume_ml /= 2.0
    lesions: list[tuple[str, Shape]] = [
        (
            f"lesion_{i}",
            sphere(centre_mm=(float(c[0]), float(c[1]), float(c[2])), diameter_mm=2.0 * r),
        )
        for i, (c, r) in enumerate(placed, start=1)
    ]
    vois = tuple(
        Voi(label=label, voi_type=voi_type, shape=shape, value=number)
        for number, (label, voi_type, shape) in enumerate(
            [(label, VoiType.ORGAN, shape) for label, shape in organs]
            + [(label, VoiType.LESION, shape) for label, shape in lesions],
            start=1,
        )
    )
    return Anatomy(body=base.body, vois=vois)


def shape_volume_ml(shape: Shape) -> float:
    """Analytic volume of a bounded shape in mL (ellipsoids only; cylinders are unbounded).

    Raises:
        ValueError: for an unbounded shape.
    """
    if not isinstance(shape, Ellipsoid):
        raise ValueError(f"{type(shape).__name__} is unbounded in z; it has no finite volume")
    a, b, c = shape.semi_axes_mm
    return float(4.0 / 3.0 * np.pi * a * b * c / 1000.0)


RIB_PERIOD_MM = 30.0
"""Distance between successive ribs along z (adult ribs and intercostal spaces ≈ 2–3 cm)."""
RIB_WIDTH_MM = 10.0
"""Craniocaudal width of one rib, mm."""
RIB_RADIAL_RANGE = (0.86, 0.95)
"""Ribs lie in this band of the body outline's normalised elliptic radius (under the skin)."""
RIB_HU = 600.0
"""Cortical rib bone, HU (a mean over rib and marrow at CT voxel size)."""


def rib_mask(body: EllipticCylinder, grid: VoxelGrid) -> NDArray[np.bool_]:
    """Voxels of ``grid`` (patient frame) inside a rib: a z-periodic band under the body surface.

    The ribs give the CT the craniocaudal structure a real thorax/abdomen has, so CT-to-CT
    registration can find shifts along z (the body itself is a z-invariant cylinder). They carry
    no activity and belong to no VOI: only the CT shows them.
    """
    x_mm, y_mm, z_mm = grid.axis_coordinates_mm()
    (cx, cy), (ax, ay) = body.centre_xy_mm, body.semi_axes_xy_mm
    radius = np.sqrt(((x_mm[None, :] - cx) / ax) ** 2 + ((y_mm[:, None] - cy) / ay) ** 2)
    ring = (radius >= RIB_RADIAL_RANGE[0]) & (radius <= RIB_RADIAL_RANGE[1])
    band = np.mod(z_mm, RIB_PERIOD_MM) < RIB_WIDTH_MM
    mask: NDArray[np.bool_] = band[:, None, None] & ring[None, :, :]
    return mask
