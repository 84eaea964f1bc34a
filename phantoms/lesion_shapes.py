"""Irregular, heterogeneous lesions of the digital patient (anatomy realism, issue 15 item 3).

A lesion is a star-shaped solid around its centre whose surface radius in direction u (unit
vector) is a sphere perturbed by a few randomly oriented zonal spherical harmonics,

    r(u) = R₀ · (1 + Σₖ aₖ · P_{nₖ}(u · eₖ)),

with Legendre polynomials P_n of degree n = 2–4 (low-order lobulation), random axes eₖ and
relative amplitudes aₖ. R₀ is scaled so that the analytic volume (1/3)∮ r³ dΩ equals the drawn
volume. A modelling choice of this generator (low-order spherical-harmonic perturbations of a
sphere are a common way to make lobulated tumour shapes); not fitted to a patient series.

Inside, the uptake is heterogeneous: a smooth multiplicative log-normal texture (a sum of random
plane waves of 12–40 mm wavelength, log-SD ``texture_sd``) and, for lesions of at least
:data:`NECROSIS_MIN_VOLUME_ML`, a hypo-active necrotic core (the points within a fraction
``necrotic_core_fraction`` of the surface radius, uptake × ``necrotic_uptake_ratio``): central
necrosis is common in large neuroendocrine liver metastases. Both are continuous functions of
the patient-frame position, so every site samples the same object; the generator renormalises
them on each grid so that the lesion's total activity is exactly its truth.

Lengths in mm, volumes in mL. This module imports nothing from the rest of ``phantoms``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

NECROSIS_MIN_VOLUME_ML = 20.0
"""Lesions at least this large (mL) get a necrotic core (a modelling choice)."""
LOBULATION_DEGREES = (2, 3, 4)
"""Degrees of the zonal harmonics drawn, one mode each."""
LOBULATION_AMPLITUDE_RANGE = (0.15, 0.25)
"""Relative amplitude aₖ of each mode, drawn uniformly with a random sign."""
MAX_SPHERICITY = 0.94
"""Modes are redrawn until the surface's sphericity is at most this (random axes can cancel each
other into a near-sphere); continuous-surface sphericities of 0.85–0.94 are a modelling choice."""
_MAX_SHAPE_DRAWS = 100
TEXTURE_SD_RANGE = (0.10, 0.25)
"""Log-SD of the multiplicative texture (coefficient of variation ≈ the same for small values)."""
TEXTURE_WAVELENGTH_RANGE_MM = (12.0, 40.0)
"""Wavelengths of the texture's plane waves, mm (smooth at SPECT resolution)."""
TEXTURE_WAVES = 6
"""Plane waves summed in the texture."""
NECROTIC_CORE_FRACTION_RANGE = (0.35, 0.55)
"""Core radius as a fraction of the surface radius in the same direction."""
NECROTIC_UPTAKE_RATIO_RANGE = (0.05, 0.20)
"""Uptake in the necrotic core relative to the viable rim's."""

_QUADRATURE_POLAR = 96
_QUADRATURE_AZIMUTH = 192


@dataclass(frozen=True)
class RadialMode:
    """One lobulation mode: ``amplitude`` × P_degree(u · axis) (``axis`` a unit vector)."""

    axis: tuple[float, float, float]
    degree: int
    amplitude: float


@dataclass(frozen=True)
class TextureWave:
    """One plane wave of the texture: cos(k · (x − centre) + phase), k in rad/mm."""

    wavevector_per_mm: tuple[float, float, float]
    phase_rad: float


def _legendre(degree: int, x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Legendre polynomial P_degree(x), degree 0–4 (closed forms)."""
    if degree == 0:
        return np.ones_like(x)
    if degree == 1:
        return x
    if degree == 2:
        return 0.5 * (3.0 * x**2 - 1.0)
    if degree == 3:
        return 0.5 * (5.0 * x**3 - 3.0 * x)
    if degree == 4:
        return (35.0 * x**4 - 30.0 * x**2 + 3.0) / 8.0
    raise ValueError(f"Legendre degree {degree} not supported (0-4)")


@dataclass(frozen=True)
class IrregularLesion:
    """A lobulated lesion with heterogeneous uptake (module docstring), patient frame mm.

    Attributes:
        centre_mm: centre (x, y, z), mm.
        base_radius_mm: R₀, mm.
        modes: lobulation modes (relative amplitudes; Σ|aₖ| < 1 keeps r > 0).
        texture_waves: plane waves of the log-texture.
        texture_sd: log-SD of the multiplicative texture (0: uniform).
        necrotic_core_fraction: core radius / surface radius (0: no core).
        necrotic_uptake_ratio: core uptake / rim uptake (1: no contrast).
    """

    centre_mm: tuple[float, float, float]
    base_radius_mm: float
    modes: tuple[RadialMode, ...]
    texture_waves: tuple[TextureWave, ...] = ()
    texture_sd: float = 0.0
    necrotic_core_fraction: float = 0.0
    necrotic_uptake_ratio: float = 1.0

    def __post_init__(self) -> None:
        if sum(abs(m.amplitude) for m in self.modes) >= 1.0 or self.base_radius_mm <= 0.0:
            raise ValueError(
                f"lesion radius must stay positive: R₀ {self.base_radius_mm} mm, amplitudes "
                f"{[m.amplitude for m in self.modes]} (Σ|a| must be < 1)"
            )

    @property
    def extent_radius_mm(self) -> float:
        """Largest surface radius over a dense set of directions (+1 %), mm: the radius to keep
        clear of other structures when placing the lesion (tighter than the bound below)."""
        unit, _ = _sphere_quadrature()
        return 1.01 * float(self.surface_radius_mm(unit).max())

    @property
    def bounding_radius_mm(self) -> float:
        """Largest surface radius possible, R₀(1 + Σ|aₖ|), mm (|P_n| ≤ 1)."""
        return self.base_radius_mm * (1.0 + sum(abs(m.amplitude) for m in self.modes))

    def surface_radius_mm(self, unit: NDArray[np.float64]) -> NDArray[np.float64]:
        """Surface radius r(u) in mm for unit vectors ``unit`` (..., 3)."""
        relative = np.ones(unit.shape[:-1])
        for mode in self.modes:
            relative = relative + mode.amplitude * _legendre(
                mode.degree, unit @ np.asarray(mode.axis)
            )
        radius: NDArray[np.float64] = self.base_radius_mm * relative
        return radius

    def _relative_radius(
        self, x_mm: NDArray[np.float64], y_mm: NDArray[np.float64], z_mm: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """|x − c| / r(u) at the points (broadcast): ≤ 1 inside."""
        dx, dy, dz = np.broadcast_arrays(
            x_mm - self.centre_mm[0], y_mm - self.centre_mm[1], z_mm - self.centre_mm[2]
        )
        offset = np.stack([dx, dy, dz], axis=-1)
        distance = np.linalg.norm(offset, axis=-1)
        unit = offset / np.where(distance > 0.0, distance, 1.0)[..., None]
        unit[distance == 0.0] = (0.0, 0.0, 1.0)
        relative: NDArray[np.float64] = distance / self.surface_radius_mm(unit)
        return relative

    def contains(
        self, x_mm: NDArray[np.float64], y_mm: NDArray[np.float64], z_mm: NDArray[np.float64]
    ) -> NDArray[np.bool_]:
        """Whether points (broadcast from the coordinate arrays) lie inside, boundary included."""
        inside: NDArray[np.bool_] = self._relative_radius(x_mm, y_mm, z_mm) <= 1.0
        return inside

    def relative_uptake(
        self, x_mm: NDArray[np.float64], y_mm: NDArray[np.float64], z_mm: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Uptake per unit volume relative to the mean of the texture (dimensionless, > 0).

        Texture exp(σ·√(2/K)·Σ cos(k·(x − c) + φ) − σ²/2) (mean ≈ 1), times the necrotic ratio
        inside the core. Defined everywhere; only the values inside the lesion matter.
        """
        relative_r = self._relative_radius(x_mm, y_mm, z_mm)
        dx, dy, dz = np.broadcast_arrays(
            x_mm - self.centre_mm[0], y_mm - self.centre_mm[1], z_mm - self.centre_mm[2]
        )
        field = np.zeros(relative_r.shape)
        for wave in self.texture_waves:
            kx, ky, kz = wave.wavevector_per_mm
            field = field + np.cos(kx * dx + ky * dy + kz * dz + wave.phase_rad)
        if self.texture_waves:
            field = field * math.sqrt(2.0 / len(self.texture_waves))
        uptake: NDArray[np.float64] = np.exp(
            self.texture_sd * field - 0.5 * self.texture_sd**2
        ) * np.where(relative_r < self.necrotic_core_fraction, self.necrotic_uptake_ratio, 1.0)
        return uptake

    @property
    def volume_ml(self) -> float:
        """Analytic volume (1/3)∮ r(u)³ dΩ in mL (Gauss–Legendre × uniform azimuth quadrature,
        exact for the polynomial surface to rounding)."""
        unit, weights = _sphere_quadrature()
        return float(np.sum(weights * self.surface_radius_mm(unit) ** 3) / 3.0 / 1000.0)

    @property
    def sphericity(self) -> float:
        """Sphericity π^(1/3)(6V)^(2/3)/A of the continuous surface (1 for a sphere).

        A and V from a fine triangulation of the surface (96 × 192 polar × azimuth vertices);
        a sphere gives 1 − 3e-4 at this resolution.
        """
        n_polar, n_azimuth = _QUADRATURE_POLAR, _QUADRATURE_AZIMUTH
        polar = np.linspace(0.0, math.pi, n_polar + 1)
        azimuth = np.linspace(0.0, 2.0 * math.pi, n_azimuth, endpoint=False)
        theta, phi = np.meshgrid(polar, azimuth, indexing="ij")
        unit = np.stack(
            [np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=-1
        )
        vertices = unit * self.surface_radius_mm(unit)[..., None]
        a = vertices[:-1, :]
        b = vertices[1:, :]
        c = np.roll(vertices[1:, :], -1, axis=1)
        d = np.roll(vertices[:-1, :], -1, axis=1)
        area = 0.0
        volume = 0.0
        for p, q, r in ((a, b, c), (a, c, d)):
            cross = np.cross(q - p, r - p)
            area += float(0.5 * np.linalg.norm(cross, axis=-1).sum())
            volume += float(np.einsum("...i,...i", p, np.cross(q, r)).sum() / 6.0)
        return float(math.pi ** (1.0 / 3.0) * (6.0 * abs(volume)) ** (2.0 / 3.0) / area)

    def with_centre(self, centre_mm: tuple[float, float, float]) -> IrregularLesion:
        """The same lesion centred at ``centre_mm``."""
        return dataclasses.replace(self, centre_mm=centre_mm)

    def scaled_to(self, volume_ml: float) -> IrregularLesion:
        """The same shape scaled (R₀ only) to ``volume_ml``; the core and texture follow."""
        factor = (volume_ml / self.volume_ml) ** (1.0 / 3.0)
        return dataclasses.replace(self, base_radius_mm=self.base_radius_mm * factor)

    def to_json(self) -> dict[str, object]:
        """Machine-readable parameters (the ``shape`` of a lesion in ground truth format 2)."""
        return {
            "kind": "irregular",
            "centre_mm": list(self.centre_mm),
            "base_radius_mm": self.base_radius_mm,
            "radial_modes": [
                {"axis": list(m.axis), "degree": m.degree, "amplitude": m.amplitude}
                for m in self.modes
            ],
            "bounding_radius_mm": self.bounding_radius_mm,
            "sphericity": self.sphericity,
            "texture": {
                "log_sd": self.texture_sd,
                "waves": [
                    {"wavevector_per_mm": list(w.wavevector_per_mm), "phase_rad": w.phase_rad}
                    for w in self.texture_waves
                ],
            },
            "necrotic_core_fraction": self.necrotic_core_fraction,
            "necrotic_uptake_ratio": self.necrotic_uptake_ratio,
        }


def _sphere_quadrature() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Unit vectors and solid-angle weights (sum 4π) of a product quadrature on the sphere."""
    mu, mu_weights = np.polynomial.legendre.leggauss(_QUADRATURE_POLAR)
    azimuth = np.linspace(0.0, 2.0 * math.pi, _QUADRATURE_AZIMUTH, endpoint=False)
    cos_theta, phi = np.meshgrid(mu, azimuth, indexing="ij")
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    unit = np.stack([sin_theta * np.cos(phi), sin_theta * np.sin(phi), cos_theta], axis=-1)
    weights = np.broadcast_to(
        mu_weights[:, None] * (2.0 * math.pi / _QUADRATURE_AZIMUTH), cos_theta.shape
    )
    return unit, np.asarray(weights, dtype=np.float64)


def _random_unit(rng: np.random.Generator) -> tuple[float, float, float]:
    vector = rng.normal(size=3)
    vector = vector / np.linalg.norm(vector)
    return (float(vector[0]), float(vector[1]), float(vector[2]))


def draw_irregular_lesion(rng: np.random.Generator, volume_ml: float) -> IrregularLesion:
    """Draw a lobulated, heterogeneous lesion of analytic volume ``volume_ml`` centred at the
    origin (place it with :meth:`IrregularLesion.with_centre`). Ranges: the module constants;
    lobulation modes are redrawn until the sphericity is at most :data:`MAX_SPHERICITY`.
    """
    for _ in range(_MAX_SHAPE_DRAWS):
        modes = tuple(
            RadialMode(
                axis=_random_unit(rng),
                degree=degree,
                amplitude=float(rng.choice([-1.0, 1.0]) * rng.uniform(*LOBULATION_AMPLITUDE_RANGE)),
            )
            for degree in LOBULATION_DEGREES
        )
        if IrregularLesion((0.0, 0.0, 0.0), 1.0, modes).sphericity <= MAX_SPHERICITY:
            break
    else:  # pragma: no cover - ≈ 80 % of draws are accepted
        raise RuntimeError(f"no lobulated shape with sphericity ≤ {MAX_SPHERICITY} drawn")
    waves = []
    for _ in range(TEXTURE_WAVES):
        wavelength_mm = float(rng.uniform(*TEXTURE_WAVELENGTH_RANGE_MM))
        direction = np.asarray(_random_unit(rng)) * (2.0 * math.pi / wavelength_mm)
        waves.append(
            TextureWave(
                wavevector_per_mm=(float(direction[0]), float(direction[1]), float(direction[2])),
                phase_rad=float(rng.uniform(0.0, 2.0 * math.pi)),
            )
        )
    texture_sd = float(rng.uniform(*TEXTURE_SD_RANGE))
    core_fraction = float(rng.uniform(*NECROTIC_CORE_FRACTION_RANGE))
    core_ratio = float(rng.uniform(*NECROTIC_UPTAKE_RATIO_RANGE))
    necrotic = volume_ml >= NECROSIS_MIN_VOLUME_ML
    unit_lesion = IrregularLesion(
        centre_mm=(0.0, 0.0, 0.0),
        base_radius_mm=1.0,
        modes=modes,
        texture_waves=tuple(waves),
        texture_sd=texture_sd,
        necrotic_core_fraction=core_fraction if necrotic else 0.0,
        necrotic_uptake_ratio=core_ratio if necrotic else 1.0,
    )
    return unit_lesion.scaled_to(volume_ml)


def heterogeneous_lesion_activity(
    activity_mbq: NDArray[np.float64],
    labels: NDArray[np.uint8],
    lesions: dict[int, IrregularLesion],
    axes_mm: tuple[NDArray[np.float64], ...],
) -> NDArray[np.float64]:
    """Redistribute each lesion's activity over its voxels by its relative uptake.

    Args:
        activity_mbq: activity per voxel, MBq, indexed [z, y, x], each lesion uniform.
        labels: label map on the same grid (value = the lesion's label-map value).
        lesions: label-map value → lesion.
        axes_mm: voxel-centre coordinates (x per column, y per row, z per slice) of the grid,
            patient frame mm (:meth:`phantoms.grid.VoxelGrid.axis_coordinates_mm` of the grid
            the labels were sampled on).

    Returns:
        a new map in which each lesion's voxels hold total × uptake(centre) / Σ uptake: the
        lesion's total on the grid is unchanged (to rounding, ≤ 1e-12 relative).
    """
    x_mm, y_mm, z_mm = axes_mm
    result = activity_mbq.copy()
    for value, lesion in lesions.items():
        where = np.nonzero(labels == value)
        if where[0].size == 0:
            continue
        total_mbq = float(activity_mbq[where].sum())
        uptake = lesion.relative_uptake(x_mm[where[2]], y_mm[where[1]], z_mm[where[0]])
        result[where] = total_mbq * uptake / float(uptake.sum())
    return result


__all__ = [
    "NECROSIS_MIN_VOLUME_ML",
    "IrregularLesion",
    "RadialMode",
    "TextureWave",
    "draw_irregular_lesion",
    "heterogeneous_lesion_activity",
]
