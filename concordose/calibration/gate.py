"""The calibration gate: a time point is processed only with a calibration that fits it.

A calibration record fits a SPECT when it belongs to the sending site, is valid on the
acquisition date, and was measured with the same camera model, collimator and reconstruction
protocol (each compared only where the record states it). Anything else holds the time point
with a finding that says exactly what is missing. A vendor-quantified SPECT (Units BQML, when
the protocol accepts it) is not converted with the record's CF: the record must instead state
the vendor quantification's bias measured on the site's phantom, within the protocol's
tolerance (:func:`check_vendor_quantification`).

The gate also *interprets* the header under the site's declarations before checking it: times
without a UTC offset are placed on UTC with the site's ``timezone`` (sites.yaml), and
RadionuclideTotalDose is read in the protocol's ``injected_activity_unit``. The interpreted
acquisition is returned with the verdict (:attr:`GateResult.acquisition`), so what is processed
is what was checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from concordose.calibration.findings import Finding, Severity, holds
from concordose.calibration.metadata_checks import check_acquisition, with_activity_in_mbq
from concordose.calibration.protocol import SiteProtocol, load_protocol
from concordose.calibration.registry import CalibrationRecord, Site, SiteRegistry
from concordose.dicom.nm import NMAcquisition
from concordose.errors import ConcordoseError


@dataclass(frozen=True)
class GateResult:
    """Verdict on one time point: its findings and, if it passes, the calibration to use.

    ``acquisition`` is the time point as the gate read it (site time zone applied, activity in
    MBq); ``None`` when the site is unknown (nothing was interpreted)."""

    findings: tuple[Finding, ...]
    calibration: CalibrationRecord | None
    site: Site | None
    acquisition: NMAcquisition | None = None

    @property
    def held(self) -> bool:
        """True when an error finding holds the time point."""
        return holds(self.findings) or self.calibration is None


WINDOW_MATCH_TOLERANCE = 0.01  # relative, on each bound of the photopeak window


def _window_matches(record: CalibrationRecord, acquisition: NMAcquisition) -> bool:
    if record.energy_window_kev is None:
        return True
    low, high = record.energy_window_kev
    return any(
        abs(lower / low - 1) <= WINDOW_MATCH_TOLERANCE
        and abs(upper / high - 1) <= WINDOW_MATCH_TOLERANCE
        for lower, upper in acquisition.energy_windows_kev
    )


def _mismatches(record: CalibrationRecord, acquisition: NMAcquisition) -> list[str]:
    found_windows = ", ".join(f"{lo:g}–{hi:g}" for lo, hi in acquisition.energy_windows_kev)
    window = (
        []
        if _window_matches(record, acquisition)
        else [
            f"energy windows {found_windows or 'none'} keV ≠ calibrated {record.energy_window_kev}"
        ]
    )
    pairs = [
        ("camera model", record.camera_model, acquisition.camera_model),
        ("collimator", record.collimator, acquisition.collimator),
        ("reconstruction", record.reconstruction, acquisition.reconstruction),
    ]
    return [
        f"{name} {found!r} ≠ calibrated {expected!r}"
        for name, expected, found in pairs
        if expected is not None and expected != found
    ] + window


def select_calibration(
    acquisition: NMAcquisition, site: Site
) -> tuple[CalibrationRecord | None, list[Finding]]:
    """The calibration record that fits ``acquisition`` at ``site``, or a finding saying why none.

    Among fitting records valid that day, the one that started latest wins.
    """
    source = str(acquisition.path)
    if acquisition.acquisition_datetime is None:
        return None, []  # reported by the metadata checks
    day = acquisition.acquisition_datetime.date()
    valid = [record for record in site.calibrations if record.is_valid_on(day)]
    if not valid:
        ranges = ", ".join(
            f"{r.record_id} ({r.valid_from}…{r.valid_to or 'open'})" for r in site.calibrations
        )
        message = (
            f"site {site.site_id!r} has no calibration valid on {day} "
            f"(records: {ranges or 'none'}); scan the phantoms and run `concordose calibrate`"
        )
        return None, [Finding("calibration", Severity.ERROR, source, message)]
    fitting = [record for record in valid if not _mismatches(record, acquisition)]
    if not fitting:
        reasons = "; ".join(
            f"{r.record_id}: {', '.join(_mismatches(r, acquisition))}" for r in valid
        )
        message = (
            f"no calibration of site {site.site_id!r} valid on {day} matches this set-up "
            f"({reasons})"
        )
        return None, [Finding("calibration", Severity.ERROR, source, message)]
    return max(fitting, key=lambda record: record.valid_from), []


VENDOR_QUANTIFICATION_CHECK = "vendor_quantification"
"""Rule name of the check that replaces the CF for a vendor-quantified (Units BQML) image."""


def check_vendor_quantification(
    record: CalibrationRecord, acquisition: NMAcquisition, protocol: SiteProtocol
) -> list[Finding]:
    """For a vendor-quantified image (Units BQML) the CF is not applied: the vendor's own
    calibration is used, and must have been checked on the site's phantom — the record states
    the vendor quantification's measured bias, within the protocol's tolerance. Nothing for a
    counts image."""
    if not acquisition.is_vendor_quantitative:
        return []
    source = str(acquisition.path)
    bias = record.vendor_quantification_bias_relative
    tolerance = protocol.vendor_quantification_tolerance
    if bias is None:
        message = (
            f"vendor quantitative SPECT (Units BQML) but calibration record {record.record_id} "
            "states no phantom-derived accuracy of the vendor quantification "
            "(vendor_quantification_bias_relative): reconstruct the site's phantom with the "
            "vendor quantification and record its bias against the known activity"
        )
        return [Finding(VENDOR_QUANTIFICATION_CHECK, Severity.ERROR, source, message)]
    sd = record.vendor_quantification_bias_sd_relative
    measured = f"{bias:+.1%}" + (f" (± {sd:.1%})" if sd is not None else "")
    if abs(bias) > tolerance:
        message = (
            f"vendor quantification bias {measured} measured on the site's phantom (record "
            f"{record.record_id}) exceeds the protocol's ±{tolerance:.0%}; recalibrate the "
            "vendor quantification or send counts"
        )
        return [Finding(VENDOR_QUANTIFICATION_CHECK, Severity.ERROR, source, message)]
    message = (
        f"vendor calibration used: voxel values in Bq/mL (Units BQML, RescaleSlope "
        f"{acquisition.rescale_slope:g}), no CF applied; the site's phantom measured the vendor "
        f"quantification's bias {measured}, within ±{tolerance:.0%} (record {record.record_id})"
    )
    return [Finding(VENDOR_QUANTIFICATION_CHECK, Severity.INFO, source, message)]


def gate_time_point(
    acquisition: NMAcquisition,
    registry: SiteRegistry,
    *,
    calling_ae_title: str | None,
    site_id: str | None = None,
    protocol: SiteProtocol | None = None,
) -> GateResult:
    """Metadata checks against the site's protocol, then the calibration gate.

    Args:
        acquisition: the SPECT time point.
        registry: the consortium's sites.
        calling_ae_title: who sent it (identifies the site); ``None`` when not received by C-STORE.
        site_id: the site when there is no calling AE title.
        protocol: the rules to apply; default the site's protocol file.
    """
    source = str(acquisition.path)
    site: Site | None = None
    try:
        if calling_ae_title:
            site = registry.site_for_ae_title(calling_ae_title)
        elif site_id is not None:
            site = registry.site(site_id)
    except ConcordoseError as exc:
        return GateResult((Finding("site", Severity.ERROR, source, str(exc)),), None, None)
    if site is None:
        finding = Finding(
            "site",
            Severity.ERROR,
            source,
            "the sending site is unknown (no calling AE title recorded and no site given)",
        )
        return GateResult((finding,), None, None)
    rules = protocol or load_protocol(site.site_id, registry.protocol_dir)
    if site.timezone is not None:
        acquisition = acquisition.with_time_zone(site.timezone)
    findings = check_acquisition(acquisition, rules)
    calibration, gate_findings = select_calibration(acquisition, site)
    if calibration is not None:
        gate_findings += check_vendor_quantification(calibration, acquisition, rules)
    interpreted = with_activity_in_mbq(acquisition, rules)
    return GateResult(tuple(findings + gate_findings), calibration, site, interpreted)


@dataclass(frozen=True)
class CycleVerdict:
    """The gate's verdict on a whole cycle: held if any time point is held.

    Attributes:
        time_point_findings: the findings of each time point, in time order.
        calibration: the calibration of the first time point (all must pass for it to be set).
        site: the sending site, when known.
        acquisitions: each time point as the gate read it (:attr:`GateResult.acquisition`);
            empty when the site is unknown.
    """

    time_point_findings: tuple[tuple[Finding, ...], ...]
    calibration: CalibrationRecord | None
    site: Site | None
    acquisitions: tuple[NMAcquisition, ...] = ()

    @property
    def findings(self) -> tuple[Finding, ...]:
        """Every finding of the cycle, in time-point order."""
        return tuple(finding for point in self.time_point_findings for finding in point)

    @property
    def injected_activity_mbq(self) -> float | None:
        """RadionuclideTotalDose of the first time point in MBq as the gate read it (its unit
        resolved by the protocol); None when not recorded or the site is unknown."""
        if not self.acquisitions or self.acquisitions[0].radiopharmaceutical is None:
            return None
        return self.acquisitions[0].radiopharmaceutical.injected_activity_mbq

    @property
    def held(self) -> bool:
        """True when the cycle must not be processed."""
        return self.calibration is None or holds(self.findings)


def gate_cycle(
    acquisitions: list[tuple[NMAcquisition, str | None]],
    registry: SiteRegistry,
    *,
    site_id: str | None = None,
) -> CycleVerdict:
    """Gate every time point of a cycle (``(acquisition, calling AE title)`` pairs)."""
    results = [
        gate_time_point(acquisition, registry, calling_ae_title=calling_ae, site_id=site_id)
        for acquisition, calling_ae in acquisitions
    ]
    per_point = tuple(result.findings for result in results)
    interpreted = tuple(r.acquisition for r in results if r.acquisition is not None)
    if len(interpreted) != len(results):
        interpreted = ()
    if not results or any(result.held for result in results):
        return CycleVerdict(per_point, None, results[0].site if results else None, interpreted)
    return CycleVerdict(per_point, results[0].calibration, results[0].site, interpreted)
