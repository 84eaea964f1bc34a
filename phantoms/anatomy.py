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

from concordose.phantoms.grid import VoxelGrid
from concordose.phantoms.lesion_shapes import IrregularLesion, draw_irregular_lesion

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


Shape = Ellipsoid | EllipticCylinder | IrregularLesion


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
    axes_mm = grid.axis_coordinates_mm()
    labels = np.full(grid.shape_zyx, OUTSIDE_VALUE, dtype=np.uint8)
    regions = sorted((anatomy.body, *anatomy.vois), key=lambda v: _PAINT_ORDER[v.voi_type])
    for region in regions:
        _paint(labels, region.shape, axes_mm, region.value)
    return labels


def _paint(
    labels: NDArray[np.uint8],
    shape: Shape,
    axes_mm: tuple[NDArray[np.float64], ...],
    value: int,
) -> None:
    """Set ``labels`` to ``value`` where a voxel centre lies in ``shape``, evaluating only the
    shape's bounding box (an ellipsoid, an irregular lesion) or one slice (a z-invariant
    cylinder): exactly the voxels a full-grid evaluation selects, without full-grid float
    temporaries on a large CT."""
    x_mm, y_mm, z_mm = axes_mm
    if isinstance(shape, EllipticCylinder):
        in_plane = shape.contains(x_mm[None, :], y_mm[:, None], z_mm[:1, None])
        labels[:, in_plane] = value
        return
    # Inside needs every axis's term ((v − c)/a)² ≤ 1 (the sum of non-negative terms is no
    # smaller than any of them, also in floating point): the box holds every inside voxel.
    # An irregular lesion lies inside the sphere of its bounding radius.
    semi_axes_mm = (
        (shape.bounding_radius_mm,) * 3
        if isinstance(shape, IrregularLesion)
        else shape.semi_axes_mm
    )
    box = []
    for axis_mm, centre_mm, semi_mm in zip(axes_mm, shape.centre_mm, semi_axes_mm, strict=True):
        (hits,) = np.nonzero(((axis_mm - centre_mm) / semi_mm) ** 2 <= 1.0)
        if hits.size == 0:
            return
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    box_x, box_y, box_z = box
    inside = shape.contains(
        x_mm[box_x][None, None, :], y_mm[box_y][None, :, None], z_mm[box_z][:, None, None]
    )
    labels[box_z, box_y, box_x][inside] = value


# --- The virtual consortium's richer anatomy --------------------------------------------------

BONE_MARROW_LABEL = "bone_marrow"
"""Red-marrow proxy: the lumbar vertebral bodies as one ellipsoidal column."""
LESION_FOV_HALF_Z_MM = 95.0
"""Lesions stay within |z| ≤ this (mm), inside every site's axial field of view (≥ ±106 mm)
with room for the per-time-point rigid shifts."""
_LESION_MARGIN_MM = 4.0
_HEPATIC_FRACTION = 0.6


class LesionVolumeSampling(StrEnum):
    """How a patient's lesion volumes are drawn from the volume range (mL).

    ``log_uniform``: independent log-uniform draws (the default). ``log_spaced``: n volumes
    evenly spaced in log volume from the range's low end to its high end, both ends included,
    the interior ones jittered uniformly within their half-spacing: every patient spans the
    whole range (the harmonisation benchmark needs lesions from 0.5 to 200 mL at every site).
    """

    LOG_UNIFORM = "log_uniform"
    LOG_SPACED = "log_spaced"


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
    extent_radius_mm: float | None = None,
) -> tuple[NDArray[np.float64], float] | None:
    """Centre and radius (mm) of a lesion of ``volume_ml`` placed by rejection, or ``None``.

    ``extent_radius_mm`` (an irregular lesion's largest surface radius) replaces the radius of
    the sphere of ``volume_ml`` in every clearance check."""
    radius_mm = (
        float((3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0))
        if extent_radius_mm is None
        else extent_radius_mm
    )
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
    lesion_volume_sampling: LesionVolumeSampling = LesionVolumeSampling.LOG_UNIFORM,
    lesion_shape_rng: np.random.Generator | None = None,
) -> Anatomy:
    """A randomised adult abdomen: organs of :func:`default_anatomy` scaled ±10 %, a lumbar
    red-marrow proxy, and 3-10 spherical lesions (volumes log-uniform in the range, mL; a lesion
    that fits nowhere in the crowded abdomen is halved until it does).

    ``lesion_volume_sampling`` :attr:`~LesionVolumeSampling.LOG_SPACED` spans the range in every
    patient instead (:class:`LesionVolumeSampling`). ``lesion_shape_rng`` (anatomy realism)
    makes every lesion an :class:`~phantoms.lesion_shapes.IrregularLesion` of the drawn volume,
    drawn from that generator (so the organs, counts and volumes drawn from ``rng`` stay those of
    the spherical anatomy) and placed with its largest surface radius; ``None`` (default):
    spheres, exactly as before.

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
    if lesion_volume_sampling is LesionVolumeSampling.LOG_SPACED and n_lesions > 1:
        positions = np.linspace(0.0, 1.0, n_lesions)
        positions[1:-1] += rng.uniform(-0.5, 0.5, size=n_lesions - 2) / (n_lesions - 1)
        volumes_ml = np.sort(np.exp(low + positions * (high - low)))[::-1]
    else:
        volumes_ml = np.sort(np.exp(rng.uniform(low, high, size=n_lesions)))[::-1]
    placed: list[tuple[NDArray[np.float64], float]] = []
    irregular: list[IrregularLesion] = []
    for drawn_ml in volumes_ml:
        volume_ml = float(drawn_ml)
        shape = (
            None if lesion_shape_rng is None else draw_irregular_lesion(lesion_shape_rng, volume_ml)
        )
        while True:
            where = _place_lesion(
                rng,
                volume_ml=volume_ml,
                organs=organs,
                liver=liver,
                body_inner=body_inner,
                placed=placed,
                max_attempts=max_attempts,
                extent_radius_mm=None if shape is None else shape.extent_radius_mm,
            )
            if where is not None:
                placed.append(where)
                if shape is not None:
                    centre = where[0]
                    irregular.append(
                        shape.with_centre((float(centre[0]), float(centre[1]), float(centre[2])))
                    )
                break
            if volume_ml / 2.0 < lesion_volume_range_ml[0]:
                raise ValueError(
                    f"could not place a {volume_ml:.2f} mL lesion in {max_attempts} attempts; "
                    f"reduce lesion_volume_range_ml {lesion_volume_range_ml} or the lesion count"
                )
            # Crowded abdomen: a lesion that fits nowhere is halved, as often as needed.
            volume_ml /= 2.0
            if shape is not None:
                shape = shape.scaled_to(volume_ml)
    lesions: list[tuple[str, Shape]] = (
        [(f"lesion_{i}", shape) for i, shape in enumerate(irregular, start=1)]
        if lesion_shape_rng is not None
        else [
            (
                f"lesion_{i}",
                sphere(centre_mm=(float(c[0]), float(c[1]), float(c[2])), diameter_mm=2.0 * r),
            )
            for i, (c, r) in enumerate(placed, start=1)
        ]
    )
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
    """Analytic volume of a bounded shape in mL (ellipsoids, irregular lesions; cylinders are
    unbounded).

    Raises:
        ValueError: for an unbounded shape.
    """
    if isinstance(shape, IrregularLesion):
        return shape.volume_ml
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
    return _ribs(_body_radius(body, x_mm, y_mm), z_mm)


def _ribs(radius: NDArray[np.float64], z_mm: NDArray[np.float64]) -> NDArray[np.bool_]:
    ring = _in_radial_band(radius, RIB_RADIAL_RANGE)
    band = np.mod(z_mm, RIB_PERIOD_MM) < RIB_WIDTH_MM
    mask: NDArray[np.bool_] = band[:, None, None] & ring[None, :, :]
    return mask


def _body_radius(
    body: EllipticCylinder, x_mm: NDArray[np.float64], y_mm: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Normalised elliptic radius of the body outline at each (row, column): 1 on the skin."""
    (cx, cy), (ax, ay) = body.centre_xy_mm, body.semi_axes_xy_mm
    radius: NDArray[np.float64] = np.sqrt(
        ((x_mm[None, :] - cx) / ax) ** 2 + ((y_mm[:, None] - cy) / ay) ** 2
    )
    return radius


def _in_radial_band(radius: NDArray[np.float64], band: tuple[float, float]) -> NDArray[np.bool_]:
    inside: NDArray[np.bool_] = (radius >= band[0]) & (radius <= band[1])
    return inside


# --- CT-only anatomy of the clinical preset --------------------------------------------------
# Structures only the CT shows: they carry no activity of their own (the SPECT sees body
# remainder there) and belong to no VOI. Values are typical of a non-contrast CT at 120 kVp.

SUBCUTANEOUS_FAT_RADIAL_RANGE = (0.95, 1.0)
"""Subcutaneous fat: this band of the body's normalised elliptic radius, outside the ribs."""
FAT_HU = -100.0
"""Adipose tissue, HU."""
LUNGS: tuple[Ellipsoid, Ellipsoid] = (
    Ellipsoid(centre_mm=(-80.0, 5.0, 210.0), semi_axes_mm=(60.0, 70.0, 100.0)),
    Ellipsoid(centre_mm=(80.0, 5.0, 200.0), semi_axes_mm=(60.0, 70.0, 100.0)),
)
"""Right and left lung bases: above the diaphragm (z ≥ 100 mm, the right dome higher), clear of
the liver and spleen (tops ≤ 101 mm when scaled +10 %) and of the lesions (|z| ≤ 95 mm), inside
the rib cage. Only a field of view reaching above z ≈ 100 mm shows them."""
LUNG_HU = -800.0
"""Aerated lung parenchyma, HU."""
SPINE_CENTRE_XY_MM = (0.0, 80.0)
"""Axis of the vertebral bodies (posterior, around the red-marrow proxy of the consortium)."""
VERTEBRA_SEMI_AXES_XY_MM = (23.0, 17.0)
"""Half width and half depth of a vertebral body (adult lumbar ≈ 45 × 35 mm)."""
VERTEBRA_PERIOD_MM = 32.0
"""One vertebral body and one intervertebral disc along z, mm."""
VERTEBRA_HEIGHT_MM = 25.0
"""Height of a vertebral body; the disc fills the rest of the period."""
VERTEBRA_PHASE_MM = 16.0
"""A vertebral body starts where (z + phase) is a multiple of the period."""
CORTEX_MM = 2.0
"""Thickness of a vertebral body's cortical shell (sides and endplates)."""
CORTICAL_BONE_HU = 1000.0
"""Cortical shell of a vertebral body, HU (dense bone averaged over a ≈ 1 mm voxel)."""
TRABECULAR_BONE_HU = 250.0
"""Cancellous (trabecular) bone with red marrow inside a vertebral body, HU."""
DISC_HU = 80.0
"""Intervertebral disc, HU."""


@dataclass(frozen=True)
class CtTissues:
    """Where each CT-only tissue lies in a slab of slices, (slices, rows, columns) each."""

    fat: NDArray[np.bool_]
    lung: NDArray[np.bool_]
    rib: NDArray[np.bool_]
    disc: NDArray[np.bool_]
    trabecular: NDArray[np.bool_]
    cortical: NDArray[np.bool_]


def ct_tissues(
    body: EllipticCylinder,
    x_mm: NDArray[np.float64],
    y_mm: NDArray[np.float64],
    z_mm: NDArray[np.float64],
) -> CtTissues:
    """The CT-only tissues at the voxel centres of a slab (axis coordinates in the patient frame).

    Ribs are :func:`rib_mask`'s; the spine is a column of elliptic vertebral bodies (cortical
    shell of :data:`CORTEX_MM` around trabecular bone) separated by discs; lungs are
    :data:`LUNGS`; fat lines the skin. Masks may overlap (the posterior ribs reach the spine):
    paint them in the order of the fields.
    """
    radius = _body_radius(body, x_mm, y_mm)
    (sx, sy), (ax, ay) = SPINE_CENTRE_XY_MM, VERTEBRA_SEMI_AXES_XY_MM
    dx, dy = x_mm[None, :] - sx, y_mm[:, None] - sy
    column = (dx / ax) ** 2 + (dy / ay) ** 2 <= 1.0
    core = (dx / (ax - CORTEX_MM)) ** 2 + (dy / (ay - CORTEX_MM)) ** 2 <= 1.0
    height = np.mod(z_mm + VERTEBRA_PHASE_MM, VERTEBRA_PERIOD_MM)
    vertebra = height < VERTEBRA_HEIGHT_MM
    endplate = vertebra & ((height < CORTEX_MM) | (height >= VERTEBRA_HEIGHT_MM - CORTEX_MM))
    inner = core[None] & (vertebra & ~endplate)[:, None, None]
    lung = np.zeros((z_mm.size, y_mm.size, x_mm.size), dtype=np.uint8)
    for shape in LUNGS:
        _paint(lung, shape, (x_mm, y_mm, z_mm), 1)
    return CtTissues(
        fat=np.broadcast_to(_in_radial_band(radius, SUBCUTANEOUS_FAT_RADIAL_RANGE), lung.shape),
        lung=lung.astype(bool),
        rib=_ribs(radius, z_mm),
        disc=column[None] & ~vertebra[:, None, None],
        trabecular=inner,
        cortical=column[None] & vertebra[:, None, None] & ~inner,
    )
