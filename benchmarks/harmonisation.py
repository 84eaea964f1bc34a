"""Harmonisation, measured: cross-site CoV and error against truth, raw vs harmonised vs PVC.

Run: ``.venv/bin/python -m benchmarks.harmonisation [--preset test|full]
[--imaging blur|realistic|both] [--patients N] [--sites a,b,…] --json FILE [--keep DIR]
[--diagnose] [--noise-floor]``.

Not a timing. For each imaging mode it regenerates the digital consortium and runs it through
the platform exactly as ``concordose consortium`` does (:func:`flows.consortium.run_consortium`:
phantom calibration of every site, C-STORE to the receiver, every cycle processed once per
variant ``raw``, ``harmonised``, ``harmonised_pvc``), then reads the published
``harmonisation_agreement`` table (its source) and writes, per imaging mode and variant:

* the cross-site coefficient of variation of the reference method's mean sphere dose per lesion,
  by true-volume bin (< 4 mL, 4-20 mL, ≥ 20 mL; volumes from the generator's truth) and for
  lesions ≥ 4 mL as a whole (median and max over lesions);
* per organ, the cross-site CoV of the reference TIA and its error against the true TIA;
* for lesions < 4 mL, how many site measurements lie within 2 reported SD of the truth
  (``kinetics.tia_total_sd_mbq_h`` of the reference; "reported with their uncertainty rather
  than silently wrong"), and the same with the median reported relative SD per volume bin
  (``lesion_uncertainty_by_volume_bin``: is the SD honest where the correction is large, and
  not inflated where it is small), and the same for the mean sphere dose
  (``lesion_dose_uncertainty_by_volume_bin``, ``absorbed_dose.dose_sd_gy``: the dose also
  carries the delineated mass, whose uncertainty the TIA does not show).

``--preset test``: the coarse grid, 4 sites × 2 patients, cycle 1, lesions 4-60 mL (minutes).
``--preset full``: each site's own grid, 4 sites × 4 patients, cycle 1, 5-6 lesions per
patient log-spaced over 0.5-200 mL with both ends in every patient (the consortium's
``harmonisation`` preset: ≥ 20 lesions spanning 0.5-200 mL).

JSON keys read by scripts outside the repository (fixed): ``lesion_ge4ml_cov_median_pct``,
``lesion_ge4ml_cov_max_pct``, ``lesion_lt4ml_cov_median_pct``, ``organ_tia_error_max_abs_pct``,
each ``{"blur": {"harmonised": x, "harmonised_pvc": y}, "realistic": {…}}``, and
``raw_lesion_ge4ml_cov_median_pct`` = ``{"blur": x, "realistic": y}`` (raw variant). A mode not
run is null; a statistic with no VOI to compute it from is null. ``tables`` holds the detail,
``targets`` the issue's targets and whether each was met; with ``--diagnose``,
``targets.evidence`` why (``benchmarks/diagnose_realistic_organs.py``'s summary at the first
and the last time point: per VOI group the error of the GTM as run against the GTM with the
imaging chain's true transfer matrix, the raw error, and the FWHM the chain behaves as beside
the one the GTM used); with realistic imaging, ``targets.evidence.organ_activity_by_time_point``
the organs' published activity against the truth time point by time point
(:func:`organ_errors_by_time_point`: where the TIA error comes from); with anatomy realism,
``targets.evidence.delineation`` how much the sites' own VOIs differ in volume for the same
object (:func:`delineation_spread`), a difference no image correction removes, its
``perfect_camera_floor`` (:func:`delineation_floor`: the targets' own figures as a perfect
camera would give them over the sites' VOIs, and ``floor_within_target``: false where no image
correction on those VOIs can meet a target), and, when
``harmonised_pvc`` ran ``gtm_platform_voi`` or ``perturbation_gtm`` (lesions re-delineated by
the platform's rule, ``quant.delineation``; the default is each site protocol's,
``gtm_platform_voi`` but grandrapids' ``perturbation_gtm``: ``--pvc-model gtm`` measures the GTM
on the sites' own VOIs instead),
``targets.evidence.delineation.platform`` the same spread for the platform's lesion volumes
(:func:`platform_volume_spread`): what is left of the definitional difference once one rule
draws every site's lesions. With ``--noise-floor`` (realistic), the consortium is scanned a
second time with other count noise and nothing else changed (same patients, phantom scans,
calibrations, outlines; processed in ``harmonised_pvc``), and ``targets.evidence.noise_floor``
holds the cross-site CoV that noise alone leaves, by the targets' VOIs (:func:`noise_floor`),
with ``floor_within_target``: false where count noise alone exceeds a target. Per site
(``tables.<mode>.per_site``, :func:`per_site_errors`), the
error against truth per variant and whether partial-volume correction beat none there;
``targets.pvc_beats_no_correction_at_every_site`` (realistic) is item 1's rule for the
default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
import time
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.diagnose_realistic_organs import ORGAN_GROUPS, diagnose, organ_group
from concordose.calibration.protocol import PartialVolumeModel
from concordose.consortium import (
    VARIANTS,
    ProcessingVariant,
    ReferenceObjectRegistry,
    cross_site_cov,
)
from concordose.flows.consortium import run_consortium
from concordose.flows.demo import demo_pseudonym_key
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.phantoms.consortium import Realism
from concordose.phantoms.imaging import ImagingMode
from concordose.phantoms.site_profiles import CONSORTIUM_SITES, consortium_site
from concordose.phantoms.virtual_patient import TISSUE_DENSITY_G_PER_ML, true_mean_dose_gy
from concordose.quant.pvc import GTM_PLATFORM_MODEL, PERTURBATION_GTM_MODEL
from concordose.results.catalogue import read_current
from concordose.results.object_store import open_object_store
from concordose.settings import Settings

IMAGING_MODES = ("blur", "realistic")
LESION_DOSE_METHOD = "sphere"
SMALL_LESION_ML = 4.0
"""The issue's split: lesions ≥ 4 mL are harmonised to target, smaller ones reported with SD."""

VOLUME_BINS_ML = ((0.0, 4.0), (4.0, 20.0), (20.0, math.inf))
COVERAGE_SD = 2.0
"""A small lesion's measurement is "within its uncertainty" when |error| ≤ 2 reported SD."""

PRESETS = {"test": ("test", 2), "full": ("harmonisation", 4)}
"""Benchmark preset → (consortium preset, patients per site)."""
RUN_RECORD = "benchmark_run.json"
"""Written in each mode's run folder: the benchmark preset, patients, sites, anatomy realism,
whether a repeat scan was run beside it (``noise_floor``) and wall time of the run, so that
``--summarise`` of a kept folder reports them as the run had them."""

DIAGNOSED_TIME_POINTS = (1, -1)
"""``--diagnose``'s time points (1-based, −1 the last): the first, where the organs' published
activity is closest to the truth, and the last, where it is furthest (the organs' TIA error
comes from the late time points: ``organ_activity_by_time_point``)."""
TARGETS_PCT = {
    "lesion_ge4ml_cov_median_pct": 5.0,
    "lesion_ge4ml_cov_max_pct": 8.0,
    "organ_cov_max_pct": 5.0,
    "organ_tia_error_max_abs_pct": 5.0,
}
"""Issue 15, item 5 (realistic imaging): upper bounds, in %."""
NOISE_FLOOR_RUN = "realistic-noise-repeat"
"""``--noise-floor``'s run folder beside ``realistic``: the consortium scanned again."""
NOISE_FLOOR_SEED = 20261207
"""The repeat scan's noise seed (``generate_consortium(noise_seed=…)``); the consortium's own
seed (patients, fills, phantoms) is unchanged."""
NOISE_FLOOR_VARIANT = ProcessingVariant.HARMONISED_PVC.value
"""The variant the repeat scan is processed in: the one the targets judge."""
REPEATED_SETTINGS = ("preset", "patients", "sites", "anatomy_realism", "pvc_model")
"""What a repeat scan's :data:`RUN_RECORD` must share with the run it repeats."""


@dataclass
class _Progress:
    """Prints one line per stage and every 10 % of its units."""

    total: int = 0
    done: int = 0
    shown: int = -1

    def start(self, total: int) -> None:
        self.total += total

    def advance(self, description: str) -> None:
        self.advance_by(1, description)

    def advance_by(self, units: int, description: str) -> None:
        self.done += units
        tenth = 10 * self.done // max(self.total, 1)
        if tenth != self.shown:
            self.shown = tenth
            print(f"  {self.done}/{self.total} {description}", flush=True)


def _ground_truths(run: Path) -> Iterator[dict[str, Any]]:
    """Every site's patients' ``ground_truth.json`` of the consortium run folder ``run``."""
    for path in sorted((run / "input" / "sites").glob("*/patients/*/ground_truth.json")):
        yield json.loads(path.read_text(encoding="utf-8"))


def _described(truth: dict[str, Any]) -> dict[str, tuple[str, float]]:
    """VOI label → (VOI type, true analytic volume in mL) of one ground truth."""
    return {str(v["label"]): (str(v["voi_type"]), float(v["volume_ml"])) for v in truth["vois"]}


def _true_vois(run: Path) -> dict[tuple[str, str], tuple[str, float]]:
    """(subject, VOI label) → (VOI type, true volume in mL), from the generator's truths."""
    return {
        (str(truth["patient"]["subject"]), label): described
        for truth in _ground_truths(run)
        for label, described in _described(truth).items()
    }


def delineation_spread(run: Path) -> dict[str, Any] | None:
    """How much the sites' own VOIs differ for the same object, from the generator's truths.

    With anatomy realism each site's SEG follows its own rule (``phantoms.segmentation_rules``)
    and the truth records, per VOI of cycle 1, the volume the site drew beside the true one.
    Returned per VOI class (lesions by true-volume bin, organs by label): the cross-site CoV of
    drawn / true volume (median and max over objects), and per site its rule and the median
    ratio. This is a definitional difference (each site measures the object it drew), which no
    image correction removes: the evidence for a lesion or organ target missed with anatomy
    realism on. None when the run has no drawn volumes (anatomy realism off).
    """
    ratios: dict[tuple[str, str], dict[str, float]] = {}
    kinds: dict[tuple[str, str], tuple[str, float]] = {}
    rules: dict[str, Any] = {}
    for truth in _ground_truths(run):
        site = str(truth["site"]["site_id"])
        rules[site] = truth["site"].get("segmentation")
        subject = str(truth["patient"]["subject"])
        described = _described(truth)
        for voi in truth["cycles"][0]["vois"]:
            if "segmented_volume_ml" not in voi or not voi.get("true_ct_volume_ml"):
                continue
            key = (subject, str(voi["label"]))
            ratios.setdefault(key, {})[site] = voi["segmented_volume_ml"] / voi["true_ct_volume_ml"]
            kinds[key] = described[str(voi["label"])]
    if not ratios:
        return None

    groups: dict[str, list[float]] = {}
    for key, by_site in ratios.items():
        if len(by_site) < 2:
            continue
        kind, volume_ml = kinds[key]
        name = _lesion_bin(volume_ml) if kind == "lesion" else key[1]
        groups.setdefault(name, []).append(cross_site_cov(list(by_site.values())))
    sites = sorted({site for by_site in ratios.values() for site in by_site})
    return {
        "source": "generator truth: drawn (segmented_volume_ml) / true volume, cycle 1",
        "drawn_volume_cross_site_cov_pct": _spread(groups),
        "sites": {
            site: {
                "rule": rules.get(site),
                "median_drawn_over_true": round(
                    float(np.median([r[site] for r in ratios.values() if site in r])), 3
                ),
            }
            for site in sites
        },
    }


def delineation_floor(run: Path) -> dict[str, Any] | None:
    """What the sites' own VOIs alone leave of each target: a perfect camera's figures.

    Per site, object and cycle 1 (generator truth): the TIA a perfect camera (no blur, no
    noise, exact calibration) measures over the VOI the site drew is the sum over the true
    regions the VOI covers (``segmented_overlap_ml``) of the covered volume × that region's true
    TIA over its true CT volume; a lesion's mean dose is then the sphere model's (the truth's
    :func:`phantoms.virtual_patient.true_mean_dose_gy`) at the drawn volume's mass, an organ's
    metric its TIA: the quantities the targets judge, with every image effect removed. Their
    cross-site CoV (:func:`concordose.consortium.cross_site_cov`, as ``harmonisation_agreement``)
    and error against the truth, under the target keys' names, are the floor under which no
    image correction on the sites' VOIs can bring the consortium. Assumes uniform uptake per
    region and no motion (the generator's heterogeneous lesions and breathing are left out).
    None when the run has no drawn VOIs (anatomy realism off).
    """
    measured: dict[tuple[str, str], dict[str, float]] = {}
    truths: dict[tuple[str, str], tuple[str, float, float]] = {}
    for truth in _ground_truths(run):
        site = str(truth["site"]["site_id"])
        subject = str(truth["patient"]["subject"])
        described = _described(truth)
        cycle = truth["cycles"][0]
        if not any("segmented_overlap_ml" in voi for voi in cycle["vois"]):
            continue  # anatomy realism off, or generated before the overlaps were recorded
        regions = [*cycle["vois"], cycle["body_remainder"]]
        tia_per_ml = {  # a region no CT voxel samples is covered by no VOI either
            str(r["label"]): float(r["tia_mbq_h"]) / float(r["true_ct_volume_ml"])
            for r in regions
            if r.get("true_ct_volume_ml")
        }
        for voi in cycle["vois"]:
            if "segmented_overlap_ml" not in voi:
                continue
            label = str(voi["label"])
            kind, volume_ml = described[label]
            tia_mbq_h = sum(
                ml * tia_per_ml.get(region, 0.0)  # "outside": air holds no activity
                for region, ml in voi["segmented_overlap_ml"].items()
            )
            if kind == "lesion":
                value = true_mean_dose_gy(
                    tia_mbq_h, float(voi["segmented_volume_ml"]) * TISSUE_DENSITY_G_PER_ML
                )
                true_value = voi["mean_dose_gy"]
            else:
                value, true_value = tia_mbq_h, voi["tia_mbq_h"]
            if value is None or not true_value:
                continue
            measured.setdefault((subject, label), {})[site] = value
            truths[(subject, label)] = (kind, volume_ml, float(true_value))
    if not measured:
        return None
    covs: dict[str, list[float]] = {}
    errors: dict[str, list[float]] = {}
    for key, by_site in measured.items():
        kind, volume_ml, true_value = truths[key]
        names = [key[1]]
        if kind == "lesion":
            names = [_lesion_bin(volume_ml)]
            if volume_ml >= SMALL_LESION_ML:
                names.append("lesion_ge4ml")
        elif kind == "organ":
            names.append("organs")
        for name in names:
            if len(by_site) >= 2:
                covs.setdefault(name, []).append(cross_site_cov(list(by_site.values())))
            errors.setdefault(name, []).extend(v / true_value - 1.0 for v in by_site.values())
    headline = {
        "lesion_ge4ml_cov_median_pct": _percent(covs.get("lesion_ge4ml", []), "median"),
        "lesion_ge4ml_cov_max_pct": _percent(covs.get("lesion_ge4ml", []), "max"),
        "organ_cov_max_pct": _percent(covs.get("organs", []), "max"),
        "organ_tia_error_max_abs_pct": _percent(errors.get("organs", []), "max"),
    }
    return {
        "source": "generator truth, cycle 1: a perfect camera's TIA over each site's drawn VOI "
        "(segmented_overlap_ml × region TIA / region true CT volume); lesions by sphere dose",
        "assumptions": "uniform uptake per region, no motion",
        **headline,
        "floor_within_target": {
            key: None if (value := headline[key]) is None else value <= bound
            for key, bound in TARGETS_PCT.items()
        },
        "cross_site_cov_pct": _spread(covs),
        "error_median_abs_pct": {
            name: _percent(np.abs(values), "median") for name, values in sorted(errors.items())
        },
    }


def platform_volume_spread(run: Path) -> dict[str, Any] | None:
    """The same as :func:`delineation_spread` for the VOIs the platform used in
    ``harmonised_pvc`` (``gtm_platform_voi`` or ``perturbation_gtm``: lesions re-delineated by
    one rule; organs' volume,
    hence dose mass, the site's outline offset to the SPECT's edge, ``quant.organ_outline``):
    cross-site CoV of published volume / true volume per class (lesions by volume bin, organs
    by label), and per site the median ratio (lesions; organs). None when no cycle of the
    variant used platform VOIs."""
    store = open_object_store(
        (run / "output" / "variants" / ProcessingVariant.HARMONISED_PVC.value).as_posix(),
        Settings(),
    )
    points = read_current(store, "voi_timepoints").to_pandas()
    points = points[
        (points["time_point_index"] == 0)
        & points["partial_volume_model"].isin([GTM_PLATFORM_MODEL, PERTURBATION_GTM_MODEL])
    ]
    if points.empty:
        return None
    keys = _cycle_keys(run)
    keys = keys.assign(subject=[_subject(r) for r in keys["reference_object_id"]])
    points = points.merge(keys, on=["site_id", "cycle_key"])
    truths = _true_vois(run)
    groups: dict[str, list[float]] = {}
    per_site: dict[str, list[float]] = {}
    per_site_organ: dict[str, list[float]] = {}
    for (subject, label), group in points.groupby(["subject", "voi_label"]):
        kind, true_ml = truths.get((str(subject), str(label)), ("unknown", math.nan))
        if kind not in ("lesion", "organ"):
            continue
        ratios = (group["volume_ml"] / true_ml).to_numpy(dtype=float)
        by_site = per_site if kind == "lesion" else per_site_organ
        for site, ratio in zip(group["site_id"], ratios, strict=True):
            by_site.setdefault(str(site), []).append(float(ratio))
        if len(ratios) < 2:
            continue
        name = _lesion_bin(true_ml) if kind == "lesion" else str(label)
        groups.setdefault(name, []).append(float(np.std(ratios) / np.mean(ratios)))
    return {
        "source": "published voi_timepoints.volume_ml of harmonised_pvc (gtm_platform_voi), "
        "time point 0, over the generator's true volume",
        "platform_volume_cross_site_cov_pct": _spread(groups),
        "sites": {
            site: {
                "median_platform_lesion_over_true": (
                    round(float(np.median(per_site[site])), 3) if site in per_site else None
                ),
                "median_platform_organ_over_true": (
                    round(float(np.median(per_site_organ[site])), 3)
                    if site in per_site_organ
                    else None
                ),
            }
            for site in sorted({*per_site, *per_site_organ})
        },
    }


def organ_activity_by_time_point(run: Path) -> dict[str, Any] | None:
    """Where the organs' TIA error comes from: per variant (``harmonised``, ``harmonised_pvc``)
    :func:`organ_errors_by_time_point` of the published ``voi_timepoints`` of the consortium
    run folder ``run`` against its generator's truths. None when no organ time point was
    published."""
    keys = _cycle_keys(run)
    keys = keys.assign(subject=[_subject(r) for r in keys["reference_object_id"]])
    truths = list(_ground_truths(run))
    result: dict[str, Any] = {
        "source": "published voi_timepoints.activity_mbq over the generator's true activity "
        "at each time point (cycle 1, every site and patient), %",
    }
    for variant in (ProcessingVariant.HARMONISED.value, ProcessingVariant.HARMONISED_PVC.value):
        store = open_object_store((run / "output" / "variants" / variant).as_posix(), Settings())
        points = read_current(store, "voi_timepoints").to_pandas()
        result[variant] = organ_errors_by_time_point(
            points.merge(keys, on=["site_id", "cycle_key"]), truths
        )
    if not any(
        result[variant][group]
        for variant in result
        if variant != "source"
        for group in ORGAN_GROUPS
    ):
        return None
    return result


def organ_errors_by_time_point(
    points: pd.DataFrame, truths: Sequence[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Per organ group (``diagnose_realistic_organs.ORGAN_GROUPS``) and time point, the
    activity of ``points`` (``voi_timepoints`` rows with their ``subject``) against the true
    activity at that time point in ``truths`` (``ground_truth.json`` documents, cycle 1, matched
    by site, subject and VOI): time point, nominal time (h), measurements, median and range of
    the error, %. Lesions and VOIs without a truth are left out."""
    true_mbq: dict[tuple[str, str, str], list[float]] = {}
    time_h: dict[int, float] = {}
    for truth in truths:
        cycle = truth["cycles"][0]
        for index, hours in enumerate(cycle["time_points_h"]):
            time_h.setdefault(index, float(hours))
        for voi in cycle["vois"]:
            key = (str(truth["site"]["site_id"]), str(truth["patient"]["subject"]), voi["label"])
            true_mbq[key] = [float(a) for a in voi["activity_mbq"]]
    errors: dict[tuple[str, int], list[float]] = {}
    organs = points[points["voi_type"] == "organ"]
    for site, subject, label, index, activity_mbq in zip(
        organs["site_id"].astype(str),
        organs["subject"].astype(str),
        organs["voi_label"].astype(str),
        organs["time_point_index"].to_numpy(dtype=int),
        organs["activity_mbq"].to_numpy(dtype=float),
        strict=True,
    ):
        truth_mbq = true_mbq.get((site, subject, label))
        if truth_mbq is not None:
            errors.setdefault((organ_group(label), int(index)), []).append(
                float(activity_mbq) / truth_mbq[int(index)] - 1.0
            )
    return {
        group: [
            {
                "time_point_index": index,
                "time_h": time_h.get(index),
                "measurements": len(values),
                "error_median_pct": round(100.0 * float(np.median(values)), 1),
                "error_range_pct": [round(100.0 * min(values), 1), round(100.0 * max(values), 1)],
            }
            for (name, index), values in sorted(errors.items())
            if name == group
        ]
        for group in ORGAN_GROUPS
    }


def _cycle_keys(run: Path) -> pd.DataFrame:
    """(reference object, site) → the published ``cycle_key`` of its measurement."""
    registry = ReferenceObjectRegistry.load(run / "input" / "reference_objects.yaml")
    secret = demo_pseudonym_key(run)  # the key run_consortium used (kept in the run folder)
    return pd.DataFrame(
        [
            {
                "reference_object_id": ref.reference_object_id,
                "site_id": m.site_id,
                "cycle_key": m.cycle_key(secret),
            }
            for ref in registry.reference_objects
            for m in ref.measurements
        ]
    )


def _subject(reference_object_id: str) -> str:
    """``digital-<subject>-cycle<N>`` → subject."""
    return reference_object_id.removeprefix("digital-").rsplit("-cycle", 1)[0]


def _lesion_bin(volume_ml: float) -> str:
    """The name of the lesion volume bin (``VOLUME_BINS_ML``) holding ``volume_ml``."""
    low, high = next(b for b in VOLUME_BINS_ML if b[0] <= volume_ml < b[1])
    return f"lesion_{low:g}_{'inf' if math.isinf(high) else f'{high:g}'}_ml"


def _spread(groups: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Per group of cross-site CoVs: how many objects, their median and max, percent."""
    return {
        name: {
            "objects": len(values),
            "median": _percent(values, "median"),
            "max": _percent(values, "max"),
        }
        for name, values in sorted(groups.items())
    }


def _percent(values: Iterable[float], how: str) -> float | None:
    array = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if array.size == 0:
        return None
    value = np.median(array) if how == "median" else np.max(np.abs(array))
    return round(100.0 * float(value), 2)


def organ_tia_rows(rows: pd.DataFrame) -> pd.Series:
    """Which ``rows`` the organ targets judge: organs' reference TIA."""
    chosen: pd.Series = (rows["voi_type"] == "organ") & (rows["metric"] == "tia_mbq_h")
    return chosen


def lesion_dose_rows(rows: pd.DataFrame) -> pd.Series:
    """Which ``rows`` the lesion targets judge (any volume; the targets split at
    :data:`SMALL_LESION_ML`): lesions' mean dose by :data:`LESION_DOSE_METHOD`."""
    chosen: pd.Series = (
        (rows["voi_type"] == "lesion")
        & (rows["metric"] == "mean_dose_gy")
        & (rows["dose_method"] == LESION_DOSE_METHOD)
    )
    return chosen


def lesion_tia_rows(rows: pd.DataFrame) -> pd.Series:
    """Lesions' reference TIA rows (any volume): the activity part of the lesion targets."""
    chosen: pd.Series = (rows["voi_type"] == "lesion") & (rows["metric"] == "tia_mbq_h")
    return chosen


VOI_LABELS_SINCE = 2
"""``qc_findings`` version since which a finding lists the VOIs it is about (``voi_labels``)."""


def named_in_warnings(findings: pd.DataFrame) -> set[tuple[str, str, str]]:
    """(site, cycle key, VOI label) of every VOI a warning or error of the published
    ``qc_findings`` names (its ``voi_labels``): a measurement the platform said not to trust as
    it stands."""
    if (findings["schema_version"] < VOI_LABELS_SINCE).any():
        raise SystemExit(
            "qc_findings written before version "
            f"{VOI_LABELS_SINCE} name their VOIs in the message only (no voi_labels): "
            "run the benchmark again (a run kept before 2026-12-07 cannot be re-summarised)"
        )
    named: set[tuple[str, str, str]] = set()
    serious = findings[findings["severity"].isin(("warning", "error"))]
    for site, cycle, labels in zip(
        serious["site_id"], serious["cycle_key"], serious["voi_labels"], strict=True
    ):
        if labels is not None:
            named.update((site, cycle, str(label)) for label in labels)
    return named


def _small_lesion_coverage(run: Path, rows: pd.DataFrame, variant: str) -> dict[str, Any]:
    """For lesions < 4 mL: site measurements within COVERAGE_SD reported SD of the true TIA."""
    return _lesion_coverage(run, rows, variant, 0.0, SMALL_LESION_ML)


def _lesion_coverage(
    run: Path,
    rows: pd.DataFrame,
    variant: str,
    low_ml: float,
    high_ml: float,
    *,
    dose: bool = False,
) -> dict[str, Any]:
    """For lesions of true volume in [low_ml, high_ml): how many site measurements of the TIA
    (``dose``: of the reference method's mean sphere dose) lie within COVERAGE_SD reported SD
    (``kinetics.tia_total_sd_mbq_h``; ``absorbed_dose.dose_sd_gy``) of the truth, how many lie
    outside with no QC warning of their cycle naming the lesion (:func:`named_in_warnings`:
    "silently wrong", issue 15's words), the median reported relative SD and the median
    absolute error."""
    store = open_object_store((run / "output" / "variants" / variant).as_posix(), Settings())
    if dose:
        published = read_current(store, "absorbed_dose").to_pandas()
        published = published[published["dose_method"] == LESION_DOSE_METHOD]
        measured, sd_column = lesion_dose_rows(rows), "dose_sd_gy"
    else:
        published = read_current(store, "kinetics").to_pandas()
        measured, sd_column = lesion_tia_rows(rows), "tia_total_sd_mbq_h"
    published = published[published["kinetics_method"] == REFERENCE_METHOD_NAME]
    chosen = rows[
        (rows["variant"] == variant)
        & measured
        & (rows["volume_ml"] >= low_ml)
        & (rows["volume_ml"] < high_ml)
    ].merge(_cycle_keys(run), on=["reference_object_id", "site_id"])
    joined = chosen.merge(
        published[["site_id", "cycle_key", "voi_label", sd_column]],
        on=["site_id", "cycle_key", "voi_label"],
    )
    error = (joined["measured"] - joined["truth"]).abs()
    sd = joined[sd_column]
    known = sd.notna() & joined["measured"].notna()
    warned = named_in_warnings(read_current(store, "qc_findings").to_pandas())
    outside = known & ~(error <= COVERAGE_SD * sd)
    silent = outside & ~pd.Series(
        [
            (site, cycle, label) in warned
            for site, cycle, label in zip(
                joined["site_id"], joined["cycle_key"], joined["voi_label"], strict=True
            )
        ],
        index=joined.index,
        dtype=bool,
    )
    return {
        "measurements": len(joined),
        "with_reported_sd": int(known.sum()),
        "within_2sd": int((error[known] <= COVERAGE_SD * sd[known]).sum()),
        "outside_2sd_without_a_warning": int(silent.sum()),
        "median_reported_relative_sd_pct": _percent(
            (sd[known] / joined["measured"][known]).tolist(), "median"
        ),
        "median_abs_error_pct": _percent(
            (error[known] / joined["truth"][known]).tolist(), "median"
        ),
    }


def per_site_errors(rows: pd.DataFrame) -> dict[str, Any]:
    """Per site and variant, the error against truth of the VOIs the targets judge: organs'
    reference TIA and lesions' (≥ 4 mL) sphere dose, as median |error| % (with the lesions' TIA
    error beside their dose error: what is not in the TIA is in the mass), and whether
    partial-volume correction beat none there (issue 15, item 1: "make it the default if it
    beats no correction at every site"): ``pvc_beats_no_correction`` per site is True when
    ``harmonised_pvc``'s median |error| over those VOIs together is below ``harmonised``'s.

    ``rows``: ``harmonisation_agreement`` rows of the reference method with ``voi_type`` and
    the true ``volume_ml`` added (:func:`summarise`)."""
    judged = rows[
        organ_tia_rows(rows) | (lesion_dose_rows(rows) & (rows["volume_ml"] >= SMALL_LESION_ML))
    ].drop_duplicates(
        ["reference_object_id", "voi_label", "variant", "metric", "dose_method", "site_id"]
    )
    lesion_tia = rows[
        lesion_tia_rows(rows) & (rows["volume_ml"] >= SMALL_LESION_ML)
    ].drop_duplicates(["reference_object_id", "voi_label", "variant", "site_id"])
    sites: dict[str, Any] = {}
    for site, mine in judged.groupby("site_id"):
        figures: dict[str, Any] = {}
        for variant in (v.value for v in ProcessingVariant):
            own = mine[mine["variant"] == variant]
            organs = own[own["voi_type"] == "organ"]["relative_error"].abs()
            lesions = own[own["voi_type"] == "lesion"]["relative_error"].abs()
            figures[variant] = {
                "organ_tia_error_median_abs_pct": _percent(organs, "median"),
                "organ_tia_error_max_abs_pct": _percent(organs, "max"),
                "lesion_ge4ml_dose_error_median_abs_pct": _percent(lesions, "median"),
                # the dose's activity part alone: the rest of its error is the mass (volume)
                "lesion_ge4ml_tia_error_median_abs_pct": _percent(
                    lesion_tia[
                        (lesion_tia["site_id"] == site) & (lesion_tia["variant"] == variant)
                    ]["relative_error"].abs(),
                    "median",
                ),
                "error_median_abs_pct": _percent(own["relative_error"].abs(), "median"),
            }
        corrected = figures[ProcessingVariant.HARMONISED_PVC.value]["error_median_abs_pct"]
        uncorrected = figures[ProcessingVariant.HARMONISED.value]["error_median_abs_pct"]
        figures["pvc_beats_no_correction"] = (
            None if corrected is None or uncorrected is None else corrected < uncorrected
        )
        sites[str(site)] = figures
    return sites


def reference_rows(run: Path) -> pd.DataFrame:
    """The published ``harmonisation_agreement`` rows of the consortium run folder ``run`` for
    the reference kinetics method, with each VOI's ``voi_type`` and true ``volume_ml`` (mL,
    from the generator's truth) added."""
    store = open_object_store((run / "output").as_posix(), Settings())
    rows = read_current(store, "harmonisation_agreement").to_pandas()
    rows = rows[rows["kinetics_method"] == REFERENCE_METHOD_NAME]
    vois = _true_vois(run)
    described = [
        vois.get((_subject(ref), label), ("unknown", math.nan))
        for ref, label in zip(rows["reference_object_id"], rows["voi_label"], strict=True)
    ]
    described_rows: pd.DataFrame = rows.assign(
        voi_type=[kind for kind, _ in described], volume_ml=[volume for _, volume in described]
    )
    return described_rows


def noise_floor(run: Path, repeat: Path) -> dict[str, Any] | None:
    """What count noise alone leaves of the cross-site CoV targets, from a repeat scan.

    ``repeat`` is the consortium of ``run`` scanned again (``--noise-floor``: the same
    patients, phantom scans, calibrations and site outlines; only the patients' images draw
    other noise, ``generate_consortium(noise_seed=…)``), processed in
    :data:`NOISE_FLOOR_VARIANT`. Each site's two measurements of a VOI differ by noise alone:
    the measurement's noise SD is |a − b|/√2, relative to their mean. Sites' noise is
    independent, so noise alone spreads a VOI across sites by a CoV of about the root mean
    square of its sites' relative noise SDs: the VOI's CoV floor. Rows judged as the targets
    judge them (lesions: the reference method's mean sphere dose; organs: its TIA); binned as
    ``lesion_cov_by_volume_bin``. ``floor_within_target``: False where noise alone already
    exceeds a target (the platform cannot meet it at these count levels, whatever it
    corrects); each VOI's estimate rests on one difference per site, so read medians, and
    maxima as indications. None when ``run``'s :data:`RUN_RECORD` records no repeat scan.

    Raises:
        ValueError: the record says there is one, and ``repeat`` holds none made with the same
            :data:`REPEATED_SETTINGS`.
    """
    first_record, repeat_record = read_run_record(run), read_run_record(repeat)
    if first_record is None or not first_record.get("noise_floor"):
        return None
    if repeat_record is None or any(
        repeat_record.get(key) != first_record.get(key) for key in REPEATED_SETTINGS
    ):
        raise ValueError(
            f"{run} records a repeat scan in {repeat}, but it holds none of the same "
            f"{', '.join(REPEATED_SETTINGS)}: run the benchmark again with --noise-floor"
        )
    keys = ["reference_object_id", "voi_label", "metric", "dose_method", "site_id"]

    def judged(rows: pd.DataFrame) -> pd.DataFrame:
        rows = rows[rows["variant"] == NOISE_FLOOR_VARIANT]
        chosen = rows[organ_tia_rows(rows) | lesion_dose_rows(rows)]
        return chosen.assign(dose_method=chosen["dose_method"].fillna(""))

    first, second = judged(reference_rows(run)), judged(reference_rows(repeat))
    pairs = first.merge(second[[*keys, "measured"]], on=keys, suffixes=("", "_repeat"))
    mean = 0.5 * (pairs["measured"] + pairs["measured_repeat"])
    pairs = pairs.assign(
        relative_noise_sd=(pairs["measured"] - pairs["measured_repeat"]).abs()
        / math.sqrt(2.0)
        / mean
    )
    per_voi = (
        pairs.groupby(["reference_object_id", "voi_label", "voi_type", "volume_ml"])[
            "relative_noise_sd"
        ]
        .agg(lambda sd: float(np.sqrt(np.mean(np.square(sd)))))
        .rename("cov_floor")
        .reset_index()
    )
    lesions = per_voi[per_voi["voi_type"] == "lesion"]
    organs = per_voi[per_voi["voi_type"] == "organ"]
    large = lesions[lesions["volume_ml"] >= SMALL_LESION_ML]["cov_floor"]
    floor: dict[str, Any] = {
        "variant": NOISE_FLOOR_VARIANT,
        "noise_seed": repeat_record.get("noise_seed"),
        "repeat_wall_s": repeat_record.get("wall_s"),
        "measurements_paired": len(pairs),
        "lesion_ge4ml_cov_floor_median_pct": _percent(large, "median"),
        "lesion_ge4ml_cov_floor_max_pct": _percent(large, "max"),
        "lesion_cov_floor_by_volume_bin": [
            {
                "volume_ml": [low, None if math.isinf(high) else high],
                "lesions": int(in_bin.sum()),
                "cov_floor_median_pct": _percent(lesions[in_bin]["cov_floor"], "median"),
                "cov_floor_max_pct": _percent(lesions[in_bin]["cov_floor"], "max"),
                "measurement_noise_sd_median_pct": _percent(
                    pairs[
                        (pairs["voi_type"] == "lesion")
                        & (pairs["volume_ml"] >= low)
                        & (pairs["volume_ml"] < high)
                    ]["relative_noise_sd"],
                    "median",
                ),
            }
            for low, high in VOLUME_BINS_ML
            for in_bin in [(lesions["volume_ml"] >= low) & (lesions["volume_ml"] < high)]
        ],
        "organs": [
            {"voi_label": label, "cov_floor_pct": _percent(group["cov_floor"], "max")}
            for label, group in organs.groupby("voi_label")
        ],
        "organ_cov_floor_max_pct": _percent(organs["cov_floor"], "max"),
    }
    floor["floor_within_target"] = {
        key: (None if floor[name] is None else floor[name] <= TARGETS_PCT[key])
        for key, name in (
            ("lesion_ge4ml_cov_median_pct", "lesion_ge4ml_cov_floor_median_pct"),
            ("lesion_ge4ml_cov_max_pct", "lesion_ge4ml_cov_floor_max_pct"),
            ("organ_cov_max_pct", "organ_cov_floor_max_pct"),
        )
    }
    return floor


def summarise(run: Path) -> dict[str, Any]:
    """Per variant, the statistics of the module docstring from the published
    ``harmonisation_agreement`` of the consortium run folder ``run``."""
    rows = reference_rows(run)
    per_voi = rows.drop_duplicates(
        ["reference_object_id", "voi_label", "variant", "metric", "dose_method"]
    )
    summary: dict[str, Any] = {}
    for variant in (v.value for v in ProcessingVariant):
        mine = per_voi[per_voi["variant"] == variant]
        lesions = mine[lesion_dose_rows(mine)]
        organs = mine[organ_tia_rows(mine)]
        organ_errors = rows[(rows["variant"] == variant) & organ_tia_rows(rows)]
        large = lesions[lesions["volume_ml"] >= SMALL_LESION_ML]
        summary[variant] = {
            "lesion_ge4ml_cov_median_pct": _percent(large["cross_site_cov"], "median"),
            "lesion_ge4ml_cov_max_pct": _percent(large["cross_site_cov"], "max"),
            "lesion_lt4ml_cov_median_pct": _percent(
                lesions[lesions["volume_ml"] < SMALL_LESION_ML]["cross_site_cov"], "median"
            ),
            "organ_cov_max_pct": _percent(organs["cross_site_cov"], "max"),
            "organ_tia_error_max_abs_pct": _percent(organ_errors["relative_error"], "max"),
            "lesion_cov_by_volume_bin": [
                {
                    "volume_ml": [low, None if math.isinf(high) else high],
                    "lesions": int(
                        ((lesions["volume_ml"] >= low) & (lesions["volume_ml"] < high)).sum()
                    ),
                    "cov_median_pct": _percent(
                        lesions[(lesions["volume_ml"] >= low) & (lesions["volume_ml"] < high)][
                            "cross_site_cov"
                        ],
                        "median",
                    ),
                    "error_median_abs_pct": _percent(
                        rows[
                            (rows["variant"] == variant)
                            & lesion_dose_rows(rows)
                            & (rows["volume_ml"] >= low)
                            & (rows["volume_ml"] < high)
                        ]["relative_error"].abs(),
                        "median",
                    ),
                }
                for low, high in VOLUME_BINS_ML
            ],
            "organs": [
                {
                    "voi_label": label,
                    "cov_pct": _percent(group["cross_site_cov"], "max"),
                    "error_range_pct": [
                        round(100.0 * float(e), 2)
                        for e in (
                            organ_errors[organ_errors["voi_label"] == label]["relative_error"]
                            .agg(["min", "max"])
                            .tolist()
                        )
                    ],
                }
                for label, group in organs.groupby("voi_label")
            ],
            "small_lesion_uncertainty": _small_lesion_coverage(run, rows, variant),
            "lesion_uncertainty_by_volume_bin": [
                {
                    "volume_ml": [low, None if math.isinf(high) else high],
                    **_lesion_coverage(run, rows, variant, low, high),
                }
                for low, high in VOLUME_BINS_ML
            ],
            "lesion_dose_uncertainty_by_volume_bin": [
                {
                    "volume_ml": [low, None if math.isinf(high) else high],
                    **_lesion_coverage(run, rows, variant, low, high, dose=True),
                }
                for low, high in VOLUME_BINS_ML
            ],
        }
    lesion_count = per_voi[
        (per_voi["voi_type"] == "lesion") & (per_voi["variant"] == ProcessingVariant.RAW.value)
    ].drop_duplicates(["reference_object_id", "voi_label"])
    summary["per_site"] = per_site_errors(rows)
    summary["delineation"] = delineation_spread(run)
    floor = delineation_floor(run)
    if summary["delineation"] is not None and floor is not None:
        summary["delineation"]["perfect_camera_floor"] = floor
    platform = platform_volume_spread(run)
    if summary["delineation"] is not None and platform is not None:
        summary["delineation"]["platform"] = platform
    summary["organ_activity_by_time_point"] = organ_activity_by_time_point(run)
    summary["noise_floor"] = noise_floor(run, run.parent / NOISE_FLOOR_RUN)
    summary["lesions"] = {
        "count": len(lesion_count),
        "volume_ml_range": [
            float(lesion_count["volume_ml"].min()),
            float(lesion_count["volume_ml"].max()),
        ],
    }
    return summary


def _consortium_run(
    out: Path,
    mode: str,
    *,
    preset: str,
    patients: int,
    sites: Sequence[str],
    anatomy_realism: bool | None,
    pvc_model: str | None,
    noise_seed: int | None = None,
    variants: Sequence[ProcessingVariant] = VARIANTS,
) -> dict[str, Any]:
    """``run_consortium`` as the benchmark runs it, into ``out``; the run's record (the
    settings :data:`REPEATED_SETTINGS` names, and its wall time, s)."""
    consortium_preset, _ = PRESETS[preset]
    start = time.perf_counter()
    # Each run keeps its own consortium secret in its folder (run_consortium writes it there
    # unless the environment already holds one, as a previous run leaves it).
    os.environ.pop("CONCORDOSE_PSEUDONYM_KEY", None)
    run_consortium(
        out,
        sites=[consortium_site(s) for s in sites],
        n_patients=patients,
        preset=consortium_preset,
        imaging=ImagingMode(mode),
        realism=(
            None
            if anatomy_realism is None
            else dataclasses.replace(
                Realism.of_imaging(ImagingMode(mode)), anatomy_realism=anatomy_realism
            )
        ),
        progress=_Progress(),
        on_step=lambda message: print(f"  {message}", flush=True),
        partial_volume_model=pvc_model,
        noise_seed=noise_seed,
        variants=variants,
    )
    return {
        "preset": preset,
        "patients": patients,
        "sites": list(sites),
        "anatomy_realism": anatomy_realism,
        "pvc_model": pvc_model,
        "wall_s": round(time.perf_counter() - start, 1),
    }


def _write_record(run: Path, record: dict[str, Any]) -> None:
    (run / RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def run_mode(
    mode: str,
    out: Path,
    *,
    preset: str,
    patients: int,
    sites: Sequence[str],
    anatomy_realism: bool | None = None,
    pvc_model: str | None = None,
    with_noise_floor: bool = False,
) -> dict[str, Any]:
    """Regenerate and process the consortium in ``mode``; its summary. ``anatomy_realism``
    overrides the mode's own choice (``realistic`` turns it on) to apportion the effects;
    ``pvc_model`` replaces the protocols' partial-volume model in ``harmonised_pvc``;
    ``with_noise_floor`` (realistic only) also scans it again into :data:`NOISE_FLOOR_RUN`
    beside ``out``, with other noise (:data:`NOISE_FLOOR_SEED`) and in
    :data:`NOISE_FLOOR_VARIANT` only, and summarises the :func:`noise_floor`."""
    if with_noise_floor and mode != ImagingMode.REALISTIC.value:
        raise ValueError(f"the noise floor is measured under realistic imaging, not {mode!r}")
    settings: dict[str, Any] = {
        "preset": preset,
        "patients": patients,
        "sites": sites,
        "anatomy_realism": anatomy_realism,
        "pvc_model": pvc_model,
    }
    print(f"imaging {mode}: consortium preset {PRESETS[preset][0]!r}, {patients} patient(s)")
    record = _consortium_run(out, mode, **settings)
    record["noise_floor"] = with_noise_floor
    if with_noise_floor:
        print(f"noise floor: the realistic consortium scanned again (seed {NOISE_FLOOR_SEED})")
        repeat = out.parent / NOISE_FLOOR_RUN
        repeated = _consortium_run(
            repeat,
            mode,
            **settings,
            noise_seed=NOISE_FLOOR_SEED,
            variants=(ProcessingVariant(NOISE_FLOOR_VARIANT),),
        )
        _write_record(repeat, {**repeated, "noise_seed": NOISE_FLOOR_SEED})
    _write_record(out, record)
    summary = summarise(out)
    summary["wall_s"] = record["wall_s"]
    return summary


def read_run_record(run: Path) -> dict[str, Any] | None:
    """The :data:`RUN_RECORD` of a mode's run folder; None for a folder kept before it was
    written."""
    path = run / RUN_RECORD
    if not path.is_file():
        return None
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return record


def summarise_kept(
    root: Path, modes: Sequence[str], *, preset: str | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Each mode's summary of the kept run folder ``root`` (``root/<mode>``, modes without a
    folder left out) with the run's wall time, and the :data:`RUN_RECORD` the runs share (None
    when no folder has one: kept before it was written). ``preset``: the one the caller was
    given, which a record must not contradict (None: any).

    Raises:
        ValueError: the modes' runs recorded different presets or anatomy realism, or another
            preset than ``preset`` (checked before anything is summarised).
    """
    folders = [mode for mode in modes if (root / mode).is_dir()]
    records = {mode: read_run_record(root / mode) for mode in folders}
    kept = [record for record in records.values() if record is not None]
    for key in ("preset", "anatomy_realism"):
        values = sorted({json.dumps(record.get(key)) for record in kept})
        if len(values) > 1:
            raise ValueError(
                f"the kept runs in {root} recorded different {key}: {', '.join(values)}"
            )
    if kept and preset not in (None, kept[0]["preset"]):
        raise ValueError(
            f"--preset {preset} given, but the kept run in {root} recorded {kept[0]['preset']}"
        )
    summaries: dict[str, dict[str, Any]] = {}
    for mode in folders:
        summaries[mode] = summarise(root / mode)
        record = records[mode]
        if record is not None:
            summaries[mode]["wall_s"] = record["wall_s"]
    return summaries, (kept[0] if kept else None)


def anatomy_realism_flag(anatomy_realism: bool | None) -> str:
    """``--anatomy-realism``'s value for a run's override (None: as the imaging mode has it)."""
    return "mode" if anatomy_realism is None else ("on" if anatomy_realism else "off")


def _by_mode(summaries: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    return {
        mode: (
            {
                variant: summaries[mode][variant][key]
                for variant in (
                    ProcessingVariant.HARMONISED.value,
                    ProcessingVariant.HARMONISED_PVC.value,
                )
            }
            if mode in summaries
            else None
        )
        for mode in IMAGING_MODES
    }


def report(summaries: dict[str, dict[str, Any]], *, preset: str) -> dict[str, Any]:
    """The JSON document (module docstring)."""
    document: dict[str, Any] = {
        key: _by_mode(summaries, key)
        for key in (
            "lesion_ge4ml_cov_median_pct",
            "lesion_ge4ml_cov_max_pct",
            "lesion_lt4ml_cov_median_pct",
            "organ_tia_error_max_abs_pct",
        )
    }
    document["raw_lesion_ge4ml_cov_median_pct"] = {
        mode: (
            summaries[mode][ProcessingVariant.RAW.value]["lesion_ge4ml_cov_median_pct"]
            if mode in summaries
            else None
        )
        for mode in IMAGING_MODES
    }
    document["organ_cov_max_pct"] = _by_mode(summaries, "organ_cov_max_pct")
    document["targets"] = {
        key: {
            "max_pct": bound,
            "met_realistic": {
                variant: (value <= bound if value is not None else None)
                for variant, value in (document[key]["realistic"] or {}).items()
            },
        }
        for key, bound in TARGETS_PCT.items()
    }
    per_site = summaries.get("realistic", {}).get("per_site")
    if per_site:  # item 1's rule for the default: correction beats none at every site
        document["targets"]["pvc_beats_no_correction_at_every_site"] = all(
            figures["pvc_beats_no_correction"] is True for figures in per_site.values()
        )
    realistic = summaries.get("realistic", {})
    evidence = {  # why a target is missed
        key: realistic[key]
        # anatomy realism; any run; --noise-floor
        for key in ("delineation", "organ_activity_by_time_point", "noise_floor")
        if realistic.get(key) is not None
    }
    if evidence:
        document["targets"]["evidence"] = evidence
    document["preset"] = preset
    document["tables"] = summaries
    return document


def main() -> None:
    """Parse arguments, run each imaging mode, write the JSON, print the headline."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="default: test (with --summarise: the preset the kept run recorded)",
    )
    parser.add_argument("--imaging", choices=[*IMAGING_MODES, "both"], default="both")
    parser.add_argument("--patients", type=int, default=None, help="per site (preset's default)")
    parser.add_argument(
        "--sites",
        default=",".join(s.site_id for s in CONSORTIUM_SITES),
        help="comma-separated consortium sites (≥ 4 for the issue's figures)",
    )
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument(
        "--keep", type=Path, default=None, help="run folder to keep (default: temp)"
    )
    parser.add_argument(
        "--anatomy-realism",
        choices=["mode", "on", "off"],
        default="mode",
        help="irregular lesions, breathing and per-site segmentation: as the imaging mode has it "
        "(realistic: on), or forced on/off to apportion what limits harmonisation",
    )
    parser.add_argument(
        "--pvc-model",
        choices=typing.get_args(PartialVolumeModel),
        default=None,
        help="the partial-volume model of harmonised_pvc at every site (default: each "
        "site protocol's: gtm_platform_voi, grandrapids perturbation_gtm); e.g. "
        "perturbation_gtm, one OSEM reconstruction per region and time point (realistic "
        "imaging: the sites' images are OSEM's)",
    )
    parser.add_argument(
        "--summarise",
        type=Path,
        default=None,
        metavar="DIR",
        help="only summarise a kept run folder (DIR/<mode> per mode), regenerating nothing",
    )
    parser.add_argument(
        "--noise-floor",
        action="store_true",
        help="with realistic imaging, also scan the consortium again with other noise (same "
        "patients, phantoms and calibrations) and process it in harmonised_pvc: "
        "targets.evidence.noise_floor, the cross-site CoV that count noise alone leaves "
        "(about half as long again as the realistic run)",
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="with realistic imaging, also run benchmarks.diagnose_realistic_organs (patient 1, "
        "first and last time point, noise-free) and put its summary in targets.evidence: why a "
        "target is missed (quantification, PSF model or background region), measured",
    )
    args = parser.parse_args()
    modes = IMAGING_MODES if args.imaging == "both" else (args.imaging,)
    if args.noise_floor and (args.summarise is not None or "realistic" not in modes):
        parser.error(
            "--noise-floor scans the realistic consortium again: it needs realistic imaging "
            "and a run (--summarise reads the repeat a kept run recorded)"
        )
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    summaries: dict[str, dict[str, Any]] = {}
    if args.summarise is not None:
        try:
            summaries, record = summarise_kept(args.summarise, modes, preset=args.preset)
        except ValueError as exc:
            parser.error(str(exc))
        if not summaries:
            parser.error(f"no run folder for {', '.join(modes)} in {args.summarise}")
        if record is None:
            print(f"no {RUN_RECORD} in {args.summarise}: preset and wall time not recorded")
        else:
            args.preset = record["preset"]
            args.anatomy_realism = anatomy_realism_flag(record["anatomy_realism"])
            args.pvc_model = record.get("pvc_model")
        args.preset = args.preset or "test"
    else:
        args.preset = args.preset or "test"
        patients = args.patients or PRESETS[args.preset][1]
        with tempfile.TemporaryDirectory(prefix="concordose-harmonisation-") as scratch:
            root = args.keep or Path(scratch)
            for mode in modes:
                summaries[mode] = run_mode(
                    mode,
                    root / mode,
                    preset=args.preset,
                    patients=patients,
                    sites=sites,
                    anatomy_realism=(
                        None if args.anatomy_realism == "mode" else args.anatomy_realism == "on"
                    ),
                    pvc_model=args.pvc_model,
                    with_noise_floor=args.noise_floor and mode == ImagingMode.REALISTIC.value,
                )
    document = report(summaries, preset=args.preset)
    document["anatomy_realism"] = args.anatomy_realism
    document["pvc_model"] = args.pvc_model or "protocol default"
    if args.diagnose and "realistic" in modes:
        diagnosis = diagnose(
            preset=PRESETS[args.preset][0],
            sites=sites,
            patients=(1,),
            time_points=DIAGNOSED_TIME_POINTS,
        )
        document["targets"].setdefault("evidence", {}).update(
            {
                "source": "benchmarks.diagnose_realistic_organs (anatomy realism off, noise-free)",
                **diagnosis["summary"],
            }
        )
    args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    for key in (
        "raw_lesion_ge4ml_cov_median_pct",
        "lesion_ge4ml_cov_median_pct",
        "lesion_ge4ml_cov_max_pct",
        "lesion_lt4ml_cov_median_pct",
        "organ_cov_max_pct",
        "organ_tia_error_max_abs_pct",
    ):
        print(f"{key}: {json.dumps(document[key])}")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
