"""Typed dose results and the contract of a dose method.

Method contract:

* in: a :class:`DoseInput` — per VOI: TIA (MBq·h), mass (g), VOI type; arrays of one length;
* out: a :class:`DoseBatch` — mean absorbed dose per VOI in Gy, and a status per VOI (``"ok"``
  or the reason the method does not apply, then NaN). A method never raises for one VOI.
  When the input carries a TIA standard deviation, the batch carries the dose's standard
  deviation (TIA and, where the method's reference data state one, S-value uncertainty).

Voxel method contract (:class:`VoxelDoseMethod`, registry ``VOXEL_DOSE_METHODS``):

* in: a :class:`VoxelDoseInput` — a TIA map in MBq·h per voxel (z, y, x), the voxel spacing in mm
  (z, y, x) and optionally a mass-density map in g/mL on the same grid;
* out: a :class:`VoxelDoseMap` — absorbed dose in Gy per voxel on the *same* grid, or, when the
  input names an ``output_geometry`` (e.g. the CT's), on that grid (the input then also carries
  the TIA map's own ``geometry``; the density map, if any, is on the output grid);
* or, for output grids chosen piece by piece (each VOI's box on the CT: never the whole CT), a
  :class:`PlacedDose` — the dose on the method's own working grid in patient space, computed
  once, which :meth:`PlacedDose.on_grid` averages onto any output grid by exact overlap. Bad input
  (shapes, spacing, negative TIA) raises :class:`concordose.errors.ConcordoseError`; per-VOI
  statistics of the map come from :mod:`concordose.dose.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from concordose.chunk_map import ChunkMap, serial_map
from concordose.dicom.geometry import VolumeGeometry
from concordose.dose.resampling import average_onto_grid
from concordose.errors import ConcordoseError


@dataclass(frozen=True)
class DoseInput:
    """What a VOI-level dose method needs, per VOI."""

    labels: tuple[str, ...]
    tia_mbq_h: npt.NDArray[np.float64]
    mass_g: npt.NDArray[np.float64]
    tia_sd_mbq_h: npt.NDArray[np.float64] | None = None
    """Standard deviation of each TIA (MBq·h), when the kinetics method estimated one."""

    def __post_init__(self) -> None:
        n_voi = len(self.labels)
        shapes = {
            "tia_mbq_h": np.shape(self.tia_mbq_h),
            "mass_g": np.shape(self.mass_g),
        }
        if self.tia_sd_mbq_h is not None:
            shapes["tia_sd_mbq_h"] = np.shape(self.tia_sd_mbq_h)
        wrong = {name: shape for name, shape in shapes.items() if shape != (n_voi,)}
        if wrong:
            raise ConcordoseError(
                f"dose input for {n_voi} VOI label(s) {self.labels} needs arrays of shape "
                f"({n_voi},); found {wrong}"
            )


@dataclass(frozen=True)
class DoseBatch:
    """Mean absorbed dose per VOI by one method."""

    method: str
    method_version: str
    parameters_hash: str
    mean_dose_gy: npt.NDArray[np.float64]
    status: tuple[str, ...]
    mean_dose_sd_gy: npt.NDArray[np.float64] | None = None
    """Standard deviation of each mean dose (Gy), when the input carried TIA uncertainty."""


class DoseMethod(Protocol):
    """A named dose method (see the module contract)."""

    name: str
    version: str

    def settings(self) -> dict[str, object]:
        """The method's parameters, JSON-serialisable."""
        ...

    def compute(self, dose_input: DoseInput) -> DoseBatch:
        """Mean absorbed dose for every VOI."""
        ...


@dataclass(frozen=True)
class VoxelDoseInput:
    """What a voxel-level dose method needs.

    Attributes:
        tia_map_mbq_h: time-integrated activity in each voxel, MBq·h, shape (z, y, x).
        spacing_mm: voxel size along (z, y, x), mm.
        density_g_per_ml: optional mass density per voxel (g/mL, e.g. from CT) on the dose's
            grid: the TIA map's, or ``output_geometry``'s when given; ``None`` means unit
            density (soft tissue ≈ water).
        geometry: optional placement of the TIA map in patient space (origin, spacing,
            direction; its spacing is ``spacing_mm`` reversed, (x, y, z)). Needed only with
            ``output_geometry``.
        output_geometry: optional grid for the dose (e.g. the CT's): any origin and spacing,
            the same direction as ``geometry``. ``None``: the dose is on the TIA map's grid.
    """

    tia_map_mbq_h: npt.NDArray[np.float64]
    spacing_mm: tuple[float, float, float]
    density_g_per_ml: npt.NDArray[np.float64] | None = None
    geometry: VolumeGeometry | None = None
    output_geometry: VolumeGeometry | None = None

    def __post_init__(self) -> None:
        tia = np.asarray(self.tia_map_mbq_h)
        if tia.ndim != 3:
            raise ConcordoseError(f"TIA map must be 3-D (z, y, x); found shape {tia.shape}")
        if len(self.spacing_mm) != 3 or not all(np.isfinite(s) and s > 0 for s in self.spacing_mm):
            raise ConcordoseError(
                f"voxel spacing must be three positive sizes in mm; found {self.spacing_mm}"
            )
        if not np.all(np.isfinite(tia)) or np.any(tia < 0):
            raise ConcordoseError("TIA map must be finite and non-negative (MBq·h per voxel)")
        if self.geometry is not None and (
            self.geometry.shape != tia.shape
            or not np.allclose(self.geometry.spacing_mm[::-1], self.spacing_mm, rtol=1e-6)
        ):
            raise ConcordoseError(
                f"TIA map geometry has shape {self.geometry.shape} and spacing (x, y, z) "
                f"{self.geometry.spacing_mm} but the map has shape {tia.shape} and spacing "
                f"(z, y, x) {self.spacing_mm}"
            )
        if self.output_geometry is not None and self.geometry is None:
            raise ConcordoseError(
                "a dose output grid (output_geometry) needs the TIA map's own geometry too"
            )
        if self.density_g_per_ml is not None:
            density = np.asarray(self.density_g_per_ml)
            if density.shape != self.dose_shape:
                raise ConcordoseError(
                    f"density map has shape {density.shape} but the dose grid "
                    f"{self.dose_shape} ({'output grid' if self.output_geometry else 'TIA map'})"
                )
            if not np.all(np.isfinite(density)) or np.any(density <= 0):
                raise ConcordoseError("density map must be finite and positive (g/mL)")

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel of the TIA map, mL."""
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def dose_shape(self) -> tuple[int, ...]:
        """Shape of the dose map: the output grid's if given, else the TIA map's."""
        if self.output_geometry is not None:
            return self.output_geometry.shape
        return tuple(np.shape(self.tia_map_mbq_h))

    @property
    def dose_geometry(self) -> VolumeGeometry | None:
        """The dose grid in patient space: ``output_geometry``, else ``geometry`` (may be None)."""
        return self.output_geometry if self.output_geometry is not None else self.geometry

    @property
    def dose_spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size (z, y, x) of the dose map, mm."""
        if self.output_geometry is not None:
            x, y, z = self.output_geometry.spacing_mm
            return (z, y, x)
        return self.spacing_mm


@dataclass(frozen=True)
class VoxelDoseMap:
    """Absorbed dose per voxel by one voxel method, on the input's grid.

    Attributes:
        dose_gy: absorbed dose per voxel, Gy, shape (z, y, x).
        spacing_mm: the grid's voxel size (z, y, x), mm (the input's, or the output grid's).
        geometry: the dose grid in patient space when the input placed it (its
            ``output_geometry``, else its ``geometry``); ``None`` otherwise.
    """

    method: str
    method_version: str
    parameters_hash: str
    dose_gy: npt.NDArray[np.float64]
    spacing_mm: tuple[float, float, float]
    geometry: VolumeGeometry | None = None


@dataclass(frozen=True)
class PlacedDose:
    """A voxel method's dose on its own working grid, before it is put on an output grid.

    Attributes:
        dose_gy: unit-density dose per voxel (Gy) on ``geometry``, covering the dose's whole
            support (so the overlap average onto any output grid inside it is exact).
        geometry: that grid in patient space (the TIA map's, or the kernel's widened by its
            half-width).
        divide_by_density: whether the output grid's density divides the dose (LDM and the
            ``_density`` VSV variants) or not (soft-tissue kernels).
    """

    dose_gy: npt.NDArray[np.float64]
    geometry: VolumeGeometry
    divide_by_density: bool

    def on_grid(
        self,
        output_geometry: VolumeGeometry,
        density_g_per_ml: npt.NDArray[np.floating] | None = None,
    ) -> npt.NDArray[np.float64]:
        """The dose (Gy) as the mean over each voxel of ``output_geometry`` (same direction),
        divided by ``density_g_per_ml`` (on that grid) where the method says so.

        Raises:
            ConcordoseError: another direction, or a density map of another shape.
        """
        dose = average_onto_grid(self.dose_gy, self.geometry, output_geometry)
        if self.divide_by_density and density_g_per_ml is not None:
            if density_g_per_ml.shape != dose.shape:
                raise ConcordoseError(
                    f"density map has shape {density_g_per_ml.shape} but the output grid "
                    f"{dose.shape}"
                )
            dose = dose / density_g_per_ml
        return dose


class VoxelDoseMethod(Protocol):
    """A named voxel-level dose method (see the module contract)."""

    name: str
    version: str

    def settings(self) -> dict[str, object]:
        """The method's parameters, JSON-serialisable."""
        ...

    def compute_map(
        self, dose_input: VoxelDoseInput, *, map_chunks: ChunkMap = serial_map
    ) -> VoxelDoseMap:
        """Absorbed dose per voxel, Gy, on the input's grid; a method whose work splits into
        chunks (the VSV convolution's slabs) runs them through ``map_chunks``, with the same
        result whatever the map."""
        ...

    def placed_dose(
        self, dose_input: VoxelDoseInput, *, map_chunks: ChunkMap = serial_map
    ) -> PlacedDose:
        """The dose on the method's working grid; ``dose_input`` must carry its ``geometry``
        (its ``output_geometry`` and density map, if any, are ignored); ``map_chunks`` as
        :meth:`compute_map`."""
        ...
