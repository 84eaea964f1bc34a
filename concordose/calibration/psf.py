"""A site's point-spread function from its NEMA IEC phantom scan, and which PVC its spheres favour.

PSF. The effective reconstructed resolution is modelled as one isotropic 3-D Gaussian (the model
the GTM correction uses, :mod:`concordose.quant.gtm`). Its FWHM is fitted so that the forward
model of the phantom — the known geometry placed where the phantom was found (spheres as
fractional voxel occupancies, supersampled; body minus lung insert by voxel centre), each
compartment at its known concentration (the sheet's, decayed to scan start), blurred by the
Gaussian — reproduces the mean concentration measured in each sphere's voxel-centre VOI. One
parameter, least squares over the spheres in units of the sphere concentration
(scipy ``least_squares``); its SD from the Jacobian and the residual variance,
σ² = s²/(JᵀJ), s² = RSS/(n − 1).

Large-object PSF. Under OSEM with resolution recovery stopped at clinical iterations the
resolution is object-dependent: large high-contrast objects are resolved better than the
phantom's 4-10:1 spheres (digital consortium, realistic imaging: the spheres' fit 11.5-19.8 mm,
the chain's response to organs and hot lesions 8-15 mm, ``benchmarks/diagnose_realistic_organs.py``;
a sphere's own FWHM at 26.5 mL falls from 12.3 to 9.2 mm when its contrast goes from 4:1 to 40:1).
:func:`fit_edge_fwhm` therefore also fits the Gaussian across the phantom body's outer surface
(a large object at infinite contrast to air), from the mean of two one-voxel shells inside and
two outside, in units of the background concentration, SD as above; the GTM uses the smaller of
the two fits (``quant.pvc.chosen_psf_fwhm``). A Gaussian core plus a broad tail was tried on the
spheres and the lung insert and does not fit them (it collapses to one Gaussian): the spheres'
excess width is slow convergence, not a scatter tail, so no tail is fitted.

Phantom evidence. Each correction is applied to the spheres as it would be to lesions and its
error against the known sphere concentration taken, leave-one-out: the sphere corrected is left
out of what the correction was fitted on (FWHM for ``gtm``, the RC or RC0 curve for the curve
models), so no sphere is corrected by a fit to itself; ``gtm`` with the large-object FWHM, fitted
on no sphere, needs no leaving out. The circularity that remains, said
plainly: every model is judged on the same kind of object it is calibrated on (hot spheres in a
uniform background of known concentration, VOIs of the true size), which favours the curve
models — the RC0 model is given the phantom's known background, where a patient's comes from a
shell, and RC curves read between neighbouring spheres of the same contrast. The phantom cannot
tell how any model does on organs, on non-spherical lesions or under misregistration; the
patient-level check is the digital consortium (DESIGN.md, PVC section). The curve models are
evaluated by their formula at the left-out volume, also at the smallest and largest sphere
where the pipeline would refuse (NaN) to extrapolate: a leave-one-out of those has no other
reading.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.optimize import least_squares

from concordose.calibration.phantom_geometry import NemaIecPhantom, PhantomSphere
from concordose.calibration.recovery import contrast_recovery, fit_recovery_curve
from concordose.dicom.geometry import VolumeGeometry, voxel_centres_mm
from concordose.errors import OutOfRangeError
from concordose.quant.gtm import (
    RegionWeights,
    body_outline,
    gtm_correct,
    sigma_voxels,
    spread_matrix,
)
from concordose.quant.pvc import NO_CORRECTION
from concordose.quant.voi import Box, CroppedMask, bounding_box

FloatArray = npt.NDArray[np.float64]

SPHERE_SUPERSAMPLING = 6
"""Sub-samples per voxel edge for a sphere's occupancy (6³ = 216 points per voxel)."""
FWHM_SEARCH_MM = (1.0, 60.0)
"""Bounds of the fitted FWHM, mm (SPECT of Lu-177: 7-20 mm in practice)."""
EDGE_SHELLS = 4
"""Shells along the phantom body's surface read by :func:`fit_edge_fwhm` (two inside, two
outside, one voxel width each)."""


@dataclass(frozen=True)
class PsfFit:
    """Effective isotropic Gaussian PSF of a reconstruction.

    Attributes:
        fwhm_mm: fitted FWHM, mm.
        fwhm_sd_mm: its standard deviation from the fit, mm.
        residual_rms: RMS of (model − measured) sphere means over the sphere concentration.
        n_spheres: spheres fitted.
    """

    fwhm_mm: float
    fwhm_sd_mm: float
    residual_rms: float
    n_spheres: int


@dataclass(frozen=True)
class PhantomModel:
    """The NEMA phantom on the image grid, ready for the forward model.

    Attributes:
        spheres: each sphere's fractional occupancy over its box.
        sphere_vois: each sphere's voxel-centre VOI (where the measured mean is taken).
        background: body minus lung insert minus spheres, fractional, over the whole grid.
        lung_insert: the cold lung insert's voxel-centre mask over its box.
        edge_shells: shells along the phantom body's outer surface (:data:`EDGE_SHELLS`), each
            a mask over the whole grid: where the large-object PSF is read
            (:func:`fit_edge_fwhm`).
        volumes_ml: true sphere volumes, mL.
        spacing_mm_zyx: voxel size along (slices, rows, columns), mm.
        shape: grid shape (slices, rows, columns).
    """

    spheres: tuple[RegionWeights, ...]
    sphere_vois: tuple[CroppedMask, ...]
    background: RegionWeights
    lung_insert: CroppedMask
    edge_shells: tuple[CroppedMask, ...]
    volumes_ml: FloatArray
    spacing_mm_zyx: tuple[float, float, float]
    shape: tuple[int, int, int]

    def fill_mbq_per_ml(self, sphere_mbq_per_ml: float, background_mbq_per_ml: float) -> FloatArray:
        """The phantom's known fill on the grid, MBq/mL: every sphere at ``sphere_mbq_per_ml``,
        the background at ``background_mbq_per_ml`` (fractional voxels weighted), the lung insert
        and outside empty."""
        fill = np.zeros(self.shape)
        fill[self.background.box] += background_mbq_per_ml * self.background.weight
        for sphere in self.spheres:
            fill[sphere.box] += sphere_mbq_per_ml * sphere.weight
        return fill


def _crop(mask: npt.NDArray[np.bool_], where: str) -> CroppedMask:
    box = bounding_box(mask)
    if box is None:
        raise OutOfRangeError(f"NEMA phantom: {where} holds no voxel centre on the image grid")
    return CroppedMask(box, mask[box].copy())


def _sphere_occupancy(
    sphere: PhantomSphere, geometry: VolumeGeometry, voi: CroppedMask
) -> RegionWeights:
    """Fraction of each voxel inside ``sphere`` over the VOI's box grown by one voxel."""
    box = tuple(
        slice(max(s.start - 1, 0), min(s.stop + 1, n))
        for s, n in zip(voi.box, geometry.shape, strict=True)
    )
    k, j, i = np.mgrid[box[0], box[1], box[2]].astype(np.float64)
    direction = np.asarray(geometry.direction).reshape(3, 3)
    spacing = np.asarray(geometry.spacing_mm)
    offsets = (np.arange(SPHERE_SUPERSAMPLING) + 0.5) / SPHERE_SUPERSAMPLING - 0.5
    inside = np.zeros(k.shape)
    for dk in offsets:
        for dj in offsets:
            for di in offsets:
                steps = np.stack([i + di, j + dj, k + dk], axis=-1) * spacing
                xyz = np.asarray(geometry.origin_mm) + steps @ direction.T
                inside += sphere.contains(xyz[..., 0], xyz[..., 1], xyz[..., 2])
    return RegionWeights((box[0], box[1], box[2]), inside / SPHERE_SUPERSAMPLING**3)


def nema_phantom_model(geometry: VolumeGeometry, phantom: NemaIecPhantom) -> PhantomModel:
    """The placed phantom on ``geometry`` (see :class:`PhantomModel`).

    Raises:
        OutOfRangeError: a sphere or the lung insert holds no voxel centre.
    """
    x, y, z = voxel_centres_mm(geometry)
    vois = tuple(
        _crop(sphere.contains(x, y, z), f"sphere Ø {sphere.diameter_mm:g} mm")
        for sphere in phantom.spheres
    )
    spheres = tuple(
        _sphere_occupancy(sphere, geometry, voi)
        for sphere, voi in zip(phantom.spheres, vois, strict=True)
    )
    lung = phantom.lung_insert.contains(x, y, z)
    background = (phantom.body.contains(x, y, z) & ~lung).astype(np.float64)
    for sphere in spheres:
        background[sphere.box] -= sphere.weight
    np.clip(background, 0.0, None, out=background)
    spacing = geometry.spacing_mm
    whole = tuple(slice(0, n) for n in geometry.shape)
    box: Box = (whole[0], whole[1], whole[2])
    spacing_zyx = (spacing[2], spacing[1], spacing[0])
    return PhantomModel(
        spheres=spheres,
        sphere_vois=vois,
        background=RegionWeights(box, background),
        lung_insert=_crop(lung, "lung insert"),
        edge_shells=tuple(
            CroppedMask(box, shell)
            for shell in edge_shells(phantom.body.contains(x, y, z), spacing_zyx)
        ),
        volumes_ml=np.array([s.volume_ml for s in phantom.spheres]),
        spacing_mm_zyx=spacing_zyx,
        shape=(geometry.shape[0], geometry.shape[1], geometry.shape[2]),
    )


def edge_shells(
    body: npt.NDArray[np.bool_], spacing_mm_zyx: tuple[float, float, float]
) -> tuple[npt.NDArray[np.bool_], ...]:
    """The :data:`EDGE_SHELLS` shells of voxel centres along ``body``'s surface: inside at
    (0, 1] and (1, 2] voxel widths from the surface, outside at (0, 1] and (1, 2] (widths: the
    largest voxel edge; distances by Euclidean transform in mm)."""
    width_mm = max(spacing_mm_zyx)
    inside = ndimage.distance_transform_edt(body, sampling=spacing_mm_zyx)
    outside = ndimage.distance_transform_edt(~body, sampling=spacing_mm_zyx)
    return tuple(
        (distance > low * width_mm) & (distance <= high * width_mm)
        for distance in (inside, outside)
        for low, high in ((0.0, 1.0), (1.0, 2.0))
    )


def forward_means(
    model: PhantomModel,
    vois: Sequence[CroppedMask],
    fwhm_mm: float,
    sphere_mbq_per_ml: float,
    background_mbq_per_ml: float,
) -> FloatArray:
    """Mean concentration (MBq/mL) the Gaussian of ``fwhm_mm`` gives in each of ``vois`` (the
    spheres' VOIs, or the edge shells), from the phantom's spheres and background."""
    omega = spread_matrix(
        [*model.spheres, model.background],
        vois,
        model.shape,
        sigma_voxels(fwhm_mm, model.spacing_mm_zyx),
    )
    concentrations = np.array([sphere_mbq_per_ml] * len(model.spheres) + [background_mbq_per_ml])
    result: FloatArray = omega @ concentrations
    return result


def fit_psf_fwhm(
    model: PhantomModel,
    measured_mbq_per_ml: FloatArray,
    sphere_mbq_per_ml: float,
    background_mbq_per_ml: float,
    *,
    use: Sequence[int] | None = None,
    start_fwhm_mm: float = 10.0,
) -> PsfFit:
    """Fit the Gaussian FWHM to the spheres' measured means (``use``: sphere indices, all by
    default). See the module docstring for the model and the SD.

    Raises:
        OutOfRangeError: fewer than 2 spheres, or a non-positive sphere concentration.
    """
    chosen = list(range(len(model.spheres))) if use is None else list(use)
    if len(chosen) < 2 or not sphere_mbq_per_ml > 0:
        raise OutOfRangeError(
            f"PSF fit: expected ≥ 2 spheres and a sphere concentration > 0 MBq/mL, found "
            f"{len(chosen)} spheres and {sphere_mbq_per_ml} MBq/mL"
        )
    measured = np.asarray(measured_mbq_per_ml, dtype=np.float64)[chosen]

    def residuals(parameters: FloatArray) -> FloatArray:
        means = forward_means(
            model, model.sphere_vois, float(parameters[0]), sphere_mbq_per_ml, background_mbq_per_ml
        )
        result: FloatArray = (means[chosen] - measured) / sphere_mbq_per_ml
        return result

    return _least_squares_fwhm(residuals, start_fwhm_mm, len(chosen))


def _least_squares_fwhm(
    residuals: Callable[[FloatArray], FloatArray], start_fwhm_mm: float, n: int
) -> PsfFit:
    """One-parameter least squares of the FWHM; SD σ² = s²/(JᵀJ), s² = RSS/(n − 1)."""
    fit = least_squares(
        residuals,
        x0=[float(np.clip(start_fwhm_mm, *FWHM_SEARCH_MM))],
        bounds=([FWHM_SEARCH_MM[0]], [FWHM_SEARCH_MM[1]]),
        diff_step=1e-3,
    )
    residual = np.asarray(fit.fun, dtype=np.float64)
    jacobian = np.asarray(fit.jac, dtype=np.float64)
    dof = max(n - 1, 1)
    information = float(jacobian[:, 0] @ jacobian[:, 0])
    variance = float(residual @ residual) / dof / information if information > 0 else math.inf
    return PsfFit(
        fwhm_mm=float(fit.x[0]),
        fwhm_sd_mm=math.sqrt(variance),
        residual_rms=float(np.sqrt(np.mean(residual**2))),
        n_spheres=n,
    )


def fit_edge_fwhm(
    model: PhantomModel,
    concentration_mbq_per_ml: FloatArray,
    sphere_mbq_per_ml: float,
    background_mbq_per_ml: float,
    *,
    start_fwhm_mm: float = 10.0,
) -> PsfFit:
    """The large-object PSF: the Gaussian FWHM that reproduces the image across the phantom
    body's outer surface (the measured mean of each edge shell, :func:`edge_shells`), in units
    of the background concentration; SD as :func:`fit_psf_fwhm`'s. ``n_spheres`` of the result
    counts the shells. See the module docstring for why this, not the spheres, drives the GTM.

    Raises:
        OutOfRangeError: a non-positive background concentration, or an empty shell.
    """
    image = np.asarray(concentration_mbq_per_ml, dtype=np.float64)
    if not background_mbq_per_ml > 0 or not all(s.mask.any() for s in model.edge_shells):
        raise OutOfRangeError(
            "edge PSF fit: expected a background concentration > 0 MBq/mL and voxels on both "
            f"sides of the phantom's surface, found {background_mbq_per_ml} MBq/mL"
        )
    measured = np.array([float(image[s.box][s.mask].mean()) for s in model.edge_shells])

    def residuals(parameters: FloatArray) -> FloatArray:
        means = forward_means(
            model, model.edge_shells, float(parameters[0]), sphere_mbq_per_ml, background_mbq_per_ml
        )
        result: FloatArray = (means - measured) / background_mbq_per_ml
        return result

    return _least_squares_fwhm(residuals, start_fwhm_mm, len(measured))


@dataclass(frozen=True)
class PartialVolumeEvidence:
    """Leave-one-out errors of each correction on the phantom's spheres.

    Attributes:
        sphere_errors: model name → relative error of each sphere's corrected activity (the
            VOI's corrected mean times its voxelised volume, against the true concentration
            times the sphere's true volume; NaN where the model could not be fitted without it).
        rms_error: model name → RMS of the finite sphere errors.
        chosen: the model with the smallest RMS error (:data:`NO_CORRECTION` included).
        gtm_self_recovery: each sphere's ω_ii in the GTM that corrected it (NaN where it was
            not corrected): with the GTM's errors, the recovery-model residuals
            (``quant.recovery_model``).
    """

    sphere_errors: dict[str, FloatArray]
    rms_error: dict[str, float]
    chosen: str
    gtm_self_recovery: FloatArray = field(default_factory=lambda: np.zeros(0))


def partial_volume_evidence(
    model: PhantomModel,
    concentration_mbq_per_ml: FloatArray,
    measured_mbq_per_ml: FloatArray,
    sphere_mbq_per_ml: float,
    background_mbq_per_ml: float,
    *,
    gtm_model: str,
    rc_model: str,
    rc0_model: str,
    gtm_fwhm_mm: float | None = None,
) -> PartialVolumeEvidence:
    """Compare no correction, the RC and RC0 curves and the GTM on the spheres, leave-one-out.

    The GTM is applied as the pipeline applies it to a patient: regions are the sphere VOIs and
    the lung insert (voxel-centre masks, as a segmentation gives), the background is the body
    outline from the image itself (``quant.gtm.body_outline``), with the FWHM the pipeline uses:
    ``gtm_fwhm_mm`` when given (the large-object FWHM of :func:`fit_edge_fwhm`, fitted on no
    sphere, so no sphere is left out), else the Gaussian fitted on the other spheres. Model
    names are passed in (the names the protocol uses).
    """
    measured = np.asarray(measured_mbq_per_ml, dtype=np.float64)
    n = measured.size
    voxel_ml = float(np.prod(model.spacing_mm_zyx)) / 1000.0
    # Activities, as the pipeline publishes them: a VOI's activity is its mean times its own
    # (voxelised) volume, the truth the sphere's concentration times its true volume.
    to_activity = (
        np.array([float(v.mask.sum()) for v in model.sphere_vois]) * voxel_ml / model.volumes_ml
    )
    ratio = sphere_mbq_per_ml / background_mbq_per_ml
    recovery = measured / sphere_mbq_per_ml
    rc0 = contrast_recovery(recovery, ratio)
    volumes = model.volumes_ml
    body = body_outline(concentration_mbq_per_ml)
    regions = (*model.sphere_vois, model.lung_insert)
    errors = {name: np.full(n, np.nan) for name in (rc_model, rc0_model, gtm_model)}
    self_recovery = np.full(n, np.nan)
    for left_out in range(n):
        others = [i for i in range(n) if i != left_out]
        fwhm_mm = (
            gtm_fwhm_mm
            if gtm_fwhm_mm is not None
            else fit_psf_fwhm(
                model, measured, sphere_mbq_per_ml, background_mbq_per_ml, use=others
            ).fwhm_mm
        )
        corrected = gtm_correct(
            concentration_mbq_per_ml,
            regions,
            body=body,
            spacing_mm_zyx=model.spacing_mm_zyx,
            fwhm_mm=fwhm_mm,
        )
        errors[gtm_model][left_out] = (
            corrected.concentration_mbq_per_ml[left_out] / sphere_mbq_per_ml * to_activity[left_out]
            - 1.0
        )
        if np.isfinite(errors[gtm_model][left_out]):
            self_recovery[left_out] = corrected.self_recovery[left_out]
        if np.all(recovery[others] > 0):
            curve = fit_recovery_curve(volumes[others], recovery[others])
            rc = float(curve.rc(volumes[left_out]))
            errors[rc_model][left_out] = recovery[left_out] / rc * to_activity[left_out] - 1.0
        kept = [i for i in others if rc0[i] > 0]
        if len(kept) >= 3:
            curve0 = fit_recovery_curve(volumes[kept], rc0[kept])
            rc0_left = float(curve0.rc(volumes[left_out]))
            corrected0 = (
                background_mbq_per_ml + (measured[left_out] - background_mbq_per_ml) / rc0_left
            )
            errors[rc0_model][left_out] = (
                corrected0 / sphere_mbq_per_ml * to_activity[left_out] - 1.0
            )
    sphere_errors = {NO_CORRECTION: recovery * to_activity - 1.0, **errors}
    rms = {
        name: float(np.sqrt(np.mean(e[np.isfinite(e)] ** 2))) if np.isfinite(e).any() else np.nan
        for name, e in sphere_errors.items()
    }
    finite = {name: value for name, value in rms.items() if np.isfinite(value)}
    return PartialVolumeEvidence(
        sphere_errors, rms, min(finite, key=finite.__getitem__), gtm_self_recovery=self_recovery
    )
