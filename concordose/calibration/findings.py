"""Findings: what a check found wrong with a study, and how much it matters.

A finding with severity ``error`` holds the study (nothing is computed from it); a ``warning``
lets it pass and is recorded next to its results; an ``info`` records how a value was obtained
(a vendor variant or fallback read, e.g. a legacy SRT code or a frame duration taken from the
top level) so that provenance shows it. Every finding names its rule, the object it is
about, what was expected and what was found, so a site can fix it without asking.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from concordose.errors import MalformedHeaderError


class Severity(StrEnum):
    """How a finding affects processing."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    """One rule's verdict on one object.

    Attributes:
        rule: the rule's name, e.g. ``"injected_activity"``.
        severity: error (holds), warning (passes, recorded) or info (provenance of a value).
        source: what it is about (a file path or a series UID).
        message: expected versus found, in a sentence a site physicist can act on.
    """

    rule: str
    severity: Severity
    source: str
    message: str

    def __str__(self) -> str:
        return f"[{self.severity}] {self.rule}: {self.source}: {self.message}"


def holds(findings: Iterable[Finding]) -> bool:
    """True when any finding is an error, i.e. the study must be held."""
    return any(finding.severity is Severity.ERROR for finding in findings)


HEADER_CHECK = "dicom_header"
"""``rule`` of the finding holding a study whose header holds a value the readers cannot parse
(:class:`~concordose.errors.MalformedHeaderError`)."""


def malformed_header_finding(error: MalformedHeaderError) -> Finding:
    """The error finding for a malformed header value: the file, then the keyword, tag, value
    as found and what was expected (the error's own words; identifying values withheld)."""
    return Finding(HEADER_CHECK, Severity.ERROR, str(error.path), error.reason)
