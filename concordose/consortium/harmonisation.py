"""Table ``harmonisation_agreement``: how comparable the sites are, measured on reference objects.

For every reference object measured at ≥ 2 sites (:mod:`concordose.consortium.reference_objects`)
and every processing variant (:mod:`concordose.consortium.variants`), each site's published TIA
(table ``kinetics``, per kinetics method) and mean absorbed dose (table ``absorbed_dose``, per
kinetics and dose method) of each compartment with a truth is set against that truth:
relative error = (measured − truth)/truth. Per group — object, compartment, variant, metric and
methods — the cross-site coefficient of variation is the sample standard deviation (n − 1) of the
sites' measured values over their mean, with n the sites that have a value (null below 2). The
CoV needs no truth: it is the consortium's spread; the relative errors say who is off, and by how
much.

Assumptions: a site's rows are those of its measurement's cycle (``site_id`` and ``cycle_key``
as published); a compartment is a VOI label common to the truth sheet and the rows (other VOIs
are left out); a null measured value (a method not applicable) counts in no statistic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import ArrayLike
from pydantic import SecretStr

from concordose.consortium.reference_objects import ReferenceObject
from concordose.consortium.variants import ProcessingVariant
from concordose.errors import ConcordoseError
from concordose.results.provenance import Provenance
from concordose.schemas.tables import HARMONISATION_AGREEMENT

MIN_SITES = 2
"""A reference object enters the table when measured (published rows) at this many sites."""

NO_DOSE_METHOD = "none"
"""``dose_method`` of ``tia_mbq_h`` rows."""

METRIC_TIA = "tia_mbq_h"
METRIC_MEAN_DOSE = "mean_dose_gy"

_GROUP = ["reference_object_id", "voi_label", "variant", "metric", "kinetics_method", "dose_method"]


@dataclass(frozen=True)
class VariantTables:
    """One variant's published rows (current view) that the comparison reads.

    Attributes:
        kinetics: rows of table ``kinetics``.
        absorbed_dose: rows of table ``absorbed_dose``.
    """

    kinetics: pa.Table
    absorbed_dose: pa.Table


@dataclass(frozen=True)
class HarmonisationResult:
    """The table and what it left out.

    Attributes:
        table: rows of ``harmonisation_agreement``.
        missing: (reference object id, site id, variant) measurements registered but without
            published rows (e.g. the cycle was held).
        too_few_sites: reference objects left out, measured at fewer than :data:`MIN_SITES`
            sites in some variant.
    """

    table: pa.Table
    missing: tuple[tuple[str, str, str], ...]
    too_few_sites: tuple[str, ...]


def _long_rows(tables: VariantTables) -> pd.DataFrame:
    """Published values in long form: one row per (site, cycle, VOI, metric, methods)."""
    columns = ["site_id", "cycle_key", "voi_label", "voi_type", "kinetics_method"]
    provenance = ["method_parameters_hash", "calibration_record_id", "run_id"]
    tia = tables.kinetics.select([*columns, "tia_mbq_h", *provenance]).to_pandas()
    tia = tia.rename(columns={"tia_mbq_h": "measured"}).assign(
        metric=METRIC_TIA, dose_method=NO_DOSE_METHOD
    )
    dose = tables.absorbed_dose.select(
        [*columns, "dose_method", "mean_dose_gy", *provenance]
    ).to_pandas()
    dose = dose.rename(columns={"mean_dose_gy": "measured"}).assign(metric=METRIC_MEAN_DOSE)
    combined: pd.DataFrame = pd.concat([tia, dose], ignore_index=True)
    return combined


def _truth_rows(references: Sequence[ReferenceObject], secret: SecretStr | None) -> pd.DataFrame:
    rows = [
        {
            "reference_object_id": ref.reference_object_id,
            "reference_object_kind": ref.kind,
            "site_id": measurement.site_id,
            "cycle_key": measurement.cycle_key(secret),
            "voi_label": label,
            "metric": metric,
            "truth": value,
        }
        for ref in references
        for measurement in ref.measurements
        for label, truth in ref.truth.items()
        for metric, value in ((METRIC_TIA, truth.tia_mbq_h), (METRIC_MEAN_DOSE, truth.mean_dose_gy))
        if value is not None
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "reference_object_id",
            "reference_object_kind",
            "site_id",
            "cycle_key",
            "voi_label",
            "metric",
            "truth",
        ],
    )


def cross_site_cov(values: ArrayLike) -> float:
    """The consortium's spread of one quantity: sample SD (n − 1) over the mean of the sites'
    values, dimensionless (module docstring). Non-finite values (nulls) are left out; NaN with
    fewer than :data:`MIN_SITES` values or a zero mean."""
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if array.size < MIN_SITES:
        return math.nan
    mean = float(np.mean(array))
    if mean == 0.0:
        return math.nan
    return float(np.std(array, ddof=1)) / mean


def _group_statistics(frame: pd.DataFrame) -> pd.DataFrame:
    """n sites, mean and CoV (:func:`cross_site_cov`) of ``measured`` per group."""
    grouped = frame.groupby(_GROUP, sort=False, dropna=False)["measured"]
    stats = grouped.agg(n_sites="count", cross_site_mean="mean", cross_site_cov=cross_site_cov)
    return stats.reset_index()


def build_harmonisation_agreement(
    references: Sequence[ReferenceObject],
    published: Mapping[ProcessingVariant, VariantTables],
    pseudonym_key: SecretStr | None,
    provenance: Provenance,
) -> HarmonisationResult:
    """Rows of ``harmonisation_agreement`` (module docstring) from each variant's published rows.

    Args:
        references: the reference objects (truth sheet).
        published: per variant, the current rows of its ``kinetics`` and ``absorbed_dose``.
        pseudonym_key: the consortium secret the rows' ``cycle_key`` was computed with.
        provenance: run stamped on every row.

    Raises:
        ConcordoseError: no variant given, or no reference object measured at ≥ 2 sites in every
            variant (nothing to compare; the message lists what is missing).
        ConfigurationError: no pseudonymisation key.
    """
    if not published:
        raise ConcordoseError("no processing variant's results to compare")
    truth = _truth_rows(references, pseudonym_key)
    parts = []
    missing: set[tuple[str, str, str]] = set()
    for variant, tables in published.items():
        measured = _long_rows(tables)
        joined = truth.merge(measured, on=["site_id", "cycle_key", "voi_label", "metric"])
        found = set(zip(joined["reference_object_id"], joined["site_id"], strict=True))
        missing |= {
            (ref.reference_object_id, m.site_id, variant.value)
            for ref in references
            for m in ref.measurements
            if (ref.reference_object_id, m.site_id) not in found
        }
        parts.append(joined.assign(variant=variant.value))
    rows = pd.concat(parts, ignore_index=True)
    sites = rows.groupby(["reference_object_id", "variant"])["site_id"].nunique()
    too_few = sorted(
        {ref.reference_object_id for ref in references}
        - {
            ref_id
            for ref_id, counts in sites.groupby(level=0)
            if len(counts) == len(published) and counts.min() >= MIN_SITES
        }
    )
    rows = rows[~rows["reference_object_id"].isin(too_few)]
    if rows.empty:
        raise ConcordoseError(
            f"no reference object was measured at ≥ {MIN_SITES} sites in every variant; "
            f"registered measurements without published rows (object, site, variant): "
            f"{sorted(missing) or 'none'}"
        )
    rows = rows.merge(_group_statistics(rows), on=_GROUP)
    with np.errstate(divide="ignore", invalid="ignore"):
        rows["relative_error"] = (rows["measured"] - rows["truth"]) / rows["truth"]
    rows = rows.rename(columns={"run_id": "source_run_id"}).assign(
        schema_version=HARMONISATION_AGREEMENT.version,
        software_version=provenance.software_version,
        run_id=provenance.run_id,
        flow_run_id=provenance.flow_run_id,
        created_at=provenance.created_at,
    )
    rows = rows.sort_values(
        [
            "reference_object_id",
            "voi_label",
            "metric",
            "kinetics_method",
            "dose_method",
            "variant",
            "site_id",
        ]
    )
    frame = rows[HARMONISATION_AGREEMENT.schema.names].astype(object)
    frame = frame.where(pd.notna(frame), None)
    table = pa.Table.from_pylist(frame.to_dict("records"), schema=HARMONISATION_AGREEMENT.schema)
    return HarmonisationResult(table, tuple(sorted(missing)), tuple(too_few))


__all__ = [
    "METRIC_MEAN_DOSE",
    "METRIC_TIA",
    "MIN_SITES",
    "NO_DOSE_METHOD",
    "HarmonisationResult",
    "VariantTables",
    "build_harmonisation_agreement",
    "cross_site_cov",
]
