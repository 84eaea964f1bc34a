"""Rigid registration of a time point's CT to the first CT (SimpleITK), with a quality metric.

VOIs are drawn on the first time point's CT; a later time point's SPECT is aligned through its
own CT. The registration is rigid (Euler 3-D: rotation + translation, 6 parameters), driven by
the mean squared HU difference (CT to CT of the same patient on calibrated scanners: one
modality, so the cheaper and sharper mono-modal metric), initialised by aligning the images'
centres of mass.

It runs on a *registration grid*, not the CT's: both CTs are first averaged into blocks
(``BinShrink``: anti-aliased by construction) of about :data:`REGISTRATION_VOXEL_MM` in plane —
the SPECT voxels the masks go to are 4–5 mm, so finer CT detail does not move the result — then
registered on a 2-level pyramid (shrink 2 then 1) with a fixed number of random samples
(:data:`METRIC_SAMPLES`), so its cost no longer grows with the CT's matrix: a 512×512×142 CT
pair took 111 s at full resolution and takes ~2–3 s here, recovering a known (3, −2, 4) mm shift
within 0.05 mm (``benchmarks/bench_clinical_cycle.py``). Only the transform is kept. The quality
recorded is the final metric value (HU², lower is better), the optimiser's stop condition and
the transform's parameters (how far the time point was moved).
``pipeline.alignment`` applies it to every time point outside the VOIs' frame of reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

REGISTRATION_VOXEL_MM = 4.0
"""In-plane block size the CTs are averaged to before registration, mm (≤ the SPECT voxel)."""
METRIC_SAMPLES = 20_000
"""Random voxels sampled for the metric at each pyramid level."""


def registration_image(image: sitk.Image, voxel_mm: float = REGISTRATION_VOXEL_MM) -> sitk.Image:
    """``image`` as float32 averaged into blocks of about ``voxel_mm`` (each axis whose spacing
    is finer; integer block counts, so no interpolation)."""
    factors = [max(1, round(voxel_mm / spacing)) for spacing in image.GetSpacing()]
    # Shrink first, in the input's pixel type: the full-size float copy is never made.
    shrunk = image if factors == [1, 1, 1] else sitk.BinShrink(image, factors)
    as_float: sitk.Image = sitk.Cast(shrunk, sitk.sitkFloat32)
    return as_float


@dataclass(frozen=True)
class RigidRegistration:
    """A rigid transform mapping fixed-image points to moving-image points.

    Attributes:
        transform: the SimpleITK Euler 3-D transform (fixed → moving physical points, mm).
        translation_mm: its translation (x, y, z), mm.
        rotation_rad: its rotation angles (x, y, z), rad.
        metric_value: final mean squared HU difference (lower is better).
        iterations: optimiser iterations at the finest level.
        stop_condition: the optimiser's reason for stopping.
    """

    transform: sitk.Euler3DTransform
    translation_mm: tuple[float, float, float]
    rotation_rad: tuple[float, float, float]
    metric_value: float
    iterations: int
    stop_condition: str


def register_rigid(
    fixed: sitk.Image, moving: sitk.Image, *, samples: int = METRIC_SAMPLES, seed: int = 1
) -> RigidRegistration:
    """Register ``moving`` (a later CT) onto ``fixed`` (the first CT).

    Args:
        fixed, moving: 3-D images in physical space (HU), any pixel type; registered on
            :func:`registration_image` copies (the inputs are not kept).
        samples: voxels sampled for the metric (random, seeded: the same inputs give the same
            transform).
        seed: sampler seed.
    """
    fixed_f = registration_image(fixed)
    moving_f = registration_image(moving)
    voxels = int(np.prod(fixed_f.GetSize()))
    initial = sitk.CenteredTransformInitializer(
        fixed_f,
        moving_f,
        sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS,
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMeanSquares()
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(min(1.0, samples / voxels), seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=200, relaxationFactor=0.5
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    result = method.Execute(fixed_f, moving_f)
    euler = sitk.Euler3DTransform(sitk.CompositeTransform(result).GetNthTransform(0))
    parameters = np.asarray(euler.GetParameters(), dtype=float)
    return RigidRegistration(
        transform=euler,
        translation_mm=(float(parameters[3]), float(parameters[4]), float(parameters[5])),
        rotation_rad=(float(parameters[0]), float(parameters[1]), float(parameters[2])),
        metric_value=float(method.GetMetricValue()),
        iterations=int(method.GetOptimizerIteration()),
        stop_condition=str(method.GetOptimizerStopConditionDescription()),
    )
