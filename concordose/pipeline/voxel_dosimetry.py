"""Voxel dosimetry of one assembled cycle: reads its CT and uses the VOIs the pipeline read,
puts every time point's activity on the first SPECT grid (through the quantification's
registrations) and hands arrays to :func:`concordose.dose.voxel_dosimetry.voxel_dose_from_maps`
(the science: voxel fits, dose maps, VOI metrics; see that module's docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from concordose.calibration.protocol import VoxelDosimetryRules
from concordose.calibration.registry import CalibrationRecord
from concordose.chunk_map import ChunkMap, serial_map
from concordose.dicom.ct import read_ct_series
from concordose.dicom.geometry import VolumeGeometry
from concordose.dicom.seg import VoiMask
from concordose.dicom.vois import read_voi_masks
from concordose.dose.voxel_dosimetry import (
    DOSE_GRID_CT,
    CtDoseGrid,
    CycleVoxelDose,
    FloatArray,
    VoxelFitter,
    check_voxel_rules,
    voxel_dose_from_maps,
)
from concordose.errors import StudyIncompleteError
from concordose.kinetics.fitting import ExponentialModel
from concordose.kinetics.voxel import VOXEL_FIT_SETTINGS, VoxelKinetics, fit_voxels
from concordose.pipeline.alignment import TimePointAlignment
from concordose.pipeline.assembly import CycleStudy
from concordose.pipeline.result_cache import ResultCache, array_digest
from concordose.pipeline.time_point_maps import registered_activity_maps
from concordose.quant.density import HuDensityCurve
from concordose.quant.voi import VoiShape, crop_vois, joint_box, resample_vois, voi_shapes


def first_ct_dose_grid(
    cycle: CycleStudy,
    vois: Sequence[VoiMask] | Sequence[VoiShape],
    maps_geometry: VolumeGeometry,
    alignment: TimePointAlignment,
    curve: HuDensityCurve | None = None,
) -> CtDoseGrid | None:
    """The first time point's CT as the dose grid, with the VOI masks on it; ``None`` when the
    first time point has no CT.

    The first CT shares the first SPECT's frame of reference (where the activity maps are), so
    the VOIs reach it through the same transform as the first SPECT grid
    (``alignment.mask_transform()``: identity when the first time point is in the VOIs' frame).

    Raises:
        UnreadableDicomError, StudyIncompleteError: from the readers.
    """
    first = cycle.time_points[0]
    if not first.ct_files:
        return None
    image = read_ct_series(first.ct_files)
    geometry = VolumeGeometry.from_sitk(image)  # the whole CT; cropped to the VOIs below
    if not np.allclose(geometry.direction, maps_geometry.direction, atol=1e-6):
        raise StudyIncompleteError(
            f"the first CT's direction {geometry.direction} differs from the first SPECT's "
            f"{maps_geometry.direction}; the dose cannot be averaged onto it (use output_grid: "
            "spect)"
        )
    # Doses are only read inside the VOIs: the CT is kept over their joint bounding box (int16
    # HU), each VOI's mask over its own box.
    crops = crop_vois(vois, geometry, alignment.mask_transform())
    box = joint_box(crops)
    hu = np.array(sitk.GetArrayViewFromImage(image)[box], copy=True)
    del image
    return CtDoseGrid(
        maps_geometry=maps_geometry,
        geometry=geometry.cropped(box),
        hu=hu,
        voi_masks=tuple(crop.within(box) for crop in crops),
        curve=curve or HuDensityCurve(),
    )


def cycle_voxel_dosimetry(
    cycle: CycleStudy,
    calibration: CalibrationRecord,
    alignments: Sequence[TimePointAlignment],
    *,
    vois: Sequence[VoiMask] | None = None,
    rules: VoxelDosimetryRules | None = None,
    cache: ResultCache | None = None,
    map_chunks: ChunkMap = serial_map,
) -> CycleVoxelDose:
    """Voxel dosimetry of ``cycle`` (the module's steps 1–4).

    Args:
        cycle: the assembled cycle (time points ordered).
        calibration: the site's calibration record the VOI quantification used.
        alignments: per time point, the registrations the VOI quantification computed
            (``CycleTimeActivity.alignments``); reused, never recomputed.
        vois: the cycle's VOIs as read once by the pipeline (read from the SEG when omitted).
        rules: the site protocol's ``voxel_dosimetry`` (default :class:`VoxelDosimetryRules`).
        cache: keeps the voxel fits for a re-run on the same maps (:func:`cached_voxel_fitter`).
        map_chunks: runs the voxel fits' and the convolutions' chunks (default: here; a Dask
            cluster's map spreads them, with bit-identical results).

    Raises:
        ConfigurationError: bad ``rules``; ValueError: not one alignment per time point;
        UnreadableDicomError, StudyIncompleteError: from the readers.
    """
    rules = rules or VoxelDosimetryRules()
    check_voxel_rules(rules, len(cycle.time_points))
    shapes = voi_shapes(
        read_voi_masks(cycle.segmentation, cycle.segmentation_ct_files) if vois is None else vois
    )
    maps = registered_activity_maps(cycle, calibration, alignments)
    geometry = maps.geometry
    ct_grid = (
        first_ct_dose_grid(cycle, shapes, geometry, alignments[0])
        if rules.output_grid == DOSE_GRID_CT
        else None
    )
    on_maps = resample_vois(shapes, geometry, alignments[0].mask_transform())
    sx, sy, sz = geometry.spacing_mm
    return voxel_dose_from_maps(
        maps.time_h,
        maps.activity_mbq,
        (float(sz), float(sy), float(sx)),
        on_maps.masks,
        labels=on_maps.labels,
        voi_types=on_maps.voi_types,
        rules=rules,
        calibration_relative_sd=calibration.calibration_factor_relative_uncertainty,
        conservation_factor=maps.conservation_factor,
        ct_grid=ct_grid,
        fit=(
            partial(fit_voxels, map_chunks=map_chunks)
            if cache is None
            else cached_voxel_fitter(cache, map_chunks)
        ),
        map_chunks=map_chunks,
    )


VOXEL_FIT_CACHE_KIND = "voxel-fit"
VOXEL_FIT_CACHE_VERSION = "1"
"""Bumped when the voxel fitter changes, so older cached fits are not reused."""


def cached_voxel_fitter(cache: ResultCache, map_chunks: ChunkMap = serial_map) -> VoxelFitter:
    """:func:`fit_voxels` (its chunks through ``map_chunks``) behind ``cache``, keyed by a
    digest of the time points, the maps, the body mask, the model and the fit settings (not
    the map: the fits do not depend on it)."""

    def fit(
        time_h: FloatArray,
        maps: FloatArray,
        body: npt.NDArray[np.bool_],
        model: ExponentialModel,
    ) -> VoxelKinetics:
        key = cache.key(
            VOXEL_FIT_CACHE_VERSION,
            model.name,
            repr(VOXEL_FIT_SETTINGS),
            array_digest(time_h, maps, body),
        )
        return cache.get_or_compute(
            VOXEL_FIT_CACHE_KIND,
            key,
            lambda: fit_voxels(time_h, maps, body, model, map_chunks=map_chunks),
        )

    return fit
