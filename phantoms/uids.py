"""Reproducible DICOM UIDs: the same patient key and role always give the same UID."""

from __future__ import annotations

from pydicom.uid import UID, generate_uid


def reproducible_uid(patient_key: str, *role: str | int) -> UID:
    """UID derived (by hash, pydicom's ``entropy_srcs``) from the patient key and a role path.

    ``patient_key`` must encode everything that changes the generated content (seed, preset, site,
    time points), so that different content never shares a UID.
    """
    return generate_uid(entropy_srcs=[patient_key, *(str(part) for part in role)])
