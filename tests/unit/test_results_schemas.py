"""Schemas of the published tables, their version history and their validation rules."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from concordose.errors import ConfigurationError
from concordose.kinetics.models import settings_hash
from concordose.pipeline.quantify import QUANTIFICATION_METHOD, QUANTIFICATION_SETTINGS
from concordose.results.validation import load_rules, suite_expectations
from concordose.schemas.lock import fingerprint, live_fingerprints, locked_fingerprints
from concordose.schemas.tables import (
    ABSORBED_DOSE,
    TABLES,
    V1_QUANTIFICATION_METHOD,
    V1_QUANTIFICATION_PARAMETERS_HASH,
    VOI_TIMEPOINTS,
    field,
    upgrade_table,
)

PROVENANCE = {"schema_version", "software_version", "run_id", "flow_run_id", "created_at"}
ROW_PROVENANCE = {"calibration_record_id", "input_uid_hashes"}


def test_the_issue_tables_exist() -> None:
    assert set(TABLES) == {
        "acquisitions",
        "voi_timepoints",
        "kinetics",
        "absorbed_dose",
        "patient_summary",
        "voxel_dose",  # issue 7
        "voxel_dose_summary",
        "method_comparison",
        "site_calibrations",
        "harmonisation_agreement",  # issue 14
        "qc_findings",
        "kinetics_agreement",
        "dose_agreement",  # issue 14
        "threshold_concordance",  # issue 14
        "planning",  # issue 20, item 1
        "whole_body_tumour_dose",  # issue 20, item 4
        "sink_effect",  # issue 20, item 2
        "dose_prediction",  # issue 20 item 3
    }


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_field_has_a_unit_and_a_doc_and_every_row_provenance(name: str) -> None:
    spec = TABLES[name]
    for version in [*spec.previous_schemas, spec.version]:
        for schema_field in spec.schema_of(version):
            metadata = schema_field.metadata or {}
            assert metadata.get(b"unit"), f"{name}.{schema_field.name} has no unit"
            assert metadata.get(b"doc"), f"{name}.{schema_field.name} has no doc"
    names = set(spec.schema.names)
    assert names >= PROVENANCE
    assert set(spec.key_columns) <= names
    assert spec.scope_column in names
    if spec.scope_column == "cycle_key":
        # per-cycle tables; a cohort table that names cycles (threshold_concordance) is
        # computed from published rows that carry this provenance
        assert names >= ROW_PROVENANCE
    if any(column.endswith("_method") for column in names):
        assert "method_parameters_hash" in names


def test_voi_timepoints_v1_rows_upgrade_to_the_current_version() -> None:
    v1 = VOI_TIMEPOINTS.schema_of(1)
    assert VOI_TIMEPOINTS.version == 5
    row: dict[str, object] = {name: None for name in v1.names}
    row |= {"time_h": 4.0, "schema_version": 1, "voi_label": "liver", "input_uid_hashes": []}
    old = pa.Table.from_pylist([row], schema=v1.with_metadata(None)).cast(
        pa.schema([f.with_nullable(True) for f in v1])
    )
    upgraded = upgrade_table(VOI_TIMEPOINTS, old, 1)
    assert upgraded.schema.names == VOI_TIMEPOINTS.schema.names
    (new,) = upgraded.to_pylist()
    assert new["quantification_method"] == V1_QUANTIFICATION_METHOD
    assert new["counts"] is None  # added in v3: unknown for older rows
    assert new["activity_sd_mbq"] is None
    assert new["recovery_coefficient"] is None  # added in v4: no PVC recorded for older rows
    assert new["partial_volume_model"] is None  # added in v5: no protocol-driven PVC
    assert new["local_background_mbq_per_ml"] is None
    assert new["schema_version"] == 1
    assert new["time_h"] == 4.0
    with pytest.raises(KeyError, match="no schema version 7"):
        VOI_TIMEPOINTS.schema_of(7)


def test_v1_upgrade_fill_names_the_quantification_that_v1_used() -> None:
    assert V1_QUANTIFICATION_METHOD == QUANTIFICATION_METHOD
    # v1 resampled masks by nearest neighbour; today's rows say how they were resampled
    v1_settings = {**QUANTIFICATION_SETTINGS, "mask_resampling": "nearest"}
    assert settings_hash(v1_settings) == V1_QUANTIFICATION_PARAMETERS_HASH
    assert settings_hash(QUANTIFICATION_SETTINGS) != V1_QUANTIFICATION_PARAMETERS_HASH


def test_rules_match_the_schemas_units() -> None:
    rules = load_rules()
    assert rules["absorbed_dose"].ranges["mean_dose_gy"].unit == "Gy"
    assert rules["kinetics"].methods == {"kinetics_method": "kinetics"}


def test_a_rule_in_the_wrong_unit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "expectations.yaml"
    path.write_text("absorbed_dose:\n  ranges:\n    mean_dose_gy: {min: 0, max: 1e6, unit: mGy}\n")
    with pytest.raises(ConfigurationError, match=r"in 'mGy' but the schema .* 'Gy'"):
        load_rules(path)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_table_gets_a_suite(name: str) -> None:
    types = [type(e).__name__ for e in suite_expectations(TABLES[name])]
    assert "ExpectCompoundColumnsToBeUnique" in types
    assert "ExpectColumnValuesToNotBeNull" in types


def test_published_versions_keep_their_fields() -> None:
    """Changing a published version's fields without bumping its version fails here."""
    locked = locked_fingerprints()
    for table, versions in live_fingerprints().items():
        for version, value in versions.items():
            assert version in locked.get(table, {}), (
                f"{table} v{version} is not recorded: run `python -m concordose.schemas.lock`"
            )
            assert locked[table][version] == value, (
                f"{table} v{version} changed its fields: bump the version of {table} (and add "
                "an upgrade step), then run `python -m concordose.schemas.lock`"
            )


def test_fingerprint_sees_a_unit_change() -> None:
    schema = ABSORBED_DOSE.schema
    index = schema.get_field_index("mean_dose_gy")
    changed = schema.set(index, field("mean_dose_gy", pa.float64(), "mGy", "x", nullable=True))
    assert fingerprint(changed) != fingerprint(schema)
