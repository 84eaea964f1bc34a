"""Pseudonymisation of subjects: a keyed hash, stable across runs, reversible by nobody.

The key is the consortium secret (``CONCORDOSE_PSEUDONYM_KEY``); it is never written to outputs
or logs. The same patient ID with the same key always gives the same subject key, so cycles and
re-runs line up without any direct identifier leaving the platform.
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

from concordose.errors import ConfigurationError

SUBJECT_KEY_HEX_CHARS = 24  # 96 bits: collision-free for any consortium size


def subject_key(patient_id: str, secret: SecretStr | None) -> str:
    """HMAC-SHA256 of the (issuer-qualified) patient ID, as a short hex string.

    Raises:
        ConfigurationError: no secret configured.
    """
    if secret is None or not secret.get_secret_value():
        raise ConfigurationError(
            "no pseudonymisation key: set CONCORDOSE_PSEUDONYM_KEY to the consortium secret"
        )
    digest = hmac.new(
        secret.get_secret_value().encode("utf-8"), patient_id.encode("utf-8"), hashlib.sha256
    )
    return "sub-" + digest.hexdigest()[:SUBJECT_KEY_HEX_CHARS]


def uid_hash(uid: str) -> str:
    """Unkeyed SHA-256 of a DICOM UID (provenance: traceable by whoever holds the UID)."""
    return hashlib.sha256(uid.encode("ascii")).hexdigest()[:32]


def cycle_key(patient_id: str, injection_iso: str, secret: SecretStr | None) -> str:
    """Keyed hash of a subject's treatment cycle (patient ID and injection date-time)."""
    return "cyc-" + subject_key(f"{patient_id}|{injection_iso}", secret)[4:]


PATIENT_HIDDEN = "(hidden)"
"""What stands for a patient in operator output when no pseudonymisation key is configured."""
PATIENT_UNKNOWN = "?"
"""What stands for a patient whose PatientID was not received."""


def patient_label(patient_id: str | None, secret: SecretStr | None, *, show_phi: bool) -> str:
    """How operator output (``spool status``, the receiver's log) names a patient.

    The PatientID itself only when ``show_phi`` is set (``--show-phi``); otherwise the subject
    key the published tables carry (:func:`subject_key`), or :data:`PATIENT_HIDDEN` when no key
    is configured (never the identifier). :data:`PATIENT_UNKNOWN` without a PatientID.
    """
    if not patient_id:
        return PATIENT_UNKNOWN
    if show_phi:
        return patient_id
    if secret is None or not secret.get_secret_value():
        return PATIENT_HIDDEN
    return subject_key(patient_id, secret)
