"""Rigid registration of a time point's CT to the first CT (SimpleITK), with a quality metric.

VOIs are drawn on the first time point's CT; a later time point's SPECT is aligned through its
own CT. The registration is rigid (Euler 3-D: rotation + translation, 6 parameters), driven by
the mean squared HU difference (CT to CT of the same patient on calibrated scanners: one
modality, so the cheaper and sharper mono-modal metric), regular-step gradient descent on a
2-level pyramid (shrink 4 and 2: the SPECT voxels the masks go to are ≥ 2 CT voxels, and the
finest level costs ~4× the rest for no gain there), initialised by aligning the images' centres
of mass. The quality recorded is the final metric value (HU², lower is better), the optimiser's
stop condition and the transform's parameters (how far the time point was moved).
``quant.alignment`` applies it to every time point outside the VOIs' frame of reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


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
    fixed: sitk.Image, moving: sitk.Image, *, sampling_fraction: float = 0.2, seed: int = 1
) -> RigidRegistration:
    """Register ``moving`` (a later CT) onto ``fixed`` (the first CT).

    Args:
        fixed, moving: 3-D images in physical space (HU); converted to float32.
        sampling_fraction: fraction of voxels sampled for the metric (random, seeded: the
            same inputs give the same transform).
        seed: sampler seed.
    """
    fixed_f = sitk.Cast(fixed, sitk.sitkFloat32)
    moving_f = sitk.Cast(moving, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        fixed_f,
        moving_f,
        sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS,
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMeanSquares()
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling_fraction, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=200, relaxationFactor=0.5
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0])
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
