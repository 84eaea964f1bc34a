"""The site registry: which AE titles belong to which site, and each site's calibration records.

Read from a YAML file (``sites.yaml``)::

    format_version: 1
    sites:
      - site_id: milan
        ae_titles: [MILAN_SPECT]
        institution: Istituto Nazionale Tumori
        calibrations:
          - record_id: milan-phantom-2026-01
            camera_model: Symbia Intevo
            collimator: MEGP
            calibration_factor_cps_per_mbq: 9.1
            valid_from: 2026-01-01
            valid_to: null          # open-ended

Errors name the file and the entry at fault.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from concordose.errors import CalibrationMissingError, ConfigurationError


class CalibrationRecord(BaseModel):
    """One calibration of one camera set-up, valid over a date range.

    Attributes:
        camera_model, collimator: the set-up calibrated; a study must match those that are set.
        reconstruction: fingerprint of the reconstruction protocol (method and kernel as the
            vendor writes them, e.g. ``"3DOSEM,4i,8s"``); a study must match it when set.
        calibration_factor_cps_per_mbq: counts per second in the reconstructed image per MBq in
            the field of view (from a uniform-cylinder phantom scan).
        valid_from / valid_to: inclusive dates; ``valid_to`` ``None`` means still valid.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_id: str = Field(min_length=1)
    camera_model: str | None = None
    collimator: str | None = None
    reconstruction: str | None = None
    calibration_factor_cps_per_mbq: float = Field(gt=0)
    calibration_factor_relative_uncertainty: float | None = Field(default=None, ge=0)
    valid_from: date
    valid_to: date | None = None

    def is_valid_on(self, day: date) -> bool:
        """True when ``day`` lies in the record's validity range."""
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)


class Site(BaseModel):
    """A consortium site: who it is on the network and how its cameras are calibrated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    site_id: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    ae_titles: list[str] = Field(min_length=1)
    institution: str | None = None
    calibrations: list[CalibrationRecord] = Field(default_factory=list)

    def calibration_on(self, day: date) -> CalibrationRecord:
        """The calibration valid on ``day`` (the latest-starting one if several are).

        Raises:
            CalibrationMissingError: none is valid that day.
        """
        valid = [record for record in self.calibrations if record.is_valid_on(day)]
        if not valid:
            ranges = ", ".join(
                f"{r.record_id} {r.valid_from}…{r.valid_to or 'open'}" for r in self.calibrations
            )
            raise CalibrationMissingError(
                f"site {self.site_id!r} has no calibration valid on {day} "
                f"(records: {ranges or 'none'}); add one with `concordose calibrate`"
            )
        return max(valid, key=lambda record: record.valid_from)


class SiteRegistry(BaseModel):
    """All sites of the consortium."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: Literal[1] = 1
    sites: list[Site]

    @model_validator(mode="after")
    def _unique(self) -> SiteRegistry:
        ids = [site.site_id for site in self.sites]
        titles = [title for site in self.sites for title in site.ae_titles]
        for name, values in (("site_id", ids), ("AE title", titles)):
            duplicates = sorted({value for value in values if values.count(value) > 1})
            if duplicates:
                raise ValueError(f"duplicate {name}(s): {', '.join(duplicates)}")
        return self

    @classmethod
    def load(cls, path: Path) -> SiteRegistry:
        """Read and validate a sites file.

        Raises:
            ConfigurationError: missing file, bad YAML, or entries that fail validation.
        """
        if not path.is_file():
            raise ConfigurationError(f"sites file {path} does not exist")
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8"))
            return cls.model_validate(content)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"sites file {path} is not valid YAML: {exc}") from exc
        except ValidationError as exc:
            raise ConfigurationError(f"sites file {path} is invalid:\n{exc}") from exc

    @property
    def ae_titles(self) -> list[str]:
        """Every calling AE title the receiver should accept."""
        return [title for site in self.sites for title in site.ae_titles]

    def site(self, site_id: str) -> Site:
        """The site with ``site_id``.

        Raises:
            ConfigurationError: unknown site.
        """
        for site in self.sites:
            if site.site_id == site_id:
                return site
        known = ", ".join(s.site_id for s in self.sites)
        raise ConfigurationError(f"unknown site {site_id!r}; the registry knows: {known}")

    def site_for_ae_title(self, ae_title: str) -> Site:
        """The site a calling AE title belongs to.

        Raises:
            CalibrationMissingError: the AE title belongs to no site.
        """
        for site in self.sites:
            if ae_title in site.ae_titles:
                return site
        raise CalibrationMissingError(
            f"calling AE title {ae_title!r} belongs to no site in the registry; "
            "add it to the site's ae_titles"
        )
