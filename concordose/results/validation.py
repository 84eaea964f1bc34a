"""Great Expectations validation of every table before it is published.

One suite per table and schema version, built programmatically from two declarative sources kept
in ``schemas/``: the Arrow schema (non-nullable fields → not-null, key columns → compound
uniqueness, ``schema_version`` → the table's version) and ``schemas/expectations.yaml`` (ranges
with units, allowed value sets, registered method names). A batch that fails is not published:
:mod:`concordose.results.publish` quarantines it with its validation result.

Great Expectations runs in one ephemeral context per process (nothing written to a GX project
folder), progress bars off. The context, and each table's suite and validation definition,
are built the first time they are needed and then reused: building them cost as much as running
them. Every GX call goes through one lock (an ephemeral context's stores are plain dictionaries),
so cycles published from threads of one process validate one after the other. Data Docs (HTML) of
a validation are built into a folder on request; its results are then dropped from the context so
that memory and later Data Docs hold only the current validation.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
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
from concordose.schemas.tables import TABLES, TableSpec

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
    # ``concordose.schemas``: installed, a subpackage; in a checkout, the top-level schemas/.
    from concordose import schemas  # noqa: PLC0415  (locate the package's data file)

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


_DATA_DOCS_SITE = "concordose"
# Guards the shared validator's construction and every call into its GX context.
_GX_LOCK = threading.Lock()
_shared: SuiteValidator | None = None


class SuiteValidator:
    """One ephemeral GX context holding, per table, its suite and validation definition.

    Built once per process (:func:`shared_validator`); a table's objects are added the first
    time that table is validated and reused afterwards (the suites depend only on
    ``schemas/`` and the method registries, both fixed for the life of a process).
    Callers must hold ``_GX_LOCK`` around every method (``validate_tables`` does).

    Attributes:
        context: the GX ephemeral data context.
        suites_built: how many suites this validator has built (one per table validated).
    """

    def __init__(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx  # noqa: PLC0415  (heavy import, only when validating)
        from great_expectations.data_context.types.base import (  # noqa: PLC0415
            ProgressBarsConfig,
        )

        self._gx = gx
        self.context: Any = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self._source: Any = self.context.data_sources.add_pandas("concordose")
        self._definitions: dict[str, Any] = {}
        self.suites_built = 0

    def suite(self, table: str) -> Any:
        """The GX suite of ``table``'s current schema version (built on first use)."""
        return self._definition(table).suite

    def _definition(self, table: str) -> Any:
        definition = self._definitions.get(table)
        if definition is not None:
            return definition
        gx = self._gx
        spec = TABLES[table]
        # All expectations go in before the suite is added: adding them one by one to a stored
        # suite re-serialises the whole suite each time.
        suite = self.context.suites.add(
            gx.ExpectationSuite(
                name=f"{table}.v{spec.version}", expectations=suite_expectations(spec)
            )
        )
        batch = self._source.add_dataframe_asset(name=table).add_batch_definition_whole_dataframe(
            "batch"
        )
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(data=batch, suite=suite, name=table)
        )
        self._definitions[table] = definition
        self.suites_built += 1
        return definition

    def validate(
        self, frames: Mapping[str, Any], data_docs_dir: Path | None
    ) -> dict[str, TableValidation]:
        """Run each table's suite on its pandas frame; optionally build Data Docs."""
        from great_expectations.core.run_identifier import RunIdentifier  # noqa: PLC0415
        from great_expectations.data_context.types.resource_identifiers import (  # noqa: PLC0415
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        run_id = RunIdentifier(run_time=datetime.now(UTC))
        outcomes: dict[str, TableValidation] = {}
        stored: list[Any] = []  # the results GX kept in its store, dropped at the end
        try:
            for name, frame in sorted(frames.items()):
                result = self._definition(name).run(
                    batch_parameters={"dataframe": frame}, result_format="SUMMARY", run_id=run_id
                )
                stored.append(
                    ValidationResultIdentifier(
                        expectation_suite_identifier=ExpectationSuiteIdentifier(
                            name=result.suite_name
                        ),
                        run_id=run_id,
                        batch_identifier=result.batch_id,
                    )
                )
                outcomes[name] = TableValidation(
                    table=name,
                    suite=result.suite_name,
                    success=bool(result.success),
                    failed=tuple(_describe_failure(r) for r in result.results if not r.success),
                    result=result.to_json_dict(),
                )
            if data_docs_dir is not None:
                self._build_data_docs(data_docs_dir, stored)
        finally:
            store = self.context.validation_results_store
            for identifier in stored:
                store.remove_key(identifier)
        return outcomes

    def _build_data_docs(self, folder: Path, results: list[Any]) -> None:
        site = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(folder.resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
        if _DATA_DOCS_SITE in self.context.list_data_docs_sites():
            self.context.update_data_docs_site(_DATA_DOCS_SITE, site)
        else:
            self.context.add_data_docs_site(_DATA_DOCS_SITE, site)
        suites = [identifier.expectation_suite_identifier for identifier in results]
        self.context.build_data_docs(
            site_names=[_DATA_DOCS_SITE], resource_identifiers=[*results, *suites]
        )


def shared_validator() -> SuiteValidator:
    """The process's validator, built on the first call (thread-safe)."""
    global _shared  # noqa: PLW0603  (one lazily built validator per process)
    with _GX_LOCK:
        if _shared is None:
            _shared = SuiteValidator()
        return _shared


def validate_tables(
    tables: Mapping[str, pa.Table], *, data_docs_dir: Path | None = None
) -> dict[str, TableValidation]:
    """Run each table's suite; optionally build Data Docs (HTML) of this validation.

    Safe to call from several threads: the validations run one at a time.

    Args:
        tables: table name → the whole batch to publish (current schema).
        data_docs_dir: folder to build Data Docs into (emptied of earlier docs by the caller).
    """
    frames = {name: table.to_pandas() for name, table in tables.items()}
    validator = shared_validator()
    with _GX_LOCK:
        return validator.validate(frames, data_docs_dir)
