"""Keyed pseudonyms: stable, key-dependent, never without a key."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from concordose.dicom.pseudonym import cycle_key, subject_key
from concordose.errors import ConfigurationError


def test_same_patient_same_key_is_stable_and_key_dependent() -> None:
    key = SecretStr("consortium-secret")
    assert subject_key("PAT-1", key) == subject_key("PAT-1", key)
    assert subject_key("PAT-1", key) != subject_key("PAT-2", key)
    assert subject_key("PAT-1", key) != subject_key("PAT-1", SecretStr("other"))
    assert "PAT-1" not in subject_key("PAT-1", key)
    assert cycle_key("PAT-1", "2026-01-01T10:00:00", key) != cycle_key(
        "PAT-1", "2026-03-01T10:00:00", key
    )


def test_missing_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="CONCORDOSE_PSEUDONYM_KEY"):
        subject_key("PAT-1", None)
