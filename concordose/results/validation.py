"""Great Expectations validation of every table before it is published.

One suite per table and schema version, built programmatically from two declarative sources kept
in ``schemas/``: the Arrow schema (non-nullable fields → not-null, key columns → compound
uniqueness, ``schema_version`` → the table's version) and ``schemas/expectations.yaml`` (ranges
with units, allowed value sets, registered method names). A batch that fails is not published:
:mod:`concordose.results.publish` quarantines it with its validation result.

Great Expectations runs in an ephemeral context (nothing written to a GX project folder) with
progress bars off; Data Docs (HTML) of the last validation are built into a folder on request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict

from concordose.dose.registry import DOSE_METHODS, VOXEL_DOSE_METHODS
from concordose.dose.voxel_dosimetry import voxel_kinetics_names
from concordose.errors import ConfigurationError
from concordose.kinetics.registry import KINETICS_METHODS
from schemas.tables import TABLES, TableSpec

_REGISTRIES: dict[str, Callable[[], list[str]]] = {
    "kinetics": KINETICS_METHODS.names,
    "dose": DOSE_METHODS.names,
    "voxel_dose": VOXEL_DOSE_METHODS.names,
    "voxel_kinetics": voxel_kinetics_names,  # voxel_<model> (concordose.dose.voxel_dosimetry)
}

# GX's own logging of every expectation is noise at INFO level.
logging.getLogger("great_expectations").setLevel(logging.WARNING)


class RangeRule(BaseModel):
    """Inclusive bounds of a numeric column, in ``unit`` (must match the field's unit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min: float | None = None
    max: float | None = None
    unit: str


class TableRules(BaseModel):
    """The declarative rules of one table (see ``schemas/expectations.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ranges: dict[str, RangeRule] = {}
    allowed: dict[str, list[str]] = {}
    methods: dict[str, str] = {}


def _expectations_file() -> Path:
    # Installed non-editable, ``schemas`` sits in site-packages beside ``concordose``.
    import schemas  # noqa: PLC0415  (locate the package's data file)

    return Path(schemas.__file__).resolve().parent / "expectations.yaml"


@cache
def load_rules(path: Path | None = None) -> dict[str, TableRules]:
    """Rules per table from ``schemas/expectations.yaml``, checked against the schemas.

    Raises:
        ConfigurationError: unknown table or column, a unit that differs from the schema's, or
            an unknown method registry.
    """
    source = path or _expectations_file()
    raw: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    rules: dict[str, TableRules] = {}
    for name, body in raw.items():
        if name.startswith("_"):
            continue  # YAML anchors
        if name not in TABLES:
            raise ConfigurationError(f"{source}: unknown table {name!r}; known: {list(TABLES)}")
        table_rules = TableRules.model_validate(body)
        schema = TABLES[name].schema
        columns = [*table_rules.ranges, *table_rules.allowed, *table_rules.methods]
        for column in columns:
            if column not in schema.names:
                raise ConfigurationError(f"{source}: table {name!r} has no column {column!r}")
        for column, rule in table_rules.ranges.items():
            unit = (schema.field(column).metadata or {}).get(b"unit", b"").decode()
            if unit != rule.unit:
                raise ConfigurationError(
                    f"{source}: {name}.{column} bounds are in {rule.unit!r} but the schema "
                    f"v{TABLES[name].version} says the column is in {unit!r}"
                )
        for column, registry in table_rules.methods.items():
            if registry not in _REGISTRIES:
                raise ConfigurationError(
                    f"{source}: {name}.{column} names registry {registry!r}; "
                    f"known: {list(_REGISTRIES)}"
                )
        rules[name] = table_rules
    return rules


def _registry_names(registry: str) -> list[str]:
    return _REGISTRIES[registry]()


def suite_expectations(spec: TableSpec, rules: TableRules | None = None) -> list[Any]:
    """The Great Expectations expectations of ``spec``'s current version."""
    import great_expectations as gx  # noqa: PLC0415  (heavy import, only when validating)

    rules = rules if rules is not None else load_rules().get(spec.name, TableRules())
    expectations: list[Any] = []
    for schema_field in spec.schema:
        if not schema_field.nullable:
            expectations.append(
                gx.expectations.ExpectColumnValuesToNotBeNull(column=schema_field.name)
            )
    expectations.append(
        gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=list(spec.key_columns))
    )
    expectations.append(
        gx.expectations.ExpectColumnValuesToBeInSet(
            column="schema_version", value_set=[spec.version]
        )
    )
    for column, bounds in rules.ranges.items():
        expectations.append(
            gx.expectations.ExpectColumnValuesToBeBetween(
                column=column,
                min_value=bounds.min,
                max_value=bounds.max,
                meta={"unit": bounds.unit},
            )
        )
    for column, values in rules.allowed.items():
        expectations.append(
            gx.expectations.ExpectColumnValuesToBeInSet(column=column, value_set=values)
        )
    for column, registry in rules.methods.items():
        expectations.append(
            gx.expectations.ExpectColumnValuesToBeInSet(
                column=column,
                value_set=_registry_names(registry),
                meta={"registry": registry},
            )
        )
    return expectations


@dataclass(frozen=True)
class TableValidation:
    """Outcome of one table's suite.

    Attributes:
        table: table name.
        suite: suite name (``<table>.v<version>``).
        success: every expectation met.
        failed: one line per failed expectation (type, column, a few unexpected values).
        result: the full GX validation result as JSON-serialisable data.
    """

    table: str
    suite: str
    success: bool
    failed: tuple[str, ...]
    result: dict[str, Any]


def _describe_failure(result: Any) -> str:
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    column = kwargs.get("column") or kwargs.get("column_list")
    details = result.result or {}
    sample = details.get("partial_unexpected_list") or details.get("observed_value")
    return f"{config.type} on {column}: unexpected {sample!r}"


def validate_tables(
    tables: Mapping[str, pa.Table], *, data_docs_dir: Path | None = None
) -> dict[str, TableValidation]:
    """Run each table's suite; optionally build Data Docs (HTML) of this validation.

    Args:
        tables: table name → the whole batch to publish (current schema).
        data_docs_dir: folder to build Data Docs into (emptied of earlier docs by the caller).
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx  # noqa: PLC0415  (heavy import, only when validating)
    from great_expectations.checkpoint.actions import ValidationAction  # noqa: PLC0415
    from great_expectations.data_context.types.base import (  # noqa: PLC0415
        ProgressBarsConfig,
    )

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if data_docs_dir is not None:
        context.add_data_docs_site(
            site_name="concordose",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(data_docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    source = context.data_sources.add_pandas("concordose")
    definitions = []
    frames: dict[str, Any] = {}
    for name, table in sorted(tables.items()):
        spec = TABLES[name]
        suite = context.suites.add(gx.ExpectationSuite(name=f"{name}.v{spec.version}"))
        for expectation in suite_expectations(spec):
            suite.add_expectation(expectation)
        batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("batch")
        definitions.append(
            context.validation_definitions.add(
                gx.ValidationDefinition(data=batch, suite=suite, name=name)
            )
        )
        frames[name] = table.to_pandas()
    outcomes: dict[str, TableValidation] = {}
    for definition in definitions:
        name = definition.name
        actions: list[ValidationAction] = (
            [gx.checkpoint.UpdateDataDocsAction(name="data-docs", site_names=["concordose"])]
            if data_docs_dir
            else []
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{name}-checkpoint",
                validation_definitions=[definition],
                actions=actions,
                result_format="SUMMARY",
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": frames[name]})
        (result,) = run.run_results.values()
        outcomes[name] = TableValidation(
            table=name,
            suite=f"{name}.v{TABLES[name].version}",
            success=bool(result.success),
            failed=tuple(_describe_failure(r) for r in result.results if not r.success),
            result=result.to_json_dict(),  # type: ignore[no-untyped-call]
        )
    return outcomes
