"""The recovery-model term of a partial-volume-corrected activity's SD, from the site's phantom.

What it is. The GTM (:mod:`concordose.quant.gtm`) corrects a VOI by the recovery its model
predicts: ω_ii, the fraction of the VOI's true concentration its measured mean keeps under the
fitted isotropic Gaussian PSF. The real camera is not that Gaussian (a depth-dependent
collimator response with scatter tails, reconstructed by OSEM whose resolution depends on the
object), so the recovery an object actually has differs from ω_ii by some δ. A corrected
concentration T = (t − spill-in)/ω_ii is then off by δ/ω_ii, relative: the model's error in
recovery, amplified by the correction factor 1/ω_ii.

The evidence. At calibration the site's NEMA spheres are corrected as the pipeline corrects
lesions (``calibration.psf.partial_volume_evidence``: leave-one-out, the GTM's own FWHM, the
spheres' voxel-centre VOIs): each sphere's relative error e_i against its known activity and its
ω_ii give its residual in recovery units, r_i = e_i · ω_ii (measured − modelled recovery, in
units of the sphere's true concentration, voxelisation of the VOI included). The record stores
(V_i, r_i) per sphere (:class:`RecoveryModelError`).

The term. At volume V the residual spread s(V) is the root-mean-square of the r_i weighted by a
Gaussian kernel in ln V whose width is the spheres' median step in ln V (one sphere size: the
NEMA spheres step by ≈ 2.2× in volume), so each s(V) is read mostly from the spheres of about
that size, continuously in V (bias and scatter both count: a systematic under-recovery the
model does not predict is error all the same). Below the smallest sphere s stays the smallest
spheres' (an extrapolation, stated: no evidence there; 1/ω_ii still grows the term). Above the
largest sphere s falls as (V_max/V)^(1/3): the model's error lives in a boundary shell about
one FWHM thick, whose share of an object's volume falls as surface over volume, ∝ V^(-1/3).
The relative SD of a VOI's corrected activity is s(V)/ω_ii. Zero when the model reproduces
every sphere exactly; fully correlated over a cycle's time points (same VOI, same PSF).

What it does not hold: delineation (the spheres' VOIs are the true spheres; sites' own margins
and thresholds are not in it), respiratory motion (the phantom does not breathe), objects
unlike hot spheres in a uniform warm background (irregular, necrotic, in a non-uniform host).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from concordose.errors import OutOfRangeError

FloatArray = npt.NDArray[np.float64]

__all__ = ["RecoveryModelError", "recovery_residuals"]

LARGE_OBJECT_EXPONENT = 1.0 / 3.0
"""Above the largest sphere s(V) ∝ V^(-1/3): a boundary shell's share of a sphere's volume
(surface × thickness / volume ∝ V^(-1/3))."""


def recovery_residuals(relative_errors: FloatArray, self_recovery: FloatArray) -> FloatArray:
    """Each sphere's residual in recovery units, r_i = e_i · ω_ii (see the module docstring).

    Args:
        relative_errors: each sphere's corrected activity / true activity − 1 (NaN: not
            corrected).
        self_recovery: each sphere's ω_ii in the GTM that corrected it.

    Returns:
        r_i per sphere, NaN where either input is NaN.
    """
    errors = np.asarray(relative_errors, dtype=np.float64)
    omega = np.asarray(self_recovery, dtype=np.float64)
    result: FloatArray = errors * omega
    return result


@dataclass(frozen=True)
class RecoveryModelError:
    """The site's recovery-model residuals per NEMA sphere and the spread they give.

    Attributes:
        volumes_ml: each sphere's true volume, mL (> 0).
        residuals: each sphere's residual r_i in recovery units (:func:`recovery_residuals`).
    """

    volumes_ml: tuple[float, ...]
    residuals: tuple[float, ...]

    def __post_init__(self) -> None:
        if (
            len(self.volumes_ml) != len(self.residuals)
            or len(self.volumes_ml) < 2
            or not all(v > 0 and math.isfinite(v) for v in self.volumes_ml)
            or not all(math.isfinite(r) for r in self.residuals)
        ):
            raise OutOfRangeError(
                "recovery-model residuals: expected ≥ 2 spheres, each with a volume > 0 mL and a "
                f"finite residual, found volumes {list(self.volumes_ml)} and residuals "
                f"{list(self.residuals)}"
            )

    @classmethod
    def from_phantom(
        cls,
        volumes_ml: Sequence[float],
        relative_errors: FloatArray,
        self_recovery: FloatArray,
    ) -> RecoveryModelError | None:
        """From the spheres' GTM errors and ω_ii; None when fewer than 2 spheres have both."""
        residuals = recovery_residuals(relative_errors, self_recovery)
        kept = [i for i, r in enumerate(residuals) if np.isfinite(r)]
        if len(kept) < 2:
            return None
        return cls(
            tuple(float(volumes_ml[i]) for i in kept), tuple(float(residuals[i]) for i in kept)
        )

    def residual_sd(self, volume_ml: float | FloatArray) -> FloatArray:
        """s(V): the kernel-weighted RMS residual at each of ``volume_ml`` (recovery units;
        1-D, one value per volume)."""
        log_v = np.log(np.asarray(self.volumes_ml, dtype=np.float64))
        squares = np.asarray(self.residuals, dtype=np.float64) ** 2
        order = np.sort(log_v)
        steps = np.diff(order)
        steps = steps[steps > 0]
        width = float(np.median(steps)) if steps.size else 1.0
        volume = np.atleast_1d(np.asarray(volume_ml, dtype=np.float64))
        at = np.log(np.clip(volume, float(np.exp(order[0])), float(np.exp(order[-1]))))
        weights = np.exp(-0.5 * ((at[:, None] - log_v[None, :]) / width) ** 2)
        spread = np.sqrt((weights @ squares) / weights.sum(axis=1))
        largest = float(np.exp(order[-1]))
        falloff = np.where(
            volume > largest, (largest / np.maximum(volume, largest)) ** LARGE_OBJECT_EXPONENT, 1.0
        )
        result: FloatArray = spread * falloff
        return result

    def relative_sd(
        self, volume_ml: float | FloatArray, self_recovery: float | FloatArray
    ) -> FloatArray:
        """The relative SD of a corrected activity, s(V)/ω_ii; NaN where ω_ii is not > 0."""
        omega = np.asarray(self_recovery, dtype=np.float64)
        spread = self.residual_sd(volume_ml).reshape(np.shape(volume_ml))
        with np.errstate(invalid="ignore", divide="ignore"):
            result: FloatArray = np.where(omega > 0, spread / omega, np.nan)
        return result
