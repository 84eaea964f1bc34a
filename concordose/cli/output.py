"""Machine-readable output of the commands: ``--json`` documents and ``query --format csv``.

A ``--json`` document is one JSON value on stdout (UTF-8, indented, keys as each command's help
lists them), nothing else: progress and messages go to stderr or are not printed. CSV cells
that hold a list, a struct or a map (e.g. a DVH's dose levels) are written as JSON text in the
one cell, so every row stays one line of the CSV and a reader gets the value back with
``json.loads``.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import typer

__all__ = ["csv_text", "echo_json", "json_encoded_nested_columns"]


def _json_value(value: object) -> object:
    """A value JSON cannot hold as itself: a decimal as a number, a date or time as ISO 8601,
    anything else (a path, a UUID) as its text."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date | datetime | time):
        return value.isoformat()
    return str(value)


def echo_json(document: Any) -> None:
    """Print ``document`` as JSON on stdout (decimals as numbers, dates as ISO 8601, paths as
    text)."""
    typer.echo(json.dumps(document, indent=2, default=_json_value, ensure_ascii=False))


def _is_nested(data_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or pa.types.is_fixed_size_list(data_type)
        or pa.types.is_list_view(data_type)
        or pa.types.is_large_list_view(data_type)
        or pa.types.is_struct(data_type)
        or pa.types.is_map(data_type)
    )


def json_encoded_nested_columns(table: pa.Table) -> pa.Table:
    """``table`` with every list, struct or map column replaced by a string column holding
    each cell as JSON text (null stays null); other columns unchanged."""
    for index, field in enumerate(table.schema):
        if not _is_nested(field.type):
            continue
        encoded = pa.array(
            [
                None
                if value is None
                else json.dumps(value, default=_json_value, ensure_ascii=False)
                for value in table.column(index).to_pylist()
            ],
            type=pa.string(),
        )
        table = table.set_column(index, pa.field(field.name, pa.string()), encoded)
    return table


def csv_text(table: pa.Table) -> str:
    """``table`` as CSV (header line first), nested cells as JSON text
    (:func:`json_encoded_nested_columns`)."""
    sink = pa.BufferOutputStream()
    pacsv.write_csv(json_encoded_nested_columns(table), sink)
    return str(sink.getvalue().to_pybytes().decode("utf-8"))
