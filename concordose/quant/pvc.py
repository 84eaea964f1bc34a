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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from concordose.calibration.records import CalibrationRecord
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


NEMA_IEC_SPHERE_DIAMETERS_MM = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
"""Inner diameters of the NEMA IEC body phantom's spheres (NEMA NU 2-2018 §7.2; IEC 61675-1)."""
NEMA_IEC_VOLUME_RANGE_ML = (
    math.pi / 6.0 * NEMA_IEC_SPHERE_DIAMETERS_MM[0] ** 3 / 1000.0,
    math.pi / 6.0 * NEMA_IEC_SPHERE_DIAMETERS_MM[-1] ** 3 / 1000.0,
)
"""Volumes spanned by those spheres: 0.52–26.5 mL, where a site's fitted RC curve is measured."""


@dataclass(frozen=True)
class FittedRecoveryCurve:
    """A site's fitted recovery curve RC(V) = 1 / (1 + (a/V)^b), V in mL.

    Valid only over the sphere volumes it was fitted to (``volume_ml``: smallest and largest);
    outside them :meth:`at` gives NaN, as :class:`RecoveryCurve` does, rather than extrapolate.

    Attributes:
        a_ml: volume at which RC = 0.5, mL.
        b: steepness (dimensionless).
        volume_ml: (smallest, largest) measured sphere volume, mL.
        source: where the curve comes from (calibration record id), for provenance.
    """

    a_ml: float
    b: float
    volume_ml: tuple[float, float] = NEMA_IEC_VOLUME_RANGE_ML
    source: str = ""

    def __post_init__(self) -> None:
        if not (self.a_ml > 0 and self.b > 0):
            raise ConfigurationError(
                f"RC curve {self.source!r}: a and b must be > 0, got a = {self.a_ml} mL, "
                f"b = {self.b}"
            )
        if not 0 < self.volume_ml[0] < self.volume_ml[1]:
            raise ConfigurationError(
                f"RC curve {self.source!r}: volume range must be increasing and > 0 mL, got "
                f"{self.volume_ml}"
            )

    def at(self, volume_ml: FloatArray) -> FloatArray:
        """RC at each volume; NaN outside the measured range."""
        volumes = np.asarray(volume_ml, dtype=np.float64)
        inside = (volumes >= self.volume_ml[0]) & (volumes <= self.volume_ml[1])
        safe = np.where(inside, volumes, self.volume_ml[0])
        result: FloatArray = np.where(inside, 1.0 / (1.0 + (self.a_ml / safe) ** self.b), np.nan)
        return result


def recovery_curve_from_record(
    record: CalibrationRecord,
    volume_range_ml: tuple[float, float] = NEMA_IEC_VOLUME_RANGE_ML,
) -> FittedRecoveryCurve:
    """The RC curve a calibration record carries (fitted on the NEMA IEC spheres by default).

    Raises:
        ConfigurationError: the record has no recovery curve (no NEMA phantom calibration).
    """
    if record.recovery_a_ml is None or record.recovery_b is None:
        raise ConfigurationError(
            f"calibration record {record.record_id!r} carries no recovery curve "
            "(recovery_a_ml, recovery_b); partial-volume correction needs the site's NEMA IEC "
            "phantom calibration (concordose calibrate)"
        )
    return FittedRecoveryCurve(
        a_ml=record.recovery_a_ml,
        b=record.recovery_b,
        volume_ml=volume_range_ml,
        source=record.record_id,
    )


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
    curve: RecoveryCurve | FittedRecoveryCurve,
) -> PartialVolumeCorrection:
    """Divide each lesion's activities by RC(volume); organs unchanged (RC = 1).

    Args:
        activity_mbq: (n_voi, n_time_points) activities as measured in the VOIs.
        volume_ml: (n_voi,) VOI volumes (the anatomical volume, e.g. from CT).
        voi_types: ``"organ"`` or ``"lesion"`` per VOI.
        curve: the site's recovery curve for the reconstruction used (measured points or
            the fitted curve of its calibration record).

    Lesions outside the curve's measured volume range get RC = NaN, NaN activities and a
    status saying why (nothing is extrapolated).
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
