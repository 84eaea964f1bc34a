"""The published dataset as readers see it: manifested runs only, the latest run per scope.

Rules (the reading half of :mod:`concordose.results.publish`):

* only objects listed in a manifest exist for readers; unreferenced objects (a writer killed
  before its manifest) are invisible;
* runs are ordered by their manifest's ``published_at`` (then ``run_id``);
* for every scope value (a ``cycle_key``; a ``calibration_record_id`` for site calibrations),
  the latest run that covers it wins: the current view of a table holds exactly the rows whose
  ``run_id`` is the winner of their scope value. A re-run of a study therefore replaces that
  study's rows in every table, and no row appears twice;
* rows written with an older schema version are upgraded to the current one
  (:func:`schemas.tables.upgrade_table` / :meth:`~schemas.tables.TableSpec.fills_from`).

:func:`connect` builds a DuckDB connection with one view per table over exactly these rows;
:func:`read_current` returns a table's current rows as Arrow.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from concordose.errors import ConcordoseError
from concordose.results.object_store import ObjectStore
from concordose.results.publish import MANIFEST_DIR
from concordose.schemas.tables import TABLES, ScalarFill, TableSpec


@dataclass(frozen=True)
class ManifestObject:
    """One object listed in a manifest."""

    table: str
    path: str
    schema_version: int
    rows: int


@dataclass(frozen=True)
class Manifest:
    """A published run as its manifest records it."""

    run_id: str
    published_at: str
    scopes: dict[str, frozenset[str]]
    objects: tuple[ManifestObject, ...]


def _parse(store: ObjectStore, raw: dict[str, Any], where: str) -> Manifest:
    try:
        objects = tuple(
            ManifestObject(
                table=o["table"],
                # Paths are re-rooted on the store's base so a moved dataset still reads.
                path=store.path(o["key"]) if "key" in o else o["path"],
                schema_version=int(o["schema_version"]),
                rows=int(o["rows"]),
            )
            for o in raw["objects"]
        )
        run_id = str(raw["run_id"])
        published_at = str(raw.get("published_at") or raw["created_at"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConcordoseError(f"manifest {where} is malformed: missing or bad {exc}") from exc
    scopes_raw = raw.get("scopes")
    if scopes_raw is None:
        # Manifest format 1 (concordose 0.1) did not record scopes: read them from the objects.
        scopes: dict[str, set[str]] = defaultdict(set)
        for obj in objects:
            column = TABLES[obj.table].scope_column
            data = store.call(
                f"read {obj.path}",
                partial(pq.read_table, obj.path, filesystem=store.filesystem, columns=[column]),
            )
            scopes[column].update(str(v) for v in data.column(column).to_pylist())
        return Manifest(run_id, published_at, {k: frozenset(v) for k, v in scopes.items()}, objects)
    return Manifest(run_id, published_at, {k: frozenset(v) for k, v in scopes_raw.items()}, objects)


def load_manifests(store: ObjectStore) -> list[Manifest]:
    """Every manifest of the store, oldest first."""
    manifests = []
    for path in store.list_files(store.path(MANIFEST_DIR)):
        if not path.endswith(".json"):
            continue  # e.g. a local temporary ``.<run>.json.partial``
        try:
            raw = json.loads(store.read_bytes(path))
        except json.JSONDecodeError as exc:
            raise ConcordoseError(f"manifest {path} is not valid JSON: {exc}") from exc
        manifests.append(_parse(store, raw, path))
    return sorted(manifests, key=lambda m: (m.published_at, m.run_id))


def current_runs(manifests: list[Manifest]) -> dict[tuple[str, str], str]:
    """(scope column, scope value) → the run whose rows are current (the latest covering it)."""
    winners: dict[tuple[str, str], str] = {}
    for manifest in manifests:  # oldest first: later runs overwrite
        for column, values in manifest.scopes.items():
            for value in values:
                winners[(column, value)] = manifest.run_id
    return winners


def _sql_literal(value: ScalarFill) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + value.replace("'", "''") + "'"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_view_sql(
    spec: TableSpec, sources: dict[int, str], empty_source: str, current_source: str
) -> str:
    branches = [f"SELECT * FROM {empty_source}"]
    for version, source in sorted(sources.items()):
        fills = spec.fills_from(version)
        columns = [
            f"{_sql_literal(fills[f.name])} AS {_quote(f.name)}"
            if f.name in fills
            else _quote(f.name)
            for f in spec.schema
        ]
        branches.append(f"SELECT {', '.join(columns)} FROM {source}")
    union = "\nUNION ALL BY NAME\n".join(branches)
    scope = _quote(spec.scope_column)
    names = ", ".join(_quote(f.name) for f in spec.schema)
    return (
        f"CREATE VIEW {_quote(spec.name)} AS SELECT {names} FROM ({union}) AS rows_ "
        f"WHERE EXISTS (SELECT 1 FROM {current_source} AS c WHERE c.scope_column = "
        f"'{spec.scope_column}' AND c.scope_value = CAST(rows_.{scope} AS VARCHAR) "
        "AND c.run_id = rows_.run_id)"
    )


def connect(store: ObjectStore) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per published table (current rows only).

    Parquet objects are scanned lazily through pyarrow's filesystem (local or S3), so DuckDB
    needs no extension. Besides the tables, view ``runs`` lists the manifested runs.
    """
    manifests = load_manifests(store)
    winners = current_runs(manifests)
    connection = duckdb.connect()
    current = pa.table(
        {
            "scope_column": [column for column, _ in winners],
            "scope_value": [value for _, value in winners],
            "run_id": list(winners.values()),
        },
        schema=pa.schema(
            [("scope_column", pa.string()), ("scope_value", pa.string()), ("run_id", pa.string())]
        ),
    )
    connection.register("_current", current)
    connection.register(
        "_runs",
        pa.table(
            {
                "run_id": [m.run_id for m in manifests],
                "published_at": [m.published_at for m in manifests],
                "n_objects": [len(m.objects) for m in manifests],
            },
            schema=pa.schema(
                [("run_id", pa.string()), ("published_at", pa.string()), ("n_objects", pa.int64())]
            ),
        ),
    )
    connection.execute("CREATE VIEW runs AS SELECT * FROM _runs")
    winning_runs = set(winners.values())
    for spec in TABLES.values():
        paths: dict[int, list[str]] = defaultdict(list)
        for manifest in manifests:
            if manifest.run_id not in winning_runs:
                continue  # fully superseded: none of its rows can be current
            for obj in manifest.objects:
                if obj.table == spec.name:
                    paths[obj.schema_version].append(obj.path)
        sources: dict[int, str] = {}
        for version, version_paths in paths.items():
            name = f"_{spec.name}_v{version}"
            dataset = pads.dataset(
                version_paths,
                schema=spec.schema_of(version),
                filesystem=store.filesystem,
                format="parquet",
            )
            connection.register(name, dataset)
            sources[version] = name
        empty = f"_{spec.name}_empty"
        connection.register(empty, spec.schema.empty_table())
        connection.execute(_table_view_sql(spec, sources, empty, "_current"))
    return connection


def read_current(store: ObjectStore, table: str) -> pa.Table:
    """The current rows of ``table`` (latest manifested run per scope), current schema.

    Raises:
        ConcordoseError: unknown table.
    """
    if table not in TABLES:
        raise ConcordoseError(f"unknown table {table!r}; known: {', '.join(TABLES)}")
    spec = TABLES[table]
    connection = connect(store)
    try:
        result = connection.sql(f"SELECT * FROM {_quote(table)}").to_arrow_table()
    finally:
        connection.close()
    return upgrade_types(spec, result)


def upgrade_types(spec: TableSpec, table: pa.Table) -> pa.Table:
    """Cast a query result back to the table's Arrow schema (DuckDB widens a few types)."""
    return table.select(spec.schema.names).cast(spec.schema)


def query(store: ObjectStore, sql: str) -> pa.Table:
    """Run ``sql`` over the current views of the published tables.

    Raises:
        ConcordoseError: the SQL is invalid or refers to something unknown (DuckDB's message).
    """
    connection = connect(store)
    try:
        return connection.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise ConcordoseError(f"query failed: {exc}; tables: {', '.join(TABLES)}, runs") from exc
    finally:
        connection.close()
