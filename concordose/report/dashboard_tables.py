"""The published rows the consortium dashboard shows, read once from the store.

One catalogue connection (:func:`concordose.results.catalogue.connect`: the current rows of
every table, manifested runs only), one query per table and only the columns the dashboard
uses: the cohort tables (``kinetics_agreement``, ``threshold_concordance``), the calibration
records (``site_calibrations``), the reference-object comparison (``harmonisation_agreement``)
and, for the counts and the Bland–Altman points, narrow columns of the per-cycle tables. Its
cost grows with the store's rows, not with one request per cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from concordose.report.sink_effect_view import SINK_EFFECT_COLUMNS
from concordose.results.catalogue import connect
from concordose.results.object_store import ObjectStore

__all__ = ["DASHBOARD_COLUMNS", "DashboardTables", "read_dashboard_tables"]

_PROVENANCE = ("run_id", "created_at")

DASHBOARD_COLUMNS: dict[str, tuple[str, ...]] = {
    "site_calibrations": (
        "site_id",
        "calibration_record_id",
        "camera_model",
        "collimator",
        "calibration_factor_cps_per_mbq",
        "calibration_factor_relative_uncertainty",
        "valid_from",
        "valid_to",
        "recovery_a_ml",
        "recovery_b",
        "contrast_recovery_a_ml",
        "contrast_recovery_b",
        "dose_calibrator_traceable",
        "dose_calibrator_bias_relative",
        "psf_fwhm_mm",
        "psf_fwhm_sd_mm",
        "psf_large_object_fwhm_mm",
        "psf_large_object_fwhm_sd_mm",
        "partial_volume_model_chosen",
        *_PROVENANCE,
    ),
    "kinetics_agreement": (
        "site_id",
        "voi_type",
        "voi_class",
        "metric",
        "kinetics_method",
        "reference_method",
        "dose_method",
        "n_cycles",
        "n_pairs",
        "n_missing",
        "bias_percent",
        "sd_percent",
        "loa_lower_percent",
        "loa_upper_percent",
        *_PROVENANCE,
    ),
    "threshold_concordance": (
        "level",
        "site_id",
        "cycle_key",
        "threshold_name",
        "metric",
        "threshold_scope",
        "threshold_gy",
        "direction",
        "study_kinetics_method",
        "study_dose_method",
        "reference_kinetics_method",
        "reference_dose_method",
        "n_cycles",
        "study_value_gy",
        "reference_value_gy",
        "study_met",
        "reference_met",
        "flipped",
        "n_classified",
        "n_missing",
        "flip_fraction",
        "cohen_kappa",
        "n_regression_pairs",
        "slope",
        "slope_ci_lower",
        "slope_ci_upper",
        "intercept_gy",
        "reference_equivalent_gy",
        "reference_equivalent_ci_lower_gy",
        "reference_equivalent_ci_upper_gy",
        *_PROVENANCE,
    ),
    "harmonisation_agreement": (
        "reference_object_id",
        "reference_object_kind",
        "voi_label",
        "voi_type",
        "site_id",
        "variant",
        "metric",
        "kinetics_method",
        "dose_method",
        "measured",
        "truth",
        "relative_error",
        "n_sites",
        "cross_site_cov",
        *_PROVENANCE,
    ),
    "qc_findings": ("site_id", "cycle_key", "severity", "check_name", "message"),
    "acquisitions": ("site_id", "cycle_key", "time_point_index", "qc_status"),
    "kinetics": (
        "site_id",
        "cycle_key",
        "voi_label",
        "voi_type",
        "kinetics_method",
        "tia_mbq_h",
        "method_parameters_hash",
    ),
    "voi_timepoints": ("site_id", "cycle_key", "voi_label", "time_point_index", "volume_ml"),
    # issue 20, items 1 and 4 (no patient key is read: one kidneys row per patient)
    "planning": (
        "site_id",
        "region",
        "n_cycles",
        "cycle_dose_gy",
        "cumulative_dose_gy",
        "cumulative_bed_gy",
        "expected_next_dose_gy",
        "next_activity_gbq",
        "binding_constraint",
        "kidney_dose_limit_gy",
        "kidney_expected_cumulative_dose_gy",
        "kidney_probability_exceeding_dose_limit",
        *_PROVENANCE,
    ),
    "whole_body_tumour_dose": (
        "site_id",
        "cycle_number",
        "kinetics_method",
        "dose_method",
        "threshold_gy",
        "tumour_volume_ml",
        "mean_dose_gy",
        "lesion_voi_gtd_gy",
    ),
    "sink_effect": SINK_EFFECT_COLUMNS,  # issue 20, item 2
    # issue 20 item 3: pre-therapy PET dose prediction
    "dose_prediction": (
        "row_kind",
        "site_id",
        "voi_type",
        "validation",
        "measured_dose_gy_per_gbq",
        "predicted_dose_gy_per_gbq",
        "baseline_dose_gy_per_gbq",
        "n_vois",
        "mape_percent",
        "nrmse",
        "interval_coverage",
        "baseline_mape_percent",
        "baseline_nrmse",
        "interval_level",
        "model",
        "reference_kinetics_method",
        "reference_dose_method",
        *_PROVENANCE,
    ),
}
"""Table → the columns the dashboard reads (current rows)."""


@dataclass(frozen=True)
class DashboardTables:
    """The store's current rows the dashboard is built from.

    Attributes:
        store_uri: the store, as the user wrote it (for the page's header).
        tables: each table of :data:`DASHBOARD_COLUMNS` (no rows when the store has none).
        published_at: run id → its manifest's ``published_at`` (ISO 8601, UTC), for every
            run whose rows are shown.
    """

    store_uri: str
    tables: dict[str, pa.Table]
    published_at: dict[str, str]

    def table(self, name: str) -> pa.Table:
        """The current rows of ``name`` (only :data:`DASHBOARD_COLUMNS`)."""
        return self.tables[name]

    def has(self, name: str) -> bool:
        """True when the store has current rows of ``name``."""
        return bool(self.tables[name].num_rows > 0)


def _quote(name: str) -> str:
    return '"' + name + '"'


def read_dashboard_tables(store: ObjectStore) -> DashboardTables:
    """Every table the dashboard shows, one query each over one catalogue connection.

    Raises:
        ConcordoseError: a malformed manifest; the store's errors.
    """
    connection = connect(store)
    try:
        tables = {
            name: connection.sql(
                f"SELECT {', '.join(map(_quote, columns))} FROM {_quote(name)}"
            ).to_arrow_table()
            for name, columns in DASHBOARD_COLUMNS.items()
        }
        runs = connection.sql("SELECT run_id, published_at FROM runs").fetchall()
    finally:
        connection.close()
    return DashboardTables(store.uri, tables, {str(r): str(p) for r, p in runs})
