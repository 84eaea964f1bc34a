"""Metadata checks: every received SPECT time point held to its site's protocol.

Each rule is a small function ``(acquisition, protocol) -> list[Finding]`` registered in
:data:`RULES`; :func:`check_acquisition` runs them all. A rule never raises on bad metadata:
what is wrong becomes a finding. Missing values are errors where the dose depends on them
(injection time, activity, acquisition duration) and warnings where it does not (weight).
A value read from a vendor variant or a fallback (legacy SRT code, frame duration from the top
level or the functional groups, injection time without a date, activity in Bq, where the time
zone came from) is an info finding — or a warning where the reading rests on an assumption — so
the published ``qc_findings`` show how each value was obtained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from concordose.calibration.findings import Finding, Severity
from concordose.calibration.protocol import SiteProtocol
from concordose.dicom.codes import equivalent_code
from concordose.dicom.nm import DURATION_FROM_ROTATIONS, INJECTION_FROM_DATETIME, NMAcquisition
from concordose.quant.activity import MBQ_PER_BQ

Rule = Callable[[NMAcquisition, SiteProtocol], list[Finding]]

MBQ_PER_GBQ = 1e3


def _finding(rule: str, severity: Severity, acquisition: NMAcquisition, message: str) -> Finding:
    return Finding(rule=rule, severity=severity, source=str(acquisition.path), message=message)


def check_image_type(acquisition: NMAcquisition, _protocol: SiteProtocol) -> list[Finding]:
    """Only tomographic reconstructions are quantified."""
    if acquisition.is_recon_tomo:
        return []
    return [
        _finding(
            "image_type",
            Severity.ERROR,
            acquisition,
            f"expected ImageType containing RECON TOMO, found {'/'.join(acquisition.image_type)}",
        )
    ]


def check_radionuclide(acquisition: NMAcquisition, protocol: SiteProtocol) -> list[Finding]:
    """The radionuclide is recorded and is the protocol's (Lu-177)."""
    drug = acquisition.radiopharmaceutical
    if drug is None:
        return [
            _finding(
                "radionuclide",
                Severity.ERROR,
                acquisition,
                "RadiopharmaceuticalInformationSequence missing: radionuclide, injected activity "
                "and injection time are unknown; configure the modality to send it",
            )
        ]
    match = equivalent_code(
        drug.radionuclide_code, drug.radionuclide_scheme, protocol.radionuclide_codes
    )
    if match is None:
        return [
            _finding(
                "radionuclide",
                Severity.ERROR,
                acquisition,
                f"expected RadionuclideCodeSequence code in {protocol.radionuclide_codes} "
                f"(^177^Lutetium; or its legacy SNOMED RT id by PS3.16 Annex O), found "
                f"{drug.radionuclide_code!r} ({drug.radionuclide_scheme or 'no scheme'}, "
                f"{drug.radionuclide!r}); a site whose modality sends another code for the same "
                "nuclide adds it to radionuclide_codes in its protocol file",
            )
        ]
    if match.legacy:
        return [
            _finding(
                "radionuclide",
                Severity.INFO,
                acquisition,
                f"RadionuclideCodeSequence {drug.radionuclide_scheme or '(no scheme)'} "
                f"{drug.radionuclide_code} ({drug.radionuclide!r}) accepted as SNOMED CT "
                f"{match.canonical}: legacy SNOMED RT id of the same nuclide (PS3.16 Annex O)",
            )
        ]
    return []


@dataclass(frozen=True)
class ActivityReading:
    """How RadionuclideTotalDose was read under the site's ``injected_activity_unit``.

    Attributes:
        activity_mbq: the activity in MBq (``None`` when missing).
        unit: the unit it was read in (``MBq``, ``Bq`` or ``GBq``).
        declared: True when the site declared the unit; False when plausibility chose it.
    """

    activity_mbq: float | None
    unit: str
    declared: bool


UNIT_TO_MBQ = {"MBq": 1.0, "Bq": MBQ_PER_BQ, "GBq": MBQ_PER_GBQ}


def read_injected_activity(acquisition: NMAcquisition, protocol: SiteProtocol) -> ActivityReading:
    """RadionuclideTotalDose in MBq under the protocol's ``injected_activity_unit``: as declared
    (``MBq``, ``Bq``), or with ``auto`` MBq when plausible (in ``injected_activity_mbq``), else
    the first of Bq, GBq that makes it plausible, else MBq (then reported as an error)."""
    drug = acquisition.radiopharmaceutical
    value = drug.injected_activity_mbq if drug is not None else None
    declared = protocol.injected_activity_unit
    if value is None:
        return ActivityReading(None, "MBq" if declared == "auto" else declared, True)
    if declared != "auto":
        return ActivityReading(value * UNIT_TO_MBQ[declared], declared, True)
    for unit in ("MBq", "Bq", "GBq"):
        if value * UNIT_TO_MBQ[unit] in protocol.injected_activity_mbq:
            return ActivityReading(value * UNIT_TO_MBQ[unit], unit, False)
    return ActivityReading(value, "MBq", False)


def with_activity_in_mbq(acquisition: NMAcquisition, protocol: SiteProtocol) -> NMAcquisition:
    """The acquisition with RadionuclideTotalDose converted to MBq as
    :func:`read_injected_activity` reads it (unchanged when already MBq or missing)."""
    drug = acquisition.radiopharmaceutical
    reading = read_injected_activity(acquisition, protocol)
    if drug is None or reading.activity_mbq is None or reading.unit == "MBq":
        return acquisition
    return replace(
        acquisition,
        radiopharmaceutical=replace(drug, injected_activity_mbq=reading.activity_mbq),
    )


def check_injected_activity(acquisition: NMAcquisition, protocol: SiteProtocol) -> list[Finding]:
    """Injected activity present, in MBq, and plausible; Bq and GBq entries are recognised."""
    drug = acquisition.radiopharmaceutical
    if drug is None:
        return []  # reported once by check_radionuclide
    activity = drug.injected_activity_mbq
    expected = protocol.injected_activity_mbq
    if activity is None:
        return [
            _finding(
                "injected_activity",
                Severity.ERROR,
                acquisition,
                "RadionuclideTotalDose missing: the injected activity is needed",
            )
        ]
    reading = read_injected_activity(acquisition, protocol)
    activity_mbq = reading.activity_mbq
    assert activity_mbq is not None  # activity is not None
    if activity_mbq in expected:
        if reading.unit == "MBq":
            return []
        how = (
            f"the site's declaration (injected_activity_unit: {reading.unit})"
            if reading.declared
            else f"plausibility (injected_activity_unit: auto; as MBq it is outside "
            f"{expected.min:g}–{expected.max:g})"
        )
        return [
            _finding(
                "injected_activity",
                Severity.INFO if reading.declared else Severity.WARNING,
                acquisition,
                f"RadionuclideTotalDose {activity:g} read as {reading.unit} by {how}: "
                f"{activity_mbq:g} MBq",
            )
        ]
    hint = ""
    if reading.unit == "MBq" and activity * MBQ_PER_BQ in expected:
        hint = (
            f" — looks like Bq ({activity * MBQ_PER_BQ:.0f} MBq); DICOM NM stores MBq: fix "
            "the modality, or declare injected_activity_unit: Bq (or auto) in the site's "
            "protocol file"
        )
    elif reading.unit == "MBq" and activity * MBQ_PER_GBQ in expected:
        hint = (
            f" — looks like GBq ({activity * MBQ_PER_GBQ:.0f} MBq); DICOM NM stores MBq: fix "
            "the modality, or declare injected_activity_unit: auto in the site's protocol file"
        )
    unit = "" if reading.unit == "MBq" else f" (read as {reading.unit}: {activity_mbq:g} MBq)"
    return [
        _finding(
            "injected_activity",
            Severity.ERROR,
            acquisition,
            f"RadionuclideTotalDose is {activity:g}{unit} but the protocol expects MBq in "
            f"{expected.min:g}–{expected.max:g}{hint}",
        )
    ]


def check_times(acquisition: NMAcquisition, protocol: SiteProtocol) -> list[Finding]:
    """Injection and acquisition date-times present; time since injection in the window."""
    findings = []
    drug = acquisition.radiopharmaceutical
    if drug is not None and drug.injection_datetime is None:
        findings.append(
            _finding(
                "injection_datetime",
                Severity.ERROR,
                acquisition,
                "RadiopharmaceuticalStartDateTime (or start date and time) missing",
            )
        )
    if acquisition.acquisition_datetime is None:
        findings.append(
            _finding(
                "acquisition_datetime",
                Severity.ERROR,
                acquisition,
                "AcquisitionDateTime (or AcquisitionDate and AcquisitionTime) missing",
            )
        )
    if findings or drug is None:
        return findings
    findings.extend(_time_provenance(acquisition, protocol))
    hours = acquisition.hours_since_injection()
    window = protocol.time_since_injection_h
    if hours < 0:
        findings.append(
            _finding(
                "time_since_injection",
                Severity.ERROR,
                acquisition,
                f"acquired {-hours:.1f} h BEFORE the injection time; check the clocks",
            )
        )
    elif hours not in window:
        findings.append(
            _finding(
                "time_since_injection",
                Severity.WARNING,
                acquisition,
                f"acquired {hours:.1f} h after injection, outside the protocol window "
                f"{window.min:g}–{window.max:g} h",
            )
        )
    return findings


def _time_provenance(acquisition: NMAcquisition, protocol: SiteProtocol) -> list[Finding]:
    """Where the injection time and the UTC offsets came from, when not the standard way."""
    drug = acquisition.radiopharmaceutical
    assert drug is not None
    findings = []
    if drug.injection_source not in (None, INJECTION_FROM_DATETIME):
        declared = protocol.injection_time_without_date == "scan_date"
        taken = (
            f"RadiopharmaceuticalStartDateTime missing; injection taken from "
            f"{drug.injection_source} ({drug.injection_datetime:%Y-%m-%d %H:%M})"
        )
        if declared:
            message = (
                f"{taken}, as the site declares (injection_time_without_date: scan_date); "
                "configure the modality to send RadiopharmaceuticalStartDateTime"
            )
        else:
            message = (
                f"{taken}: a start time has no date, and a scan on a later day at a later "
                "clock time cannot be told from one on the injection day; configure the "
                "modality to send RadiopharmaceuticalStartDateTime, or declare "
                "injection_time_without_date: scan_date in the site's protocol file if its "
                "scans are on the injection day"
            )
        findings.append(
            _finding(
                "injection_datetime",
                Severity.WARNING if declared else Severity.ERROR,
                acquisition,
                message,
            )
        )
    acquisition_offset = acquisition.acquisition_utc_offset
    injection_offset = drug.injection_utc_offset
    if acquisition_offset is not None and injection_offset is not None:
        findings.append(
            _finding(
                "time_zone",
                Severity.INFO,
                acquisition,
                f"hours since injection on UTC: injection offset {_hours(injection_offset)}, "
                f"acquisition offset {_hours(acquisition_offset)} "
                f"(from {acquisition.time_zone_source})",
            )
        )
    elif acquisition_offset is None and injection_offset is None:
        findings.append(
            _finding(
                "time_zone",
                Severity.INFO,
                acquisition,
                "no time zone known (no TimezoneOffsetFromUTC, no offset in the DT values, no "
                "timezone for the site in sites.yaml): injection and acquisition compared on "
                "the modality's local clock, 1 h off if daylight saving changed between them",
            )
        )
    else:
        known = "injection" if injection_offset is not None else "acquisition"
        findings.append(
            _finding(
                "time_zone",
                Severity.WARNING,
                acquisition,
                f"only the {known} time states a UTC offset: injection and acquisition compared "
                "on the modality's local clock; declare the site's timezone in sites.yaml",
            )
        )
    return findings


def _hours(offset: timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def check_energy_window(acquisition: NMAcquisition, protocol: SiteProtocol) -> list[Finding]:
    """A window contains the photopeak, with about the protocol's width."""
    peak = protocol.photopeak_kev
    containing = [
        (low, high) for low, high in acquisition.energy_windows_kev if low <= peak <= high
    ]
    if not containing:
        found = ", ".join(f"{low:g}–{high:g}" for low, high in acquisition.energy_windows_kev)
        return [
            _finding(
                "energy_window",
                Severity.ERROR,
                acquisition,
                f"no energy window contains the {peak:g} keV photopeak "
                f"(windows: {found or 'none'})",
            )
        ]
    low, high = containing[0]
    width_fraction = (high - low) / peak
    if abs(width_fraction - protocol.window_width_fraction) > protocol.window_width_tolerance:
        return [
            _finding(
                "energy_window",
                Severity.WARNING,
                acquisition,
                f"photopeak window {low:g}–{high:g} keV is {width_fraction:.0%} wide; the "
                f"protocol expects {protocol.window_width_fraction:.0%}",
            )
        ]
    return []


def check_collimator(acquisition: NMAcquisition, protocol: SiteProtocol) -> list[Finding]:
    """The collimator is one the site calibrated."""
    if not protocol.collimators or acquisition.collimator in protocol.collimators:
        return []
    return [
        _finding(
            "collimator",
            Severity.ERROR,
            acquisition,
            f"expected collimator in {protocol.collimators}, found {acquisition.collimator!r}",
        )
    ]


def check_corrections(acquisition: NMAcquisition, protocol: SiteProtocol) -> list[Finding]:
    """Attenuation and scatter corrected; not decay corrected."""
    present = set(acquisition.corrections)
    findings = []
    missing = [c for c in protocol.required_corrections if c not in present]
    if missing:
        findings.append(
            _finding(
                "corrections",
                Severity.ERROR,
                acquisition,
                f"CorrectedImage lacks {', '.join(missing)} "
                f"(found {', '.join(sorted(present)) or 'none'})",
            )
        )
    forbidden = [c for c in protocol.forbidden_corrections if c in present]
    if forbidden:
        findings.append(
            _finding(
                "corrections",
                Severity.ERROR,
                acquisition,
                f"CorrectedImage has {', '.join(forbidden)}: counts must not be decay corrected",
            )
        )
    return findings


def check_units(acquisition: NMAcquisition, protocol: SiteProtocol) -> list[Finding]:
    """Pixel values are in units the pipeline can convert (counts, or Bq/mL if accepted)."""
    units = acquisition.pixel_units
    kind = "counts" if units in (None, "CNTS", "COUNTS") else units
    if kind in protocol.accepted_units:
        return []
    return [
        _finding(
            "units",
            Severity.ERROR,
            acquisition,
            f"pixel units {units!r} not accepted; the protocol accepts {protocol.accepted_units}",
        )
    ]


def check_acquisition_duration(
    acquisition: NMAcquisition, _protocol: SiteProtocol
) -> list[Finding]:
    """Total acquisition time known (counts → activity needs it; a vendor Bq/mL image does not,
    but its published acquisition row states it, so it is required there too)."""
    duration = acquisition.acquisition_duration_s
    if duration is not None and duration > 0:
        source = acquisition.acquisition_duration_source
        if source in (None, DURATION_FROM_ROTATIONS):
            return []
        return [
            _finding(
                "acquisition_duration",
                Severity.INFO,
                acquisition,
                f"acquisition duration {duration:g} s from {source} "
                "(RotationInformationSequence gives no frame duration)",
            )
        ]
    return [
        _finding(
            "acquisition_duration",
            Severity.ERROR,
            acquisition,
            "acquisition duration unknown: RotationInformationSequence ActualFrameDuration × "
            "NumberOfFramesInRotation missing, and no top-level ActualFrameDuration or "
            "functional-groups FrameAcquisitionDuration to fall back on",
        )
    ]


def check_patient_weight(acquisition: NMAcquisition, protocol: SiteProtocol) -> list[Finding]:
    """Patient weight present and plausible (organ-mass scaling uses it)."""
    weight = acquisition.patient_weight_kg
    if weight is not None and weight in protocol.patient_weight_kg:
        return []
    found = "missing" if weight is None else f"{weight:g} kg"
    return [
        _finding(
            "patient_weight",
            Severity.WARNING,
            acquisition,
            f"PatientWeight {found}; expected {protocol.patient_weight_kg.min:g}–"
            f"{protocol.patient_weight_kg.max:g} kg",
        )
    ]


def check_voxel_geometry(acquisition: NMAcquisition, protocol: SiteProtocol) -> list[Finding]:
    """Voxel sizes within the protocol's range on every axis."""
    spacing = acquisition.geometry.spacing_mm
    outside = [value for value in spacing if value not in protocol.voxel_mm]
    if not outside:
        return []
    return [
        _finding(
            "voxel_geometry",
            Severity.WARNING,
            acquisition,
            f"voxel size {' × '.join(f'{v:.3g}' for v in spacing)} mm outside the protocol's "
            f"{protocol.voxel_mm.min:g}–{protocol.voxel_mm.max:g} mm",
        )
    ]


RULES: dict[str, Rule] = {
    "image_type": check_image_type,
    "radionuclide": check_radionuclide,
    "injected_activity": check_injected_activity,
    "times": check_times,
    "energy_window": check_energy_window,
    "collimator": check_collimator,
    "corrections": check_corrections,
    "units": check_units,
    "acquisition_duration": check_acquisition_duration,
    "patient_weight": check_patient_weight,
    "voxel_geometry": check_voxel_geometry,
}


def check_acquisition(acquisition: NMAcquisition, protocol: SiteProtocol) -> list[Finding]:
    """Run every rule on one time point; findings in rule order."""
    return [finding for rule in RULES.values() for finding in rule(acquisition, protocol)]
