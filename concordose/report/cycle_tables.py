"""One cycle's published rows, read back from the store: what a cycle report shows.

The rows are the readers' current view (:mod:`concordose.results.catalogue`: manifested runs
only, the latest run per cycle), so a report built on demand shows exactly what
``concordose query`` would return for the cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb

from concordose.errors import ConcordoseError
from concordose.report.sink_effect_view import SINK_EFFECT_COLUMNS
from concordose.schemas.tables import TABLES

__all__ = ["CYCLE_TABLES", "CycleRows", "published_cycle_keys", "read_cycle_rows"]

CYCLE_TABLES = (
    "acquisitions",
    "qc_findings",
    "voi_timepoints",
    "kinetics",
    "absorbed_dose",
    "voxel_dose",
    "patient_summary",
    "voxel_dose_summary",
    "method_comparison",
    "whole_body_tumour_dose",  # issue 20, item 4
)
"""Tables scoped by ``cycle_key`` that a cycle report reads (every one of its rows)."""

Row = dict[str, Any]


@dataclass(frozen=True)
class CycleRows:
    """The current published rows of one cycle, by table (an absent table has no rows).

    Attributes:
        cycle_key: the cycle (keyed hash).
        tables: rows of each table of :data:`CYCLE_TABLES`, as dictionaries.
        site_calibrations: the calibration records the cycle's rows name.
        threshold_concordance: the cycle-level rows of the cohort table (``level = 'cycle'``).
        planning: the cycle's patient's rows of the cohort table ``planning`` (issue 20).
        sink_effect: the cohort table ``sink_effect`` (issue 20, item 2): every cycle's point
            and every fit, only :data:`~concordose.report.sink_effect_view.SINK_EFFECT_COLUMNS`
            (no patient key), so the report can place its cycle on the cohort's regression.
        dose_prediction: the patient's VOI rows of the cohort table ``dose_prediction`` (issue
            20: its pre-therapy PET's predictions), empty when the patient had no PET.
    """

    cycle_key: str
    tables: dict[str, list[Row]]
    site_calibrations: list[Row]
    threshold_concordance: list[Row]
    planning: list[Row] = field(default_factory=list)
    sink_effect: list[Row] = field(default_factory=list)
    dose_prediction: list[Row] = field(default_factory=list)

    def rows(self, table: str) -> list[Row]:
        """Rows of ``table`` (empty when the cycle has none)."""
        return self.tables.get(table, [])

    @property
    def first_row(self) -> Row:
        """Any row of the cycle (for its keys and provenance)."""
        for table in CYCLE_TABLES:
            if self.tables.get(table):
                return self.tables[table][0]
        raise ValueError(f"cycle {self.cycle_key} has no rows")


def _rows(connection: duckdb.DuckDBPyConnection, sql: str, *parameters: object) -> list[Row]:
    result = connection.execute(sql, list(parameters))
    names = [column[0] for column in result.description]
    return [dict(zip(names, values, strict=True)) for values in result.fetchall()]


def published_cycle_keys(connection: duckdb.DuckDBPyConnection) -> list[str]:
    """Every cycle with current rows (processed or held), sorted.

    ``connection``: :func:`concordose.results.catalogue.connect` of the store.
    """
    union = " UNION ".join(
        f'SELECT DISTINCT cycle_key FROM "{name}"' for name in ("acquisitions", "qc_findings")
    )
    return sorted(str(row["cycle_key"]) for row in _rows(connection, union))


def read_cycle_rows(connection: duckdb.DuckDBPyConnection, cycle_key: str) -> CycleRows:
    """The current rows of ``cycle_key`` in every table a report shows.

    Args:
        connection: :func:`concordose.results.catalogue.connect` of the store.
        cycle_key: the cycle (``concordose query "SELECT DISTINCT cycle_key FROM
            acquisitions"`` lists them).

    Raises:
        ConcordoseError: no current row of the cycle in any table.
    """
    tables: dict[str, list[Row]] = {}
    for name in CYCLE_TABLES:
        order = ", ".join(
            column for column in TABLES[name].key_columns if column not in ("subject_key",)
        )
        tables[name] = _rows(
            connection, f'SELECT * FROM "{name}" WHERE cycle_key = ? ORDER BY {order}', cycle_key
        )
    if not any(tables.values()):
        known = published_cycle_keys(connection)
        raise ConcordoseError(
            f"cycle {cycle_key!r}: expected published rows of it, found none; "
            f"published cycles: {', '.join(known) if known else 'none'}"
        )
    records = sorted(
        {str(row["calibration_record_id"]) for rows in tables.values() for row in rows}
    )
    calibrations = (
        _rows(
            connection,
            "SELECT * FROM site_calibrations WHERE list_contains(?, calibration_record_id) "
            "ORDER BY calibration_record_id",
            records,
        )
        if records
        else []
    )
    concordance = _rows(
        connection,
        "SELECT * FROM threshold_concordance WHERE level = 'cycle' AND cycle_key = ? "
        "ORDER BY threshold_name, study_dose_method",
        cycle_key,
    )
    # issue 20, item 2: the cohort's sink-effect points and fits (read whole: one row per cycle
    # and OAR, plus the fits)
    sink_columns = ", ".join(f'"{column}"' for column in SINK_EFFECT_COLUMNS)
    sink_effect = _rows(
        connection,
        f"SELECT {sink_columns} FROM sink_effect ORDER BY level, site_id, oar, cycle_key, "
        "burden_metric",
    )
    # issue 20 item 3: the patient's pre-therapy PET predictions (a cohort table, by subject)
    subjects = sorted({str(row["subject_key"]) for rows in tables.values() for row in rows})
    prediction = (
        _rows(
            connection,
            "SELECT * FROM dose_prediction WHERE row_kind = 'voi' "
            "AND list_contains(?, subject_key) ORDER BY site_id, voi_type, voi_label",
            subjects,
        )
        if subjects
        else []
    )
    return CycleRows(
        cycle_key,
        tables,
        calibrations,
        concordance,
        sink_effect=sink_effect,
        planning=_planning(connection, tables),
        dose_prediction=prediction,
    )


# --- planning (issue 20, item 1) ---
def _planning(connection: duckdb.DuckDBPyConnection, tables: dict[str, list[Row]]) -> list[Row]:
    """The current ``planning`` rows of the cycle's patient at its site (none for a cycle
    without rows naming its subject)."""
    first = next((rows[0] for rows in tables.values() if rows), None)
    if first is None:
        return []
    return _rows(
        connection,
        "SELECT * FROM planning WHERE site_id = ? AND subject_key = ? "
        "ORDER BY region_type DESC, region",
        first["site_id"],
        first["subject_key"],
    )


# --- end planning ---
