"""The site registry: which AE titles belong to which site, and each site's calibration records.

Read from a YAML file (``sites.yaml``)::

    format_version: 1
    calibration_ledger: calibrations.jsonl   # optional: append-only history (ledger.py)
    sites:
      - site_id: milan
        ae_titles: [MILAN_SPECT]
        institution: Istituto Nazionale Tumori
        timezone: Europe/Rome      # optional: IANA name; local DICOM times without offset → UTC
        nominal_calibration_factor_cps_per_mbq: 9.6   # optional: the camera vendor's figure
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
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from concordose.calibration.ledger import current_records, read_ledger
from concordose.calibration.records import CalibrationRecord
from concordose.errors import CalibrationMissingError, ConfigurationError

__all__ = ["NOMINAL_RECORD_VALID_FROM", "CalibrationRecord", "Site", "SiteRegistry"]

NOMINAL_RECORD_VALID_FROM = date(2000, 1, 1)
"""First day of the record :meth:`Site.nominal_calibration` builds (it stands for the camera's
factory figure, valid for any study the site sends)."""


class Site(BaseModel):
    """A consortium site: who it is on the network and how its cameras are calibrated.

    ``nominal_calibration_factor_cps_per_mbq`` is the camera vendor's nominal Lu-177 sensitivity
    (cps/MBq in the reconstructed image): the factor a site applies without its own phantom
    calibration. It is never used to process a study; only the *raw* variant of the
    harmonisation comparison (:mod:`concordose.consortium`) applies it, to measure what the
    phantom-derived factors gain.

    ``timezone`` (an IANA name, e.g. ``Europe/Rome``) is the zone of the site's modality clocks:
    DICOM times that state no UTC offset (neither TimezoneOffsetFromUTC nor an offset in the DT
    value) are placed on UTC with it, so that hours since injection do not shift by 1 h when
    daylight saving changes between injection and scan. ``None``: times without offset are
    compared on the modality's local clock (with an info finding saying so).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    site_id: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    ae_titles: list[str] = Field(min_length=1)
    institution: str | None = None
    calibrations: list[CalibrationRecord] = Field(default_factory=list)
    nominal_calibration_factor_cps_per_mbq: float | None = Field(default=None, gt=0)
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _iana_time_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            close = sorted(z for z in available_timezones() if value.lower() in z.lower())[:5]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(
                f"timezone: expected an IANA time zone name such as Europe/Rome, "
                f"found {value!r}{hint}"
            ) from None
        return value

    def nominal_calibration(self) -> CalibrationRecord:
        """A calibration record holding the vendor's nominal factor only (no recovery curve),
        record id ``<site_id>-vendor-nominal``, valid from :data:`NOMINAL_RECORD_VALID_FROM`.

        Raises:
            ConfigurationError: the site states no nominal factor.
        """
        if self.nominal_calibration_factor_cps_per_mbq is None:
            raise ConfigurationError(
                f"site {self.site_id!r} has no nominal_calibration_factor_cps_per_mbq in the "
                "sites file; the raw (vendor factor) variant needs the camera vendor's figure"
            )
        return CalibrationRecord(
            record_id=f"{self.site_id}-vendor-nominal",
            calibration_factor_cps_per_mbq=self.nominal_calibration_factor_cps_per_mbq,
            valid_from=NOMINAL_RECORD_VALID_FROM,
        )

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
    calibration_ledger: Path | None = None
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
            registry = cls.model_validate(content)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"sites file {path} is not valid YAML: {exc}") from exc
        except ValidationError as exc:
            raise ConfigurationError(f"sites file {path} is invalid:\n{exc}") from exc
        if registry.calibration_ledger is None:
            return registry
        ledger = registry.calibration_ledger
        ledger = ledger if ledger.is_absolute() else path.parent / ledger
        return registry.with_ledger(ledger)

    def with_ledger(self, ledger: Path) -> SiteRegistry:
        """This registry with each site's calibrations extended by the ledger's current records.

        Raises:
            ConfigurationError: the ledger fails its checks or names an unknown site.
        """
        extra = current_records(read_ledger(ledger))
        unknown = sorted(set(extra) - {site.site_id for site in self.sites})
        if unknown:
            raise ConfigurationError(
                f"calibration ledger {ledger} has records for unknown site(s) {', '.join(unknown)}"
            )
        sites = [
            site.model_copy(
                update={"calibrations": [*site.calibrations, *extra.get(site.site_id, [])]}
            )
            for site in self.sites
        ]
        return self.model_copy(update={"sites": sites, "calibration_ledger": ledger})

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
