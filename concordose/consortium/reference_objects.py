"""Reference objects: studies whose truth is known, measured at several sites.

A *reference object* is a travelling phantom with known compartment activities, or a virtual
patient of the digital consortium with its ground truth. Its *truth sheet* (YAML or JSON, format
``concordose.reference_objects`` version 1) names the object, its truth per compartment (a VOI
label as segmented) and, per site, the study that measured it::

    format: concordose.reference_objects
    format_version: 1
    reference_objects:
      - reference_object_id: digital-P001-cycle1     # published: must not identify a person
        kind: digital_patient                        # or travelling_phantom
        description: digital consortium virtual patient P001, cycle 1
        truth:                                       # per compartment (VOI label)
          kidney_left: {tia_mbq_h: 3121.4, mean_dose_gy: 4.02}
          lesion_1: {tia_mbq_h: 1880.0, mean_dose_gy: null}   # null: no truth for that metric
        measurements:                                # one per site
          - site_id: milan
            patient_id: MILAN-P001                   # as in the DICOM (PatientID)
            injection_datetime: 2026-05-14T09:30:00  # RadiopharmaceuticalStartDateTime, local

A measurement is matched to published rows by ``site_id`` and the cycle's pseudonymous key,
computed here from ``patient_id`` and ``injection_datetime`` with the consortium secret exactly
as the pipeline does (:func:`concordose.dicom.pseudonym.cycle_key`): the sheet holds the
identifiers (it stays with the consortium's inputs, like ``sites.yaml``); outputs carry only
the reference object id, the site and the keys.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from concordose.dicom.pseudonym import cycle_key
from concordose.errors import ConfigurationError

REFERENCE_OBJECTS_FORMAT: Literal["concordose.reference_objects"] = "concordose.reference_objects"
REFERENCE_OBJECTS_FORMAT_VERSION: Literal[1] = 1


class CompartmentTruth(BaseModel):
    """The truth of one compartment (VOI): its TIA in MBq·h and mean absorbed dose in Gy from
    injection to infinity; ``None`` where the truth does not state the metric."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tia_mbq_h: float | None = Field(default=None, gt=0)
    mean_dose_gy: float | None = Field(default=None, gt=0)


class ReferenceMeasurement(BaseModel):
    """The study that measured a reference object at one site (identifiers: input side only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    site_id: str = Field(min_length=1)
    patient_id: str = Field(min_length=1)
    injection_datetime: datetime

    def cycle_key(self, secret: SecretStr | None) -> str:
        """The published ``cycle_key`` of this study's cycle under the consortium ``secret``.

        Raises:
            ConfigurationError: no secret.
        """
        return cycle_key(self.patient_id, self.injection_datetime.isoformat(), secret)


class ReferenceObject(BaseModel):
    """One reference object: its truth per compartment and its measurements, one per site."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reference_object_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    kind: Literal["travelling_phantom", "digital_patient"]
    description: str | None = None
    truth: dict[str, CompartmentTruth] = Field(min_length=1)
    measurements: list[ReferenceMeasurement] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_measurement_per_site(self) -> ReferenceObject:
        sites = [m.site_id for m in self.measurements]
        repeated = sorted({s for s in sites if sites.count(s) > 1})
        if repeated:
            raise ValueError(
                f"reference object {self.reference_object_id!r} has more than one measurement at "
                f"site(s) {', '.join(repeated)}; expected one per site"
            )
        return self


class ReferenceObjectRegistry(BaseModel):
    """Every reference object of the consortium (a truth sheet)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["concordose.reference_objects"] = REFERENCE_OBJECTS_FORMAT
    format_version: Literal[1] = REFERENCE_OBJECTS_FORMAT_VERSION
    reference_objects: list[ReferenceObject]

    @model_validator(mode="after")
    def _unique_ids(self) -> ReferenceObjectRegistry:
        ids = [r.reference_object_id for r in self.reference_objects]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"duplicate reference_object_id(s): {', '.join(repeated)}")
        return self

    @classmethod
    def load(cls, path: Path) -> ReferenceObjectRegistry:
        """Read and validate a truth sheet (YAML, of which JSON is a subset).

        Raises:
            ConfigurationError: missing file, bad YAML/JSON, or entries failing validation (the
                message names the file and the entry).
        """
        if not path.is_file():
            raise ConfigurationError(f"reference object sheet {path} does not exist")
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8"))
            return cls.model_validate(content)
        except yaml.YAMLError as exc:
            raise ConfigurationError(
                f"reference object sheet {path} is not valid YAML: {exc}"
            ) from exc
        except ValidationError as exc:
            raise ConfigurationError(f"reference object sheet {path} is invalid:\n{exc}") from exc

    def write(self, path: Path) -> None:
        """Write the sheet as YAML (dates as ISO text)."""
        path.write_text(
            yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
        )


__all__ = [
    "REFERENCE_OBJECTS_FORMAT",
    "REFERENCE_OBJECTS_FORMAT_VERSION",
    "CompartmentTruth",
    "ReferenceMeasurement",
    "ReferenceObject",
    "ReferenceObjectRegistry",
]
