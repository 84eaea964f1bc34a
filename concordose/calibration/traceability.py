"""Dose-calibrator traceability: the site calibrator's bias from a traceable measurement.

Every activity on a calibration sheet (and every injected activity a site records) is a reading
of the site's dose calibrator, which reads true activity × (1 + bias). A phantom calibration
factor derived from such readings is off by 1/(1 + bias): the calibrator's bias passes straight
into the CF and from there, inverted, into every image-derived activity. This module is the one
home of that bias: how it is measured, its uncertainty, and the correction of a reading.

Two measurements establish it (IAEA Technical Reports Series No. 454, *Quality Assurance for
Radioactivity Measurement in Nuclear Medicine*, 2006: the accuracy test of a radionuclide
calibrator against a source of certified activity decay-corrected to the time of measurement,
repeated readings averaged; calibrator calibration by comparison with a secondary standard):

* ``reference_source``: a source with a certified activity at a reference date-time (with the
  certificate's uncertainty and coverage factor), read on the site's calibrator at stated times
  (one or more readings). For each reading the certified activity is decayed to the reading's
  time with the source nuclide's half-life (``concordose.nuclides``, ICRP-107);
  ratio_i = reading_i / certified(t_i).
* ``secondary_standard``: a cross-calibration: the same sample read on the site's calibrator and
  on a secondary-standard calibrator (whose own calibration uncertainty is stated). The standard's
  reading is decayed to the time of the site's reading; ratio_i = site_i / standard(t_i).

Then bias = mean(ratio) − 1 and its standard uncertainty (k = 1) is
u(bias) = mean(ratio) · sqrt(u_ref² + u_rep²), with u_ref the certificate's (or standard's)
relative standard uncertainty (expanded uncertainty / coverage factor) and u_rep the repeatability
of the mean reading: the readings' relative sample SD / sqrt(n) (type A, n ≥ 2), never below the
stated ``reading_relative_repeatability`` / sqrt(n) when that is given (required for one reading).
A true activity is then reading / (1 + bias) (:meth:`DoseCalibratorBias.true_activity_mbq`).

Assumptions: the bias is a constant factor over the activities of interest (calibrator linearity
is a separate QA test); it holds at the calibrator setting the measurement used, so the block must
state the setting the phantom's activities were read at; a long-lived surrogate source is usable
only when its certificate states its activity equivalent for that setting (the bias measured is
then for that setting). A measurement that does not add up is refused: a reading more than
:data:`MAX_ABS_BIAS` off the reference (a unit or date mistake; a calibrator that far off is out of
tolerance and must be serviced, not corrected — our bound, not a cited one), or repeated readings
that spread by more than :data:`MAX_READING_SPREAD`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from concordose.errors import ConcordoseError
from concordose.nuclides import Nuclide, nuclide

MAX_ABS_BIAS = 0.10
"""Largest |reading / reference − 1| accepted for one reading (relative)."""
MAX_READING_SPREAD = 0.05
"""Largest relative sample SD of repeated readings of one sample accepted."""

PositiveMBq = Annotated[float, Field(gt=0)]
RelativeUncertainty = Annotated[float, Field(gt=0, lt=0.2)]
CoverageFactor = Annotated[float, Field(ge=1, le=3)]


class _Block(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _known_nuclide(name: str, where: str) -> Nuclide:
    try:
        return nuclide(name)
    except ConcordoseError as exc:
        raise ValueError(
            f"{where}: expected a radionuclide name such as 'Lu-177', found {name!r}"
        ) from exc


def _decayed_mbq(activity_mbq: float, since: datetime, until: datetime, of: Nuclide) -> float:
    """``activity_mbq`` at ``since`` decayed (or grown back, when earlier) to ``until``."""
    hours = (until - since).total_seconds() / 3600.0
    return activity_mbq * math.exp(-of.decay_constant_per_h * hours)


class CalibratorReading(_Block):
    """One reading of the reference source on the site's calibrator (background subtracted)."""

    measured_at: datetime
    reading_mbq: PositiveMBq


class ReferenceSource(_Block):
    """A source with certified activity.

    Attributes:
        source_id: the source's serial or label.
        certificate: certificate number and issuing laboratory (the traceability chain).
        nuclide: the source's radionuclide (its half-life decays the certificate).
        certified_activity_mbq: activity at ``certified_at``; for a surrogate, the certificate's
            activity equivalent at the calibrator setting the block states.
        certified_at: the certificate's reference date-time (the sheet's local zone).
        certificate_relative_uncertainty: the certificate's stated relative uncertainty.
        certificate_coverage_factor: its coverage factor k (2 for the usual 95 % statement);
            the standard uncertainty is the stated one over k.
    """

    source_id: str = Field(min_length=1)
    certificate: str = Field(min_length=1)
    nuclide: str
    certified_activity_mbq: PositiveMBq
    certified_at: datetime
    certificate_relative_uncertainty: RelativeUncertainty
    certificate_coverage_factor: CoverageFactor = 1.0


class CrossReading(_Block):
    """The same sample read on the secondary standard and on the site's calibrator."""

    standard_measured_at: datetime
    standard_reading_mbq: PositiveMBq
    site_measured_at: datetime
    site_reading_mbq: PositiveMBq


class SecondaryStandard(_Block):
    """The secondary-standard calibrator a site's calibrator was compared with.

    Attributes:
        standard: instrument and where its calibration comes from (laboratory, certificate).
        nuclide: the sample's radionuclide.
        standard_relative_uncertainty: the standard's stated calibration uncertainty for that
            nuclide (relative).
        standard_coverage_factor: its coverage factor k.
    """

    standard: str = Field(min_length=1)
    nuclide: str
    standard_relative_uncertainty: RelativeUncertainty
    standard_coverage_factor: CoverageFactor = 1.0


class _Measurement(_Block):
    dose_calibrator: str = Field(min_length=1)
    calibrator_setting: str = Field(min_length=1)
    reading_relative_repeatability: RelativeUncertainty | None = None

    def _checked(self, ratios: Sequence[float], labels: Sequence[str]) -> None:
        """Refuse a reading far off its reference, or repeated readings that disagree."""
        for ratio, label in zip(ratios, labels, strict=True):
            if abs(ratio - 1.0) > MAX_ABS_BIAS:
                raise ValueError(
                    f"dose_calibrator_traceability: {label} expected within ±{MAX_ABS_BIAS:.0%}; "
                    f"found {ratio - 1.0:+.1%}: check the units (MBq) and the date-times"
                )
        if len(ratios) == 1 and self.reading_relative_repeatability is None:
            raise ValueError(
                "dose_calibrator_traceability: one reading needs reading_relative_repeatability "
                "(the calibrator's stated repeatability); expected it or ≥ 2 readings, found "
                "neither"
            )
        if len(ratios) >= 2:
            spread = statistics.stdev(ratios) / statistics.fmean(ratios)
            if spread > MAX_READING_SPREAD:
                raise ValueError(
                    "dose_calibrator_traceability: repeated readings expected to agree within "
                    f"{MAX_READING_SPREAD:.0%} (relative SD); found {spread:.1%}"
                )

    def _bias(self, ratios: Sequence[float], reference_relative_sd: float) -> tuple[float, float]:
        n = len(ratios)
        mean = statistics.fmean(ratios)
        sample = statistics.stdev(ratios) / mean if n >= 2 else 0.0
        stated = self.reading_relative_repeatability or 0.0
        repeatability = max(sample, stated) / math.sqrt(n)
        return mean - 1.0, mean * math.hypot(reference_relative_sd, repeatability)


class ReferenceSourceMeasurement(_Measurement):
    """The site's calibrator reading a source of certified activity."""

    method: Literal["reference_source"]
    source: ReferenceSource
    readings: list[CalibratorReading] = Field(min_length=1)

    def ratios(self) -> list[float]:
        """reading_i / certified activity decayed to reading i's time."""
        of = _known_nuclide(self.source.nuclide, "dose_calibrator_traceability.source.nuclide")
        return [
            r.reading_mbq
            / _decayed_mbq(
                self.source.certified_activity_mbq, self.source.certified_at, r.measured_at, of
            )
            for r in self.readings
        ]

    @model_validator(mode="after")
    def _adds_up(self) -> ReferenceSourceMeasurement:
        labels = [
            f"reading {i} ({r.reading_mbq:g} MBq at {r.measured_at.isoformat()}) against the "
            f"certified activity decayed to that time"
            for i, r in enumerate(self.readings, start=1)
        ]
        self._checked(self.ratios(), labels)
        return self

    def bias(self) -> DoseCalibratorBias:
        """The calibrator's bias and its standard uncertainty (module docstring)."""
        source = self.source
        bias, sd = self._bias(
            self.ratios(),
            source.certificate_relative_uncertainty / source.certificate_coverage_factor,
        )
        return DoseCalibratorBias(
            bias_relative=bias,
            bias_sd_relative=sd,
            description=(
                f"reference_source: {self.dose_calibrator} at setting {self.calibrator_setting!r} "
                f"read {source.nuclide} source {source.source_id} (certificate "
                f"{source.certificate}, {source.certified_activity_mbq:g} MBq at "
                f"{source.certified_at.isoformat()}, "
                f"u = {source.certificate_relative_uncertainty:.2%} k="
                f"{source.certificate_coverage_factor:g}) {len(self.readings)}×, last at "
                f"{max(r.measured_at for r in self.readings).isoformat()}"
            ),
        )


class SecondaryStandardMeasurement(_Measurement):
    """A cross-calibration of the site's calibrator against a secondary standard."""

    method: Literal["secondary_standard"]
    standard: SecondaryStandard
    readings: list[CrossReading] = Field(min_length=1)

    def ratios(self) -> list[float]:
        """site_i / standard_i decayed to the site reading's time."""
        of = _known_nuclide(self.standard.nuclide, "dose_calibrator_traceability.standard.nuclide")
        return [
            r.site_reading_mbq
            / _decayed_mbq(r.standard_reading_mbq, r.standard_measured_at, r.site_measured_at, of)
            for r in self.readings
        ]

    @model_validator(mode="after")
    def _adds_up(self) -> SecondaryStandardMeasurement:
        labels = [
            f"reading {i} (site {r.site_reading_mbq:g} MBq at {r.site_measured_at.isoformat()}) "
            f"against the standard's {r.standard_reading_mbq:g} MBq decayed to that time"
            for i, r in enumerate(self.readings, start=1)
        ]
        self._checked(self.ratios(), labels)
        return self

    def bias(self) -> DoseCalibratorBias:
        """The calibrator's bias and its standard uncertainty (module docstring)."""
        standard = self.standard
        bias, sd = self._bias(
            self.ratios(),
            standard.standard_relative_uncertainty / standard.standard_coverage_factor,
        )
        return DoseCalibratorBias(
            bias_relative=bias,
            bias_sd_relative=sd,
            description=(
                f"secondary_standard: {self.dose_calibrator} at setting "
                f"{self.calibrator_setting!r} against {standard.standard} (u = "
                f"{standard.standard_relative_uncertainty:.2%} k="
                f"{standard.standard_coverage_factor:g}), {standard.nuclide} sample "
                f"{len(self.readings)}×, last at "
                f"{max(r.site_measured_at for r in self.readings).isoformat()}"
            ),
        )


DoseCalibratorTraceability = Annotated[
    ReferenceSourceMeasurement | SecondaryStandardMeasurement, Field(discriminator="method")
]
"""The sheet's optional ``dose_calibrator_traceability`` block (``method`` decides)."""


@dataclass(frozen=True)
class DoseCalibratorBias:
    """A dose calibrator's measured bias: its reading = true activity × (1 + bias).

    Attributes:
        bias_relative: reading / reference − 1 (dimensionless), mean over the readings.
        bias_sd_relative: its standard uncertainty (k = 1, dimensionless).
        description: what was measured, on which calibrator, against what (for the record).
    """

    bias_relative: float
    bias_sd_relative: float
    description: str

    def true_activity_mbq(self, reading_mbq: float) -> float:
        """The activity a reading of this calibrator stands for, MBq: reading / (1 + bias)."""
        return reading_mbq / (1.0 + self.bias_relative)

    @property
    def correction_relative_sd(self) -> float:
        """Relative standard uncertainty of the correction factor 1/(1 + bias)."""
        return self.bias_sd_relative / (1.0 + self.bias_relative)
