"""The site registry: which AE titles belong to which site, and each site's calibration records.

Read from a YAML file (``sites.yaml``; JSON Schema ``schemas/sites.schema.json``, generated
from these models: ``python -m concordose.calibration.registry`` rewrites it, a test keeps both in
step)::

    format_version: 1
    calibration_ledger: calibrations.jsonl   # optional: append-only history (ledger.py)
    protocol_dir: protocols                  # optional: site protocol overrides (protocol.py)
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
      - site_id: padua                        # a site whose CF is known (no phantom scans yet)
        ae_titles: [PADUA_NM]
        calibrations:
          - record_id: padua-known-cf-2026
            calibration_factor_cps_per_mbq: 11.2
            calibration_factor_relative_uncertainty: 0.05
            energy_window_kev: [187.5, 229.2]
            valid_from: 2026-03-01

Errors name the file and the entry at fault (``sites[1] (site_id 'padua').calibrations[0]…``).
A calibration factor written in the file must be plausible for its window
(:mod:`.plausibility`): a unit slip is refused with its likely cause. ``concordose sites add``
and ``concordose sites add-calibration`` write the file (:mod:`.sites_file`).
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from concordose.calibration.ledger import current_records, read_ledger
from concordose.calibration.packaged_schema import PackagedSchema
from concordose.calibration.plausibility import check_calibration_factor
from concordose.calibration.records import CalibrationRecord
from concordose.errors import CalibrationMissingError, ConfigurationError

__all__ = [
    "AE_TITLE_PATTERN",
    "NOMINAL_RECORD_VALID_FROM",
    "SITES_FORMAT",
    "SITES_SCHEMA",
    "AeTitle",
    "CalibrationRecord",
    "Site",
    "SiteRegistry",
    "describe_validation_error",
]

SITES_FORMAT = "concordose.sites"
"""The title of the sites file's JSON Schema."""

# --- AE titles (issue 16) ---
AE_TITLE_PATTERN = r"^[!-\[\]-~]([ -\[\]-~]{0,14}[!-\[\]-~])?$"
"""A DICOM AE title (PS3.5 Table 6.2-1, VR AE): 1–16 characters of the default repertoire
without backslash or control characters; leading and trailing spaces are not significant, so
they are refused here (a title is compared as written)."""


def _ae_title(value: str) -> str:
    # pydantic reports the input beside the message (describe_validation_error: "found …")
    if re.fullmatch(AE_TITLE_PATTERN, value) is None:
        raise ValueError(
            "expected an AE title: 1–16 printable ASCII characters, no backslash, no leading "
            "or trailing space"
        )
    return value


AeTitle = Annotated[
    str,
    AfterValidator(_ae_title),
    Field(json_schema_extra={"pattern": AE_TITLE_PATTERN, "minLength": 1, "maxLength": 16}),
]
"""A calling AE title as ``sites.yaml`` lists it."""
# --- end AE titles ---

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
    ae_titles: list[AeTitle] = Field(min_length=1)
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
    protocol_dir: Path | None = Field(
        default=None,
        description="Folder of site protocol overrides (<site_id>.yaml, optional default.yaml), "
        "relative to the sites file; CONCORDOSE_PROTOCOL_DIR takes precedence.",
    )
    sites: list[Site]

    @model_validator(mode="after")
    def _unique(self) -> SiteRegistry:
        ids = [(i, site.site_id, site.site_id) for i, site in enumerate(self.sites)]
        titles = [(i, s.site_id, t) for i, s in enumerate(self.sites) for t in s.ae_titles]
        for name, entries in (("site_id", ids), ("AE title", titles)):
            values = [value for _, _, value in entries]
            duplicates = sorted({value for value in values if values.count(value) > 1})
            if duplicates:
                where = "; ".join(
                    f"{value} in "
                    + ", ".join(f"sites[{i}] ({site!r})" for i, site, v in entries if v == value)
                    for value in duplicates
                )
                raise ValueError(f"duplicate {name}(s): {where}; expected each once")
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
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"sites file {path} is not valid YAML: {exc}") from exc
        registry = cls.from_content(content, where=f"sites file {path}")
        if registry.protocol_dir is not None and not registry.protocol_dir.is_absolute():
            registry = registry.model_copy(
                update={"protocol_dir": path.parent / registry.protocol_dir}
            )
        if registry.calibration_ledger is None:
            return registry
        ledger = registry.calibration_ledger
        ledger = ledger if ledger.is_absolute() else path.parent / ledger
        return registry.with_ledger(ledger)

    @classmethod
    def from_content(cls, content: object, *, where: str) -> SiteRegistry:
        """Validate a sites file's parsed content (no ledger read, paths as written): the
        fields, then the plausibility of every calibration factor written in it.

        Raises:
            ConfigurationError: naming ``where`` and each entry at fault.
        """
        try:
            registry = cls.model_validate(content)
        except ValidationError as exc:
            raise ConfigurationError(
                f"{where} is invalid:\n{describe_validation_error(exc, content)}"
            ) from exc
        problems: list[str] = []
        for i, site in enumerate(registry.sites):
            entry = f"sites[{i}] (site_id {site.site_id!r})"
            factors = [
                (f"{entry}.calibrations[{j}] (record_id {record.record_id!r})", record)
                for j, record in enumerate(site.calibrations)
            ]
            checks = [
                (where_, record.calibration_factor_cps_per_mbq, record.energy_window_kev)
                for where_, record in factors
            ]
            if site.nominal_calibration_factor_cps_per_mbq is not None:
                checks.append(
                    (
                        f"{entry}.nominal_calibration_factor_cps_per_mbq",
                        site.nominal_calibration_factor_cps_per_mbq,
                        None,
                    )
                )
            for entry_where, cf, window in checks:
                try:
                    check_calibration_factor(cf, window, where=entry_where)
                except ConfigurationError as exc:
                    problems.append(f"  {exc}")
        if problems:
            raise ConfigurationError(f"{where} is invalid:\n" + "\n".join(problems))
        return registry

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

    # --- what changed between two loads (issue 16: the receiver's reload) ---
    def changes_since(self, old: SiteRegistry) -> list[str]:
        """What changed from ``old`` to this registry, one line each (sites, AE titles and
        calibration records added or removed); empty when nothing did. Holds only the file's
        identifiers, never a patient's."""
        lines: list[str] = []
        before = {site.site_id: site for site in old.sites}
        after = {site.site_id: site for site in self.sites}
        for site_id in sorted(after.keys() - before.keys()):
            listed = ", ".join(after[site_id].ae_titles)
            lines.append(f"site {site_id} added (AE titles {listed})")
        for site_id in sorted(before.keys() - after.keys()):
            lines.append(f"site {site_id} removed")
        for site_id in sorted(after.keys() & before.keys()):
            old_site, new_site = before[site_id], after[site_id]
            for verb, titles in (
                ("added", [t for t in new_site.ae_titles if t not in old_site.ae_titles]),
                ("removed", [t for t in old_site.ae_titles if t not in new_site.ae_titles]),
            ):
                if titles:
                    lines.append(f"site {site_id}: AE title(s) {', '.join(titles)} {verb}")
            old_records = {r.record_id for r in old_site.calibrations}
            new_records = {r.record_id for r in new_site.calibrations}
            for verb, records in (
                ("added", sorted(new_records - old_records)),
                ("removed", sorted(old_records - new_records)),
            ):
                if records:
                    lines.append(
                        f"site {site_id}: calibration record(s) {', '.join(records)} {verb}"
                    )
        return lines

    # --- end what changed ---

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


# --- error messages naming the entry, JSON Schema (issue 16) ---
def _entry_path(location: tuple[int | str, ...], content: object) -> str:
    """``sites[2] (site_id 'padua').calibrations[0].calibration_factor_cps_per_mbq`` for a
    pydantic error location, with each list entry's id where the content has one."""
    parts: list[str] = []
    node: Any = content
    for key in location:
        if isinstance(key, int):
            parts.append(f"[{key}]")
            node = node[key] if isinstance(node, list) and 0 <= key < len(node) else None
            if isinstance(node, dict):
                for id_key in ("site_id", "record_id"):
                    if id_key in node:
                        parts.append(f" ({id_key} {node[id_key]!r})")
                        break
        else:
            parts.append(f".{key}" if parts else key)
            node = node.get(key) if isinstance(node, dict) else None
    return "".join(parts)


def describe_validation_error(exc: ValidationError, content: object) -> str:
    """One line per error: the entry (with its site or record id), what was expected and what
    was found."""
    lines = []
    for error in exc.errors():
        location = tuple(key for key in error["loc"] if isinstance(key, int | str))
        message = error["msg"].removeprefix("Value error, ")
        found = error.get("input")
        said = isinstance(found, dict | list) or repr(found) in message  # nothing to add
        shown = "" if said else f" (found {found!r})"
        entry = _entry_path(location, content)
        lines.append(f"  {entry + ': ' if entry else ''}{message}{shown}")
    return "\n".join(lines)


SITES_SCHEMA = PackagedSchema(SiteRegistry, SITES_FORMAT, "sites.schema.json")
"""The JSON Schema of a sites file (``sites.yaml``), shipped as ``schemas/sites.schema.json``."""


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    SITES_SCHEMA.write()
# --- end error messages, JSON Schema ---
