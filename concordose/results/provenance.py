"""Provenance stamped on every published row."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from concordose import __version__
from concordose.schemas.tables import TableSpec


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

    def columns(self) -> dict[str, Any]:
        """The provenance columns every published row carries (software version, run and flow
        run ids, created-at)."""
        return {
            "software_version": self.software_version,
            "run_id": self.run_id,
            "flow_run_id": self.flow_run_id,
            "created_at": self.created_at,
        }


def stamped_table(
    spec: TableSpec, rows: Iterable[Mapping[str, Any]], provenance: Provenance
) -> pa.Table:
    """``rows`` of table ``spec`` with its schema version and ``provenance``'s columns, as Arrow
    with the table's schema (the cohort tables' rows carry no calibration or input UIDs)."""
    stamped = [{**row, "schema_version": spec.version, **provenance.columns()} for row in rows]
    return pa.Table.from_pylist(stamped, schema=spec.schema)
