"""Cohort agreement tables: ``kinetics_agreement`` and ``dose_agreement`` (issue 14, item 4).

Built from the *current* rows of the published per-cycle tables (every cycle, its latest run;
:mod:`concordose.results.catalogue`), so a rebuild always describes the whole store:

* ``kinetics_agreement``: every kinetics method against the reference (``spectacular_6tp`` by
  default), for the TIA (``kinetics``) and for the VOI mean dose with the same dose method on
  both sides (``absorbed_dose``); the reference is never compared with itself.
* ``dose_agreement``: dose methods against each other on the same VOIs. VOI-level methods
  (``absorbed_dose``: sphere, organ S-values, LDM) use the reference kinetics' TIA, so only the
  dose method differs; voxel methods (``voxel_dose``: VSV kernels, voxel LDM) use the voxel
  kinetics their cycle ran with, which each row names (``kinetics_method``). Each unordered pair
  appears once: the *comparator* is the pair's first arm in (source, dose method, kinetics)
  order, ``absorbed_dose`` before ``voxel_dose``.

Statistics: Bland–Altman of relative differences
(:func:`concordose.kinetics.comparison.relative_bland_altman`), per site and pooled over sites
(``site_id`` = :data:`POOLED_SITE_ID`), per VOI class
(:func:`concordose.consortium.voi_classes.voi_classes`: organs by label, lesions by volume bin
from the first time point's ``voi_timepoints.volume_ml``). A pair is two rows of the same cycle
and VOI; a pair with either value missing (a method not applicable, a failed fit) is counted in
``n_missing``. A cycle that did not run a method contributes nothing for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from concordose.consortium.voi_classes import voi_classes
from concordose.kinetics.comparison import agreement_statistics, relative_bland_altman
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.results.provenance import Provenance, stamped_table
from concordose.schemas.tables import (
    CONSORTIUM_COHORT,
    DOSE_AGREEMENT,
    KINETICS_AGREEMENT,
)

POOLED_SITE_ID = "*"
"""``site_id`` of a row pooled over every site; never a site id (ids match ``[a-z0-9_-]+``)."""

"""``cohort`` of every row: all current cycles of the output store (the tables' scope: a
rebuild replaces every earlier row)."""

METRIC_TIA = "tia"
METRIC_MEAN_DOSE = "mean_dose"

SOURCE_VOI_DOSE = "absorbed_dose"
SOURCE_VOXEL_DOSE = "voxel_dose"
_SOURCE_ORDER = {SOURCE_VOI_DOSE: 0, SOURCE_VOXEL_DOSE: 1}

_PAIR_KEYS = ["site_id", "cycle_key", "voi_label"]


def _frame(table: pa.Table, columns: Sequence[str]) -> pd.DataFrame:
    frame: pd.DataFrame = table.select(list(columns)).to_pandas()
    return frame


def _none_if_missing(value: object) -> object:
    """A group key as a row value: pandas' NaN for a null key (dropna=False) back to None."""
    return None if isinstance(value, float) and np.isnan(value) else value


def with_voi_classes(rows: pd.DataFrame, voi_timepoints: pa.Table) -> pd.DataFrame:
    """``rows`` (with ``cycle_key``, ``voi_label``, ``voi_type``) with a ``voi_class`` column
    (:func:`~concordose.consortium.voi_classes.voi_classes`; volume from each VOI's first time
    point in ``voi_timepoints``) and that ``volume_ml``."""
    points = _frame(voi_timepoints, ["cycle_key", "voi_label", "time_point_index", "volume_ml"])
    first = points.sort_values("time_point_index").drop_duplicates(["cycle_key", "voi_label"])
    merged = rows.merge(
        first[["cycle_key", "voi_label", "volume_ml"]], on=["cycle_key", "voi_label"], how="left"
    )
    merged["voi_class"] = voi_classes(
        merged["voi_type"].to_numpy(dtype=str),
        merged["voi_label"].to_numpy(dtype=object),
        merged["volume_ml"].to_numpy(dtype=np.float64, na_value=np.nan),
    )
    return merged


def _parameters_hash(hashes: Iterable[str]) -> str:
    """SHA-256 (16 hex) of the sorted distinct setting hashes of the rows compared."""
    joined = "|".join(sorted(set(hashes)))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:16]


def _agreement_rows(
    pairs: pd.DataFrame,
    identity: Sequence[str],
    *,
    method_label: str,
    reference_label: str,
) -> list[dict[str, Any]]:
    """One row per (site, VOI class, identity) group and per (pooled, VOI class, identity).

    ``pairs`` holds one row per paired VOI with columns ``value``, ``reference_value``,
    ``hash``, ``reference_hash``, the pair keys, ``voi_type``, ``voi_class`` and ``identity``;
    ``method_label``/``reference_label`` are identity columns naming the two sides.
    """
    if pairs.empty:
        return []
    pooled = pairs.assign(site_id=POOLED_SITE_ID)
    by = ["site_id", "voi_type", "voi_class", *identity]
    rows: list[dict[str, Any]] = []
    for frame in (pairs, pooled):
        for keys, group in frame.groupby(by, dropna=False, sort=True):
            named = dict(zip(by, keys, strict=True))
            agreement = relative_bland_altman(
                group["value"].to_numpy(dtype=np.float64, na_value=np.nan),
                group["reference_value"].to_numpy(dtype=np.float64, na_value=np.nan),
                method=str(named[method_label]),
                reference=str(named[reference_label]),
            )
            rows.append(
                {
                    "cohort": CONSORTIUM_COHORT,
                    **{str(k): _none_if_missing(v) for k, v in named.items()},
                    "method_parameters_hash": _parameters_hash(
                        [*group["hash"].tolist(), *group["reference_hash"].tolist()]
                    ),
                    "n_cycles": int(group["cycle_key"].nunique()),
                    **agreement_statistics(agreement),
                }
            )
    return rows


def _tia_frame(kinetics: pa.Table) -> pd.DataFrame:
    return _frame(
        kinetics,
        [*_PAIR_KEYS, "voi_type", "kinetics_method", "tia_mbq_h", "method_parameters_hash"],
    ).rename(columns={"tia_mbq_h": "value", "method_parameters_hash": "hash"})


def kinetics_tia_pairs(
    kinetics: pa.Table, *, reference_method: str = REFERENCE_METHOD_NAME
) -> pd.DataFrame:
    """The TIA pairs ``kinetics_agreement`` summarises (metric ``tia``): one row per site,
    cycle, VOI and kinetics method other than the reference, with the method's TIA (``value``,
    MBq·h), the reference's (``reference_value``), both setting hashes (``hash``,
    ``reference_hash``), ``voi_type``, ``metric``, ``reference_method`` and ``dose_method``
    (None). A Bland–Altman plot draws these pairs (the consortium dashboard)."""
    tia = _tia_frame(kinetics)
    is_reference = tia["kinetics_method"] == reference_method
    reference_tia = tia.loc[is_reference, [*_PAIR_KEYS, "value", "hash"]]
    pairs = tia.loc[~is_reference].merge(reference_tia, on=_PAIR_KEYS, suffixes=("", "_ref"))
    pairs = pairs.rename(columns={"value_ref": "reference_value", "hash_ref": "reference_hash"})
    return pairs.assign(metric=METRIC_TIA, reference_method=reference_method, dose_method=None)


def build_kinetics_agreement(
    kinetics: pa.Table,
    absorbed_dose: pa.Table,
    voi_timepoints: pa.Table,
    provenance: Provenance,
    *,
    reference_method: str = REFERENCE_METHOD_NAME,
) -> pa.Table:
    """Table ``kinetics_agreement`` from the current ``kinetics``, ``absorbed_dose`` and
    ``voi_timepoints`` rows (see the module docstring). Empty when no cycle ran the reference.
    """
    tia = _tia_frame(kinetics)
    tia_pairs = kinetics_tia_pairs(kinetics, reference_method=reference_method)

    # Mean dose: same dose method on both sides; the settings of both kinetics methods and the
    # dose method enter the hash.
    kinetics_hash = tia[[*_PAIR_KEYS, "kinetics_method", "hash"]].rename(
        columns={"hash": "kinetics_hash"}
    )
    dose = _frame(
        absorbed_dose,
        [
            *_PAIR_KEYS,
            "voi_type",
            "kinetics_method",
            "dose_method",
            "mean_dose_gy",
            "method_parameters_hash",
        ],
    ).merge(kinetics_hash, on=[*_PAIR_KEYS, "kinetics_method"], how="left")
    dose["hash"] = dose["method_parameters_hash"] + "|" + dose["kinetics_hash"].fillna("")
    dose = dose.rename(columns={"mean_dose_gy": "value"})
    is_reference = dose["kinetics_method"] == reference_method
    reference_dose = dose.loc[is_reference, [*_PAIR_KEYS, "dose_method", "value", "hash"]]
    dose_pairs = dose.loc[~is_reference].merge(
        reference_dose, on=[*_PAIR_KEYS, "dose_method"], suffixes=("", "_ref")
    )
    dose_pairs = dose_pairs.rename(
        columns={"value_ref": "reference_value", "hash_ref": "reference_hash"}
    ).assign(metric=METRIC_MEAN_DOSE, reference_method=reference_method)

    columns = [
        *_PAIR_KEYS,
        "voi_type",
        "metric",
        "kinetics_method",
        "reference_method",
        "dose_method",
        "value",
        "reference_value",
        "hash",
        "reference_hash",
    ]
    pairs = pd.concat([tia_pairs[columns], dose_pairs[columns]], ignore_index=True)
    if pairs.empty:
        return stamped_table(KINETICS_AGREEMENT, [], provenance)
    pairs = with_voi_classes(pairs, voi_timepoints)
    rows = _agreement_rows(
        pairs,
        ["metric", "kinetics_method", "reference_method", "dose_method"],
        method_label="kinetics_method",
        reference_label="reference_method",
    )
    return stamped_table(KINETICS_AGREEMENT, rows, provenance)


def _dose_arms(
    absorbed_dose: pa.Table, voxel_dose: pa.Table | None, reference_method: str
) -> pd.DataFrame:
    """Every dose per VOI with its source, dose method and kinetics (see the module docstring)."""
    columns = [
        *_PAIR_KEYS,
        "voi_type",
        "kinetics_method",
        "dose_method",
        "mean_dose_gy",
        "method_parameters_hash",
    ]
    voi = _frame(absorbed_dose, columns)
    parts = [voi.loc[voi["kinetics_method"] == reference_method].assign(source=SOURCE_VOI_DOSE)]
    if voxel_dose is not None:
        parts.append(_frame(voxel_dose, columns).assign(source=SOURCE_VOXEL_DOSE))
    arms = pd.concat(parts, ignore_index=True).rename(
        columns={"mean_dose_gy": "value", "method_parameters_hash": "hash"}
    )
    arms["order"] = arms["source"].map(_SOURCE_ORDER)
    return arms


def build_dose_agreement(
    absorbed_dose: pa.Table,
    voxel_dose: pa.Table | None,
    voi_timepoints: pa.Table,
    provenance: Provenance,
    *,
    reference_method: str = REFERENCE_METHOD_NAME,
) -> pa.Table:
    """Table ``dose_agreement`` from the current ``absorbed_dose`` (reference kinetics' rows),
    ``voxel_dose`` and ``voi_timepoints`` rows (see the module docstring)."""
    arms = _dose_arms(absorbed_dose, voxel_dose, reference_method)
    pairs = arms.merge(arms, on=[*_PAIR_KEYS, "voi_type"], suffixes=("", "_c"))
    arm = ["order", "dose_method", "kinetics_method"]
    comparator = [f"{name}_c" for name in arm]
    # the comparator is the first arm of the pair: (source, dose method, kinetics) order
    later = np.zeros(len(pairs), dtype=bool)
    decided = np.zeros(len(pairs), dtype=bool)
    for mine, theirs in zip(arm, comparator, strict=True):
        a, b = pairs[mine].to_numpy(), pairs[theirs].to_numpy()
        later |= ~decided & (a > b)
        decided |= a != b
    pairs = pairs.loc[later]
    if pairs.empty:
        return stamped_table(DOSE_AGREEMENT, [], provenance)
    pairs = pairs.rename(
        columns={
            "source": "dose_source",
            "source_c": "comparator_dose_source",
            "dose_method_c": "comparator_dose_method",
            "kinetics_method_c": "comparator_kinetics_method",
            "value_c": "reference_value",
            "hash_c": "reference_hash",
        }
    )
    pairs = pairs.assign(
        metric=METRIC_MEAN_DOSE,
        arm=pairs["dose_source"] + ":" + pairs["dose_method"] + ":" + pairs["kinetics_method"],
        comparator_arm=pairs["comparator_dose_source"]
        + ":"
        + pairs["comparator_dose_method"]
        + ":"
        + pairs["comparator_kinetics_method"],
    )
    pairs = with_voi_classes(pairs, voi_timepoints)
    rows = _agreement_rows(
        pairs,
        [
            "metric",
            "dose_source",
            "dose_method",
            "kinetics_method",
            "comparator_dose_source",
            "comparator_dose_method",
            "comparator_kinetics_method",
            "arm",
            "comparator_arm",
        ],
        method_label="arm",
        reference_label="comparator_arm",
    )
    for row in rows:
        del row["arm"], row["comparator_arm"]
    return stamped_table(DOSE_AGREEMENT, rows, provenance)
