"""Publication of a run's tables: validated, data objects first under unique names, manifest last.

Layout under the store's base::

    <table>/v<version>/site_id=<site>/<run_id>.parquet   Parquet, zstd; hive-partitioned by site
                                                         under one folder per schema version
    _validation/<run_id>.json                            the run's Great Expectations results
    _data_docs/index.html                                Data Docs (HTML) of the latest run,
    _data_docs/runs/<run_id>/ , runs/index.html          of each kept run and their list, and
    _data_docs/static/                                   their shared, vendored assets: offline,
                                                         see concordose.results.data_docs
    _quarantine/<run_id>/<table>.parquet (+ .validation.json)   batches that failed validation
    _manifests/<run_id>.json                             written last, atomically

The manifest is the commit: a reader that trusts only manifested objects never sees a
half-published run (a writer killed before its manifest leaves only unreferenced objects). The
manifest also records which scope values (cycle keys; calibration record ids) the run covers, so
that a re-run of a study supersedes the earlier rows of those cycles in the current view
(:mod:`concordose.results.catalogue`): re-running never duplicates.

Data Docs of the newest ``store.data_docs_keep_runs`` runs are kept (default 30,
``CONCORDOSE_DATA_DOCS_KEEP_RUNS``), a run that failed validation included.

Validation: every table is validated before anything is written. If any table fails, the failing
batches are quarantined with their validation results, nothing of the run is published and
:class:`ValidationFailedError` says where the quarantine is.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from concordose.errors import ConcordoseError
from concordose.results.data_docs import publish_data_docs
from concordose.results.object_store import ObjectStore
from concordose.results.provenance import Provenance
from concordose.results.validation import TableValidation, validate_tables
from concordose.schemas.tables import TABLES

logger = logging.getLogger(__name__)

MANIFEST_DIR = "_manifests"
VALIDATION_DIR = "_validation"
QUARANTINE_DIR = "_quarantine"
MANIFEST_FORMAT_VERSION = 2


class ValidationFailedError(ConcordoseError):
    """A table failed its Great Expectations suite; the run was quarantined, not published."""


@dataclass(frozen=True)
class PublishedObject:
    """One Parquet object of a run."""

    table: str
    path: str
    rows: int


@dataclass(frozen=True)
class PublishedRun:
    """What a run published, and where its manifest is."""

    run_id: str
    manifest_path: str
    objects: tuple[PublishedObject, ...]


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _combine(tables: Mapping[str, list[pa.Table]], run_id: str) -> dict[str, pa.Table]:
    combined: dict[str, pa.Table] = {}
    for name, parts in sorted(tables.items()):
        if name not in TABLES:
            raise ConcordoseError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
        if not parts:
            continue
        spec = TABLES[name]
        table = pa.concat_tables([part.cast(spec.schema) for part in parts])
        stray = set(table.column("run_id").to_pylist()) - {run_id}
        if stray:
            # Readers tell current rows by run id: a row stamped with another run's id would be
            # invisible (or worse, current under the wrong run).
            raise ConcordoseError(
                f"table {name!r} has rows stamped with run id(s) {sorted(stray)} but this run "
                f"is {run_id!r}; build the tables with this run's Provenance"
            )
        combined[name] = table
    return combined


def _scopes(combined: Mapping[str, pa.Table]) -> dict[str, list[str]]:
    """Scope column → the sorted values this run covers (the rows it replaces)."""
    scopes: dict[str, set[str]] = defaultdict(set)
    for name, table in combined.items():
        column = TABLES[name].scope_column
        scopes[column].update(str(value) for value in table.column(column).to_pylist())
    return {column: sorted(values) for column, values in sorted(scopes.items())}


def _quarantine(
    store: ObjectStore,
    combined: Mapping[str, pa.Table],
    outcomes: Mapping[str, TableValidation],
    run_id: str,
) -> str:
    folder = store.path(QUARANTINE_DIR, run_id)
    for name, outcome in outcomes.items():
        if outcome.success:
            continue
        store.write_bytes_atomically(f"{folder}/{name}.parquet", _parquet_bytes(combined[name]))
        store.write_bytes_atomically(
            f"{folder}/{name}.validation.json",
            json.dumps(outcome.result, indent=2, default=str).encode("utf-8"),
        )
    return folder


def publish_tables(
    store: ObjectStore,
    tables: Mapping[str, list[pa.Table]],
    provenance: Provenance,
    *,
    validate: bool = True,
) -> PublishedRun:
    """Validate every table, write one object per table and site, then the run's manifest.

    Args:
        store: where to write.
        tables: table name → the per-cycle tables to concatenate (all of that table's schema).
        provenance: the run's identity (``run_id`` names the objects).
        validate: run the Great Expectations suites first (on by default; off only for tests
            that exercise the writer itself).

    Raises:
        ValidationFailedError: a table failed its suite (quarantined, nothing published).
        ConcordoseError: unknown table, or the store refused a write (the message says where);
            its subclasses from :mod:`~concordose.results.object_store` for a missing bucket,
            refused credentials or an unreachable store.
    """
    combined = _combine(tables, provenance.run_id)
    store.check_ready()
    validation_summary: dict[str, Any] = {}
    if validate:
        with tempfile.TemporaryDirectory(prefix="concordose-data-docs-") as docs:
            outcomes = validate_tables(combined, data_docs_dir=Path(docs))
            publish_data_docs(
                store,
                Path(docs),
                provenance.run_id,
                {name: o.success for name, o in outcomes.items()},
                keep_runs=store.data_docs_keep_runs,
            )
        validation_summary = {
            name: {"suite": o.suite, "success": o.success, "failed": list(o.failed)}
            for name, o in outcomes.items()
        }
        failed = [o for o in outcomes.values() if not o.success]
        if failed:
            folder = _quarantine(store, combined, outcomes, provenance.run_id)
            details = "; ".join(f"{o.table}: {', '.join(o.failed)}" for o in failed)
            raise ValidationFailedError(
                f"run {provenance.run_id} not published: validation failed for "
                f"{', '.join(o.table for o in failed)} ({details}); batches and validation "
                f"results quarantined under {folder}"
            )
        store.write_bytes_atomically(
            store.path(VALIDATION_DIR, f"{provenance.run_id}.json"),
            json.dumps(
                {name: o.result for name, o in outcomes.items()}, indent=2, default=str
            ).encode("utf-8"),
        )

    objects: list[PublishedObject] = []
    manifest_objects: list[dict[str, Any]] = []
    for name, table in combined.items():
        spec = TABLES[name]
        by_site: dict[str, list[int]] = defaultdict(list)
        for index, site in enumerate(table.column("site_id").to_pylist()):
            by_site[site].append(index)
        for site, indices in sorted(by_site.items()):
            path = store.path(
                name, f"v{spec.version}", f"site_id={site}", f"{provenance.run_id}.parquet"
            )
            store.ensure_parent(path)
            part = table.take(indices)
            store.call(
                f"write {path}",
                partial(
                    pq.write_table, part, path, filesystem=store.filesystem, compression="zstd"
                ),
            )
            objects.append(PublishedObject(name, path, len(indices)))
            manifest_objects.append(
                {
                    "table": name,
                    "path": path,
                    "key": store.relative(path),
                    "rows": len(indices),
                    "schema_version": spec.version,
                    "site_id": site,
                }
            )
    manifest: dict[str, Any] = {
        "manifest_format": MANIFEST_FORMAT_VERSION,
        "run_id": provenance.run_id,
        "flow_run_id": provenance.flow_run_id,
        "software_version": provenance.software_version,
        "created_at": provenance.created_at.isoformat(),
        "published_at": datetime.now(UTC).isoformat(),
        "scopes": _scopes(combined),
        "validation": validation_summary,
        "objects": manifest_objects,
    }
    manifest_path = store.path(MANIFEST_DIR, f"{provenance.run_id}.json")
    _commit(store, manifest_path, json.dumps(manifest, indent=2).encode("utf-8"))
    logger.info("published run %s: %d object(s)", provenance.run_id, len(objects))
    return PublishedRun(provenance.run_id, manifest_path, tuple(objects))


def _commit(store: ObjectStore, manifest_path: str, manifest: bytes) -> None:
    """Write the manifest: the single atomic step that makes a run visible to readers."""
    store.write_bytes_atomically(manifest_path, manifest)
