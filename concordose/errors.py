"""Exceptions that reach users.

Every error the platform raises on bad input derives from :class:`ConcordoseError` and carries a
message that says what was expected, what was found and where. The CLI prints these messages
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class ConcordoseError(Exception):
    """Base class of all errors caused by input, configuration or the environment."""


class ConfigurationError(ConcordoseError):
    """A settings value or configuration file is missing or invalid."""


class SpoolNotFoundError(ConcordoseError):
    """The spool folder to process does not exist or is not a folder."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"spool folder {path} does not exist or is not a folder; "
            "point --spool at the folder the receiver writes to"
        )
        self.path = path


class UnreadableDicomError(ConcordoseError):
    """A file in the spool cannot be parsed as DICOM."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is not a readable DICOM file: {reason}")
        self.path = path
        self.reason = reason


class StudyIncompleteError(ConcordoseError):
    """A study lacks something the pipeline needs (VOIs, time points, injection data…)."""


class CalibrationMissingError(ConcordoseError):
    """No calibration record is available for the study's site."""


class OutOfRangeError(ConcordoseError):
    """A value lies outside the domain a method or reference table covers."""


IDENTIFYING_KEYWORDS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "OtherPatientIDs",
        "OtherPatientNames",
        "PatientAddress",
    }
)
"""Attributes whose values are patient identifiers: never echoed in an error or a finding."""


class MalformedHeaderError(UnreadableDicomError):
    """A header value that cannot be parsed, or parses to something the reader cannot use
    (NumberOfFrames ``abc`` or 0, an ImageOrientationPatient of 3 values).

    The message names the attribute's keyword, its tag ``(gggg,eeee)`` and the value as found
    (never the value of an identifying attribute, see :data:`IDENTIFYING_KEYWORDS`), and what
    was expected. Readers raise it where they parse the value; the gate and ``check`` turn it
    into a finding that holds the study.
    """

    def __init__(self, path: Path, keyword: str, tag: str, value: str, expected: str) -> None:
        shown = "(withheld: identifying attribute)" if keyword in IDENTIFYING_KEYWORDS else value
        super().__init__(path, f"{keyword} {tag} is {shown!r}, expected {expected}")
        self.keyword = keyword
        self.tag = tag
        self.value = shown
        self.expected = expected
