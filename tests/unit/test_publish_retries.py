"""The publish task retries transient store failures only."""

from __future__ import annotations

from prefect.states import Failed

from concordose.results.object_store import StoreAccessDeniedError, StoreUnavailableError
from concordose.results.publish import ValidationFailedError
from tasks.study import publish_worth_retrying


def test_invalid_data_and_refused_credentials_are_not_retried() -> None:
    assert not publish_worth_retrying(None, None, Failed(data=ValidationFailedError("bad")))
    assert not publish_worth_retrying(None, None, Failed(data=StoreAccessDeniedError("no")))
    assert publish_worth_retrying(None, None, Failed(data=StoreUnavailableError("down")))
