"""Publication of a run's tables: data objects first, under unique names, the manifest last.

Layout under the store's base::

    <table>/v<version>/site_id=<site>/<run_id>.parquet   Parquet, zstd; hive-partitioned by site
                                                         under one folder per schema version
    _manifests/<run_id>.json                                     written last

A reader that trusts only manifested objects never sees a half-published run.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from concordose.errors import ConcordoseError
from concordose.results.object_store import ObjectStore
from concordose.results.provenance import Provenance
from schemas.tables import TABLES

MANIFEST_DIR = "_manifests"


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


def publish_tables(
    store: ObjectStore, tables: Mapping[str, list[pa.Table]], provenance: Provenance
) -> PublishedRun:
    """Write every table (one object per table and site), then the run's manifest.

    Args:
        store: where to write.
        tables: table name → the per-cycle tables to concatenate (all of that table's schema).
        provenance: the run's identity (``run_id`` names the objects).

    Raises:
        ConcordoseError: unknown table, or the store refused a write (the message says where).
    """
    objects: list[PublishedObject] = []
    try:
        for name, parts in sorted(tables.items()):
            if name not in TABLES:
                raise ConcordoseError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
            spec = TABLES[name]
            combined = pa.concat_tables([part.cast(spec.schema) for part in parts])
            by_site: dict[str, list[int]] = defaultdict(list)
            for index, site in enumerate(combined.column("site_id").to_pylist()):
                by_site[site].append(index)
            for site, indices in sorted(by_site.items()):
                path = store.path(
                    name,
                    f"v{spec.version}",
                    f"site_id={site}",
                    f"{provenance.run_id}.parquet",
                )
                store.ensure_parent(path)
                pq.write_table(
                    combined.take(indices), path, filesystem=store.filesystem, compression="zstd"
                )
                objects.append(PublishedObject(name, path, len(indices)))
        manifest: dict[str, Any] = {
            "run_id": provenance.run_id,
            "flow_run_id": provenance.flow_run_id,
            "software_version": provenance.software_version,
            "created_at": provenance.created_at.isoformat(),
            "objects": [
                {
                    "table": o.table,
                    "path": o.path,
                    "rows": o.rows,
                    "schema_version": TABLES[o.table].version,
                }
                for o in objects
            ],
        }
        manifest_path = store.path(MANIFEST_DIR, f"{provenance.run_id}.json")
        store.ensure_parent(manifest_path)
        with store.filesystem.open_output_stream(manifest_path) as stream:
            stream.write(json.dumps(manifest, indent=2).encode("utf-8"))
    except OSError as exc:
        raise ConcordoseError(f"could not publish to {store.uri}: {exc}") from exc
    return PublishedRun(provenance.run_id, manifest_path, tuple(objects))
