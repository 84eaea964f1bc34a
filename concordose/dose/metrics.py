"""Dose metrics: per VOI from a dose map (mean, median, extremes, D2/D50/D98, compact DVH, mass),
and per patient and cycle from VOI mean doses (GTD, minimal and mean lesion dose, organs at risk,
cumulative over cycles).

Conventions:

* voxel statistics are mass-weighted (ICRU mean absorbed dose = energy / mass; Gustafsson et al.
  2023, Med Phys 50:6600); with no density map every voxel weighs the same;
* ``D_x`` is the minimum dose received by the hottest x % of the VOI's mass (D98 ≈ near-minimum,
  D2 ≈ near-maximum); ``median_dose_gy`` is the unweighted voxel median;
* the cumulative DVH is stored compactly as ``DVH_POINTS`` dose levels from 0 to the VOI maximum
  with the mass fraction receiving at least each level (float32).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import numpy.typing as npt

from concordose.dicom.seg import VoiType
from concordose.dose.organ_svalues import organ_key
from concordose.errors import ConcordoseError

DVH_POINTS = 64
# Labels accepted as a red-marrow proxy VOI (e.g. L2–L4 vertebral spongiosa): none of the packaged
# tables covers marrow, so this OAR is reported only when the segmentation has such a VOI.
BONE_MARROW_LABELS = frozenset({"bone_marrow", "red_marrow", "marrow", "l2_l4", "vertebrae_l2_l4"})
# Salivary glands (issue 20, tumour-sink analytics; an OAR of PSMA ligands): any VOI whose
# normalised label starts with one of these (parotid_left, submandibular_r, salivary_glands …).
SALIVARY_GLAND_PREFIXES = ("parotid", "submandibular", "sublingual", "salivary")
OAR_NAMES = ("kidneys", "bone_marrow", "spleen", "liver", "salivary_glands")


@dataclass(frozen=True)
class VoiDoseMetrics:
    """Dose statistics of one VOI (Gy; mass in g)."""

    label: str
    mass_g: float
    mean_dose_gy: float
    median_dose_gy: float
    min_dose_gy: float
    max_dose_gy: float
    d2_gy: float
    d50_gy: float
    d98_gy: float
    dvh_dose_gy: npt.NDArray[np.float32]
    dvh_mass_fraction: npt.NDArray[np.float32]


def voi_dose_metrics(
    dose_gy: npt.NDArray[np.float64],
    label_map: npt.NDArray[np.integer],
    labels: Mapping[int, str],
    voxel_volume_ml: float,
    density_g_per_ml: npt.NDArray[np.float64] | None = None,
) -> list[VoiDoseMetrics]:
    """Metrics of every VOI in ``labels`` (label-map value → VOI label).

    Raises:
        ConcordoseError: shapes differ, or a requested VOI has no voxel in the label map.
    """
    if dose_gy.shape != label_map.shape:
        raise ConcordoseError(
            f"dose map has shape {dose_gy.shape} but the label map {label_map.shape}"
        )
    values = np.array(sorted(labels), dtype=np.int64)
    inside = np.isin(label_map, values)
    dose = dose_gy[inside]
    voi = label_map[inside].astype(np.int64)
    mass = voxel_volume_ml * (
        np.ones_like(dose) if density_g_per_ml is None else density_g_per_ml[inside]
    )
    order = np.lexsort((dose, voi))  # by VOI, then dose ascending
    dose, voi, mass = dose[order], voi[order], mass[order]
    starts = np.searchsorted(voi, values, side="left")
    ends = np.searchsorted(voi, values, side="right")
    results = []
    for value, start, end in zip(values, starts, ends, strict=True):
        if end == start:
            raise ConcordoseError(f"VOI {labels[int(value)]!r} (label {value}) has no voxel")
        d, m = dose[start:end], mass[start:end]
        cumulative = np.concatenate([[0.0], np.cumsum(m)])
        total = cumulative[-1]
        fraction_at_least = (total - cumulative[:-1]) / total  # decreasing along d ascending

        def d_x(
            percent: float,
            d: npt.NDArray[np.float64] = d,
            f: npt.NDArray[np.float64] = fraction_at_least,
        ) -> float:
            index = np.searchsorted(-f, -percent / 100.0, side="right") - 1
            return float(d[max(int(index), 0)])

        levels = np.linspace(0.0, float(d[-1]), DVH_POINTS)
        below = cumulative[np.searchsorted(d, levels, side="left")]
        results.append(
            VoiDoseMetrics(
                label=labels[int(value)],
                mass_g=float(total),
                mean_dose_gy=float(np.dot(d, m) / total),
                median_dose_gy=float(np.median(d)),
                min_dose_gy=float(d[0]),
                max_dose_gy=float(d[-1]),
                d2_gy=d_x(2.0),
                d50_gy=d_x(50.0),
                d98_gy=d_x(98.0),
                dvh_dose_gy=levels.astype(np.float32),
                dvh_mass_fraction=((total - below) / total).astype(np.float32),
            )
        )
    return results


@dataclass(frozen=True)
class CycleDoseSummary:
    """Patient-level doses of one cycle (Gy), from VOI mean doses by one method.

    Attributes:
        gtd_gy: global mean tumour dose (LUTADOSE GTD): mass-weighted mean over all lesions,
            i.e. total lesion energy / total lesion mass.
        min_lesion_dose_gy: lowest lesion mean dose (LUMEN "minimal lesion dose").
        mean_lesion_dose_gy: arithmetic mean of lesion mean doses (Hebert "mean per lesion").
        lesion_dose_gy: each lesion's mean dose.
        oar_dose_gy: kidneys (mass-weighted over left and right), bone marrow (proxy VOI if any),
            spleen, liver, salivary glands (mass-weighted over every gland VOI); NaN where the
            study has no such VOI.
    """

    gtd_gy: float
    min_lesion_dose_gy: float
    mean_lesion_dose_gy: float
    lesion_dose_gy: dict[str, float]
    lesion_mass_g: dict[str, float]
    oar_dose_gy: dict[str, float] = field(default_factory=dict)


@cache
def oar_name(label: str) -> str | None:
    """The OAR (one of :data:`OAR_NAMES`) a VOI label counts towards, or None (cached: a
    cohort summarises the same labels many thousands of times)."""
    key = organ_key(label)
    if key in ("kidney_left", "kidney_right"):
        return "kidneys"
    if key in ("spleen", "liver"):
        return key
    normalised = label.strip().lower().replace("-", "_").replace(" ", "_")
    if normalised in BONE_MARROW_LABELS:
        return "bone_marrow"
    if normalised.startswith(SALIVARY_GLAND_PREFIXES):
        return "salivary_glands"
    return None


def cycle_dose_summary(
    labels: Sequence[str],
    voi_types: Sequence[VoiType],
    mean_dose_gy: npt.ArrayLike,
    mass_g: npt.ArrayLike,
) -> CycleDoseSummary:
    """Summarise one cycle. Lesions with a NaN dose are left out of GTD/min/mean, which are NaN
    when no lesion has a dose."""
    dose = np.asarray(mean_dose_gy, dtype=np.float64)
    mass = np.asarray(mass_g, dtype=np.float64)
    lesion = np.array([t == VoiType.LESION for t in voi_types], dtype=bool) & np.isfinite(dose)
    if lesion.any():
        gtd = float(np.dot(dose[lesion], mass[lesion]) / mass[lesion].sum())
        minimum = float(dose[lesion].min())
        mean = float(dose[lesion].mean())
    else:
        gtd = minimum = mean = float("nan")
    oar: dict[str, float] = {}
    for name in OAR_NAMES:
        members = np.array([oar_name(label) == name for label in labels], dtype=bool)
        members &= np.isfinite(dose)
        oar[name] = (
            float(np.dot(dose[members], mass[members]) / mass[members].sum())
            if members.any()
            else float("nan")
        )
    return CycleDoseSummary(
        gtd_gy=gtd,
        min_lesion_dose_gy=minimum,
        mean_lesion_dose_gy=mean,
        lesion_dose_gy={
            label: float(d) for label, d, ok in zip(labels, dose, lesion, strict=True) if ok
        },
        lesion_mass_g={
            label: float(m) for label, m, ok in zip(labels, mass, lesion, strict=True) if ok
        },
        oar_dose_gy=oar,
    )


@dataclass(frozen=True)
class CumulativeDose:
    """Doses summed over a patient's cycles (Gy).

    Lesions are matched by label across cycles; a lesion missing from a cycle makes its
    cumulative dose NaN (unknown), not a smaller number.
    """

    n_cycles: int
    lesion_dose_gy: dict[str, float]
    min_lesion_dose_gy: float
    mean_lesion_dose_gy: float
    oar_dose_gy: dict[str, float]


def cumulative_dose(cycles: Sequence[CycleDoseSummary]) -> CumulativeDose:
    """Sum lesion and OAR doses over ``cycles`` (Hebert: minimal and mean total lesion dose)."""
    if not cycles:
        raise ConcordoseError("cumulative dose needs at least one cycle; found none")
    lesions = sorted({label for cycle in cycles for label in cycle.lesion_dose_gy})
    per_lesion = {
        label: float(sum(cycle.lesion_dose_gy.get(label, float("nan")) for cycle in cycles))
        for label in lesions
    }
    known = np.array([v for v in per_lesion.values() if np.isfinite(v)])
    return CumulativeDose(
        n_cycles=len(cycles),
        lesion_dose_gy=per_lesion,
        min_lesion_dose_gy=float(known.min()) if known.size else float("nan"),
        mean_lesion_dose_gy=float(known.mean()) if known.size else float("nan"),
        oar_dose_gy={
            name: float(sum(cycle.oar_dose_gy.get(name, float("nan")) for cycle in cycles))
            for name in OAR_NAMES
        },
    )
