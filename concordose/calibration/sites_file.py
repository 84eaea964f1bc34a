"""Editing ``sites.yaml`` from the command line: add a site, add a known calibration factor.

The file is read and written with ``ruamel.yaml`` round-trip, so a hand-edited file keeps its
comments and key order; indentation is normalised (mappings 2, list entries 4 with the dash at
2). Each edit is validated as :meth:`.SiteRegistry.load` validates the file (fields, unique ids
and AE titles, plausible calibration factors, the ledger) on a temporary copy beside it, and
only then replaces the file atomically: an edit never leaves a file the receiver would refuse.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from concordose.calibration.records import CalibrationRecord
from concordose.calibration.registry import SiteRegistry
from concordose.errors import ConfigurationError

__all__ = ["SiteEdit", "add_calibration", "add_site"]


@dataclass(frozen=True)
class SiteEdit:
    """What an edit did: the lines to tell the user (empty: nothing changed) and whether the
    file was created."""

    changes: tuple[str, ...]
    created: bool


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: comments and key order survive
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.preserve_quotes = True
    return yaml


def _read(path: Path) -> tuple[CommentedMap, bool]:
    """The file's document (a new one when the file does not exist) and whether it is new."""
    if not path.exists():
        document = CommentedMap()
        document["format_version"] = 1
        document["sites"] = CommentedSeq()
        return document, True
    try:
        document = _yaml().load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise ConfigurationError(f"sites file {path} is not valid YAML: {exc}") from exc
    if not isinstance(document, CommentedMap):
        raise ConfigurationError(f"sites file {path}: expected a mapping with key sites")
    if document.get("sites") is None:
        document["sites"] = CommentedSeq()
    return document, False


def _flow(values: list[Any]) -> CommentedSeq:
    """A list written on one line (``[A, B]``)."""
    sequence = CommentedSeq(values)
    sequence.fa.set_flow_style()
    return sequence


def _write_checked(path: Path, document: CommentedMap) -> None:
    """Validate the edited document as the file it becomes, then replace the file."""
    buffer = io.StringIO()
    _yaml().dump(document, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(buffer.getvalue())
            file.flush()
            os.fsync(file.fileno())
        try:
            SiteRegistry.load(Path(temporary))
        except ConfigurationError as exc:
            raise ConfigurationError(
                str(exc).replace(temporary, str(path)) + "\n(the file was not changed)"
            ) from None
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _site_entry(document: CommentedMap, site_id: str) -> CommentedMap | None:
    for entry in document["sites"]:
        if isinstance(entry, CommentedMap) and entry.get("site_id") == site_id:
            return entry
    return None


def add_site(
    path: Path, site_id: str, ae_titles: list[str], institution: str | None = None
) -> SiteEdit:
    """Add a site (creating the file if absent), or add AE titles (and the institution) to a
    site already there.

    Raises:
        ConfigurationError: an invalid id or AE title, an AE title of another site, or a file
            that does not validate (nothing is written then).
    """
    if not ae_titles:
        raise ConfigurationError("sites add: expected at least one --ae-title, found none")
    if path.exists():
        owners = {t: s.site_id for s in SiteRegistry.load(path).sites for t in s.ae_titles}
        taken = [f"{t} (site {owners[t]})" for t in ae_titles if owners.get(t, site_id) != site_id]
        if taken:
            raise ConfigurationError(
                f"--ae-title: expected AE titles no other site uses, found {', '.join(taken)} "
                f"in {path}; an AE title identifies one site"
            )
    document, created = _read(path)
    changes: list[str] = []
    entry = _site_entry(document, site_id)
    if entry is None:
        entry = CommentedMap()
        entry["site_id"] = site_id
        entry["ae_titles"] = _flow(list(dict.fromkeys(ae_titles)))
        if institution is not None:
            entry["institution"] = institution
        document["sites"].append(entry)
        changes.append(f"site {site_id} added (AE titles {', '.join(entry['ae_titles'])})")
    else:
        known = list(entry.get("ae_titles") or [])
        new = [title for title in dict.fromkeys(ae_titles) if title not in known]
        if new:
            entry["ae_titles"] = _flow(known + new)
            changes.append(f"site {site_id}: AE title(s) {', '.join(new)} added")
        if institution is not None and entry.get("institution") != institution:
            entry["institution"] = institution
            changes.append(f"site {site_id}: institution set to {institution!r}")
    if changes:
        _write_checked(path, document)
    return SiteEdit(tuple(changes), created and bool(changes))


def add_calibration(path: Path, site_id: str, record: CalibrationRecord) -> SiteEdit:
    """Add a calibration record (e.g. a known CF without phantom scans) to a site of the file.

    Raises:
        ConfigurationError: no such file or site, a record id already used in the registry
            (ledger included), an implausible CF (the likely unit slip named), or a file that
            does not validate (nothing is written then).
    """
    if not path.is_file():
        raise ConfigurationError(
            f"sites file {path} does not exist; add the site first with `concordose sites add`"
        )
    registry = SiteRegistry.load(path)
    registry.site(site_id)
    used = {r.record_id: s.site_id for s in registry.sites for r in s.calibrations}
    if record.record_id in used:
        raise ConfigurationError(
            f"--record-id {record.record_id!r} is already a record of site "
            f"{used[record.record_id]!r} in {path}; expected a new record id"
        )
    document, _ = _read(path)
    entry = _site_entry(document, site_id)
    assert entry is not None  # registry.site found it
    fields: dict[str, Any] = record.model_dump(exclude_none=True)
    if "energy_window_kev" in fields:
        fields["energy_window_kev"] = _flow(list(fields["energy_window_kev"]))
    if entry.get("calibrations") is None:
        entry["calibrations"] = CommentedSeq()
    entry["calibrations"].append(CommentedMap(fields))
    _write_checked(path, document)
    cf = record.calibration_factor_cps_per_mbq
    return SiteEdit(
        (f"site {site_id}: calibration record {record.record_id} added (CF {cf:g} cps/MBq)",),
        False,
    )
