"""The physicist's calibration sheet: what was put in the phantom, when, and how it was scanned.

Format ``concordose.calibration_sheet`` version 2 (YAML; version 1 sheets still read), written
down in ``phantoms/README.md`` and as JSON Schema in ``schemas/calibration_sheet.schema.json``
(generated from these models: ``python -m concordose.calibration.sheet`` rewrites it; a test keeps
both in step). Version 2 adds one optional block, ``dose_calibrator_traceability``: a measurement
of a traceable reference source, or a cross-calibration against a secondary standard, on the
calibrator the sheet's activities were read with (:mod:`.traceability`); a version-1 sheet with
that block is refused (a version-1 reader would reject it).

Every activity is as the dose calibrator read it (MBq), every date-time ISO 8601 local (the
camera clock's zone). Besides the field checks, a sheet must add up: the net activity equals the
syringe reading minus the residual decayed back to the syringe's time, and each concentration
equals net activity over volume (both within 1 %). A sheet that does not is refused with the
field at fault. The traceability block must be read at the sheet's ``dose_calibrator_setting``
and add up too (each reading against its reference decayed to the reading's time).
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from concordose.calibration.packaged_schema import PackagedSchema
from concordose.calibration.traceability import DoseCalibratorTraceability
from concordose.errors import ConfigurationError
from concordose.nuclides import LU177

SHEET_FORMAT = "concordose.calibration_sheet"
SHEET_FORMAT_VERSION = 2
"""The version this code writes and documents; 1 still reads (no traceability block)."""
CONSISTENCY_TOLERANCE = 0.01  # relative; a sheet off by more was mis-copied or mis-measured

PositiveMBq = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScanInfo(_Strict):
    """How the phantom was scanned; files relative to the sheet's folder."""

    nm_file: str
    ct_folder: str | None = None
    study_instance_uid: str | None = None
    acquisition_start: datetime
    acquisition_duration_s: float = Field(gt=0)
    camera_model: str
    collimator: str
    reconstruction: str


class SyringeFill(_Strict):
    """A syringe reading, its residual, and the net activity at the reference time."""

    syringe_activity_mbq: PositiveMBq
    syringe_measured_at: datetime
    residual_activity_mbq: float = Field(ge=0)
    residual_measured_at: datetime
    net_activity_mbq: PositiveMBq
    reference_datetime: datetime
    activity_relative_uncertainty: float = Field(gt=0, lt=0.5)

    def expected_net_mbq(self) -> float:
        """Syringe minus residual, both decayed to the reference time."""
        lam = LU177.decay_constant_per_h

        def to_reference(activity: float, measured: datetime) -> float:
            hours = (self.reference_datetime - measured).total_seconds() / 3600.0
            return activity * math.exp(-lam * hours)

        return to_reference(self.syringe_activity_mbq, self.syringe_measured_at) - to_reference(
            self.residual_activity_mbq, self.residual_measured_at
        )

    def activity_at(self, moment: datetime) -> float:
        """Net activity decayed from the reference time to ``moment``, MBq."""
        hours = (moment - self.reference_datetime).total_seconds() / 3600.0
        return self.net_activity_mbq * math.exp(-LU177.decay_constant_per_h * hours)

    @model_validator(mode="after")
    def _adds_up(self) -> SyringeFill:
        expected = self.expected_net_mbq()
        if abs(self.net_activity_mbq / expected - 1) > CONSISTENCY_TOLERANCE:
            raise ValueError(
                f"net_activity_mbq {self.net_activity_mbq:g} ≠ syringe − residual decayed to the "
                f"reference time ({expected:.4g} MBq)"
            )
        return self


def _check_concentration(
    concentration: float, activity_mbq: float, volume_ml: float, of: str
) -> None:
    expected = activity_mbq / volume_ml
    if abs(concentration / expected - 1) > CONSISTENCY_TOLERANCE:
        raise ValueError(
            f"concentration_mbq_per_ml {concentration:g} ≠ net activity / {of} ({expected:.4g})"
        )


class CylinderFill(SyringeFill):
    """Uniform cylinder: the whole net activity in the phantom volume."""

    phantom_volume_ml: float = Field(gt=0)


class BackgroundFill(SyringeFill):
    """NEMA background compartment."""

    volume_ml: float = Field(gt=0)
    concentration_mbq_per_ml: float = Field(gt=0)

    @model_validator(mode="after")
    def _concentration(self) -> BackgroundFill:
        _check_concentration(
            self.concentration_mbq_per_ml, self.net_activity_mbq, self.volume_ml, "volume"
        )
        return self


class SphereFill(SyringeFill):
    """NEMA spheres, filled from one stock solution."""

    stock_volume_ml: float = Field(gt=0)
    concentration_mbq_per_ml: float = Field(gt=0)
    inner_diameters_mm: list[float] = Field(min_length=3)
    volumes_ml: list[float] = Field(min_length=3)

    @model_validator(mode="after")
    def _consistent(self) -> SphereFill:
        _check_concentration(
            self.concentration_mbq_per_ml,
            self.net_activity_mbq,
            self.stock_volume_ml,
            "stock volume",
        )
        if len(self.inner_diameters_mm) != len(self.volumes_ml):
            raise ValueError("inner_diameters_mm and volumes_ml must have one entry per sphere")
        for diameter, volume in zip(self.inner_diameters_mm, self.volumes_ml, strict=True):
            sphere_ml = math.pi / 6.0 * (diameter / 10.0) ** 3
            if abs(volume / sphere_ml - 1) > 0.05:
                raise ValueError(
                    f"sphere of {diameter:g} mm holds {sphere_ml:.3g} mL, the sheet says {volume:g}"
                )
        return self


class NemaFill(_Strict):
    """NEMA IEC body phantom fill."""

    background: BackgroundFill
    spheres: SphereFill
    sphere_to_background_ratio: float = Field(gt=1)


class _SheetBase(_Strict):
    format: Literal["concordose.calibration_sheet"]
    format_version: Literal[1, 2]
    site_id: str
    radionuclide: Literal["Lu-177"]
    dose_calibrator_setting: str
    phantom_model: str | None = None
    scan: ScanInfo
    dose_calibrator_traceability: DoseCalibratorTraceability | None = None

    @model_validator(mode="after")
    def _traceability(self) -> _SheetBase:
        block = self.dose_calibrator_traceability
        if block is None:
            return self
        if self.format_version < 2:
            raise ValueError(
                "dose_calibrator_traceability: expected format_version 2 for a sheet with this "
                f"block, found format_version {self.format_version}"
            )
        if block.calibrator_setting != self.dose_calibrator_setting:
            raise ValueError(
                "dose_calibrator_traceability.calibrator_setting: expected the setting the "
                f"phantom's activities were read at ({self.dose_calibrator_setting!r}), found "
                f"{block.calibrator_setting!r}; a bias measured at another setting does not "
                "apply to them"
            )
        return self


class CylinderSheet(_SheetBase):
    """Sheet of a uniform-cylinder scan (calibration factor)."""

    phantom: Literal["uniform_cylinder"]
    fill: CylinderFill


class NemaSheet(_SheetBase):
    """Sheet of a NEMA IEC body phantom scan (recovery coefficients)."""

    phantom: Literal["nema_iec_body"]
    fill: NemaFill


class CalibrationSheet(_Strict):
    """Either kind of sheet (``phantom`` decides)."""

    sheet: Annotated[CylinderSheet | NemaSheet, Field(discriminator="phantom")]


def load_sheet(path: Path) -> CylinderSheet | NemaSheet:
    """Read and validate a calibration sheet.

    Raises:
        ConfigurationError: missing file, bad YAML, a missing or inconsistent entry (the message
            names the field).
    """
    if not path.is_file():
        raise ConfigurationError(f"calibration sheet {path} does not exist")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"calibration sheet {path} is not valid YAML: {exc}") from exc
    try:
        return CalibrationSheet.model_validate({"sheet": content}).sheet
    except ValidationError as exc:
        raise ConfigurationError(f"calibration sheet {path} is invalid:\n{exc}") from exc


SHEET_SCHEMA = PackagedSchema(CalibrationSheet, SHEET_FORMAT, "calibration_sheet.schema.json")
"""The JSON Schema of a calibration sheet (either phantom), shipped as
``schemas/calibration_sheet.schema.json``."""


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    SHEET_SCHEMA.write()
