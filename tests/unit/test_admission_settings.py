"""The receiver's admission limits as typed settings (issue 18, item 2): environment names,
defaults from their one home, and refusal of values that would disable a limit."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from concordose.ingest.admission import DEFAULT_ADMISSION, AdmissionLimits
from concordose.settings import Settings


def test_defaults_come_from_the_admission_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ASSOCIATE_DEADLINE_S",
        "PDU_DEADLINE_S",
        "MAX_UNASSOCIATED",
        "MAX_ASSOCIATIONS_PER_SITE",
        "CHECK_CALLED_AE_TITLE",
    ):
        monkeypatch.delenv(f"CONCORDOSE_RECEIVER_{name}", raising=False)
    assert Settings(_env_file=None).receiver_admission() == DEFAULT_ADMISSION  # type: ignore[call-arg]


def test_each_limit_is_read_from_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORDOSE_RECEIVER_ASSOCIATE_DEADLINE_S", "4.5")
    monkeypatch.setenv("CONCORDOSE_RECEIVER_PDU_DEADLINE_S", "12")
    monkeypatch.setenv("CONCORDOSE_RECEIVER_MAX_UNASSOCIATED", "7")
    monkeypatch.setenv("CONCORDOSE_RECEIVER_MAX_ASSOCIATIONS_PER_SITE", "2")
    monkeypatch.setenv("CONCORDOSE_RECEIVER_CHECK_CALLED_AE_TITLE", "false")
    assert Settings(_env_file=None).receiver_admission() == AdmissionLimits(  # type: ignore[call-arg]
        associate_deadline_s=4.5,
        pdu_deadline_s=12.0,
        max_unassociated=7,
        max_associations_per_site=2,
        check_called_ae_title=False,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CONCORDOSE_RECEIVER_PDU_DEADLINE_S", "0"),
        ("CONCORDOSE_RECEIVER_ASSOCIATE_DEADLINE_S", "-1"),
        ("CONCORDOSE_RECEIVER_MAX_UNASSOCIATED", "0"),
        ("CONCORDOSE_RECEIVER_MAX_ASSOCIATIONS_PER_SITE", "0"),
    ],
)
def test_a_value_that_would_disable_a_limit_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("CONCORDOSE_").lower()):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_the_limits_refuse_a_zero_deadline_directly() -> None:
    with pytest.raises(ValueError, match="pdu_deadline_s must be > 0 s, found 0"):
        AdmissionLimits(pdu_deadline_s=0)
