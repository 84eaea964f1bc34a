"""Arrow schemas of the published tables, with units and a description on every field.

Versioning: each table has an integer ``version``; any change to its fields bumps it, and the
version is a folder of every object key (``<table>/v<N>/…``) and a column (``schema_version``) of
every row. Older versions stay readable: each :class:`TableSpec` keeps the schemas of its earlier
versions and, for each step, the columns the next version added together with the value they take
in older rows (:func:`upgrade_table`). Field metadata keys: ``unit`` (UCUM-like, ``1`` for
dimensionless) and ``doc``.

Contract of a results table (what a new table must state, in one place, here):

* ``key_columns``: the columns that identify a row; unique within a published batch;
* ``scope_column``: the column whose values a run *replaces*: a later run that publishes rows for
  a scope value (a cycle, or a calibration record) supersedes every earlier run's rows for that
  value in the current view (see :mod:`concordose.results.catalogue`);
* provenance columns on every row: schema and software version, run and flow run ids, created-at,
  and where they apply method name, method parameter hash, calibration record, input UID hashes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import pyarrow as pa


def field(
    name: str, arrow_type: pa.DataType, unit: str, doc: str, *, nullable: bool = False
) -> pa.Field:
    """A schema field carrying its unit and documentation as metadata."""
    return pa.field(name, arrow_type, nullable=nullable, metadata={"unit": unit, "doc": doc})


ScalarFill = str | int | float | bool | None


@dataclass(frozen=True)
class TableSpec:
    """One published table: name, version, Arrow schema and the columns that identify a row.

    Attributes:
        name: table name (first folder of every object key).
        version: current schema version.
        schema: current Arrow schema.
        key_columns: columns identifying a row (unique in a batch).
        doc: what one row is.
        scope_column: the column whose values a later run replaces (see the module docstring).
        previous_schemas: schema of every earlier version, by version.
        upgrades: for version ``v`` (< ``version``), the columns version ``v + 1`` added and the
            value older rows take for them.
    """

    name: str
    version: int
    schema: pa.Schema
    key_columns: tuple[str, ...]
    doc: str
    scope_column: str = "cycle_key"
    previous_schemas: Mapping[int, pa.Schema] = dataclass_field(default_factory=dict)
    upgrades: Mapping[int, Mapping[str, ScalarFill]] = dataclass_field(default_factory=dict)

    def schema_of(self, version: int) -> pa.Schema:
        """The schema of ``version`` of this table.

        Raises:
            KeyError: a version this table never had.
        """
        if version == self.version:
            return self.schema
        if version in self.previous_schemas:
            return self.previous_schemas[version]
        raise KeyError(
            f"table {self.name!r} has no schema version {version}; known: "
            f"{sorted([*self.previous_schemas, self.version])}"
        )

    def fills_from(self, version: int) -> dict[str, ScalarFill]:
        """Columns missing from rows of ``version`` in the current schema, with their fill."""
        fills: dict[str, ScalarFill] = {}
        for step in range(version, self.version):
            fills.update(self.upgrades[step])
        return fills


def upgrade_table(spec: TableSpec, table: pa.Table, version: int) -> pa.Table:
    """Rows of an older ``version`` of ``spec``'s table, in the current schema.

    Added columns take the fill value documented in ``spec.upgrades``; ``schema_version`` keeps
    the version the rows were written with, so a reader can always tell.
    """
    if version == spec.version:
        return table.select(spec.schema.names).cast(spec.schema)
    fills = spec.fills_from(version)
    columns = []
    for target in spec.schema:
        if target.name in fills:
            columns.append(pa.array([fills[target.name]] * table.num_rows, type=target.type))
        else:
            columns.append(table.column(target.name).cast(target.type))
    return pa.Table.from_arrays(columns, schema=spec.schema)


_SUBJECT = [
    field("subject_key", pa.string(), "1", "keyed hash (HMAC-SHA256) of the patient ID"),
    field("site_id", pa.string(), "1", "consortium site that sent the study"),
    field("cycle_key", pa.string(), "1", "keyed hash of subject and injection date-time"),
]

_VOI = [
    field("voi_label", pa.string(), "1", "VOI name as segmented, e.g. kidney_left, lesion_1"),
    field("voi_type", pa.string(), "1", "organ or lesion"),
]

_RUN_PROVENANCE = [
    field("schema_version", pa.int16(), "1", "version of this table's schema"),
    field("software_version", pa.string(), "1", "concordose version that computed the row"),
    field("run_id", pa.string(), "1", "publication run that wrote the row"),
    field("flow_run_id", pa.string(), "1", "orchestrator flow run, when run by one", nullable=True),
]
_CREATED_AT = field("created_at", pa.timestamp("us", tz="UTC"), "1", "when the row was computed")

_PROVENANCE = [
    *_RUN_PROVENANCE,
    field("calibration_record_id", pa.string(), "1", "site calibration record applied"),
    field("input_uid_hashes", pa.list_(pa.string()), "1", "SHA-256 of the input SOP Instance UIDs"),
    _CREATED_AT,
]

# The one quantification path version 1 rows were computed with (concordose 0.1: calibration
# factor applied to the summed counts in each VOI, masks resampled nearest-neighbour); the
# v1 → v2 upgrade of voi_timepoints states it explicitly. A unit test keeps the method equal to
# concordose.pipeline.quantify.QUANTIFICATION_METHOD and the hash equal to its settings with
# nearest-neighbour mask resampling (today's rows use shape-based interpolation).
V1_QUANTIFICATION_METHOD = "cf_voi_sum"
V1_QUANTIFICATION_PARAMETERS_HASH = "f0061a9d9efbddee"

_VOI_TIMEPOINTS_CORE = [
    *_SUBJECT,
    *_VOI,
    field("time_point_index", pa.int16(), "1", "0-based order of the time point"),
    field("time_h", pa.float64(), "h", "acquisition time after injection"),
    field("activity_mbq", pa.float64(), "MBq", "activity in the VOI at acquisition"),
    field("volume_ml", pa.float64(), "mL", "VOI volume on the segmentation grid"),
]
# v2 (issue 8): the quantification path's provenance.
_VOI_TIMEPOINTS_V2_METHOD = [
    field("quantification_method", pa.string(), "1", "name of the quantification path"),
    field("method_parameters_hash", pa.string(), "1", "hash of its settings"),
]
# v3 (issue 6): what the activity's uncertainty is made of (EANM, Gear et al. 2018).
_VOI_TIMEPOINTS_V3_UNCERTAINTY = [
    field("counts", pa.float64(), "1", "reconstructed counts in the VOI", nullable=True),
    field(
        "activity_sd_mbq",
        pa.float64(),
        "MBq",
        "standard uncertainty of activity_mbq: Poisson counting (+) calibration factor "
        "(the CF part is common to all time points of a cycle)",
        nullable=True,
    ),
]

# v4 (issue 6): the partial-volume correction applied, when one was asked for.
_VOI_TIMEPOINTS_V4_PVC = [
    field(
        "recovery_coefficient",
        pa.float64(),
        "1",
        "RC(V) activity_mbq was divided by (1 for organs); null when no partial-volume "
        "correction was asked for or the lesion lies outside the RC curve's measured volumes",
        nullable=True,
    ),
]

# v5 (issue 6): what the site protocol's partial-volume correction did, and the local
# background the background-aware model used (MBq/mL, as the activity is in MBq).
_VOI_TIMEPOINTS_V5_PVC = [
    field(
        "partial_volume_model",
        pa.string(),
        "1",
        "partial-volume model applied to this VOI (rc0_local_background or rc_curve); null "
        "when none was applied (not asked for, organ, or lesion left as measured: see "
        "partial_volume_status)",
        nullable=True,
    ),
    field(
        "partial_volume_status",
        pa.string(),
        "1",
        "what the correction did for this VOI (ok, or why not); null when none was asked for",
        nullable=True,
    ),
    field(
        "local_background_mbq_per_ml",
        pa.float64(),
        "MBq/mL",
        "mean concentration of the lesion's background shell at this time point, the C_B of "
        "C_L = (C_meas - (1 - RC0) C_B) / RC0; null unless the background-aware model was applied",
        nullable=True,
    ),
    field(
        "local_background_sd_mbq_per_ml",
        pa.float64(),
        "MBq/mL",
        "standard deviation of the background shell's voxel concentrations; null unless the "
        "background-aware model was applied",
        nullable=True,
    ),
]

VOI_TIMEPOINTS = TableSpec(
    name="voi_timepoints",
    version=5,
    doc="One row per VOI and SPECT time point: the time-activity curve points.",
    key_columns=("subject_key", "cycle_key", "voi_label", "time_point_index"),
    schema=pa.schema(
        [
            *_VOI_TIMEPOINTS_CORE,
            *_VOI_TIMEPOINTS_V2_METHOD,
            *_VOI_TIMEPOINTS_V3_UNCERTAINTY,
            *_VOI_TIMEPOINTS_V4_PVC,
            *_VOI_TIMEPOINTS_V5_PVC,
            *_PROVENANCE,
        ]
    ),
    previous_schemas={
        1: pa.schema([*_VOI_TIMEPOINTS_CORE, *_PROVENANCE]),
        2: pa.schema([*_VOI_TIMEPOINTS_CORE, *_VOI_TIMEPOINTS_V2_METHOD, *_PROVENANCE]),
        3: pa.schema(
            [
                *_VOI_TIMEPOINTS_CORE,
                *_VOI_TIMEPOINTS_V2_METHOD,
                *_VOI_TIMEPOINTS_V3_UNCERTAINTY,
                *_PROVENANCE,
            ]
        ),
        4: pa.schema(
            [
                *_VOI_TIMEPOINTS_CORE,
                *_VOI_TIMEPOINTS_V2_METHOD,
                *_VOI_TIMEPOINTS_V3_UNCERTAINTY,
                *_VOI_TIMEPOINTS_V4_PVC,
                *_PROVENANCE,
            ]
        ),
    },
    upgrades={
        1: {
            "quantification_method": V1_QUANTIFICATION_METHOD,
            "method_parameters_hash": V1_QUANTIFICATION_PARAMETERS_HASH,
        },
        2: dict.fromkeys((f.name for f in _VOI_TIMEPOINTS_V3_UNCERTAINTY), None),
        3: dict.fromkeys((f.name for f in _VOI_TIMEPOINTS_V4_PVC), None),
        # v4 rows never had a protocol-driven correction: no model, status or background
        4: dict.fromkeys((f.name for f in _VOI_TIMEPOINTS_V5_PVC), None),
    },
)

_KINETICS_CORE = [
    *_SUBJECT,
    *_VOI,
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
]
_KINETICS_V2_FIT = [
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
        "TIA uncertainty: fit (tia_sd_mbq_h) (+) the cycle-wide calibration factor part (+) the "
        "partial-volume correction part (correlated across time points; 0 without a correction)",
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
]

# v3 (issue 14): how far each scheduled point was from the nominal time it served.
_KINETICS_V3_SCHEDULE = [
    field(
        "time_point_offsets_h",
        pa.list_(pa.float64()),
        "h",
        "per entry of time_points_used_h: acquired minus nominal time of the schedule point it "
        "served (kinetics.timepoints); null for methods without a schedule",
        nullable=True,
    ),
]

KINETICS = TableSpec(
    name="kinetics",
    version=3,
    doc="One row per VOI and kinetics method: TIA and fit parameters.",
    key_columns=("subject_key", "cycle_key", "voi_label", "kinetics_method"),
    # v2 (issue 6): uncertainty, time points used, model and goodness of fit.
    # v3 (issue 14): distance of the scheduled points from nominal.
    schema=pa.schema([*_KINETICS_CORE, *_KINETICS_V2_FIT, *_KINETICS_V3_SCHEDULE, *_PROVENANCE]),
    previous_schemas={
        1: pa.schema([*_KINETICS_CORE, *_PROVENANCE]),
        2: pa.schema([*_KINETICS_CORE, *_KINETICS_V2_FIT, *_PROVENANCE]),
    },
    upgrades={
        1: dict.fromkeys((f.name for f in _KINETICS_V2_FIT), None),
        # v2 rows did not record the distance (the tolerance rule of v2 methods differed)
        2: dict.fromkeys((f.name for f in _KINETICS_V3_SCHEDULE), None),
    },
)

_ABSORBED_DOSE_V1_FIELDS = [
    *_SUBJECT,
    *_VOI,
    field("kinetics_method", pa.string(), "1", "TIA method the dose is based on"),
    field("dose_method", pa.string(), "1", "registry name of the dose method"),
    field("dose_method_version", pa.string(), "1", "version of the dose method"),
    field("method_parameters_hash", pa.string(), "1", "hash of the dose method's settings"),
    field("mass_g", pa.float64(), "g", "VOI mass used by the method"),
    field("tia_mbq_h", pa.float64(), "MBq.h", "time-integrated activity used", nullable=True),
    field("mean_dose_gy", pa.float64(), "Gy", "mean absorbed dose in the VOI", nullable=True),
    field("status", pa.string(), "1", "ok, or why the method does not apply"),
]
# v2 (issue 7): the dose's uncertainty (concordose.dose.uncertainty; DESIGN.md).
_DOSE_SD = field(
    "dose_sd_gy",
    pa.float64(),
    "Gy",
    "standard uncertainty of mean_dose_gy: the TIA's (fit covariance gTVg, EANM/Gear 2018, "
    "(+) the calibration factor's) and, for organ S-values, the tables' Monte Carlo standard "
    "errors; sphere S-values state none; null when the kinetics method gives no TIA uncertainty",
    nullable=True,
)

ABSORBED_DOSE = TableSpec(
    name="absorbed_dose",
    version=2,
    doc="One row per VOI, kinetics method and dose method: mean absorbed dose.",
    key_columns=("subject_key", "cycle_key", "voi_label", "kinetics_method", "dose_method"),
    schema=pa.schema([*_ABSORBED_DOSE_V1_FIELDS, _DOSE_SD, *_PROVENANCE]),
    previous_schemas={1: pa.schema([*_ABSORBED_DOSE_V1_FIELDS, *_PROVENANCE])},
    upgrades={1: {"dose_sd_gy": None}},  # v1 rows were published without uncertainty
)

_VOXEL_DOSE_V1_FIELDS = [
    *_SUBJECT,
    *_VOI,
    field(
        "kinetics_method",
        pa.string(),
        "1",
        "voxel kinetics: voxel_<model> fitted to every body voxel",
    ),
    field("dose_method", pa.string(), "1", "registry name in VOXEL_DOSE_METHODS"),
    field("dose_method_version", pa.string(), "1", "version of the voxel dose method"),
    field(
        "method_parameters_hash",
        pa.string(),
        "1",
        "hash of the voxel kinetics and dose methods' settings",
    ),
    field(
        "mass_g",
        pa.float64(),
        "g",
        "VOI mass on the dose grid (CT density on the CT grid, else unit)",
    ),
    field(
        "tia_mbq_h",
        pa.float64(),
        "MBq.h",
        "sum of the voxel TIAs in the VOI",
        nullable=True,
    ),
    field(
        "tia_sd_mbq_h",
        pa.float64(),
        "MBq.h",
        "its SD: voxel fit SDs summed (fully correlated) (+) calibration factor",
        nullable=True,
    ),
    field(
        "voxel_fit_failed_fraction",
        pa.float64(),
        "1",
        "fraction of the VOI's voxels whose fit failed (their TIA taken as 0)",
        nullable=True,
    ),
    field("mean_dose_gy", pa.float64(), "Gy", "mass-weighted mean dose", nullable=True),
    field(
        "dose_sd_gy",
        pa.float64(),
        "Gy",
        "SD of mean_dose_gy: the method applied to the voxel TIA SD map (fully "
        "correlated voxel errors, an upper bound) (+) calibration factor",
        nullable=True,
    ),
    field("median_dose_gy", pa.float64(), "Gy", "median voxel dose", nullable=True),
    field("min_dose_gy", pa.float64(), "Gy", "lowest voxel dose", nullable=True),
    field("max_dose_gy", pa.float64(), "Gy", "highest voxel dose", nullable=True),
    field(
        "d2_gy",
        pa.float64(),
        "Gy",
        "minimum dose to the hottest 2 % of mass",
        nullable=True,
    ),
    field("d50_gy", pa.float64(), "Gy", "minimum dose to the hottest 50 %", nullable=True),
    field("d98_gy", pa.float64(), "Gy", "minimum dose to the hottest 98 %", nullable=True),
    field(
        "dvh_dose_gy",
        pa.list_(pa.float32()),
        "Gy",
        "cumulative DVH dose levels, 0 to max_dose_gy (64 points)",
        nullable=True,
    ),
    field(
        "dvh_mass_fraction",
        pa.list_(pa.float32()),
        "1",
        "fraction of the VOI's mass receiving at least each dvh_dose_gy level",
        nullable=True,
    ),
    field("status", pa.string(), "1", "ok, or why the VOI has no voxel dose"),
]
# v2 (issue 7): the grid the dose, VOI masks and masses are on (voxel_dosimetry.output_grid).
_DOSE_GRID = field(
    "dose_grid",
    pa.string(),
    "1",
    "grid of the dose map, VOI masks and mass: ct (first time point's CT, CT density) or spect "
    "(first SPECT grid, unit density)",
)

VOXEL_DOSE = TableSpec(
    name="voxel_dose",
    version=2,
    doc=(
        "One row per VOI, voxel kinetics model and voxel dose method (issue 7): dose statistics "
        "of the voxel dose map in the VOI (concordose.dose.voxel_dosimetry)."
    ),
    key_columns=("subject_key", "cycle_key", "voi_label", "kinetics_method", "dose_method"),
    schema=pa.schema([*_VOXEL_DOSE_V1_FIELDS, _DOSE_GRID, *_PROVENANCE]),
    previous_schemas={1: pa.schema([*_VOXEL_DOSE_V1_FIELDS, *_PROVENANCE])},
    upgrades={1: {"dose_grid": "spect"}},  # v1 rows were all on the first SPECT grid
)

_ACQUISITION_V1_FIELDS = [
    *_SUBJECT,
    field("time_point_index", pa.int16(), "1", "0-based order of the time point"),
    field("time_h", pa.float64(), "h", "acquisition time after injection"),
    field("modality", pa.string(), "1", "DICOM modality of the emission image (NM, PT)"),
    field("acquisition_duration_s", pa.float64(), "s", "frame duration × frames"),
    field("energy_window_kev", pa.float64(), "keV", "photopeak centre", nullable=True),
    field(
        "calibration_factor_cps_per_mbq",
        pa.float64(),
        "cps/MBq",
        "calibration factor applied to this acquisition",
    ),
    field("qc_status", pa.string(), "1", "pass, warn or fail (see qc_findings)"),
    field("n_qc_findings", pa.int16(), "1", "QC findings raised for this acquisition"),
]
_ACQUISITION_V2_METADATA = [
    field(
        "injected_activity_mbq",
        pa.float64(),
        "MBq",
        "RadionuclideTotalDose as recorded by the site",
        nullable=True,
    ),
    field("camera_model", pa.string(), "1", "ManufacturerModelName", nullable=True),
    field("collimator", pa.string(), "1", "collimator name or type", nullable=True),
    field(
        "reconstruction",
        pa.string(),
        "1",
        "reconstruction fingerprint (method and kernel as written by the vendor)",
        nullable=True,
    ),
    field("voxel_mm", pa.float64(), "mm", "largest voxel edge of the SPECT grid", nullable=True),
    field("patient_weight_kg", pa.float64(), "kg", "PatientWeight", nullable=True),
    field(
        "registration_metric",
        pa.float64(),
        "HU2",
        "final mean squared HU difference of the CT-to-CT registration onto the VOIs' CT "
        "(null: same frame of reference as the VOIs, not registered)",
        nullable=True,
    ),
    field(
        "registration_translation_mm",
        pa.list_(pa.float64()),
        "mm",
        "translation (x, y, z) the registration found",
        nullable=True,
    ),
]

ACQUISITIONS = TableSpec(
    name="acquisitions",
    version=2,
    doc=(
        "One row per SPECT time point of a cycle: the metadata the checks read, and the QC status "
        "the metadata checks and the calibration gate gave it."
    ),
    key_columns=("subject_key", "cycle_key", "time_point_index"),
    schema=pa.schema([*_ACQUISITION_V1_FIELDS, *_ACQUISITION_V2_METADATA, *_PROVENANCE]),
    previous_schemas={1: pa.schema([*_ACQUISITION_V1_FIELDS, *_PROVENANCE])},
    upgrades={1: dict.fromkeys((f.name for f in _ACQUISITION_V2_METADATA), None)},
)

_PATIENT_SUMMARY_FIELDS = [
    *_SUBJECT,
    field("cycle_number", pa.int16(), "1", "1-based treatment cycle", nullable=True),
    field("kinetics_method", pa.string(), "1", "TIA method of the doses"),
    field("dose_method", pa.string(), "1", "dose method of the doses"),
    field("method_parameters_hash", pa.string(), "1", "hash of both methods' settings"),
    field(
        "injected_activity_mbq",
        pa.float64(),
        "MBq",
        "administered activity (RadionuclideTotalDose)",
        nullable=True,
    ),
    field("n_lesions", pa.int16(), "1", "lesions with a dose"),
    field("lesion_min_dose_gy", pa.float64(), "Gy", "lowest lesion dose", nullable=True),
    field(
        "lesion_mean_dose_gy",
        pa.float64(),
        "Gy",
        "mass-weighted mean tumour dose (GTD)",
        nullable=True,
    ),
    field("kidney_mean_dose_gy", pa.float64(), "Gy", "mean kidney dose", nullable=True),
    field(
        "meets_min_lesion_35gy",
        pa.bool_(),
        "1",
        "lesion_min_dose_gy >= 35 Gy",
        nullable=True,
    ),
    field(
        "meets_mean_lesion_10_6gy",
        pa.bool_(),
        "1",
        "lesion_mean_dose_gy >= 10.6 Gy",
        nullable=True,
    ),
    *_PROVENANCE,
]
# v2 (issue 15, item 2): the injected activity on the doses' activity scale.
_PATIENT_SUMMARY_TRACEABILITY_FIELDS = [
    field(
        "injected_activity_traceable_mbq",
        pa.float64(),
        "MBq",
        "injected_activity_mbq corrected for the site dose calibrator's bias (/ (1 + "
        "site_calibrations.dose_calibrator_bias_relative)), on the same traceable scale as the "
        "doses; null when the calibration record is not traceable (then injected_activity_mbq "
        "and the doses carry the same bias, which cancels in dose per injected activity)",
        nullable=True,
    ),
]
_PATIENT_SUMMARY_V2_FIELDS = [*_PATIENT_SUMMARY_FIELDS, *_PATIENT_SUMMARY_TRACEABILITY_FIELDS]

PATIENT_SUMMARY = TableSpec(
    name="patient_summary",
    version=2,
    doc=(
        "One row per patient cycle, kinetics method and dose method: lesion and organ-at-risk "
        "doses against the published thresholds (35 Gy minimum lesion dose, 10.6 Gy global mean "
        "tumour dose; see the seed review)."
    ),
    key_columns=("subject_key", "cycle_key", "kinetics_method", "dose_method"),
    schema=pa.schema(_PATIENT_SUMMARY_V2_FIELDS),
    previous_schemas={1: pa.schema(_PATIENT_SUMMARY_FIELDS)},
    upgrades={1: dict.fromkeys((f.name for f in _PATIENT_SUMMARY_TRACEABILITY_FIELDS), None)},
)

VOXEL_DOSE_SUMMARY = TableSpec(
    name="voxel_dose_summary",
    version=2,
    doc=(
        "patient_summary's columns for the voxel methods (issue 7): one row per patient cycle, "
        "voxel kinetics model and voxel dose method, from the VOI mean doses of voxel_dose."
    ),
    key_columns=("subject_key", "cycle_key", "kinetics_method", "dose_method"),
    schema=pa.schema(_PATIENT_SUMMARY_V2_FIELDS),
    previous_schemas={1: pa.schema(_PATIENT_SUMMARY_FIELDS)},
    upgrades={1: dict.fromkeys((f.name for f in _PATIENT_SUMMARY_TRACEABILITY_FIELDS), None)},
)

METHOD_COMPARISON = TableSpec(
    name="method_comparison",
    version=1,
    doc=(
        "One row per VOI, simplified method and dose method: its dose against the reference "
        "kinetics method's dose (spectacular_6tp: every time point, model chosen per curve by "
        "AICc); the reference itself has no rows."
    ),
    key_columns=("subject_key", "cycle_key", "voi_label", "kinetics_method", "dose_method"),
    schema=pa.schema(
        [
            *_SUBJECT,
            *_VOI,
            field("reference_kinetics_method", pa.string(), "1", "the reference TIA method"),
            field("kinetics_method", pa.string(), "1", "the simplified TIA method compared"),
            field("dose_method", pa.string(), "1", "dose method of both doses"),
            field("method_parameters_hash", pa.string(), "1", "hash of both methods' settings"),
            field("reference_dose_gy", pa.float64(), "Gy", "dose by the reference", nullable=True),
            field("dose_gy", pa.float64(), "Gy", "dose by the compared method", nullable=True),
            field(
                "relative_difference",
                pa.float64(),
                "1",
                "(dose - reference) / reference",
                nullable=True,
            ),
            *_PROVENANCE,
        ]
    ),
)

_SITE_CALIBRATION_V1_FIELDS = [
    field("site_id", pa.string(), "1", "consortium site"),
    field("calibration_record_id", pa.string(), "1", "the calibration record"),
    field("camera_model", pa.string(), "1", "camera model", nullable=True),
    field("collimator", pa.string(), "1", "collimator", nullable=True),
    field(
        "calibration_factor_cps_per_mbq",
        pa.float64(),
        "cps/MBq",
        "counts per second per MBq in the field of view (uniform-cylinder phantom)",
    ),
    field(
        "calibration_factor_relative_uncertainty",
        pa.float64(),
        "1",
        "relative standard uncertainty of the factor",
        nullable=True,
    ),
    field("valid_from", pa.date32(), "1", "first day of validity (inclusive)"),
    field("valid_to", pa.date32(), "1", "last day of validity (inclusive)", nullable=True),
]
# v2 (issue 5): the rest of the record — set-up fingerprint and the recovery curve.
_SITE_CALIBRATION_V2_FIELDS = [
    field(
        "reconstruction", pa.string(), "1", "reconstruction fingerprint calibrated", nullable=True
    ),
    field("energy_window_lower_kev", pa.float64(), "keV", "photopeak window, lower", nullable=True),
    field("energy_window_upper_kev", pa.float64(), "keV", "photopeak window, upper", nullable=True),
    field(
        "recovery_a_ml",
        pa.float64(),
        "mL",
        "RC(V) = 1/(1 + (a/V)^b): volume where RC = 0.5 (NEMA IEC phantom)",
        nullable=True,
    ),
    field("recovery_b", pa.float64(), "1", "RC(V) steepness b", nullable=True),
]

_SITE_CALIBRATION_V3_FIELDS = [
    field(
        "contrast_recovery_a_ml",
        pa.float64(),
        "mL",
        "background-independent RC0(V) = 1/(1 + (a/V)^b), RC0 = (C_meas - C_B)/(C_S - C_B) of "
        "the NEMA spheres: volume where RC0 = 0.5",
        nullable=True,
    ),
    field("contrast_recovery_b", pa.float64(), "1", "RC0(V) steepness b", nullable=True),
]

# v4 (issue 15, item 2): dose-calibrator traceability — the bias the CF was corrected for.
_SITE_CALIBRATION_TRACEABILITY_FIELDS = [
    field(
        "dose_calibrator_traceable",
        pa.bool_(),
        "1",
        "true when the CF was corrected for the site dose calibrator's bias measured against a "
        "traceable reference (certified source or secondary standard); false: the CF carries it",
    ),
    field(
        "dose_calibrator_bias_relative",
        pa.float64(),
        "1",
        "the site dose calibrator's bias: reading / traceable reference - 1 (the phantom's "
        "activities were divided by 1 + bias before the CF was derived)",
        nullable=True,
    ),
    field(
        "dose_calibrator_bias_sd_relative",
        pa.float64(),
        "1",
        "standard uncertainty of the bias (reference certificate and reading repeatability)",
        nullable=True,
    ),
    field(
        "dose_calibrator_traceability",
        pa.string(),
        "1",
        "what the bias was measured with: method, calibrator, reference and its certificate",
        nullable=True,
    ),
]

# v5 (issue 15, item 1): the PSF fitted to the NEMA spheres and the phantom evidence on PVC models.
PARTIAL_VOLUME_EVIDENCE_MODELS = ("none", "rc_curve", "rc0_local_background", "gtm")
"""Models whose leave-one-out error on the NEMA spheres ``site_calibrations`` v5 publishes."""
_SITE_CALIBRATION_V5_FIELDS = [
    field(
        "psf_fwhm_mm",
        pa.float64(),
        "mm",
        "effective isotropic Gaussian FWHM fitted to the NEMA spheres (GTM correction's PSF)",
        nullable=True,
    ),
    field("psf_fwhm_sd_mm", pa.float64(), "mm", "SD of the fitted FWHM", nullable=True),
    field(
        "partial_volume_model_chosen",
        pa.string(),
        "1",
        "PVC model with the smallest leave-one-out error on the NEMA spheres (or none)",
        nullable=True,
    ),
    *[
        field(
            f"phantom_rms_error_{model}",
            pa.float64(),
            "1",
            f"leave-one-out RMS relative error of the NEMA spheres' activities, model {model}",
            nullable=True,
        )
        for model in PARTIAL_VOLUME_EVIDENCE_MODELS
    ],
]

# v6 (issue 15, realistic imaging): the large-object PSF fitted across the NEMA body's surface,
# the FWHM the GTM uses (the spheres' low-contrast fit is wider under OSEM).
_SITE_CALIBRATION_V6_FIELDS = [
    field(
        "psf_large_object_fwhm_mm",
        pa.float64(),
        "mm",
        "Gaussian FWHM fitted across the NEMA phantom body's surface (large, high-contrast "
        "object); the GTM uses the smaller of it and psf_fwhm_mm",
        nullable=True,
    ),
    field(
        "psf_large_object_fwhm_sd_mm",
        pa.float64(),
        "mm",
        "SD of the large-object FWHM",
        nullable=True,
    ),
]

SITE_CALIBRATIONS = TableSpec(
    name="site_calibrations",
    version=6,
    doc="One row per site calibration record (from the site's phantom scans).",
    key_columns=("site_id", "calibration_record_id"),
    scope_column="calibration_record_id",
    schema=pa.schema(
        [
            *_SITE_CALIBRATION_V1_FIELDS,
            *_SITE_CALIBRATION_V2_FIELDS,
            *_SITE_CALIBRATION_V3_FIELDS,
            *_SITE_CALIBRATION_TRACEABILITY_FIELDS,
            *_SITE_CALIBRATION_V5_FIELDS,
            *_SITE_CALIBRATION_V6_FIELDS,
            *_RUN_PROVENANCE,
            _CREATED_AT,
        ]
    ),
    previous_schemas={
        1: pa.schema([*_SITE_CALIBRATION_V1_FIELDS, *_RUN_PROVENANCE, _CREATED_AT]),
        2: pa.schema(
            [
                *_SITE_CALIBRATION_V1_FIELDS,
                *_SITE_CALIBRATION_V2_FIELDS,
                *_RUN_PROVENANCE,
                _CREATED_AT,
            ]
        ),
        3: pa.schema(
            [
                *_SITE_CALIBRATION_V1_FIELDS,
                *_SITE_CALIBRATION_V2_FIELDS,
                *_SITE_CALIBRATION_V3_FIELDS,
                *_RUN_PROVENANCE,
                _CREATED_AT,
            ]
        ),
        4: pa.schema(
            [
                *_SITE_CALIBRATION_V1_FIELDS,
                *_SITE_CALIBRATION_V2_FIELDS,
                *_SITE_CALIBRATION_V3_FIELDS,
                *_SITE_CALIBRATION_TRACEABILITY_FIELDS,
                *_RUN_PROVENANCE,
                _CREATED_AT,
            ]
        ),
        5: pa.schema(
            [
                *_SITE_CALIBRATION_V1_FIELDS,
                *_SITE_CALIBRATION_V2_FIELDS,
                *_SITE_CALIBRATION_V3_FIELDS,
                *_SITE_CALIBRATION_TRACEABILITY_FIELDS,
                *_SITE_CALIBRATION_V5_FIELDS,
                *_RUN_PROVENANCE,
                _CREATED_AT,
            ]
        ),
    },
    upgrades={
        1: dict.fromkeys((f.name for f in _SITE_CALIBRATION_V2_FIELDS), None),
        2: dict.fromkeys((f.name for f in _SITE_CALIBRATION_V3_FIELDS), None),
        # records before v4 had no traceability measurement: their CF carries the bias
        3: {
            **dict.fromkeys((f.name for f in _SITE_CALIBRATION_TRACEABILITY_FIELDS), None),
            "dose_calibrator_traceable": False,
        },
        4: dict.fromkeys((f.name for f in _SITE_CALIBRATION_V5_FIELDS), None),
        5: dict.fromkeys((f.name for f in _SITE_CALIBRATION_V6_FIELDS), None),
    },
)

HARMONISATION_AGREEMENT = TableSpec(
    name="harmonisation_agreement",
    version=1,
    doc=(
        "One row per reference object, compartment (VOI), site, processing variant, metric and "
        "method: the site's value against the object's truth, and the cross-site coefficient "
        "of variation of its group (concordose.consortium.harmonisation)."
    ),
    key_columns=(
        "reference_object_id",
        "voi_label",
        "site_id",
        "variant",
        "metric",
        "kinetics_method",
        "dose_method",
    ),
    # a later computation over a reference object replaces all of that object's rows
    scope_column="reference_object_id",
    schema=pa.schema(
        [
            field(
                "reference_object_id",
                pa.string(),
                "1",
                "reference object (travelling phantom or digital patient) from the truth sheet",
            ),
            field(
                "reference_object_kind", pa.string(), "1", "travelling_phantom or digital_patient"
            ),
            *_VOI,
            field("site_id", pa.string(), "1", "site that measured the object"),
            field(
                "variant",
                pa.string(),
                "1",
                "raw (vendor nominal CF, no PVC), harmonised (phantom CF) or harmonised_pvc",
            ),
            field(
                "metric",
                pa.string(),
                "1",
                "tia_mbq_h or mean_dose_gy: the quantity compared, named with its unit",
            ),
            field("kinetics_method", pa.string(), "1", "TIA method of the measured value"),
            field(
                "dose_method",
                pa.string(),
                "1",
                "dose method for mean_dose_gy rows; 'none' for tia_mbq_h rows",
            ),
            field(
                "method_parameters_hash",
                pa.string(),
                "1",
                "settings hash published with the measured value: the kinetics method's "
                "(tia_mbq_h rows) or the dose method's (mean_dose_gy rows)",
            ),
            field(
                "measured",
                pa.float64(),
                "metric",
                "the site's published value, in the unit the metric names; null when the "
                "method gave none (see the source tables' status)",
                nullable=True,
            ),
            field("truth", pa.float64(), "metric", "the truth sheet's value, unit as measured"),
            field(
                "relative_error",
                pa.float64(),
                "1",
                "(measured - truth) / truth",
                nullable=True,
            ),
            field(
                "n_sites",
                pa.int32(),
                "1",
                "sites with a measured value in this row's group (object, VOI, variant, metric, "
                "methods)",
            ),
            field(
                "cross_site_mean",
                pa.float64(),
                "metric",
                "mean of the group's measured values",
                nullable=True,
            ),
            field(
                "cross_site_cov",
                pa.float64(),
                "1",
                "the group's coefficient of variation across sites: sample SD (n - 1) / mean; "
                "null below 2 sites",
                nullable=True,
            ),
            field(
                "calibration_record_id",
                pa.string(),
                "1",
                "calibration record the site's value was computed with",
            ),
            field("source_run_id", pa.string(), "1", "publication run of the measured value"),
            *_RUN_PROVENANCE,
            _CREATED_AT,
        ]
    ),
)

_QC_FINDINGS_V1_FIELDS = [
    *_SUBJECT,
    field("finding_index", pa.int16(), "1", "0-based order of the finding in the cycle"),
    field("check_name", pa.string(), "1", "the check that raised it"),
    field("severity", pa.string(), "1", "info, warning or error"),
    field("message", pa.string(), "1", "what was expected, what was found, where"),
    field("time_point_index", pa.int16(), "1", "time point concerned, if any", nullable=True),
]

QC_FINDINGS = TableSpec(
    name="qc_findings",
    version=2,
    doc="One row per quality-control finding raised on a cycle (metadata, calibration, fits).",
    key_columns=("subject_key", "cycle_key", "finding_index"),
    schema=pa.schema(
        [
            *_QC_FINDINGS_V1_FIELDS,
            field(
                "voi_labels",
                pa.list_(pa.string()),
                "1",
                "labels of the VOIs the finding is about (null: not about particular VOIs);"
                " join on voi_label to see which published values it qualifies",
                nullable=True,
            ),
            *_PROVENANCE,
        ]
    ),
    previous_schemas={1: pa.schema([*_QC_FINDINGS_V1_FIELDS, *_PROVENANCE])},
    upgrades={1: {"voi_labels": None}},  # v1 findings named their VOIs in the message only
)

_KINETICS_AGREEMENT_V1_FIELDS = [
    field("site_id", pa.string(), "1", "consortium site, or 'all' for the cohort"),
    field("voi_type", pa.string(), "1", "organ, lesion, or 'all'"),
    field("kinetics_method", pa.string(), "1", "simplified method compared"),
    field("reference_method", pa.string(), "1", "reference method, e.g. spectacular_6tp"),
    field("method_parameters_hash", pa.string(), "1", "hash of both methods' settings"),
    field("n_pairs", pa.int32(), "1", "VOIs with both values"),
    field("n_missing", pa.int32(), "1", "VOIs left out (either value missing)"),
    field("bias_percent", pa.float64(), "%", "mean of 100*(m-ref)/mean(m,ref)", nullable=True),
    field("sd_percent", pa.float64(), "%", "sd of the relative differences", nullable=True),
    field("loa_lower_percent", pa.float64(), "%", "bias - 1.96 sd", nullable=True),
    field("loa_upper_percent", pa.float64(), "%", "bias + 1.96 sd", nullable=True),
]

# Cohort tables (issue 14): rebuilt as a whole from every current cycle of the store, so their
# scope is one value of ``cohort`` and a rebuild replaces every earlier row
# (concordose.consortium.agreement; DESIGN.md).
CONSORTIUM_COHORT = "consortium"
"""The ``cohort`` value (the scope) of the cohort tables rebuilt together after each cycle:
every current cycle of the output store. Scope values are shared across tables (a later run's
scope value hides every earlier run's rows of that value, whatever the table), so a cohort table
published in a run of its own needs a value of its own (:data:`PET_PREDICTION_COHORT`)."""
PET_PREDICTION_COHORT = "consortium-pet-prediction"
"""The ``cohort`` value of ``dose_prediction``: published on its own (``concordose prediction
build``), so neither it nor the other cohort tables' rebuild hides the other's rows."""
_COHORT = field(
    "cohort",
    pa.string(),
    "1",
    f"cohort the statistics cover: {CONSORTIUM_COHORT!r} = every current cycle of the output "
    f"store ({PET_PREDICTION_COHORT!r} for dose_prediction, published on its own)",
)
_COHORT_GROUP = [
    field(
        "site_id",
        pa.string(),
        "1",
        "consortium site, or '*' for every site pooled (never a site id: ids are [a-z0-9_-])",
    ),
    field("voi_type", pa.string(), "1", "organ or lesion"),
    field(
        "voi_class",
        pa.string(),
        "1",
        "organ: its VOI label (kidney_left, liver, ...); lesion: its volume bin, e.g. "
        "lesion_4_20ml (bins: concordose.consortium.voi_classes.LESION_VOLUME_BINS)",
    ),
]
_AGREEMENT_COUNTS = [
    field("n_cycles", pa.int32(), "1", "cycles contributing at least one pair", nullable=True),
]
_AGREEMENT_STATISTICS = _KINETICS_AGREEMENT_V1_FIELDS[5:]  # n_pairs ... loa_upper_percent

_METRIC = field("metric", pa.string(), "1", "tia (TIA, MBq.h) or mean_dose (VOI mean dose, Gy)")
_AGREEMENT_DOSE_METHOD = field(
    "dose_method",
    pa.string(),
    "1",
    "dose method of both doses (metric mean_dose); null for metric tia",
    nullable=True,
)
_COMPARED_HASH = field(
    "method_parameters_hash",
    pa.string(),
    "1",
    "hash of the sorted method setting hashes of every row compared",
)

KINETICS_AGREEMENT = TableSpec(
    name="kinetics_agreement",
    version=2,
    doc=(
        "One row per cohort group (site or '*' pooled, VOI class), metric (TIA or mean dose) and "
        "simplified kinetics method: Bland-Altman agreement of its value with the reference "
        "kinetics method's (concordose.kinetics.comparison), rebuilt from every current cycle "
        "(concordose.consortium.agreement)."
    ),
    key_columns=(
        "site_id",
        "voi_class",
        "metric",
        "kinetics_method",
        "reference_method",
        "dose_method",
    ),
    scope_column="cohort",  # a rebuild replaces the whole table
    schema=pa.schema(
        [
            _COHORT,
            *_COHORT_GROUP,
            _METRIC,
            field("kinetics_method", pa.string(), "1", "simplified kinetics method compared"),
            field("reference_method", pa.string(), "1", "reference kinetics method"),
            _AGREEMENT_DOSE_METHOD,
            _COMPARED_HASH,
            *_AGREEMENT_COUNTS,
            *_AGREEMENT_STATISTICS,
            *_RUN_PROVENANCE,
            _CREATED_AT,
        ]
    ),
    previous_schemas={
        1: pa.schema([*_KINETICS_AGREEMENT_V1_FIELDS, *_RUN_PROVENANCE, _CREATED_AT]),
    },
    # v1 was never published (DESIGN.md); its rows would be TIA agreements by VOI type only
    upgrades={
        1: {
            "cohort": "consortium",
            "voi_class": "any",
            "metric": "tia",
            "dose_method": None,
            "n_cycles": None,
        }
    },
)

DOSE_AGREEMENT = TableSpec(
    name="dose_agreement",
    version=1,
    doc=(
        "One row per cohort group (site or '*' pooled, VOI class) and pair of dose methods: "
        "Bland-Altman agreement of their VOI mean doses on the same VOIs (VOI-level methods on "
        "the reference kinetics' TIA; voxel methods on their voxel kinetics), rebuilt from every "
        "current cycle (concordose.consortium.agreement)."
    ),
    key_columns=(
        "site_id",
        "voi_class",
        "dose_source",
        "dose_method",
        "kinetics_method",
        "comparator_dose_source",
        "comparator_dose_method",
        "comparator_kinetics_method",
    ),
    scope_column="cohort",
    schema=pa.schema(
        [
            _COHORT,
            *_COHORT_GROUP,
            _METRIC,
            field(
                "dose_source",
                pa.string(),
                "1",
                "table of the compared method: absorbed_dose (VOI-level) or voxel_dose (voxel)",
            ),
            field("dose_method", pa.string(), "1", "dose method compared"),
            field("kinetics_method", pa.string(), "1", "kinetics of the compared doses"),
            field("comparator_dose_source", pa.string(), "1", "table of the comparator"),
            field("comparator_dose_method", pa.string(), "1", "dose method compared with"),
            field("comparator_kinetics_method", pa.string(), "1", "kinetics of the comparator"),
            _COMPARED_HASH,
            *_AGREEMENT_COUNTS,
            *_AGREEMENT_STATISTICS,
            *_RUN_PROVENANCE,
            _CREATED_AT,
        ]
    ),
)

_THRESHOLD_CONCORDANCE_V1 = [
    _COHORT,
    field("level", pa.string(), "1", "cycle, patient (cumulative thresholds) or cohort"),
    field(
        "site_id",
        pa.string(),
        "1",
        "consortium site, or '*' for every site pooled (cohort rows)",
    ),
    field("subject_key", pa.string(), "1", "patient (null on cohort rows)", nullable=True),
    field("cycle_key", pa.string(), "1", "cycle (cycle rows only; else null)", nullable=True),
    field("threshold_name", pa.string(), "1", "concordose.dose.thresholds name"),
    field("metric", pa.string(), "1", "dose metric the threshold applies to"),
    field("threshold_scope", pa.string(), "1", "cycle 1 or cumulative"),
    field("threshold_gy", pa.float64(), "Gy", "the published cut-off"),
    field("direction", pa.string(), "1", "at_least or at_most"),
    field("study_kinetics_method", pa.string(), "1", "the study's schedule, emulated"),
    field("study_dose_method", pa.string(), "1", "the study's dose model, emulated"),
    field("reference_kinetics_method", pa.string(), "1", "the platform's reference"),
    field("reference_dose_method", pa.string(), "1", "dose method of the reference side"),
    _COMPARED_HASH,
    field("n_cycles", pa.int32(), "1", "cycles the row's values cover"),
    field("study_value_gy", pa.float64(), "Gy", "value by the study's method", nullable=True),
    field("reference_value_gy", pa.float64(), "Gy", "value by the reference", nullable=True),
    field("study_met", pa.bool_(), "1", "classification by the study's method", nullable=True),
    field("reference_met", pa.bool_(), "1", "classification by the reference", nullable=True),
    field("flipped", pa.bool_(), "1", "the two classifications differ", nullable=True),
    field(
        "n_classified",
        pa.int32(),
        "1",
        "cohort: rows with both classifications",
        nullable=True,
    ),
    field("n_missing", pa.int32(), "1", "cohort: rows missing a classification", nullable=True),
    field(
        "flip_fraction",
        pa.float64(),
        "1",
        "cohort: fraction of flipped rows",
        nullable=True,
    ),
    field(
        "cohen_kappa",
        pa.float64(),
        "1",
        "cohort: Cohen's kappa of the classifications",
        nullable=True,
    ),
    field(
        "regression_method",
        pa.string(),
        "1",
        "cohort: reference value regressed on the study's (deming_ratio_1_jackknife)",
        nullable=True,
    ),
    field("n_regression_pairs", pa.int32(), "1", "cohort: pairs regressed", nullable=True),
    field("slope", pa.float64(), "1", "cohort: regression slope", nullable=True),
    field("slope_ci_lower", pa.float64(), "1", "cohort: slope, 95 % CI lower", nullable=True),
    field("slope_ci_upper", pa.float64(), "1", "cohort: slope, 95 % CI upper", nullable=True),
    field("intercept_gy", pa.float64(), "Gy", "cohort: regression intercept", nullable=True),
    field(
        "intercept_ci_lower_gy",
        pa.float64(),
        "Gy",
        "cohort: intercept, 95 % CI lower",
        nullable=True,
    ),
    field(
        "intercept_ci_upper_gy",
        pa.float64(),
        "Gy",
        "cohort: intercept, 95 % CI upper",
        nullable=True,
    ),
    field(
        "reference_equivalent_gy",
        pa.float64(),
        "Gy",
        "cohort: the reference-scale value equivalent to threshold_gy",
        nullable=True,
    ),
    field(
        "reference_equivalent_ci_lower_gy",
        pa.float64(),
        "Gy",
        "cohort: 95 % CI lower",
        nullable=True,
    ),
    field(
        "reference_equivalent_ci_upper_gy",
        pa.float64(),
        "Gy",
        "cohort: 95 % CI upper",
        nullable=True,
    ),
]

# v2 (issue 14): how many of a row's cycles the study side took from a single time point.
_THRESHOLD_CONCORDANCE_V2_SINGLE_POINT = [
    field(
        "study_single_point_cycles",
        pa.int32(),
        "1",
        "cycles of the row whose study value came from one time point with the patient's "
        "half-life of earlier cycles (Hebert cycles 3-4: concordose.kinetics.prior_half_life); "
        "0 for a study imaged at its full schedule throughout",
        nullable=True,
    ),
]

THRESHOLD_CONCORDANCE = TableSpec(
    name="threshold_concordance",
    version=2,
    doc=(
        "The published tumour-dose thresholds (concordose.dose.thresholds) in their own study's "
        "emulated methodology and with the reference kinetics: one row per cycle (cycle-1 "
        "thresholds) or patient (cumulative ones) with both values and classifications, and "
        "per site and pooled ('*') the flip fraction, Cohen's kappa and a Deming regression "
        "giving the reference-scale equivalent of the cut-off "
        "(concordose.consortium.threshold_concordance)."
    ),
    key_columns=("level", "site_id", "subject_key", "cycle_key", "threshold_name"),
    scope_column="cohort",
    schema=pa.schema(
        [
            *_THRESHOLD_CONCORDANCE_V1,
            *_THRESHOLD_CONCORDANCE_V2_SINGLE_POINT,
            *_RUN_PROVENANCE,
            _CREATED_AT,
        ]
    ),
    previous_schemas={
        1: pa.schema([*_THRESHOLD_CONCORDANCE_V1, *_RUN_PROVENANCE, _CREATED_AT]),
    },
    upgrades={1: dict.fromkeys((f.name for f in _THRESHOLD_CONCORDANCE_V2_SINGLE_POINT), None)},
)

# --- planning (issue 20, item 1: cumulative dosimetry and kidney-limited planning) ---
_F64 = pa.float64()
_PLANNING_FIELDS = [
    field("cohort", pa.string(), "1", "cohort the rebuild covers (the scope it replaces)"),
    field("site_id", pa.string(), "1", "consortium site of the patient's cycles"),
    field("subject_key", pa.string(), "1", "keyed hash (HMAC-SHA256) of the patient ID"),
    field(
        "region",
        pa.string(),
        "1",
        "organ at risk (kidneys: left and right mass-weighted; spleen, liver, bone_marrow) or "
        "lesion label (matched across cycles)",
    ),
    field("region_type", pa.string(), "1", "organ or lesion"),
    field("dose_method", pa.string(), "1", "dose method of every cycle's dose"),
    field("method_parameters_hash", pa.string(), "1", "hash of the cycles' methods' settings"),
    field("n_cycles", pa.int16(), "1", "published cycles with a dose for the region"),
    field("cycle_numbers", pa.list_(pa.int16()), "1", "their treatment cycle numbers"),
    field(
        "cycle_kinetics_methods",
        pa.list_(pa.string()),
        "1",
        "per cycle, the kinetics method of its dose (prior_cycles_stp: one time point with the "
        "patient's earlier time-integration factor)",
    ),
    field("single_point_cycles", pa.int16(), "1", "cycles dosed from a single time point"),
    field(
        "cycle_injected_activity_gbq",
        pa.list_(_F64),
        "GBq",
        "per cycle, injected activity (traceable when published)",
    ),
    field("cycle_dose_gy", pa.list_(_F64), "Gy", "per cycle, mean absorbed dose"),
    field("cycle_dose_sd_gy", pa.list_(_F64), "Gy", "per cycle, its standard uncertainty"),
    field(
        "cumulative_dose_gy",
        _F64,
        "Gy",
        "sum over the cycles (null if a cycle's dose is unknown)",
        nullable=True,
    ),
    field("cumulative_dose_sd_gy", _F64, "Gy", "its SD (root sum of squares)", nullable=True),
    field(
        "cycle_bed_gy",
        pa.list_(_F64),
        "Gy",
        "kidneys: per cycle BED (LQ with mono-exponential repair, concordose.planning.bed); "
        "null for other regions",
        nullable=True,
    ),
    field("cumulative_bed_gy", _F64, "Gy", "kidneys: sum of cycle BEDs", nullable=True),
    field("cumulative_bed_sd_gy", _F64, "Gy", "kidneys: its SD (delta method)", nullable=True),
    field("last_teff_h", _F64, "h", "effective half-life in the last cycle", nullable=True),
    field(
        "forecast_dose_per_gbq_gy",
        _F64,
        "Gy/GBq",
        "next cycle's forecast dose per injected GBq (organs: mean over cycles; lesions: last "
        "cycle × decline ratio)",
        nullable=True,
    ),
    field("forecast_dose_per_gbq_sd_gy", _F64, "Gy/GBq", "its SD", nullable=True),
    field(
        "cycle_decline_ratio",
        _F64,
        "1",
        "lesions with >= 2 cycles: measured dose-per-GBq ratio from one cycle to the next",
        nullable=True,
    ),
    field("next_cycle_number", pa.int16(), "1", "the cycle planned (last published + 1)"),
    field(
        "expected_next_dose_gy",
        _F64,
        "Gy",
        "region dose expected at next_activity_gbq",
        nullable=True,
    ),
    field("expected_next_dose_sd_gy", _F64, "Gy", "its SD", nullable=True),
    field(
        "expected_cumulative_dose_gy",
        _F64,
        "Gy",
        "cumulative_dose_gy + expected_next_dose_gy",
        nullable=True,
    ),
    field("kidney_dose_limit_gy", _F64, "Gy", "cumulative kidney dose limit applied"),
    field("kidney_bed_limit_gy", _F64, "Gy", "cumulative kidney BED limit applied"),
    field("max_activity_gbq", _F64, "GBq", "activity cap per cycle (null: none)", nullable=True),
    field("exceedance_risk", _F64, "1", "accepted exceedance probability (risk-limited activity)"),
    field("alpha_beta_gy", _F64, "Gy", "kidney alpha/beta used for BED"),
    field("repair_half_time_h", _F64, "h", "kidney repair half-time used for BED"),
    field(
        "next_activity_gbq",
        _F64,
        "GBq",
        "patient: recommended next activity, min(dose-limited, BED-limited, cap); repeated on "
        "each of the patient's rows; null without a kidney dose",
        nullable=True,
    ),
    field(
        "kidney_dose_limited_activity_gbq",
        _F64,
        "GBq",
        "activity whose expected cumulative kidney dose equals the dose limit",
        nullable=True,
    ),
    field(
        "kidney_bed_limited_activity_gbq",
        _F64,
        "GBq",
        "activity whose expected cumulative kidney BED equals the BED limit",
        nullable=True,
    ),
    field(
        "kidney_risk_limited_activity_gbq",
        _F64,
        "GBq",
        "largest activity with P(cumulative kidney dose > limit) <= exceedance_risk",
        nullable=True,
    ),
    field(
        "kidney_expected_cumulative_dose_gy",
        _F64,
        "Gy",
        "cumulative kidney dose expected after the next cycle at next_activity_gbq",
        nullable=True,
    ),
    field("kidney_expected_cumulative_dose_sd_gy", _F64, "Gy", "its SD", nullable=True),
    field(
        "kidney_expected_cumulative_bed_gy",
        _F64,
        "Gy",
        "cumulative kidney BED expected after the next cycle at next_activity_gbq",
        nullable=True,
    ),
    field("kidney_expected_cumulative_bed_sd_gy", _F64, "Gy", "its SD", nullable=True),
    field(
        "kidney_probability_exceeding_dose_limit",
        _F64,
        "1",
        "P(cumulative kidney dose > limit) at next_activity_gbq (normal model)",
        nullable=True,
    ),
    field(
        "kidney_probability_exceeding_bed_limit",
        _F64,
        "1",
        "P(cumulative kidney BED > BED limit) at next_activity_gbq (normal model)",
        nullable=True,
    ),
    field(
        "binding_constraint",
        pa.string(),
        "1",
        "what set next_activity_gbq: dose_limit, bed_limit, max_activity or unknown",
    ),
]

PLANNING = TableSpec(
    name="planning",
    version=1,
    doc=(
        "One row per patient and region (organ at risk or lesion): cumulative dose over the "
        "published cycles (full schedules or a single time point), kidney BED, and the next "
        "cycle's activity under the kidney limits with its probability of exceeding them "
        "(concordose.planning)."
    ),
    key_columns=("site_id", "subject_key", "region"),
    scope_column="cohort",
    schema=pa.schema([*_PLANNING_FIELDS, *_RUN_PROVENANCE, _CREATED_AT]),
)
# --- end planning ---

# --- whole_body_tumour_dose (issue 20, item 4: Violet et al. 2019) ---
WHOLE_BODY_TUMOUR_DOSE = TableSpec(
    name="whole_body_tumour_dose",
    version=1,
    doc=(
        "One row per cycle, voxel kinetics model and voxel dose method: total tumour volume and "
        "mean dose of the voxel dose map at or above a threshold dose outside the organ VOIs "
        "dilated by a margin (concordose.dose.whole_body_tumour), next to the lesion VOIs' "
        "voxel dosimetry (voxel_dose)."
    ),
    key_columns=("subject_key", "cycle_key", "kinetics_method", "dose_method"),
    schema=pa.schema(
        [
            *_SUBJECT,
            field("cycle_number", pa.int16(), "1", "1-based treatment cycle", nullable=True),
            field("kinetics_method", pa.string(), "1", "voxel kinetics: voxel_<model>"),
            field("dose_method", pa.string(), "1", "voxel dose method of the map"),
            field(
                "method_parameters_hash",
                pa.string(),
                "1",
                "hash of the voxel methods' settings, threshold and margin",
            ),
            field("whole_body_method", pa.string(), "1", "dose_threshold_minus_organs"),
            field("threshold_gy", pa.float64(), "Gy", "lowest dose of a tumour voxel"),
            field("margin_mm", pa.float64(), "mm", "dilation of the organ VOIs excluded"),
            field(
                "excluded_organs",
                pa.list_(pa.string()),
                "1",
                "organ VOIs excluded (physiological uptake)",
            ),
            field("n_voxels", pa.int32(), "1", "tumour voxels on the first SPECT grid"),
            field("tumour_volume_ml", pa.float64(), "mL", "total tumour volume"),
            field(
                "mean_dose_gy",
                pa.float64(),
                "Gy",
                "whole-body tumour dose: mean dose of the tumour voxels (unit density)",
                nullable=True,
            ),
            field("max_dose_gy", pa.float64(), "Gy", "highest tumour voxel dose", nullable=True),
            field(
                "excluded_volume_ml",
                pa.float64(),
                "mL",
                "volume at or above the threshold removed as organ or margin",
            ),
            field(
                "lesion_voi_volume_ml",
                pa.float64(),
                "mL",
                "volume of the cycle's lesion VOIs on the same grid",
            ),
            field(
                "lesion_voi_recovered_ml",
                pa.float64(),
                "mL",
                "tumour volume inside the lesion VOIs",
            ),
            field(
                "lesion_voi_gtd_gy",
                pa.float64(),
                "Gy",
                "lesion-level comparison: mass-weighted mean dose of the lesion VOIs by the same "
                "voxel method (voxel_dose)",
                nullable=True,
            ),
            field("dose_grid", pa.string(), "1", "grid of the method's VOI doses: ct or spect"),
            *_PROVENANCE,
        ]
    ),
)
# --- end whole_body_tumour_dose ---

# --- issue 20, item 2: the tumour-sink effect (a cohort table) --------------------------------
_PER_BURDEN_UNIT = "per unit of burden_unit (mL for total lesion volume, h for total lesion TIA/IA)"
SINK_EFFECT = TableSpec(
    name="sink_effect",
    version=1,
    doc=(
        "The tumour-sink effect across the cohort (concordose.consortium.sink_effect): per cycle "
        "and organ at risk (kidneys, spleen, salivary glands where present) the OAR's reference "
        "TIA per injected activity and the tumour burden (total lesion volume, total lesion TIA "
        "per injected activity); per OAR, burden metric, site and pooled ('*', site as a fixed "
        "effect) the OLS slope of OAR TIA/IA on burden (one point per patient and site) with its "
        "95 % CI and p-value, and the expected OAR-dose change per GBq per unit of burden."
    ),
    key_columns=("level", "site_id", "cycle_key", "oar", "burden_metric"),
    scope_column="cohort",
    schema=pa.schema(
        [
            _COHORT,
            field("level", pa.string(), "1", "cycle (one cycle's point) or fit (a regression)"),
            field(
                "site_id",
                pa.string(),
                "1",
                "consortium site, or '*' for every site pooled (fit rows)",
            ),
            field(
                "subject_key", pa.string(), "1", "patient (cycle rows; else null)", nullable=True
            ),
            field("cycle_key", pa.string(), "1", "cycle (cycle rows; else null)", nullable=True),
            field(
                "cycle_number",
                pa.int16(),
                "1",
                "cycle rows: patient_summary.cycle_number (null when unknown)",
                nullable=True,
            ),
            field(
                "oar",
                pa.string(),
                "1",
                "organ at risk: kidneys (left + right), spleen or salivary_glands "
                "(concordose.dose.metrics.oar_name)",
            ),
            field("kinetics_method", pa.string(), "1", "kinetics method of every TIA (reference)"),
            field("dose_method", pa.string(), "1", "dose method of the dose per TIA"),
            field(
                "method_parameters_hash",
                pa.string(),
                "1",
                "cycle: the sorted setting hashes of its reference fits; fit: hash of its cycles'",
            ),
            field(
                "injected_activity_mbq",
                pa.float64(),
                "MBq",
                "cycle: injected activity (traceable value when the calibration is traceable)",
                nullable=True,
            ),
            field(
                "oar_tia_mbq_h",
                pa.float64(),
                "MBq.h",
                "cycle: OAR TIA, summed over its VOIs (null if one has none)",
                nullable=True,
            ),
            field(
                "oar_tia_per_ia_h",
                pa.float64(),
                "h",
                "cycle: oar_tia_mbq_h / injected_activity_mbq (the regressed response)",
                nullable=True,
            ),
            field(
                "oar_dose_per_tia_gy_per_mbq_h",
                pa.float64(),
                "Gy/(MBq.h)",
                "cycle: OAR mean dose (mass-weighted) / OAR TIA by dose_method; fit: median over "
                "the fit's cycles",
                nullable=True,
            ),
            field(
                "oar_dose_per_ia_gy_per_gbq",
                pa.float64(),
                "Gy/GBq",
                "cycle: OAR mean dose per injected GBq",
                nullable=True,
            ),
            field(
                "n_lesions", pa.int32(), "1", "cycle: lesions with a reference fit", nullable=True
            ),
            field(
                "total_lesion_volume_ml",
                pa.float64(),
                "mL",
                "cycle: summed lesion volumes (first time point; null if one is unknown)",
                nullable=True,
            ),
            field(
                "total_lesion_tia_per_ia_h",
                pa.float64(),
                "h",
                "cycle: summed lesion TIA / injected activity (null if one is unknown)",
                nullable=True,
            ),
            field(
                "burden_metric",
                pa.string(),
                "1",
                "fit: regressor, total_lesion_volume_ml or total_lesion_tia_per_ia_h",
                nullable=True,
            ),
            field(
                "burden_unit",
                pa.string(),
                "1",
                "fit: unit of the regressor (mL or h)",
                nullable=True,
            ),
            field(
                "regression_method",
                pa.string(),
                "1",
                "fit: ols_patient_means (a site) or ols_patient_means_site_fixed_effects (pooled)",
                nullable=True,
            ),
            field("n_cycles", pa.int32(), "1", "fit: cycles regressed", nullable=True),
            field(
                "n_patients",
                pa.int32(),
                "1",
                "fit: points regressed: patients per site (their cycles' means)",
                nullable=True,
            ),
            field("n_sites", pa.int32(), "1", "fit: sites", nullable=True),
            field(
                "slope_h_per_unit",
                pa.float64(),
                "h/{burden_unit}",
                f"fit: OAR TIA/IA change {_PER_BURDEN_UNIT}",
                nullable=True,
            ),
            field(
                "slope_se_h_per_unit",
                pa.float64(),
                "h/{burden_unit}",
                "fit: the slope's standard error (classical OLS)",
                nullable=True,
            ),
            field(
                "slope_ci_lower_h_per_unit",
                pa.float64(),
                "h/{burden_unit}",
                "fit: slope, 95 % CI lower (Student t, n - p df)",
                nullable=True,
            ),
            field(
                "slope_ci_upper_h_per_unit",
                pa.float64(),
                "h/{burden_unit}",
                "fit: slope, 95 % CI upper",
                nullable=True,
            ),
            field(
                "slope_p_value",
                pa.float64(),
                "1",
                "fit: two-sided p-value of slope = 0",
                nullable=True,
            ),
            field(
                "intercept_h",
                pa.float64(),
                "h",
                "fit: OAR TIA/IA at zero burden (pooled: site intercepts' mean)",
                nullable=True,
            ),
            field(
                "relative_slope_per_unit",
                pa.float64(),
                "1/{burden_unit}",
                "fit: slope / intercept_h, the fractional OAR uptake change per unit of burden",
                nullable=True,
            ),
            field("r_squared", pa.float64(), "1", "fit: R² of the OLS fit", nullable=True),
            field(
                "dose_change_gy_per_gbq_per_unit",
                pa.float64(),
                "Gy/GBq/{burden_unit}",
                "fit: expected OAR-dose change per injected GBq per unit of burden "
                "(slope × oar_dose_per_tia_gy_per_mbq_h × 1000)",
                nullable=True,
            ),
            field(
                "dose_change_ci_lower_gy_per_gbq_per_unit",
                pa.float64(),
                "Gy/GBq/{burden_unit}",
                "fit: 95 % CI lower (the slope's, scaled)",
                nullable=True,
            ),
            field(
                "dose_change_ci_upper_gy_per_gbq_per_unit",
                pa.float64(),
                "Gy/GBq/{burden_unit}",
                "fit: 95 % CI upper",
                nullable=True,
            ),
            *_RUN_PROVENANCE,
            _CREATED_AT,
        ]
    ),
)
# --- end issue 20, item 2 ----------------------------------------------------------------------

# --- issue 20 item 3: pre-therapy PET dose prediction -------------------------------------------

_DOSE_PREDICTION_FIELDS = [
    _COHORT,
    field(
        "row_kind",
        pa.string(),
        "1",
        "voi: one VOI with a pre-therapy PET (its features, measured and predicted dose); "
        "metrics: the validation of one held-out site (or '*' every site pooled) and VOI type "
        "(or '*' both)",
    ),
    field(
        "site_id",
        pa.string(),
        "1",
        "site of the VOI (voi rows); held-out site or '*' pooled (metrics rows)",
    ),
    field("subject_key", pa.string(), "1", "keyed hash of the patient ID; '*' on metrics rows"),
    field("voi_label", pa.string(), "1", "VOI name as segmented; '*' on metrics rows"),
    field("voi_type", pa.string(), "1", "organ or lesion; '*' on metrics rows for both"),
    field(
        "voi_class",
        pa.string(),
        "1",
        "organ: its label; lesion: its volume bin (concordose.consortium.voi_classes); "
        "null on metrics rows",
        nullable=True,
    ),
    field(
        "suv_mean",
        pa.float64(),
        "g/mL",
        "mean SUVbw over the VOI's PET voxels (VOIs carried onto the registered PET)",
        nullable=True,
    ),
    field("suv_max", pa.float64(), "g/mL", "hottest PET voxel's SUVbw in the VOI", nullable=True),
    field(
        "suv_peak",
        pa.float64(),
        "g/mL",
        "highest mean SUVbw of a 1 mL sphere centred in the VOI (PERCIST, Wahl 2009)",
        nullable=True,
    ),
    field("volume_ml", pa.float64(), "mL", "VOI volume on its segmentation grid", nullable=True),
    field(
        "validation",
        pa.string(),
        "1",
        "leave_one_site_out: predicted by a model that never saw the VOI's site (VOIs with a "
        "measured dose); no_therapy_yet: predicted by the model of every site (PET, no therapy "
        "cycle published)",
        nullable=True,
    ),
    field(
        "measured_dose_gy_per_gbq",
        pa.float64(),
        "Gy/GBq",
        "first cycle's reference mean absorbed dose per injected activity (reference kinetics, "
        "dose method in reference_dose_method; traceable activity when published); null "
        "without therapy yet",
        nullable=True,
    ),
    field(
        "predicted_dose_gy_per_gbq",
        pa.float64(),
        "Gy/GBq",
        "model prediction (null when too few training VOIs)",
        nullable=True,
    ),
    field(
        "prediction_low_gy_per_gbq",
        pa.float64(),
        "Gy/GBq",
        "lower end of the cross-conformal prediction interval at interval_level",
        nullable=True,
    ),
    field(
        "prediction_high_gy_per_gbq",
        pa.float64(),
        "Gy/GBq",
        "upper end of the prediction interval (null when unbounded: too few residuals)",
        nullable=True,
    ),
    field(
        "baseline_dose_gy_per_gbq",
        pa.float64(),
        "Gy/GBq",
        "organ-level population baseline: mean measured dose per GBq of the VOI class over the "
        "training sites (null when they lack the class)",
        nullable=True,
    ),
    field(
        "training_sites",
        pa.list_(pa.string()),
        "1",
        "sites the model (and baseline) of this row was trained on",
        nullable=True,
    ),
    field("n_vois", pa.int32(), "1", "VOIs compared (metrics rows)", nullable=True),
    field(
        "mape_percent", pa.float64(), "%", "model's mean absolute percentage error", nullable=True
    ),
    field("nrmse", pa.float64(), "1", "model's RMSE / mean measured dose per GBq", nullable=True),
    field(
        "interval_coverage",
        pa.float64(),
        "1",
        "share of measured values inside the prediction interval",
        nullable=True,
    ),
    field(
        "baseline_mape_percent",
        pa.float64(),
        "%",
        "population baseline's MAPE on the same VOIs",
        nullable=True,
    ),
    field(
        "baseline_nrmse",
        pa.float64(),
        "1",
        "population baseline's NRMSE on the same VOIs",
        nullable=True,
    ),
    field("model", pa.string(), "1", "predictor name and version (concordose.prediction.model)"),
    field("interval_level", pa.float64(), "1", "nominal coverage of the prediction interval"),
    field("reference_kinetics_method", pa.string(), "1", "kinetics method of the measured dose"),
    field("reference_dose_method", pa.string(), "1", "dose method of the measured dose"),
    field(
        "method_parameters_hash",
        pa.string(),
        "1",
        "hash of the predictor's settings (features, penalty, interval level)",
    ),
]

DOSE_PREDICTION = TableSpec(
    name="dose_prediction",
    version=1,
    doc=(
        "Pre-therapy PET dose prediction (issue 20, item 3): one row per VOI with a pre-therapy "
        "PET (SUV features, first cycle's measured dose per GBq when there is one, the "
        "leave-one-site-out or final prediction with its interval, the organ-level baseline), "
        "and per held-out site and pooled the MAPE, NRMSE and coverage of model and baseline "
        "(concordose.prediction)."
    ),
    key_columns=("row_kind", "site_id", "subject_key", "voi_label", "voi_type"),
    scope_column="cohort",
    schema=pa.schema([*_DOSE_PREDICTION_FIELDS, *_RUN_PROVENANCE, _CREATED_AT]),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        ACQUISITIONS,
        VOI_TIMEPOINTS,
        KINETICS,
        ABSORBED_DOSE,
        PATIENT_SUMMARY,
        VOXEL_DOSE,
        VOXEL_DOSE_SUMMARY,
        METHOD_COMPARISON,
        SITE_CALIBRATIONS,
        HARMONISATION_AGREEMENT,
        QC_FINDINGS,
        KINETICS_AGREEMENT,
        DOSE_AGREEMENT,
        THRESHOLD_CONCORDANCE,
        PLANNING,  # issue 20, item 1
        WHOLE_BODY_TUMOUR_DOSE,  # issue 20, item 4
        SINK_EFFECT,  # issue 20, item 2
        DOSE_PREDICTION,  # issue 20 item 3
    )
}
