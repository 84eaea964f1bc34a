"""Partial-volume correction of lesion activities with a site's recovery-coefficient curve.

A lesion of volume V imaged at the SPECT resolution shows only a fraction RC(V) of its activity
inside its VOI; the site measures RC on phantom spheres (e.g. the NEMA IEC body phantom's six
spheres, 0.5–26.5 mL) and the corrected activity is A / RC(V). LUMEN, LUTADOSE and Hebert et al.
all applied such phantom-derived recovery coefficients (seed review, Table 1).

RC between measured volumes is interpolated linearly in log(volume) (RC curves are smooth in
log V); outside the measured range nothing is extrapolated: the VOI gets NaN and a status
saying so. Organs are not corrected (their volumes lie far above the range where RC departs
from 1). The RC curve's own uncertainty enters the activity's uncertainty through
``kinetics.uncertainty.activity_sd_mbq(recovery_relative_sd=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from concordose.errors import ConfigurationError

FloatArray = npt.NDArray[np.float64]
STATUS_OK = "ok"
NOT_CORRECTED = "not corrected (organ)"


@dataclass(frozen=True)
class RecoveryCurve:
    """Measured recovery coefficients of one camera set-up.

    Attributes:
        volume_ml: sphere volumes (mL), strictly increasing.
        recovery: RC at each volume, in (0, 1.2] (slightly above 1 happens with Gibbs
            overshoot of resolution-modelled reconstructions).
        source: where the curve comes from (phantom scan id), for provenance.
    """

    volume_ml: tuple[float, ...]
    recovery: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        volumes = np.asarray(self.volume_ml, dtype=np.float64)
        rc = np.asarray(self.recovery, dtype=np.float64)
        if volumes.size < 2 or volumes.shape != rc.shape:
            raise ConfigurationError(
                f"RC curve {self.source!r}: needs ≥ 2 (volume, RC) pairs of equal length, "
                f"got {volumes.size} volumes and {rc.size} coefficients"
            )
        if np.any(volumes <= 0) or np.any(np.diff(volumes) <= 0):
            raise ConfigurationError(
                f"RC curve {self.source!r}: volumes must be > 0 mL and increasing, got {volumes}"
            )
        if np.any(rc <= 0) or np.any(rc > 1.2):
            raise ConfigurationError(
                f"RC curve {self.source!r}: coefficients must lie in (0, 1.2], got {rc}"
            )

    def at(self, volume_ml: FloatArray) -> FloatArray:
        """RC at each volume (log-volume interpolation); NaN outside the measured range."""
        volumes = np.asarray(volume_ml, dtype=np.float64)
        log_measured = np.log(np.asarray(self.volume_ml))
        inside = (volumes >= self.volume_ml[0]) & (volumes <= self.volume_ml[-1])
        safe = np.where(inside, volumes, self.volume_ml[0])
        values = np.interp(np.log(safe), log_measured, np.asarray(self.recovery))
        result: FloatArray = np.where(inside, values, np.nan)
        return result


@dataclass(frozen=True)
class PartialVolumeCorrection:
    """Corrected activities (n_voi, n_time_points), the RC used per VOI and a status per VOI."""

    activity_mbq: FloatArray
    recovery: FloatArray
    status: tuple[str, ...]


def correct_partial_volume(
    activity_mbq: FloatArray,
    volume_ml: FloatArray,
    voi_types: Sequence[str],
    curve: RecoveryCurve,
) -> PartialVolumeCorrection:
    """Divide each lesion's activities by RC(volume); organs unchanged (RC = 1).

    Args:
        activity_mbq: (n_voi, n_time_points) activities as measured in the VOIs.
        volume_ml: (n_voi,) VOI volumes (the anatomical volume, e.g. from CT).
        voi_types: ``"organ"`` or ``"lesion"`` per VOI.
        curve: the site's recovery curve for the reconstruction used.
    """
    activity = np.atleast_2d(np.asarray(activity_mbq, dtype=np.float64))
    volumes = np.asarray(volume_ml, dtype=np.float64)
    lesion = np.array([str(kind) == "lesion" for kind in voi_types])
    rc = np.where(lesion, curve.at(volumes), 1.0)
    status = []
    low, high = curve.volume_ml[0], curve.volume_ml[-1]
    for index, is_lesion in enumerate(lesion):
        if not is_lesion:
            status.append(NOT_CORRECTED)
        elif np.isfinite(rc[index]):
            status.append(STATUS_OK)
        else:
            status.append(
                f"lesion volume {volumes[index]:.3g} mL outside the RC curve's "
                f"{low:g}–{high:g} mL ({curve.source or 'site curve'}); not extrapolated"
            )
    return PartialVolumeCorrection(
        activity_mbq=activity / rc[:, None],
        recovery=rc,
        status=tuple(status),
    )
