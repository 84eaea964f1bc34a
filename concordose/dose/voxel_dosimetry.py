"""Voxel dosimetry of one treatment cycle: registered activity maps → voxel fits → voxel dose
methods → per-VOI dose metrics, with the dose's uncertainty.

Steps (:func:`concordose.pipeline.voxel_dosimetry.cycle_voxel_dosimetry` reads the files, then
:func:`voxel_dose_from_maps`):

1. every time point's activity map on the first time point's SPECT grid
   (:func:`concordose.pipeline.time_point_maps.registered_activity_maps`), through the
   registrations the VOI quantification already computed (``CycleTimeActivity.alignments``):
   nothing is registered twice;
2. the voxel kinetics model (``voxel_dosimetry.model`` of the site protocol) fitted to every
   body voxel (:func:`concordose.kinetics.voxel.fit_voxels`); the body is the voxels whose peak
   activity exceeds ``body_threshold_fraction`` of the peak map's 99.9th percentile, the rest is
   TIA 0 (air and noise); a voxel whose fit failed also counts as TIA 0 and the fraction of such
   voxels is reported per VOI (a VOI above :data:`MAX_FAILED_FRACTION` gets no dose);
3. each voxel dose method (``VOXEL_DOSE_METHODS``) on the TIA map, the dose on the output grid
   of ``voxel_dosimetry.output_grid``:

   * ``ct`` (default): the first time point's CT grid (same frame as the first SPECT, where the
     maps are; ``VoxelDoseInput.output_geometry``: the dose is computed on the kernel's grid and
     averaged onto the CT voxels by exact overlap). The density map is the CT's HU → g/mL
     (:class:`concordose.quant.density.HuDensityCurve`, water-equivalent line) on the CT grid:
     ``ldm`` deposits in the voxel's CT mass, the ``vsv_*_density`` variants scale by ρ_water/ρ,
     plain ``vsv_*`` ignore it (soft-tissue kernels);
   * ``spect``: the first SPECT grid, unit density (the ``_density`` variants are refused);

   a cycle whose first time point has no CT falls back to ``spect`` (``dose_grid`` says which);
4. per-VOI metrics (:func:`concordose.dose.metrics.voi_dose_metrics`, mass-weighted with the CT
   density on the CT grid) with each VOI's own mask on the dose grid (shape-based interpolation
   of the SEG through the first time point's alignment, :mod:`concordose.quant.voi`), so
   overlapping VOIs (a lesion inside the liver) each keep all their voxels. On the CT grid each
   method's dose is computed once on its own grid (:class:`~concordose.dose.models.PlacedDose`)
   and averaged onto one VOI's bounding box at a time: memory follows the largest VOI, never
   the CT. VOI masses: CT density × voxel volume
   on the CT grid (unit density on the SPECT grid). The VOI TIA sums, fit-failure fractions and
   TIA SDs stay on the SPECT grid, where the voxels were fitted.

Scale-out: the voxel fits (blocks of voxel curves) and the VSV convolutions (slabs of the TIA
map with their halo) run through the ``map_chunks`` callable
(:class:`~concordose.chunk_map.ChunkMap`; default in this process); a Dask cluster's map
spreads them over its workers. Their chunk plans do not depend on the map, so the results are
bit-identical whichever runs them.

Uncertainty (published as ``dose_sd_gy``): the voxel fits give each voxel's TIA standard
deviation (gᵀVg, Gear et al. 2018, EJNMMI 45:2456). Neighbouring voxels' errors are strongly
correlated (the camera's resolution spans several voxels), so we take them as *fully
correlated*: every method is linear in the TIA map, hence the dose's SD map is the method
applied to the TIA SD map, and a VOI's mean-dose SD the mean of that map over the VOI (an upper
bound of the fit part; independent voxels would give ≈ 1/√n of it). The calibration factor's
relative SD (one factor for all time points and voxels) is added in quadrature. Kernel (S-value)
uncertainty is not stated by the packaged VSV sources and is not included. A VOI with a fitted
voxel whose TIA SD is not estimable gets an unknown (NaN) SD, never a smaller one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from concordose.calibration.protocol import VoxelDosimetryRules
from concordose.chunk_map import ChunkMap, serial_map
from concordose.dicom.geometry import VolumeGeometry
from concordose.dicom.seg import VoiType
from concordose.dose.metrics import VoiDoseMetrics, voi_dose_metrics
from concordose.dose.models import DoseBatch, VoxelDoseInput
from concordose.dose.registry import VOXEL_DOSE_METHODS
from concordose.dose.whole_body_tumour import WholeBodyTumourDose, whole_body_tumour_dose
from concordose.errors import ConfigurationError
from concordose.kinetics.fitting import ALL_MODELS, ExponentialModel
from concordose.kinetics.models import STATUS_OK, KineticsBatch, settings_hash
from concordose.kinetics.voxel import VOXEL_FIT_SETTINGS, VoxelKinetics, fit_voxels
from concordose.quant.density import HuDensityCurve, voi_masses_g
from concordose.quant.voi import EMPTY_BOX, CroppedMask, bounding_box

FloatArray = npt.NDArray[np.float64]
VoxelFitter = Callable[
    [FloatArray, FloatArray, npt.NDArray[np.bool_], ExponentialModel], VoxelKinetics
]
"""What fits the voxels: :func:`concordose.kinetics.voxel.fit_voxels` or a caching wrapper of it
(same arguments: time_h, activity maps, body mask, model)."""

VOXEL_KINETICS_MODELS: dict[str, ExponentialModel] = {model.name: model for model in ALL_MODELS}
"""Voxel kinetics models by name (``voxel_dosimetry.model`` in the protocol)."""
VOXEL_KINETICS_PREFIX = "voxel_"
"""Published kinetics method of voxel rows: ``voxel_<model>``, never a VOI method's name."""
VOXEL_KINETICS_VERSION = "1"
MAX_FAILED_FRACTION = 0.05
"""A VOI with more than this fraction of voxels whose fit failed (TIA taken as 0) gets no dose."""
DOSE_GRID_CT = "ct"
DOSE_GRID_SPECT = "spect"


@dataclass(frozen=True)
class CtDoseGrid:
    """The CT grid the voxel doses are reported on (``output_grid: ct``).

    Only the part of the CT the VOIs occupy is held, and each VOI only over its own box: the
    doses are averaged onto one VOI's box at a time (:class:`~concordose.dose.models.
    PlacedDose`), so memory follows the largest VOI, not the CT.

    Attributes:
        maps_geometry: the activity maps' grid (the first SPECT's) in patient space.
        geometry: the CT's grid over the VOIs' joint bounding box, in the same frame of
            reference and direction.
        hu: the CT in Hounsfield units, (slices, rows, columns) of ``geometry`` (int16 or
            float32: HU are integers on every scanner).
        voi_masks: per VOI, its mask over its own box of ``geometry``.
        curve: HU → mass density calibration (default: water-equivalent line).
    """

    maps_geometry: VolumeGeometry
    geometry: VolumeGeometry
    hu: npt.NDArray[np.number[Any]]
    voi_masks: tuple[CroppedMask, ...]
    curve: HuDensityCurve = field(default_factory=HuDensityCurve)

    def __post_init__(self) -> None:
        if self.hu.shape != self.geometry.shape:
            raise ConfigurationError(
                f"CT of shape {self.hu.shape} does not match its grid {self.geometry.shape}"
            )
        for index, crop in enumerate(self.voi_masks):
            box_shape = tuple(
                len(range(*s.indices(n))) for s, n in zip(crop.box, self.hu.shape, strict=True)
            )
            if crop.mask.shape != box_shape or any(
                s.stop > n for s, n in zip(crop.box, self.hu.shape, strict=True)
            ):
                raise ConfigurationError(
                    f"VOI mask {index} of shape {crop.mask.shape} at {crop.box} does not fit "
                    f"its box on the CT grid {self.hu.shape}"
                )

    @classmethod
    def from_masks(
        cls,
        maps_geometry: VolumeGeometry,
        geometry: VolumeGeometry,
        hu: npt.NDArray[np.number[Any]],
        masks: npt.NDArray[np.bool_],
        curve: HuDensityCurve | None = None,
    ) -> CtDoseGrid:
        """From full masks (n_voi, slices, rows, columns) on ``geometry``, each cut to its box."""
        crops = []
        for mask in masks:
            box = bounding_box(mask)
            crops.append(
                CroppedMask(box, np.ascontiguousarray(mask[box]))
                if box is not None
                else CroppedMask(EMPTY_BOX, np.zeros((0, 0, 0), dtype=bool))
            )
        return cls(maps_geometry, geometry, hu, tuple(crops), curve or HuDensityCurve())

    def density_g_per_ml(self, box: tuple[slice, slice, slice]) -> FloatArray:
        """The CT's mass density per voxel over ``box`` of ``geometry``, g/mL."""
        return self.curve.density(np.asarray(self.hu[box], dtype=np.float64))

    def voi_mass_g(self, index: int) -> float:
        """VOI ``index``'s mass: CT density × voxel volume over its mask, g."""
        crop = self.voi_masks[index]
        mass_g, _ = voi_masses_g(
            self.hu[crop.box], crop.mask[None], self.geometry.voxel_volume_ml, self.curve
        )
        return float(mass_g[0])


def voxel_kinetics_names() -> list[str]:
    """Every publishable voxel kinetics method name (``voxel_<model>``), sorted."""
    return sorted(VOXEL_KINETICS_PREFIX + name for name in VOXEL_KINETICS_MODELS)


@dataclass(frozen=True)
class VoxelVoiDose:
    """One VOI's dose by one voxel method.

    Attributes:
        metrics: the VOI's dose statistics (None when ``status`` is not ok).
        dose_sd_gy: standard deviation of the VOI mean dose, Gy (NaN when unknown).
        status: ``"ok"`` or why there is no dose.
    """

    metrics: VoiDoseMetrics | None
    dose_sd_gy: float
    status: str


@dataclass(frozen=True)
class VoxelMethodDose:
    """Every VOI's dose by one voxel dose method (VOIs in the cycle's order)."""

    method: str
    method_version: str
    parameters_hash: str
    vois: tuple[VoxelVoiDose, ...]

    @property
    def mean_dose_gy(self) -> FloatArray:
        """VOI mean doses, Gy (NaN without a dose)."""
        return np.array(
            [v.metrics.mean_dose_gy if v.metrics is not None else np.nan for v in self.vois]
        )

    @property
    def mean_dose_sd_gy(self) -> FloatArray:
        """Their standard deviations, Gy."""
        return np.array([v.dose_sd_gy for v in self.vois])


LESION_SLICE_MARGIN_MM = 20.0
"""Context kept around a lesion on its dose-map slice (display only), mm."""


@dataclass(frozen=True)
class LesionDoseSlice:
    """An axial slice of a voxel dose map through a lesion, for display (the cycle report).

    Attributes:
        voi_label: the lesion.
        dose_method: the voxel dose method of the map (the rules' first).
        dose_gy: (rows, columns) absorbed dose on the dose grid, Gy, over the lesion's box on its
            slice with the most lesion voxels, widened by :data:`LESION_SLICE_MARGIN_MM`.
        mask: (rows, columns) the lesion on that slice.
        pixel_mm: (row, column) pixel size, mm.
    """

    voi_label: str
    dose_method: str
    dose_gy: npt.NDArray[np.float32]
    mask: npt.NDArray[np.bool_]
    pixel_mm: tuple[float, float]


def lesion_slice_box(
    crop: CroppedMask, grid_shape: tuple[int, ...], pixel_mm: tuple[float, float]
) -> tuple[tuple[slice, slice, slice], npt.NDArray[np.bool_]]:
    """The one-slice box of the grid through ``crop``'s fullest slice, widened by
    :data:`LESION_SLICE_MARGIN_MM` (clipped to the grid), and the lesion's mask on it."""
    fullest = int(np.argmax(crop.mask.reshape(crop.mask.shape[0], -1).sum(axis=1)))
    z = crop.box[0].start + fullest
    margins = [int(np.ceil(LESION_SLICE_MARGIN_MM / size)) for size in pixel_mm]
    rows, cols = (
        slice(
            max(0, crop.box[axis].start - margin),
            min(grid_shape[axis], crop.box[axis].stop + margin),
        )
        for axis, margin in zip((1, 2), margins, strict=True)
    )
    mask = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=bool)
    mask[
        crop.box[1].start - rows.start : crop.box[1].stop - rows.start,
        crop.box[2].start - cols.start : crop.box[2].stop - cols.start,
    ] = crop.mask[fullest]
    return (slice(z, z + 1), rows, cols), mask


@dataclass(frozen=True)
class CycleVoxelDose:
    """Voxel dosimetry of one cycle.

    Attributes:
        kinetics_method: ``voxel_<model>``.
        kinetics_parameters_hash: hash of the voxel kinetics settings (model, fit, body mask).
        labels, voi_types: per VOI, the cycle's order.
        mass_g: VOI mass on the dose grid, g: CT density on the CT grid, unit density on the
            SPECT grid.
        tia_mbq_h: sum of the voxel TIAs in each VOI, MBq·h.
        tia_sd_mbq_h: its SD (voxel fit SDs summed, i.e. fully correlated, ⊕ calibration), MBq·h.
        failed_fraction: per VOI, the fraction of its voxels whose fit failed (TIA 0 assumed).
        status: per VOI, ``"ok"`` or why it has no dose.
        doses: one entry per voxel dose method.
        fit_status_counts: voxels per fit status (body voxels only).
        spacing_mm: the SPECT grid's voxel size (z, y, x), mm.
        conservation_factor: per time point, the activity-conserving factor of the resampling.
        dose_grid: ``"ct"`` or ``"spect"``: the grid of the dose maps, VOI masks and masses.
        lesion_slices: a slice of the first method's dose map through each lesion with a dose
            (display only: the maps themselves are not kept).
        whole_body_tumour: per voxel dose method (``doses``' order), the whole-body tumour
            dose of its map on the SPECT grid (:mod:`concordose.dose.whole_body_tumour`).
    """

    kinetics_method: str
    kinetics_parameters_hash: str
    labels: tuple[str, ...]
    voi_types: tuple[VoiType, ...]
    mass_g: FloatArray
    tia_mbq_h: FloatArray
    tia_sd_mbq_h: FloatArray
    failed_fraction: FloatArray
    status: tuple[str, ...]
    doses: tuple[VoxelMethodDose, ...]
    fit_status_counts: dict[str, int]
    spacing_mm: tuple[float, float, float]
    conservation_factor: FloatArray
    dose_grid: str = DOSE_GRID_SPECT
    lesion_slices: tuple[LesionDoseSlice, ...] = ()
    whole_body_tumour: tuple[WholeBodyTumourDose, ...] = ()

    def as_voi_batches(self) -> list[tuple[KineticsBatch, DoseBatch]]:
        """Each method's VOI mean doses as (kinetics, dose) batches, the shape the VOI-level
        summaries (``patient_summary`` builder) take."""
        kinetics = KineticsBatch(
            method=self.kinetics_method,
            method_version=VOXEL_KINETICS_VERSION,
            parameters_hash=self.kinetics_parameters_hash,
            tia_mbq_h=self.tia_mbq_h,
            fit_parameters={},
            status=self.status,
            tia_sd_mbq_h=self.tia_sd_mbq_h,
        )
        return [
            (
                kinetics,
                DoseBatch(
                    method=dose.method,
                    method_version=dose.method_version,
                    parameters_hash=dose.parameters_hash,
                    mean_dose_gy=dose.mean_dose_gy,
                    status=tuple(v.status for v in dose.vois),
                    mean_dose_sd_gy=dose.mean_dose_sd_gy,
                ),
            )
            for dose in self.doses
        ]


def check_voxel_rules(
    rules: VoxelDosimetryRules, n_time_points: int, *, on_ct: bool | None = None
) -> ExponentialModel:
    """The model of ``rules``, after checking every name against the registries.

    ``on_ct``: whether the dose is on the CT grid (default: ``rules.output_grid == "ct"``).

    Raises:
        ConfigurationError: unknown model or method, a density method without the CT grid, or
            too few time points.
    """
    on_ct = rules.output_grid == DOSE_GRID_CT if on_ct is None else on_ct
    where = "site protocol voxel_dosimetry"
    model = VOXEL_KINETICS_MODELS.get(rules.model)
    if model is None:
        raise ConfigurationError(
            f"{where}.model is {rules.model!r}; expected one of {sorted(VOXEL_KINETICS_MODELS)}"
        )
    if model.n_parameters >= n_time_points:
        raise ConfigurationError(
            f"{where}.model {rules.model!r} has {model.n_parameters} parameters but the cycle "
            f"has {n_time_points} time points; choose a model with fewer parameters than points"
        )
    if not rules.methods:
        raise ConfigurationError(f"{where}.methods is empty; name at least one voxel method")
    for name in rules.methods:
        VOXEL_DOSE_METHODS.get(name)  # raises ConfigurationError naming the known ones
        if name.endswith("_density") and not on_ct:
            raise ConfigurationError(
                f"{where}.methods names {name!r}, which needs the CT density map, but the dose "
                f"is on the SPECT grid (output_grid {rules.output_grid!r}, or no CT at the first "
                "time point): use output_grid: ct with a CT, or the method without '_density'"
            )
    return model


def voxel_kinetics_settings(rules: VoxelDosimetryRules) -> dict[str, object]:
    """The voxel kinetics settings hashed into the rows' provenance."""
    return {
        "model": rules.model,
        "maps": "registered_activity_maps: linear resampling onto the first SPECT grid, "
        "activity-conserving rescale",
        "fit_settings": repr(VOXEL_FIT_SETTINGS),
        "body_threshold_fraction": rules.body_threshold_fraction,
        "failed_voxels": f"TIA 0; VOI refused above {MAX_FAILED_FRACTION} failed",
        "output_grid": rules.output_grid,
        "density": f"CT {HuDensityCurve()!r} on the CT grid; unit on the SPECT grid",
    }


def voxel_dose_from_maps(
    time_h: FloatArray,
    activity_maps_mbq: FloatArray,
    spacing_mm: tuple[float, float, float],
    voi_masks: npt.NDArray[np.bool_],
    *,
    labels: Sequence[str],
    voi_types: Sequence[VoiType],
    rules: VoxelDosimetryRules | None = None,
    calibration_relative_sd: float | None = None,
    conservation_factor: FloatArray | None = None,
    ct_grid: CtDoseGrid | None = None,
    fit: VoxelFitter = fit_voxels,
    map_chunks: ChunkMap = serial_map,
) -> CycleVoxelDose:
    """Voxel dosimetry from activity maps already on one grid (steps 2–4 of the module).

    Args:
        time_h: (t,) hours after injection.
        activity_maps_mbq: (t, z, y, x) activity per voxel at acquisition time, MBq.
        spacing_mm: voxel size (z, y, x), mm.
        voi_masks: (n_voi, z, y, x) boolean VOI masks on the same grid.
        labels, voi_types: per VOI.
        rules: model, methods and body mask (default :class:`VoxelDosimetryRules`).
        calibration_relative_sd: the calibration factor's relative SD, added in quadrature.
        conservation_factor: per time point, from the resampling (kept for the record).
        ct_grid: the CT grid to put the doses, VOI metrics and masses on; ``None``: the maps'
            grid, unit density (``rules.output_grid`` only decides whether the caller builds
            one).
        fit: the voxel fitter (default :func:`fit_voxels`; the pipeline passes a caching one
            that runs its chunks through the same map).
        map_chunks: runs the dose methods' chunks (the VSV convolutions' slabs); default here.

    Raises:
        ConfigurationError: unknown or unusable model or method names.
        ConcordoseError: shapes that do not agree.
    """
    rules = rules or VoxelDosimetryRules()
    maps = np.asarray(activity_maps_mbq, dtype=np.float64)
    model = check_voxel_rules(rules, len(time_h), on_ct=ct_grid is not None)
    if voi_masks.shape[1:] != maps.shape[1:] or voi_masks.shape[0] != len(labels):
        raise ConfigurationError(
            f"VOI masks have shape {voi_masks.shape}; expected ({len(labels)}, *{maps.shape[1:]})"
            " to match the labels and the activity maps"
        )
    if ct_grid is not None and len(ct_grid.voi_masks) != len(labels):
        raise ConfigurationError(
            f"the CT grid holds {len(ct_grid.voi_masks)} VOI masks; expected one per label "
            f"({len(labels)})"
        )
    # A time point missing in a voxel (NaN, e.g. outside a later field of view) leaves the voxel
    # in the body by its other points, so its fit fails visibly instead of the voxel vanishing.
    finite_maps = np.where(np.isfinite(maps), maps, -np.inf)
    peak = finite_maps.max(axis=0)
    measured = peak[np.isfinite(peak)]
    if measured.size == 0:
        raise ConfigurationError("every activity map is empty (no finite voxel at any time point)")
    body = peak > rules.body_threshold_fraction * float(np.percentile(measured, 99.9))
    fitted = fit(np.asarray(time_h, dtype=np.float64), maps, body, model)
    failed = body & ~np.isfinite(fitted.tia_mbq_h)
    tia_map = np.nan_to_num(fitted.tia_mbq_h, nan=0.0)
    tia_sd_map = np.where(np.isfinite(fitted.tia_sd_mbq_h), fitted.tia_sd_mbq_h, 0.0)
    cf = calibration_relative_sd or 0.0

    n_voxels = voi_masks.reshape(len(labels), -1).sum(axis=1)
    if ct_grid is None:
        dose_voxel_ml = float(np.prod(spacing_mm)) / 1000.0
        spect_crops = tuple(
            CroppedMask(box, np.ascontiguousarray(mask[box]))
            if (box := bounding_box(mask)) is not None
            else CroppedMask(EMPTY_BOX, np.zeros((0, 0, 0), dtype=bool))
            for mask in voi_masks
        )
        dose_crops = spect_crops
        mass_g = n_voxels * dose_voxel_ml  # unit density, as the voxel methods without density
        grid_name = "SPECT"
    else:
        dose_crops = ct_grid.voi_masks
        dose_voxel_ml = ct_grid.geometry.voxel_volume_ml
        mass_g = np.array([ct_grid.voi_mass_g(index) for index in range(len(labels))])
        grid_name = "CT"
    n_dose_voxels = np.array([int(crop.mask.sum()) for crop in dose_crops])
    tia = np.array([tia_map[mask].sum() for mask in voi_masks])
    # a fitted voxel whose TIA SD is not estimable leaves its VOI's uncertainty unknown (NaN),
    # never silently smaller
    sd_unknown = np.isfinite(fitted.tia_mbq_h) & ~np.isfinite(fitted.tia_sd_mbq_h)
    voi_sd_unknown = np.array([bool(sd_unknown[mask].any()) for mask in voi_masks])
    tia_fit_sd = np.array([tia_sd_map[mask].sum() for mask in voi_masks])
    tia_fit_sd[voi_sd_unknown] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        failed_fraction = np.array([failed[mask].sum() for mask in voi_masks]) / n_voxels
    status = tuple(
        "no voxel of the VOI on the SPECT grid"
        if n == 0
        else (
            f"no voxel of the VOI on the {grid_name} grid"
            if n_dose == 0
            else (
                f"{f:.1%} of the VOI's voxel fits failed (more than {MAX_FAILED_FRACTION:.0%})"
                if f > MAX_FAILED_FRACTION
                else STATUS_OK
            )
        )
        for n, n_dose, f in zip(n_voxels, n_dose_voxels, failed_fraction, strict=True)
    )

    def voi_dose(
        index: int, dose_gy: FloatArray, sd_gy: FloatArray, density: FloatArray | None
    ) -> VoxelVoiDose:
        """One VOI's metrics from its dose, dose SD and density over its own box."""
        voi_mask = dose_crops[index].mask
        (metrics,) = voi_dose_metrics(
            dose_gy, voi_mask.astype(np.int8), {1: labels[index]}, dose_voxel_ml, density
        )
        weights = None if density is None else density[voi_mask]
        fit_sd = (
            float("nan")
            if voi_sd_unknown[index]
            else float(np.average(sd_gy[voi_mask], weights=weights))
        )
        return VoxelVoiDose(metrics, float(np.hypot(fit_sd, metrics.mean_dose_gy * cf)), STATUS_OK)

    doses: list[VoxelMethodDose] = []
    lesion_slices: list[LesionDoseSlice] = []
    whole_body: list[WholeBodyTumourDose] = []
    organs = [i for i, t in enumerate(voi_types) if t == VoiType.ORGAN]
    lesions = [i for i, t in enumerate(voi_types) if t == VoiType.LESION]

    def whole_body_of(spect_dose_gy: FloatArray) -> WholeBodyTumourDose:
        """The whole-body tumour dose of a map on the SPECT grid (issue 20, item 4)."""
        return whole_body_tumour_dose(
            spect_dose_gy,
            spacing_mm,
            [voi_masks[i] for i in organs],
            organ_labels=[labels[i] for i in organs],
            lesion_masks=[voi_masks[i] for i in lesions],
            threshold_gy=rules.whole_body_tumour_threshold_gy,
            margin_mm=rules.whole_body_tumour_margin_mm,
        )

    for name in rules.methods:
        method = VOXEL_DOSE_METHODS.get(name)
        vois = []
        if ct_grid is None:
            dose_map = method.compute_map(
                VoxelDoseInput(tia_map, spacing_mm), map_chunks=map_chunks
            ).dose_gy
            sd_map = method.compute_map(
                VoxelDoseInput(tia_sd_map, spacing_mm), map_chunks=map_chunks
            ).dose_gy
            whole_body.append(whole_body_of(dose_map))
            for index, crop in enumerate(dose_crops):
                if status[index] != STATUS_OK:
                    vois.append(VoxelVoiDose(None, float("nan"), status[index]))
                    continue
                vois.append(voi_dose(index, dose_map[crop.box], sd_map[crop.box], None))
                if not doses and voi_types[index] == VoiType.LESION:
                    pixel = (float(spacing_mm[1]), float(spacing_mm[2]))
                    box, mask = lesion_slice_box(crop, dose_map.shape, pixel)
                    lesion_slices.append(
                        LesionDoseSlice(
                            labels[index],
                            method.name,
                            dose_map[box][0].astype(np.float32),
                            mask,
                            pixel,
                        )
                    )
        else:
            # The dose on the method's own grid once, then onto one VOI's box of the CT at a
            # time: memory follows the largest VOI, never the CT.
            placed = method.placed_dose(
                VoxelDoseInput(tia_map, spacing_mm, geometry=ct_grid.maps_geometry),
                map_chunks=map_chunks,
            )
            placed_sd = method.placed_dose(
                VoxelDoseInput(tia_sd_map, spacing_mm, geometry=ct_grid.maps_geometry),
                map_chunks=map_chunks,
            )
            # unit density on the SPECT grid, as the SPECT-grid branch
            whole_body.append(whole_body_of(placed.on_grid(ct_grid.maps_geometry)))
            for index, crop in enumerate(dose_crops):
                if status[index] != STATUS_OK:
                    vois.append(VoxelVoiDose(None, float("nan"), status[index]))
                    continue
                box_geometry = ct_grid.geometry.cropped(crop.box)
                density = ct_grid.density_g_per_ml(crop.box)
                vois.append(
                    voi_dose(
                        index,
                        placed.on_grid(box_geometry, density),
                        placed_sd.on_grid(box_geometry, density),
                        density,
                    )
                )
                if not doses and voi_types[index] == VoiType.LESION:
                    sx, sy, _ = ct_grid.geometry.spacing_mm
                    pixel = (float(sy), float(sx))
                    box, mask = lesion_slice_box(crop, ct_grid.geometry.shape, pixel)
                    on_slice = placed.on_grid(
                        ct_grid.geometry.cropped(box), ct_grid.density_g_per_ml(box)
                    )
                    lesion_slices.append(
                        LesionDoseSlice(
                            labels[index], method.name, on_slice[0].astype(np.float32), mask, pixel
                        )
                    )
            del placed, placed_sd
        doses.append(
            VoxelMethodDose(
                method=method.name,
                method_version=method.version,
                parameters_hash=settings_hash(method.settings()),
                vois=tuple(vois),
            )
        )
    return CycleVoxelDose(
        kinetics_method=VOXEL_KINETICS_PREFIX + model.name,
        kinetics_parameters_hash=settings_hash(voxel_kinetics_settings(rules)),
        labels=tuple(labels),
        voi_types=tuple(voi_types),
        mass_g=np.asarray(mass_g, dtype=np.float64),
        tia_mbq_h=tia,
        tia_sd_mbq_h=np.hypot(tia_fit_sd, tia * cf),
        failed_fraction=failed_fraction,
        status=status,
        doses=tuple(doses),
        fit_status_counts=fitted.status_counts,
        spacing_mm=spacing_mm,
        conservation_factor=(
            np.ones(len(time_h)) if conservation_factor is None else conservation_factor
        ),
        dose_grid=DOSE_GRID_SPECT if ct_grid is None else DOSE_GRID_CT,
        lesion_slices=tuple(lesion_slices),
        whole_body_tumour=tuple(whole_body),
    )
