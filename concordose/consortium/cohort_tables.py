"""Rebuild and publish the cohort tables from the current per-cycle rows of an output store.

The cohort tables (``kinetics_agreement``, ``dose_agreement``, ``threshold_concordance``,
``sink_effect`` and ``planning``: :mod:`concordose.planning`, issue 20) are
aggregates over every published cycle. They are rebuilt as a whole (after each cycle's
publication and by the nightly sweep) and published as one run whose scope is
``cohort = 'consortium'``: its manifest makes the new rows current and every earlier rebuild's
rows invisible at once (:mod:`concordose.results.publish`, manifest last;
:mod:`concordose.results.catalogue`).

Concurrent rebuilds (cycles processed in parallel) each read the store as it was when they
started; the one published last wins, which may predate a cycle published meanwhile. The
nightly sweep's rebuild, run after every cycle, makes the tables whole again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pyarrow as pa

from concordose.consortium.agreement import build_dose_agreement, build_kinetics_agreement
from concordose.consortium.sink_effect import build_sink_effect
from concordose.consortium.threshold_concordance import build_threshold_concordance
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.planning import PLANNING_INPUT_COLUMNS, PlanningSettings, build_planning
from concordose.prediction.table import build_dose_prediction
from concordose.results.catalogue import connect
from concordose.results.object_store import ObjectStore
from concordose.results.provenance import Provenance
from concordose.results.publish import PublishedRun, publish_tables
from concordose.schemas.tables import TABLES

logger = logging.getLogger(__name__)

# The columns the builders read (voxel_dose's DVH lists are left in the store).
_INPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "kinetics": (
        "site_id",
        "cycle_key",
        "voi_label",
        "voi_type",
        "kinetics_method",
        "tia_mbq_h",
        "teff_h",
        "method_parameters_hash",
    ),
    "absorbed_dose": (
        "site_id",
        "subject_key",
        "cycle_key",
        "voi_label",
        "voi_type",
        "kinetics_method",
        "dose_method",
        "mean_dose_gy",
        "tia_mbq_h",
        "mass_g",
        "method_parameters_hash",
    ),
    "voxel_dose": (
        "site_id",
        "cycle_key",
        "voi_label",
        "voi_type",
        "kinetics_method",
        "dose_method",
        "mean_dose_gy",
        "method_parameters_hash",
    ),
    "voi_timepoints": (
        "cycle_key",
        "voi_label",
        "time_point_index",
        "time_h",
        "activity_mbq",
        "volume_ml",
    ),
    "patient_summary": (
        "cycle_key",
        "cycle_number",
        # issue 20, item 2 (sink_effect): who, where, and the injected activity
        "site_id",
        "subject_key",
        "injected_activity_mbq",
        "injected_activity_traceable_mbq",
    ),
}


def read_current_columns(
    store: ObjectStore, columns_by_table: Mapping[str, tuple[str, ...]]
) -> dict[str, pa.Table]:
    """The current rows of the given per-cycle tables (only the given columns, with the
    schema's types), in a fixed order: sorted on every column, so sums over them do not depend
    on the order cycles were published in (cycles run in parallel publish in any order;
    floating-point sums are not associative)."""
    connection = connect(store)
    try:
        inputs: dict[str, pa.Table] = {}
        for table, columns in columns_by_table.items():
            names = ", ".join(f'"{column}"' for column in columns)
            result = connection.sql(
                f'SELECT {names} FROM "{table}" ORDER BY {names}'
            ).to_arrow_table()
            schema = TABLES[table].schema
            inputs[table] = result.cast(pa.schema([schema.field(c) for c in columns]))
    finally:
        connection.close()
    return inputs


def read_cohort_inputs(store: ObjectStore) -> dict[str, pa.Table]:
    """The current rows of the per-cycle tables the cohort tables are built from
    (:func:`read_current_columns`)."""
    return read_current_columns(store, _INPUT_COLUMNS)


# --- planning (issue 20, item 1): its own inputs, read as the cohort tables' are ---
def read_planning_inputs(store: ObjectStore) -> dict[str, pa.Table]:
    """The current rows of the per-cycle tables ``planning`` is built from
    (:data:`concordose.planning.PLANNING_INPUT_COLUMNS`, :func:`read_current_columns`)."""
    return read_current_columns(store, PLANNING_INPUT_COLUMNS)


# --- end planning ---


def build_cohort_tables(
    inputs: dict[str, pa.Table],
    provenance: Provenance,
    *,
    reference_method: str = REFERENCE_METHOD_NAME,
) -> dict[str, pa.Table]:
    """The cohort tables from :func:`read_cohort_inputs`' tables (pure: no I/O)."""
    return {
        "kinetics_agreement": build_kinetics_agreement(
            inputs["kinetics"],
            inputs["absorbed_dose"],
            inputs["voi_timepoints"],
            provenance,
            reference_method=reference_method,
        ),
        "dose_agreement": build_dose_agreement(
            inputs["absorbed_dose"],
            inputs["voxel_dose"],
            inputs["voi_timepoints"],
            provenance,
            reference_method=reference_method,
        ),
        "threshold_concordance": build_threshold_concordance(
            inputs["absorbed_dose"],
            provenance,
            patient_summary=inputs["patient_summary"],
            kinetics=inputs["kinetics"],
            voi_timepoints=inputs["voi_timepoints"],
            reference_method=reference_method,
        ),
        # issue 20, item 2: OAR uptake against tumour burden
        "sink_effect": build_sink_effect(
            inputs["kinetics"],
            inputs["voi_timepoints"],
            inputs["patient_summary"],
            provenance,
            absorbed_dose=inputs["absorbed_dose"],
            reference_method=reference_method,
        ),
    }


def rebuild_cohort_tables(
    store: ObjectStore,
    provenance: Provenance,
    *,
    reference_method: str = REFERENCE_METHOD_NAME,
    planning: PlanningSettings | None = None,
) -> PublishedRun | None:
    """Read the store's current cycles, rebuild the cohort tables, publish them (validated,
    manifest last). ``planning``: the limits of table ``planning`` (default
    :class:`~concordose.planning.PlanningSettings`). Returns None, publishing nothing, when
    every cohort table is empty (no cycle ran the reference or two dose methods): earlier
    rows, if any, stay current.

    Raises:
        ValidationFailedError: a cohort table failed its suite (quarantined, not published).
        ConcordoseError: the store could not be read or written.
    """
    tables = build_cohort_tables(
        read_cohort_inputs(store), provenance, reference_method=reference_method
    )
    tables["planning"] = build_planning(read_planning_inputs(store), provenance, planning)
    non_empty = {name: [table] for name, table in tables.items() if table.num_rows}
    if not non_empty:
        logger.info("cohort tables: nothing to compare yet (no reference or one dose method)")
        return None
    return publish_tables(store, non_empty, provenance)


# --- issue 20 item 3: pre-therapy PET dose prediction ------------------------------------------

_PREDICTION_INPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "absorbed_dose": (
        "site_id",
        "subject_key",
        "cycle_key",
        "voi_label",
        "kinetics_method",
        "dose_method",
        "mean_dose_gy",
    ),
    "patient_summary": (
        "cycle_key",
        "cycle_number",
        "injected_activity_mbq",
        "injected_activity_traceable_mbq",
    ),
}


def rebuild_dose_prediction(
    store: ObjectStore,
    pet_features: pa.Table,
    provenance: Provenance,
    *,
    reference_method: str = REFERENCE_METHOD_NAME,
) -> PublishedRun | None:
    """Build ``dose_prediction`` from ``pet_features`` (one row per VOI of a pre-therapy PET:
    :data:`concordose.prediction.PET_FEATURE_COLUMNS`) and the store's current ``absorbed_dose``
    and ``patient_summary`` rows (sorted, as :func:`read_cohort_inputs`), and publish it as a
    cohort run (validated, manifest last). None, publishing nothing, without PET features.

    Raises:
        ValidationFailedError: the table failed its suite (quarantined, not published).
        ConcordoseError: the store could not be read or written.
    """
    if pet_features.num_rows == 0:
        logger.info("dose_prediction: no pre-therapy PET features; nothing published")
        return None
    inputs = read_current_columns(store, _PREDICTION_INPUT_COLUMNS)
    table = build_dose_prediction(
        pet_features,
        inputs["absorbed_dose"],
        inputs["patient_summary"],
        provenance,
        reference_method=reference_method,
    )
    return publish_tables(store, {"dose_prediction": [table]}, provenance)
