"""Arrow schemas of the published tables, with units and a description on every field.

Versioning: each table has an integer ``version``; any change to its fields bumps it, and the
version is part of every object key (``schema_version=N``) so that readers can tell versions
apart. Field metadata keys: ``unit`` (UCUM-like, ``1`` for dimensionless) and ``doc``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


def field(
    name: str, arrow_type: pa.DataType, unit: str, doc: str, *, nullable: bool = False
) -> pa.Field:
    """A schema field carrying its unit and documentation as metadata."""
    return pa.field(name, arrow_type, nullable=nullable, metadata={"unit": unit, "doc": doc})


@dataclass(frozen=True)
class TableSpec:
    """One published table: name, version, Arrow schema and the columns that identify a row."""

    name: str
    version: int
    schema: pa.Schema
    key_columns: tuple[str, ...]
    doc: str


_SUBJECT = [
    field("subject_key", pa.string(), "1", "keyed hash (HMAC-SHA256) of the patient ID"),
    field("site_id", pa.string(), "1", "consortium site that sent the study"),
    field("cycle_key", pa.string(), "1", "keyed hash of subject and injection date-time"),
    field("voi_label", pa.string(), "1", "VOI name as segmented, e.g. kidney_left, lesion_1"),
    field("voi_type", pa.string(), "1", "organ or lesion"),
]

_PROVENANCE = [
    field("schema_version", pa.int16(), "1", "version of this table's schema"),
    field("software_version", pa.string(), "1", "concordose version that computed the row"),
    field("run_id", pa.string(), "1", "publication run that wrote the row"),
    field("flow_run_id", pa.string(), "1", "orchestrator flow run, when run by one", nullable=True),
    field("calibration_record_id", pa.string(), "1", "site calibration record applied"),
    field("input_uid_hashes", pa.list_(pa.string()), "1", "SHA-256 of the input SOP Instance UIDs"),
    field("created_at", pa.timestamp("us", tz="UTC"), "1", "when the row was computed"),
]

VOI_TIMEPOINTS = TableSpec(
    name="voi_timepoints",
    version=2,
    doc="One row per VOI and SPECT time point: the time-activity curve points.",
    key_columns=("subject_key", "cycle_key", "voi_label", "time_point_index"),
    schema=pa.schema(
        [
            *_SUBJECT,
            field("time_point_index", pa.int16(), "1", "0-based order of the time point"),
            field("time_h", pa.float64(), "h", "acquisition time after injection"),
            field("activity_mbq", pa.float64(), "MBq", "activity in the VOI at acquisition"),
            field("volume_ml", pa.float64(), "mL", "VOI volume on the segmentation grid"),
            # v2 (issue 6): what the activity's uncertainty is made of (EANM, Gear et al. 2018).
            field("counts", pa.float64(), "1", "reconstructed counts in the VOI", nullable=True),
            field(
                "activity_sd_mbq",
                pa.float64(),
                "MBq",
                "standard uncertainty of activity_mbq: Poisson counting (+) calibration factor "
                "(the CF part is common to all time points of a cycle)",
                nullable=True,
            ),
            *_PROVENANCE,
        ]
    ),
)

KINETICS = TableSpec(
    name="kinetics",
    version=2,
    doc="One row per VOI and kinetics method: TIA and fit parameters.",
    key_columns=("subject_key", "cycle_key", "voi_label", "kinetics_method"),
    schema=pa.schema(
        [
            *_SUBJECT,
            field("kinetics_method", pa.string(), "1", "registry name of the TIA method"),
            field("kinetics_method_version", pa.string(), "1", "version of the method"),
            field("method_parameters_hash", pa.string(), "1", "hash of the method's settings"),
            field("n_time_points", pa.int16(), "1", "time points the method used"),
            field(
                "tia_mbq_h",
                pa.float64(),
                "MBq.h",
                "time-integrated activity, 0..inf",
                nullable=True,
            ),
            field("a0_mbq", pa.float64(), "MBq", "fitted activity at injection", nullable=True),
            field(
                "lambda_eff_per_h",
                pa.float64(),
                "1/h",
                "effective clearance rate (terminal phase for multi-exponential fits)",
                nullable=True,
            ),
            field("teff_h", pa.float64(), "h", "effective half-life ln2/lambda_eff", nullable=True),
            field("status", pa.string(), "1", "ok, or why the fit failed"),
            # v2 (issue 6): uncertainty, time points used, model and goodness of fit.
            field(
                "tia_sd_mbq_h",
                pa.float64(),
                "MBq.h",
                "standard deviation of the TIA (fit covariance, EANM/Gear 2018)",
                nullable=True,
            ),
            field(
                "time_points_used_h",
                pa.list_(pa.float64()),
                "h",
                "acquired time points the method used (all when null)",
                nullable=True,
            ),
            field(
                "tia_total_sd_mbq_h",
                pa.float64(),
                "MBq.h",
                "TIA uncertainty: fit (tia_sd_mbq_h) (+) the cycle-wide calibration factor part",
                nullable=True,
            ),
            field(
                "model",
                pa.string(),
                "1",
                "fitted curve model, e.g. bi_exponential_uptake",
                nullable=True,
            ),
            field(
                "fit_parameters_json",
                pa.string(),
                "1",
                "all fitted parameters by name (units in the names), JSON",
                nullable=True,
            ),
            field("reduced_chi_square", pa.float64(), "1", "weighted chi2/(n-p)", nullable=True),
            field(
                "r_squared",
                pa.float64(),
                "1",
                "weighted coefficient of determination",
                nullable=True,
            ),
            field("aicc", pa.float64(), "1", "corrected Akaike criterion", nullable=True),
            *_PROVENANCE,
        ]
    ),
)

ABSORBED_DOSE = TableSpec(
    name="absorbed_dose",
    version=1,
    doc="One row per VOI, kinetics method and dose method: mean absorbed dose.",
    key_columns=("subject_key", "cycle_key", "voi_label", "kinetics_method", "dose_method"),
    schema=pa.schema(
        [
            *_SUBJECT,
            field("kinetics_method", pa.string(), "1", "TIA method the dose is based on"),
            field("dose_method", pa.string(), "1", "registry name of the dose method"),
            field("dose_method_version", pa.string(), "1", "version of the dose method"),
            field("method_parameters_hash", pa.string(), "1", "hash of the dose method's settings"),
            field("mass_g", pa.float64(), "g", "VOI mass used by the method"),
            field(
                "tia_mbq_h", pa.float64(), "MBq.h", "time-integrated activity used", nullable=True
            ),
            field(
                "mean_dose_gy", pa.float64(), "Gy", "mean absorbed dose in the VOI", nullable=True
            ),
            field("status", pa.string(), "1", "ok, or why the method does not apply"),
            *_PROVENANCE,
        ]
    ),
)

KINETICS_AGREEMENT = TableSpec(
    name="kinetics_agreement",
    version=1,
    doc=(
        "One row per cohort group (site, VOI type) and simplified method: Bland-Altman agreement "
        "of its TIA with the reference method's (concordose.kinetics.comparison)."
    ),
    key_columns=("site_id", "voi_type", "kinetics_method", "reference_method"),
    schema=pa.schema(
        [
            field("site_id", pa.string(), "1", "consortium site, or 'all' for the cohort"),
            field("voi_type", pa.string(), "1", "organ, lesion, or 'all'"),
            field("kinetics_method", pa.string(), "1", "simplified method compared"),
            field("reference_method", pa.string(), "1", "reference method, e.g. spectacular_6tp"),
            field("n_pairs", pa.int32(), "1", "VOIs with both TIAs"),
            field("n_missing", pa.int32(), "1", "VOIs left out (either TIA missing)"),
            field(
                "bias_percent", pa.float64(), "%", "mean of 100*(m-ref)/mean(m,ref)", nullable=True
            ),
            field("sd_percent", pa.float64(), "%", "sd of the relative differences", nullable=True),
            field("loa_lower_percent", pa.float64(), "%", "bias - 1.96 sd", nullable=True),
            field("loa_upper_percent", pa.float64(), "%", "bias + 1.96 sd", nullable=True),
            field("schema_version", pa.int16(), "1", "version of this table's schema"),
            field("software_version", pa.string(), "1", "concordose version"),
            field("run_id", pa.string(), "1", "publication run that wrote the row"),
            field("created_at", pa.timestamp("us", tz="UTC"), "1", "when the row was computed"),
        ]
    ),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec for spec in (VOI_TIMEPOINTS, KINETICS, ABSORBED_DOSE, KINETICS_AGREEMENT)
}
