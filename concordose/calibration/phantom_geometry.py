"""Calibration phantom specifications (physical, from the standards): the uniform cylinder
and the NEMA IEC body phantom.

Both are given in their own frame (mm, axis along patient z, centre of the phantom at the
origin) and placed in the scanner with a set-up offset. Dimensions are interior (fillable) sizes.

* Uniform cylinder (Jaszczak-type flangeless): inner diameter 216 mm, inner length 186 mm
  (≈ 6.8 L), used for the calibration factor.
* NEMA IEC body phantom (IEC 61675-1 / NEMA NU 2): six fillable spheres of inner diameter 10, 13,
  17, 22, 28 and 37 mm with centres on a circle of radius 57.2 mm in one transverse plane, and a
  cold lung insert (51 mm) along the axis. The D-shaped body cross-section is approximated here by
  an elliptic cylinder of semi-axes 147 × 112 mm and inner length 180 mm (≈ 9.3 L, close to the
  nominal ≈ 9.7 L background); the sphere plane lies 70 mm below the phantom's top inner face.
  Sphere walls and the lung insert's wall are not modelled (they hold no activity, and their
  thickness is below the voxel size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

NEMA_SPHERE_DIAMETERS_MM = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
"""Inner diameters of the NEMA IEC body phantom's spheres, mm."""
NEMA_SPHERE_RING_RADIUS_MM = 57.2
"""Distance of every sphere centre from the phantom axis, mm (NEMA NU 2)."""
NEMA_BODY_SEMI_AXES_MM = (147.0, 112.0)
NEMA_BODY_LENGTH_MM = 180.0
NEMA_SPHERE_PLANE_FROM_TOP_MM = 70.0
NEMA_LUNG_INSERT_DIAMETER_MM = 51.0
CYLINDER_DIAMETER_MM = 216.0
CYLINDER_LENGTH_MM = 186.0


class PhantomKind(StrEnum):
    """Which calibration phantom a scan shows (also its folder name and sheet ``phantom``)."""

    UNIFORM_CYLINDER = "uniform_cylinder"
    NEMA_IEC_BODY = "nema_iec_body"


@dataclass(frozen=True)
class ZCylinder:
    """Elliptic cylinder along z, bounded in z, mm."""

    centre_mm: tuple[float, float, float]
    semi_axes_xy_mm: tuple[float, float]
    length_mm: float

    def contains(
        self, x_mm: NDArray[np.float64], y_mm: NDArray[np.float64], z_mm: NDArray[np.float64]
    ) -> NDArray[np.bool_]:
        """Whether points (broadcast from the coordinate arrays) lie inside, boundary included."""
        (cx, cy, cz), (ax, ay) = self.centre_mm, self.semi_axes_xy_mm
        inside: NDArray[np.bool_] = ((((x_mm - cx) / ax) ** 2 + ((y_mm - cy) / ay) ** 2) <= 1.0) & (
            np.abs(z_mm - cz) <= self.length_mm / 2.0
        )
        return inside

    @property
    def volume_ml(self) -> float:
        """Interior volume, mL."""
        ax, ay = self.semi_axes_xy_mm
        return math.pi * ax * ay * self.length_mm / 1000.0


@dataclass(frozen=True)
class PhantomSphere:
    """One fillable sphere (inner diameter, centre in patient mm)."""

    label: str
    diameter_mm: float
    centre_mm: tuple[float, float, float]

    @property
    def volume_ml(self) -> float:
        """Interior volume, mL (4/3·π·r³)."""
        return 4.0 / 3.0 * math.pi * (self.diameter_mm / 2.0) ** 3 / 1000.0

    def contains(
        self, x_mm: NDArray[np.float64], y_mm: NDArray[np.float64], z_mm: NDArray[np.float64]
    ) -> NDArray[np.bool_]:
        """Whether points lie inside, boundary included."""
        cx, cy, cz = self.centre_mm
        inside: NDArray[np.bool_] = (x_mm - cx) ** 2 + (y_mm - cy) ** 2 + (z_mm - cz) ** 2 <= (
            self.diameter_mm / 2.0
        ) ** 2
        return inside


@dataclass(frozen=True)
class NemaIecPhantom:
    """The NEMA IEC body phantom placed in the scanner (everything in patient mm)."""

    body: ZCylinder
    lung_insert: ZCylinder
    spheres: tuple[PhantomSphere, ...]


def uniform_cylinder(offset_mm: tuple[float, float, float]) -> ZCylinder:
    """The uniform cylinder with its centre at ``offset_mm``."""
    radius_mm = CYLINDER_DIAMETER_MM / 2.0
    return ZCylinder(
        centre_mm=offset_mm, semi_axes_xy_mm=(radius_mm, radius_mm), length_mm=CYLINDER_LENGTH_MM
    )


def nema_iec_phantom(offset_mm: tuple[float, float, float]) -> NemaIecPhantom:
    """The NEMA IEC body phantom whose body centre lies at ``offset_mm``.

    Sphere i (diameters increasing) sits at angle 60°·i from +x (patient left) on the ring.
    """
    ox, oy, oz = offset_mm
    sphere_z_mm = oz + NEMA_BODY_LENGTH_MM / 2.0 - NEMA_SPHERE_PLANE_FROM_TOP_MM
    spheres = tuple(
        PhantomSphere(
            label=f"sphere_{diameter:g}mm",
            diameter_mm=diameter,
            centre_mm=(
                ox + NEMA_SPHERE_RING_RADIUS_MM * math.cos(math.radians(60.0 * i)),
                oy + NEMA_SPHERE_RING_RADIUS_MM * math.sin(math.radians(60.0 * i)),
                sphere_z_mm,
            ),
        )
        for i, diameter in enumerate(NEMA_SPHERE_DIAMETERS_MM)
    )
    lung_radius_mm = NEMA_LUNG_INSERT_DIAMETER_MM / 2.0
    return NemaIecPhantom(
        body=ZCylinder(
            centre_mm=offset_mm,
            semi_axes_xy_mm=NEMA_BODY_SEMI_AXES_MM,
            length_mm=NEMA_BODY_LENGTH_MM,
        ),
        lung_insert=ZCylinder(
            centre_mm=offset_mm,
            semi_axes_xy_mm=(lung_radius_mm, lung_radius_mm),
            length_mm=NEMA_BODY_LENGTH_MM,
        ),
        spheres=spheres,
    )
