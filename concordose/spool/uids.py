"""Validation of DICOM UIDs before they are used in file names or keys.

A UID from the network is untrusted input: it becomes part of a path in the spool, so it must be
exactly what PS3.5 §9 allows (digits and dots, at most 64 characters) and nothing else — no
separators, no ``..``, no empty components.
"""

from __future__ import annotations

import re

_UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_UID_LENGTH = 64


def is_valid_uid(value: object) -> bool:
    """True when ``value`` is a string that is a syntactically valid DICOM UID.

    Leading zeros in components are tolerated (many vendors emit them); anything that is not a
    digit or a dot is not.
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_UID_LENGTH
        and _UID_PATTERN.fullmatch(value) is not None
    )
