"""Provenance stamped on every published row."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from concordose import __version__


def new_run_id() -> str:
    """A unique, time-sortable run id: ``YYYYMMDDTHHMMSSZ-<8 hex>``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Provenance:
    """Who computed a row, when, within which run."""

    run_id: str
    flow_run_id: str | None = None
    software_version: str = __version__
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
