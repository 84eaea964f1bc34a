"""``threshold_concordance``: the published tumour-dose thresholds, each evaluated in its own
study's methodology (emulated from the acquired data) and with the platform's reference, per
cycle, per patient (cumulative thresholds) and per cohort and site (issue 14, item 6).

The thresholds and their sources are those of :data:`concordose.dose.thresholds.THRESHOLDS`
(their one home), evaluated by :func:`concordose.dose.thresholds.evaluate_thresholds` on the
patient-level doses of :func:`concordose.dose.metrics.cycle_dose_summary` /
:func:`~concordose.dose.metrics.cumulative_dose` (minimal lesion dose, GTD, mean lesion dose).

Each study's methodology (seed review, Serani & Maccauro 2026, Table 1) is emulated by a
kinetics method on its schedule (``kinetics/timepoints.py`` picks the acquired points) and the
dose method it used:

* LUMEN (Mileva et al. 2024): 4/24/168 h (``lumen_3tp``), sphere model with RC (``sphere``;
  the RC is the site protocol's partial-volume correction, applied in quantification);
* LUTADOSE (Maccauro et al. 2024): ~20/162 h (``lutadose_2tp``), sphere model (``sphere``);
* Hebert et al. 2024: 4/24/72/192 h in cycles 1-2 (``hebert_4tp``) and the 24 h point alone
  in cycles 3-4 (:data:`concordose.kinetics.prior_half_life.HEBERT_STP_24H`: the acquired
  point serving 24 h, integrated with the VOI's mean effective half-life of the patient's
  cycles 1-2), with PLANET Dose, whose dose model the seed review does not state: ``sphere``
  is used, so that only the schedule differs from the reference. A later cycle's single-point
  dose is its TIA times the cycle's dose per TIA of the reference with the same dose method
  (the VOI's S-value and mass: sphere, organ S-value and LDM doses are linear in the TIA).
  A later cycle whose patient has no cycle-1 or -2 half-life for a VOI has no dose for it;
  ``study_single_point_cycles`` counts the cycles a row took from the single point.

The reference side is the reference kinetics (``spectacular_6tp``) with the same dose method.
Cycle-1 thresholds are evaluated only on cycles whose ``patient_summary.cycle_number`` is 1
(the cycle's rank by injection among its patient's cycles received:
:func:`concordose.spool.cycles.cycle_number`; it is cycle 1 whenever the site sent the first
cycle). A cycle without a number (rows published before numbers were, or no PatientID) is
evaluated as before, as if it were cycle 1. Cumulative thresholds are evaluated over every
current cycle of a patient that both sides cover (``n_cycles``), whatever their numbers.

Per cohort and site (and pooled, ``site_id = '*'``): the fraction of classifications that flip
between the two sides, Cohen's kappa (:mod:`concordose.consortium.kappa`) and a Deming
regression of the reference's value on the study's (:mod:`concordose.consortium.deming`, error
variance ratio 1, jackknife 95 % intervals) giving the reference-scale value equivalent to the
published cut-off.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from concordose.consortium.agreement import POOLED_SITE_ID
from concordose.consortium.deming import MIN_PAIRS, deming_regression
from concordose.consortium.kappa import cohen_kappa
from concordose.dicom.seg import VoiType
from concordose.dose.metrics import (
    CumulativeDose,
    CycleDoseSummary,
    cumulative_dose,
    cycle_dose_summary,
)
from concordose.dose.thresholds import THRESHOLDS, Threshold, evaluate_thresholds
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.kinetics.prior_half_life import (
    HEBERT_STP_24H,
    PriorHalfLifeStp,
    mean_decay_constant_per_h,
    single_point_tia_mbq_h,
)
from concordose.kinetics.timepoints import choose_time_points
from concordose.results.provenance import Provenance, stamped_table
from concordose.schemas.tables import CONSORTIUM_COHORT, THRESHOLD_CONCORDANCE

LEVEL_CYCLE = "cycle"
LEVEL_PATIENT = "patient"
LEVEL_COHORT = "cohort"

REGRESSION_METHOD = "deming_ratio_1_jackknife"
"""``regression_method`` of the cohort rows (:mod:`concordose.consortium.deming`)."""

CYCLE_1 = "cycle 1"  # Threshold.scope of the cycle-1 thresholds (concordose.dose.thresholds)


@dataclass(frozen=True)
class StudyMethodology:
    """How a threshold's own study computed its dose, as emulated here (module docstring).

    Attributes:
        threshold_name: a :class:`~concordose.dose.thresholds.Threshold` name.
        kinetics_method, dose_method: registry names of the emulation.
        later_cycles: the single-point schedule of later cycles (its ``full_schedule_method``
            is ``kinetics_method``), or None when every cycle is imaged at the full schedule.
    """

    threshold_name: str
    kinetics_method: str
    dose_method: str
    later_cycles: PriorHalfLifeStp | None = None


STUDY_METHODOLOGIES: tuple[StudyMethodology, ...] = (
    StudyMethodology("LUMEN minimal lesion dose", "lumen_3tp", "sphere"),
    StudyMethodology("LUTADOSE GTD1", "lutadose_2tp", "sphere"),
    StudyMethodology(
        "Hebert minimal cumulative lesion dose", "hebert_4tp", "sphere", HEBERT_STP_24H
    ),
    StudyMethodology("Hebert mean lesion dose", "hebert_4tp", "sphere", HEBERT_STP_24H),
)

_BY_NAME = {threshold.name: threshold for threshold in THRESHOLDS}


def _threshold(name: str) -> Threshold:
    if name not in _BY_NAME:
        raise KeyError(f"threshold {name!r} not in concordose.dose.thresholds: {sorted(_BY_NAME)}")
    return _BY_NAME[name]


@dataclass(frozen=True)
class _CycleDoses:
    site_id: str
    subject_key: str
    summary: CycleDoseSummary
    hashes: frozenset[str]
    single_point: bool = False  # from a later cycle's single time point (module docstring)


_DOSE_COLUMNS = (
    "site_id",
    "subject_key",
    "cycle_key",
    "voi_label",
    "voi_type",
    "kinetics_method",
    "dose_method",
    "mean_dose_gy",
    "mass_g",
    "method_parameters_hash",
)


def _dose_rows(absorbed_dose: pa.Table, *extra: str) -> pd.DataFrame:
    """The ``absorbed_dose`` columns the concordance reads (and ``extra`` ones)."""
    frame: pd.DataFrame = absorbed_dose.select([*_DOSE_COLUMNS, *extra]).to_pandas()
    return frame


def _cycle_summaries(absorbed_dose: pa.Table) -> dict[tuple[str, str, str], _CycleDoses]:
    """(cycle key, kinetics method, dose method) → the cycle's patient-level doses.

    The columns are taken out of the frame once and each group is a slice of positions: a
    per-group pandas selection cost ~1.5 ms, which made the cohort rebuild a processed cycle
    runs grow by tens of ms per published cycle (``benchmarks/bench_consortium_scale.py``).
    """
    frame = _dose_rows(absorbed_dose)
    groups = frame.groupby(["cycle_key", "kinetics_method", "dose_method"], sort=True).indices
    site = frame["site_id"].astype(str).to_numpy(dtype=object)
    subject = frame["subject_key"].astype(str).to_numpy(dtype=object)
    label = frame["voi_label"].astype(str).to_numpy(dtype=object)
    voi_type = np.array([VoiType(t) for t in frame["voi_type"]], dtype=object)
    dose_gy = frame["mean_dose_gy"].to_numpy(dtype=np.float64, na_value=np.nan)
    mass_g = frame["mass_g"].to_numpy(dtype=np.float64)
    hashes = frame["method_parameters_hash"].to_numpy(dtype=object)
    summaries: dict[tuple[str, str, str], _CycleDoses] = {}
    for key, positions in groups.items():
        cycle, kinetics, dose = cast(tuple[str, str, str], key)
        first = positions[0]
        summaries[(str(cycle), str(kinetics), str(dose))] = _CycleDoses(
            site_id=str(site[first]),
            subject_key=str(subject[first]),
            summary=cycle_dose_summary(
                label[positions].tolist(),
                voi_type[positions].tolist(),
                dose_gy[positions],
                mass_g[positions],
            ),
            hashes=frozenset(hashes[positions].tolist()),
        )
    return dict(sorted(summaries.items()))


def _single_point_doses(
    absorbed_dose: pa.Table,
    kinetics: pa.Table,
    voi_timepoints: pa.Table,
    numbers: dict[str, int],
    schedule: PriorHalfLifeStp,
    *,
    dose_method: str,
    reference_method: str,
) -> dict[str, _CycleDoses]:
    """cycle key → the study side's doses of each cycle numbered ``schedule.from_cycle`` or
    later that ran the reference with ``dose_method``: per VOI, the single-point TIA
    (:func:`~concordose.kinetics.prior_half_life.single_point_tia_mbq_h` at the acquired point
    serving ``schedule.nominal_h``, with the VOI's mean decay constant over the patient's
    earlier cycles' ``schedule.full_schedule_method`` fits) times the reference's dose per TIA.
    A VOI without an earlier half-life gets a NaN dose (left out of the cycle's summary and of
    its cumulative sums); a cycle without an acquired point serving the nominal time is left
    out, as a cycle where a full-schedule method could not run is."""
    doses = _dose_rows(absorbed_dose, "tia_mbq_h")
    subject_of = dict(zip(doses["cycle_key"], doses["subject_key"], strict=True))
    fits: pd.DataFrame = kinetics.select(
        ["cycle_key", "voi_label", "kinetics_method", "teff_h"]
    ).to_pandas()
    early = {cycle for cycle, number in numbers.items() if number < schedule.from_cycle}
    fits = fits[
        (fits["kinetics_method"] == schedule.full_schedule_method) & fits["cycle_key"].isin(early)
    ]
    decay_per_h = {
        (str(subject), str(label)): mean_decay_constant_per_h(group["teff_h"].to_numpy())
        for (subject, label), group in fits.assign(
            subject_key=fits["cycle_key"].map(subject_of)
        ).groupby(["subject_key", "voi_label"])
    }
    points: pd.DataFrame = voi_timepoints.select(
        ["cycle_key", "voi_label", "time_point_index", "time_h", "activity_mbq"]
    ).to_pandas()
    reference = doses[
        (doses["kinetics_method"] == reference_method) & (doses["dose_method"] == dose_method)
    ]
    settings = f"{schedule.name}:{schedule.nominal_h:g}h:from_cycle_{schedule.from_cycle}"
    result: dict[str, _CycleDoses] = {}
    for cycle, rows in reference.groupby("cycle_key", sort=True):
        number = numbers.get(str(cycle))
        if number is None or number < schedule.from_cycle:
            continue
        subject = str(rows["subject_key"].iloc[0])
        labels = rows["voi_label"].astype(str).tolist()
        cycle_points = points[points["cycle_key"] == cycle]
        times_h = (
            cycle_points.groupby("time_point_index")["time_h"].first().sort_values().to_numpy()
        )
        choice = choose_time_points(times_h.astype(np.float64), (schedule.nominal_h,))
        if not choice.matched:
            continue
        time_h = float(times_h[choice.indices[0]])
        at_time = cycle_points[np.isclose(cycle_points["time_h"], time_h)]
        activity = dict(zip(at_time["voi_label"], at_time["activity_mbq"], strict=True))
        tia = single_point_tia_mbq_h(
            [activity.get(label, np.nan) for label in labels],
            time_h,
            [decay_per_h.get((subject, label), np.nan) for label in labels],
        )
        reference_tia = rows["tia_mbq_h"].to_numpy(dtype=np.float64, na_value=np.nan)
        reference_dose = rows["mean_dose_gy"].to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            dose_per_tia = np.where(reference_tia > 0, reference_dose / reference_tia, np.nan)
        result[str(cycle)] = _CycleDoses(
            site_id=str(rows["site_id"].iloc[0]),
            subject_key=subject,
            summary=cycle_dose_summary(
                labels,
                [VoiType(t) for t in rows["voi_type"]],
                tia * dose_per_tia,
                rows["mass_g"].to_numpy(dtype=np.float64),
            ),
            hashes=frozenset([*rows["method_parameters_hash"].tolist(), settings]),
            single_point=True,
        )
    return result


def _study_side(
    summaries: dict[tuple[str, str, str], _CycleDoses],
    single_point: dict[str, _CycleDoses],
    methodology: StudyMethodology,
    numbers: dict[str, int],
) -> dict[str, _CycleDoses]:
    """cycle key → the study side's doses: the study's method at its full schedule, except on
    cycles its later-cycles schedule covers (numbered ``from_cycle`` or later), which take
    the single-point doses."""
    later = methodology.later_cycles
    side = {
        cycle: doses
        for (cycle, kinetics, dose), doses in summaries.items()
        if (kinetics, dose) == (methodology.kinetics_method, methodology.dose_method)
        and (later is None or numbers.get(cycle, 1) < later.from_cycle)
    }
    return side | single_point


def _cycle_numbers(patient_summary: pa.Table | None) -> dict[str, int]:
    """cycle key → its published ``cycle_number`` (cycles without one are left out). A cycle's
    rows come from one publication, so they agree; the smallest is kept should they not."""
    if patient_summary is None:
        return {}
    numbers: dict[str, int] = {}
    keys = patient_summary.column("cycle_key").to_pylist()
    values = patient_summary.column("cycle_number").to_pylist()
    for key, number in zip(keys, values, strict=True):
        if key is not None and number is not None:
            numbers[str(key)] = min(int(number), numbers.get(str(key), int(number)))
    return numbers


def _evaluated_for(threshold: Threshold, cycle_number: int | None) -> bool:
    """Whether a cycle of that number is compared with ``threshold``: a cycle-1 threshold only
    on cycle 1, or on a cycle without a number (as before numbers were published)."""
    return threshold.scope != CYCLE_1 or cycle_number is None or cycle_number == 1


def _flag(
    threshold: Threshold, cycle: CycleDoseSummary, cumulative: CumulativeDose | None = None
) -> tuple[float, bool | None]:
    """The threshold's value and classification (concordose.dose.thresholds, the one rule)."""
    for flag in evaluate_thresholds(cycle, cumulative):
        if flag.threshold.name == threshold.name:
            return flag.value_gy, flag.met
    raise KeyError(f"threshold {threshold.name!r} was not evaluated")


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _hash(hashes: Sequence[frozenset[str]]) -> str:
    joined = "|".join(sorted(set().union(*hashes)))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:16]


def _comparison_rows(
    summaries: dict[tuple[str, str, str], _CycleDoses],
    study_side: dict[str, _CycleDoses],
    methodology: StudyMethodology,
    reference_method: str,
    cycle_numbers: dict[str, int],
) -> list[dict[str, Any]]:
    """Cycle rows (cycle-1 thresholds, on cycle 1 or unnumbered cycles) or patient rows
    (cumulative) of one methodology; ``study_side`` from :func:`_study_side`."""
    threshold = _threshold(methodology.threshold_name)
    reference_key = (reference_method, methodology.dose_method)
    cycles = sorted(
        cycle
        for cycle in study_side
        if (cycle, *reference_key) in summaries
        and _evaluated_for(threshold, cycle_numbers.get(cycle))
    )
    groups: dict[tuple[str, str, str | None], list[str]] = {}
    for cycle in cycles:
        doses = study_side[cycle]
        by_cycle = threshold.scope == CYCLE_1
        group = (doses.site_id, doses.subject_key, cycle if by_cycle else None)
        groups.setdefault(group, []).append(cycle)
    rows = []
    for (site, subject, cycle_key), members in sorted(groups.items(), key=str):
        study = [study_side[c] for c in members]
        reference = [summaries[(c, *reference_key)] for c in members]
        if threshold.scope == CYCLE_1:
            study_value, study_met = _flag(threshold, study[0].summary)
            reference_value, reference_met = _flag(threshold, reference[0].summary)
        else:
            study_value, study_met = _flag(
                threshold, study[0].summary, cumulative_dose([d.summary for d in study])
            )
            reference_value, reference_met = _flag(
                threshold, reference[0].summary, cumulative_dose([d.summary for d in reference])
            )
        rows.append(
            {
                "level": LEVEL_CYCLE if threshold.scope == CYCLE_1 else LEVEL_PATIENT,
                "site_id": site,
                "subject_key": subject,
                "cycle_key": cycle_key,
                **_threshold_columns(threshold, methodology, reference_method),
                "method_parameters_hash": _hash([d.hashes for d in study + reference]),
                "n_cycles": len(members),
                "study_single_point_cycles": sum(d.single_point for d in study),
                "study_value_gy": _finite(study_value),
                "reference_value_gy": _finite(reference_value),
                "study_met": study_met,
                "reference_met": reference_met,
                "flipped": (
                    None
                    if study_met is None or reference_met is None
                    else study_met != reference_met
                ),
            }
        )
    return rows


def _threshold_columns(
    threshold: Threshold, methodology: StudyMethodology, reference_method: str
) -> dict[str, Any]:
    return {
        "threshold_name": threshold.name,
        "metric": threshold.metric,
        "threshold_scope": threshold.scope,
        "threshold_gy": threshold.threshold_gy,
        "direction": str(threshold.direction),
        "study_kinetics_method": methodology.kinetics_method,
        "study_dose_method": methodology.dose_method,
        "reference_kinetics_method": reference_method,
        "reference_dose_method": methodology.dose_method,
    }


def _cohort_row(rows: list[dict[str, Any]], site_id: str) -> dict[str, Any]:
    """Flip fraction, kappa and the Deming regression over one site's (or all) rows."""
    first = rows[0]
    classified = [r for r in rows if r["flipped"] is not None]
    valued = [
        r for r in rows if r["study_value_gy"] is not None and r["reference_value_gy"] is not None
    ]
    row: dict[str, Any] = {
        "level": LEVEL_COHORT,
        "site_id": site_id,
        "subject_key": None,
        "cycle_key": None,
        **{k: first[k] for k in _COMMON_COLUMNS},
        "method_parameters_hash": hashlib.sha256(
            "|".join(sorted({r["method_parameters_hash"] for r in rows})).encode("utf-8")
        ).hexdigest()[:16],
        "n_cycles": sum(r["n_cycles"] for r in rows),
        "study_single_point_cycles": sum(r["study_single_point_cycles"] for r in rows),
        "n_classified": len(classified),
        "n_missing": len(rows) - len(classified),
        "flip_fraction": (
            float(np.mean([r["flipped"] for r in classified])) if classified else None
        ),
        "cohen_kappa": (
            _finite(
                cohen_kappa(
                    [r["study_met"] for r in classified], [r["reference_met"] for r in classified]
                )
            )
            if classified
            else None
        ),
    }
    if len(valued) >= MIN_PAIRS:
        try:
            fit = deming_regression(
                [r["study_value_gy"] for r in valued], [r["reference_value_gy"] for r in valued]
            )
        except ValueError:
            fit = None
        if fit is not None:
            equivalent = fit.predict(float(first["threshold_gy"]))
            row.update(
                {
                    "regression_method": REGRESSION_METHOD,
                    "n_regression_pairs": fit.n_pairs,
                    "slope": _finite(fit.slope.estimate),
                    "slope_ci_lower": _finite(fit.slope.lower),
                    "slope_ci_upper": _finite(fit.slope.upper),
                    "intercept_gy": _finite(fit.intercept.estimate),
                    "intercept_ci_lower_gy": _finite(fit.intercept.lower),
                    "intercept_ci_upper_gy": _finite(fit.intercept.upper),
                    "reference_equivalent_gy": _finite(equivalent.estimate),
                    "reference_equivalent_ci_lower_gy": _finite(equivalent.lower),
                    "reference_equivalent_ci_upper_gy": _finite(equivalent.upper),
                }
            )
    return row


_COMMON_COLUMNS = (
    "threshold_name",
    "metric",
    "threshold_scope",
    "threshold_gy",
    "direction",
    "study_kinetics_method",
    "study_dose_method",
    "reference_kinetics_method",
    "reference_dose_method",
)


def build_threshold_concordance(
    absorbed_dose: pa.Table,
    provenance: Provenance,
    *,
    patient_summary: pa.Table | None = None,
    kinetics: pa.Table | None = None,
    voi_timepoints: pa.Table | None = None,
    reference_method: str = REFERENCE_METHOD_NAME,
    methodologies: Sequence[StudyMethodology] = STUDY_METHODOLOGIES,
) -> pa.Table:
    """Table ``threshold_concordance`` from the current ``absorbed_dose`` rows (module
    docstring): cycle or patient rows, then cohort rows per site and pooled. Empty when no
    cycle ran both a study's methodology and the reference.

    Args:
        absorbed_dose: current rows (the columns :mod:`.cohort_tables` reads).
        provenance: the rebuild's provenance.
        patient_summary: current rows with ``cycle_key`` and ``cycle_number``; cycle-1
            thresholds skip cycles numbered other than 1. None (or a cycle absent or null
            there): every cycle is evaluated as if it were cycle 1.
        kinetics: current ``kinetics`` rows (``cycle_key``, ``voi_label``,
            ``kinetics_method``, ``teff_h``) and
        voi_timepoints: current ``voi_timepoints`` rows (``cycle_key``, ``voi_label``,
            ``time_point_index``, ``time_h``, ``activity_mbq``): a methodology's later cycles
            (Hebert cycles 3-4) are emulated from them, and ``absorbed_dose`` then needs
            ``tia_mbq_h``. Without both, such cycles are not compared (``n_cycles`` says how
            many were).
        reference_method, methodologies: the two sides compared.
    """
    summaries = _cycle_summaries(absorbed_dose)
    numbers = _cycle_numbers(patient_summary)
    rows: list[dict[str, Any]] = []
    for methodology in methodologies:
        later = methodology.later_cycles
        single_point = (
            _single_point_doses(
                absorbed_dose,
                kinetics,
                voi_timepoints,
                numbers,
                later,
                dose_method=methodology.dose_method,
                reference_method=reference_method,
            )
            if later is not None and kinetics is not None and voi_timepoints is not None
            else {}
        )
        study_side = _study_side(summaries, single_point, methodology, numbers)
        compared = _comparison_rows(summaries, study_side, methodology, reference_method, numbers)
        if not compared:
            continue
        rows.extend(compared)
        for site in sorted({r["site_id"] for r in compared}):
            rows.append(_cohort_row([r for r in compared if r["site_id"] == site], site))
        rows.append(_cohort_row(compared, POOLED_SITE_ID))
    return stamped_table(
        THRESHOLD_CONCORDANCE, ({"cohort": CONSORTIUM_COHORT, **row} for row in rows), provenance
    )
