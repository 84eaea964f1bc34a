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
