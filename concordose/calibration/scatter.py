"""The photopeak window's scatter-to-primary ratio, fitted on a site's NEMA IEC phantom.

The phantom's lung insert holds no activity; what the site's image shows in its core is the warm
background's spill-in through the reconstruction — which depends on how much scatter the site's
OSEM carries as an additive estimate (:mod:`concordose.reconstruction.scatter`: at clinical
iterations a broad additive term slows the filling of cold regions). The platform's model of
the site's reconstruction (:class:`concordose.reconstruction.ReconstructionModel`, μ from the
phantom scan's own CT) predicts the core's level for any scatter-to-primary ratio k; the fitted
k is the one that makes it the measured level.

Regions (voxel centres on the scan's grid, the phantom placed where it was found):

* lung core: lung insert voxels at least :data:`LUNG_CORE_MARGIN_MM` from its wall;
* reference: background voxels at least :data:`REFERENCE_MARGIN_MM` from every sphere, the lung
  insert and the body's surface.

Their ratio cancels the calibration factor and the dose calibrator's bias.

Fit: the model's ratio R(k) at k = 0 and k = :data:`PROBE_SCATTER_TO_PRIMARY`, then secant
steps (R is nearly affine in k: milan, noise-free, 0.233 / 0.245 / 0.257 / 0.268 at
k = 0.1 / 0.2 / 0.3 / 0.4; one OSEM of the phantom per evaluation, at most
:data:`MAX_EVALUATIONS`) until the model's ratio is within :data:`RATIO_TOLERANCE` of the
measured one. A measured ratio at or below the scatter-free model's gives k = 0 (no scatter
effect detectable). Standard uncertainty: the measured ratio's, from the spread of the lung
core's per-slice means (slices closer than the resolution are correlated, so it is a lower
bound), divided by dR/dk. The kernel's width and the correction's residual are the model's
assumptions, not fitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from concordose.calibration.psf import PhantomModel
from concordose.errors import OutOfRangeError
from concordose.reconstruction.protocol import ReconstructionModel, SiteReconstruction
from concordose.reconstruction.scatter import ScatterCorrection

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

LUNG_CORE_MARGIN_MM = 12.0
"""Lung-core voxels lie at least this far from the insert's wall (its radius: 25.5 mm), mm."""
REFERENCE_MARGIN_MM = 20.0
"""Reference background voxels lie at least this far from spheres, lung insert and surface, mm."""
PROBE_SCATTER_TO_PRIMARY = 0.3
"""k of the second evaluation (of the order of a Lu-177 photopeak window's)."""
RATIO_TOLERANCE = 1e-3
"""Stop when the model's lung-to-reference ratio is this close to the measured one."""
MAX_EVALUATIONS = 4
"""OSEM reconstructions of the phantom at most (two to start, then secant steps)."""
MAX_SCATTER_TO_PRIMARY = 2.0
"""k above this is not a photopeak window's scatter but a model that does not describe the
scan (Lu-177's 208 keV window holds well under twice as much scatter as primary)."""


@dataclass(frozen=True)
class ScatterFit:
    """k fitted on the NEMA phantom and what it was fitted to.

    Attributes:
        correction: the fitted scatter model (k; the model's kernel and residual).
        scatter_to_primary_sd: standard uncertainty of k (module docstring: a lower bound).
        lung_ratio_measured: lung core over reference background, the site's image.
        lung_ratio_without: the same ratio, the model of scatter-free data.
        lung_ratio_fitted: the same ratio, the model with the fitted k.
        evaluations: OSEM reconstructions of the phantom made.
    """

    correction: ScatterCorrection
    scatter_to_primary_sd: float
    lung_ratio_measured: float
    lung_ratio_without: float
    lung_ratio_fitted: float
    evaluations: int


def lung_core_and_reference(model: PhantomModel) -> tuple[BoolArray, BoolArray]:
    """The lung core and the reference background over the whole grid (module docstring).

    Raises:
        OutOfRangeError: either holds no voxel (a grid too coarse or a phantom cut off).
    """
    spacing = model.spacing_mm_zyx
    lung = np.zeros(model.shape, dtype=bool)
    lung[model.lung_insert.box] = model.lung_insert.mask
    core = ndimage.distance_transform_edt(lung, sampling=spacing) >= LUNG_CORE_MARGIN_MM
    background = np.zeros(model.shape, dtype=bool)
    background[model.background.box] = model.background.weight >= 1.0
    others = lung.copy()
    for sphere in model.spheres:
        others[sphere.box] |= sphere.weight > 0.0
    from_others = ndimage.distance_transform_edt(~others, sampling=spacing)
    from_surface = ndimage.distance_transform_edt(background | others, sampling=spacing)
    reference = (
        background & (from_others >= REFERENCE_MARGIN_MM) & (from_surface >= REFERENCE_MARGIN_MM)
    )
    for name, region in (("lung core", core), ("reference background", reference)):
        if not region.any():
            raise OutOfRangeError(
                f"NEMA phantom: the {name} holds no voxel on this grid (voxel {spacing} mm); "
                "the scatter-to-primary ratio cannot be fitted"
            )
    return core, reference


def _ratio(image: FloatArray, core: BoolArray, reference: BoolArray) -> float:
    return float(image[core].mean() / image[reference].mean())


def fit_scatter_to_primary(
    concentration: FloatArray,
    phantom: PhantomModel,
    *,
    sphere_mbq_per_ml: float,
    background_mbq_per_ml: float,
    mu_per_mm: FloatArray,
    reconstruction: SiteReconstruction,
) -> ScatterFit:
    """k that makes the site's reconstruction model reproduce the lung core of its NEMA scan.

    Args:
        concentration: the site's NEMA image, MBq/mL ([z, y, x]; any common scale would do).
        phantom: the phantom placed on that grid
            (:func:`concordose.calibration.psf.nema_phantom_model`).
        sphere_mbq_per_ml, background_mbq_per_ml: the fill's concentrations at scan start.
        mu_per_mm: μ at 208 keV on the grid, from the scan's CT, /mm.
        reconstruction: the site's acquisition and OSEM (its protocol's ``reconstruction:``).

    Raises:
        OutOfRangeError: no lung core or reference on the grid; k above
            :data:`MAX_SCATTER_TO_PRIMARY`, or a model whose ratio does not grow with k.
        ValueError: anisotropic voxels (the projector needs isotropic ones).
    """
    core, reference = lung_core_and_reference(phantom)
    truth = phantom.fill_mbq_per_ml(sphere_mbq_per_ml, background_mbq_per_ml)
    reference_mean = float(concentration[reference].mean())
    measured = float(concentration[core].mean()) / reference_mean
    site_model = ReconstructionModel(reconstruction, mu_per_mm, phantom.spacing_mm_zyx)
    evaluations = 0

    def model_ratio(scatter_to_primary: float) -> float:
        nonlocal evaluations
        evaluations += 1
        scatter = ScatterCorrection(scatter_to_primary) if scatter_to_primary > 0.0 else None
        return _ratio(site_model.with_scatter(scatter).image(truth), core, reference)

    points = [
        (0.0, model_ratio(0.0)),
        (PROBE_SCATTER_TO_PRIMARY, model_ratio(PROBE_SCATTER_TO_PRIMARY)),
    ]
    without = points[0][1]
    slope = (points[1][1] - without) / PROBE_SCATTER_TO_PRIMARY
    if not slope > 0.0:
        raise OutOfRangeError(
            "NEMA phantom: the lung core's level does not grow with the scatter in the site's "
            f"reconstruction model (slope {slope:.3g} per unit k): k cannot be fitted"
        )
    while measured > without and evaluations < MAX_EVALUATIONS:
        (k0, r0), (k1, r1) = points[-2], points[-1]
        if abs(r1 - measured) <= RATIO_TOLERANCE:
            break
        k = max(k1 + (measured - r1) * (k1 - k0) / (r1 - r0), 0.0)
        if k > MAX_SCATTER_TO_PRIMARY:
            raise OutOfRangeError(
                f"NEMA phantom: scatter-to-primary ratio {k:.3g}, expected at most "
                f"{MAX_SCATTER_TO_PRIMARY} (lung core / background: measured {measured:.4f}, "
                f"the site's reconstruction model of scatter-free data {without:.4f}): the "
                "model does not describe this scan"
            )
        points.append((k, model_ratio(k)))
    k, fitted = min(points, key=lambda point: abs(point[1] - measured))
    slice_means = np.array(
        [
            concentration[z][core[z]].mean() / reference_mean
            for z in range(core.shape[0])
            if core[z].any()
        ]
    )
    ratio_sd = (
        float(slice_means.std(ddof=1) / math.sqrt(slice_means.size))
        if slice_means.size > 1
        else 0.0
    )
    return ScatterFit(
        correction=ScatterCorrection(k),
        scatter_to_primary_sd=ratio_sd / slope,
        lung_ratio_measured=measured,
        lung_ratio_without=without,
        lung_ratio_fitted=fitted,
        evaluations=evaluations,
    )


__all__ = [
    "LUNG_CORE_MARGIN_MM",
    "REFERENCE_MARGIN_MM",
    "ScatterFit",
    "fit_scatter_to_primary",
    "lung_core_and_reference",
]
