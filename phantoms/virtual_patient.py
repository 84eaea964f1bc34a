"""A virtual consortium patient: anatomy, multi-cycle kinetics, schedule and set-up shifts.

Everything here is site-independent: the same :class:`VirtualPatient` is imaged at every site
(issue 3, "the same patient at every site"). Drawn from the consortium seed and the patient's
number only, so adding a site or changing a site's camera never changes the patient.

True mean absorbed dose, the reference method: sphere-model self-dose on the true TIA and the
true mass, D = TIA × S(m) with S from :func:`concordose.dose.sphere_svalues.lu177_sphere_table`
(unit-density spheres, log-log interpolated) and m = analytic volume × 1.0 g/mL. No cross-dose,
no activity outside the VOI; null where the mass lies outside the S-value table.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from concordose.dose.sphere_svalues import lu177_sphere_table
from concordose.phantoms.anatomy import (
    BODY_LABEL,
    Anatomy,
    Ellipsoid,
    LesionVolumeSampling,
    VoiType,
    shape_volume_ml,
    virtual_patient_anatomy,
)
from concordose.phantoms.kinetics import (  # issue 20, item 2: the tumour-sink effect
    MULTI_PHASE_PRIORS,
    ORGAN_CYCLE_VARIATION,
    SINK_EFFECT_PER_LITRE,
    SINK_EFFECT_PRIORS,
    TUMOUR_DECLINE_PER_CYCLE_RANGE,
    UptakeMultiExponential,
    draw_multi_phase,
    sink_effect_factor,
)
from concordose.phantoms.lesion_shapes import IrregularLesion
from concordose.phantoms.protocols import ImagingProtocol

INJECTED_ACTIVITY_MBQ = 7400.0
"""Standard [177Lu]Lu-DOTATATE cycle activity (7.4 GBq), the true activity every cycle."""
TISSUE_DENSITY_G_PER_ML = 1.0
"""Unit density: masses are volumes × 1.0 g/mL (the sphere-model convention)."""
_BASE_INJECTION = dt.datetime(2026, 3, 2, 9, 30, 0)


@dataclass(frozen=True)
class VirtualPatient:
    """One site-independent virtual patient.

    Attributes:
        subject: consortium subject code, e.g. ``"P001"``.
        anatomy: body, organs and lesions (patient frame, mm).
        sex, birth_date, weight_kg, height_m: demographics.
        injection_datetimes: per treated cycle (1-based key), local naive time.
        curves: per treated cycle, each region's true curve (t in h after that injection).
        time_points_h: per imaged cycle, the acquisition starts (h after injection).
        shifts_mm: per imaged cycle, the patient's rigid translation in the scanner (x, y, z mm)
            at each time point, relative to the anatomy frame.
        tumour_decline_per_cycle: lesion amplitude factor from one cycle to the next.
        sink_effect_per_litre: the tumour-sink coefficient k applied (0: no effect).
        sink_effect_oar_factor: the factor on the OARs' amplitudes (1 without the effect).
    """

    subject: str
    anatomy: Anatomy
    sex: str
    birth_date: dt.date
    weight_kg: float
    height_m: float
    injection_datetimes: Mapping[int, dt.datetime]
    curves: Mapping[int, Mapping[str, UptakeMultiExponential]]
    time_points_h: Mapping[int, tuple[float, ...]]
    shifts_mm: Mapping[int, tuple[tuple[float, float, float], ...]]
    tumour_decline_per_cycle: float
    sink_effect_per_litre: float = 0.0
    sink_effect_oar_factor: float = 1.0

    @property
    def imaged_cycles(self) -> tuple[int, ...]:
        """Imaged cycle numbers, increasing."""
        return tuple(sorted(self.time_points_h))


def _prior_key(label: str, voi_type: VoiType) -> str:
    if voi_type is VoiType.LESION:
        return "lesion"
    if voi_type is VoiType.BODY:
        return "body"
    return label if label in MULTI_PHASE_PRIORS else label.split("_", 1)[0]


def draw_virtual_patient(
    seed: int,
    number: int,
    *,
    protocol: ImagingProtocol,
    max_cycles: int | None = None,
    n_lesions_range: tuple[int, int] = (3, 10),
    lesion_volume_range_ml: tuple[float, float] = (0.5, 200.0),
    ct_shift_max_mm: float = 0.0,
    lesion_volume_sampling: LesionVolumeSampling = LesionVolumeSampling.LOG_UNIFORM,
    anatomy_realism: bool = False,
    sink_effect: bool = False,
) -> VirtualPatient:
    """Draw patient ``number`` (1-based) of the consortium seeded by ``seed``.

    Args:
        seed: consortium seed.
        number: patient number; patients of one seed are independent draws.
        protocol: imaging schedule; its treated cycles (capped by ``max_cycles``) get kinetics,
            its imaged cycles get time points.
        max_cycles: keep only cycles ≤ this (fast presets image cycle 1 only).
        n_lesions_range, lesion_volume_range_ml: lesion count and volume range (mL).
        ct_shift_max_mm: per-axis bound of the uniform random translation of the patient at each
            time point (0 disables; rotations are not simulated).
        lesion_volume_sampling: how lesion volumes are drawn from the range
            (:class:`phantoms.anatomy.LesionVolumeSampling`).
        anatomy_realism: irregular, heterogeneous lesions (:mod:`phantoms.lesion_shapes`),
            drawn from a fifth child of the patient's seed sequence, so the first four (anatomy,
            kinetics, demographics, shifts) and everything drawn from them are unchanged;
            ``False`` (default): uniform spheres, as before.
        sink_effect: the tumour-sink effect (issue 20, item 2): kidney and spleen amplitudes
            × :func:`phantoms.kinetics.sink_effect_factor` of the patient's total analytic
            lesion volume with :data:`phantoms.kinetics.SINK_EFFECT_PER_LITRE`, after every
            draw (the random draws, and so every other truth, are unchanged); recorded in
            :func:`cycle_truth`. ``False`` (default): no effect, truths as before.
    """
    anatomy_seq, kinetics_seq, demo_seq, shift_seq, shape_seq = np.random.SeedSequence(
        [seed, number]
    ).spawn(5)
    anatomy = virtual_patient_anatomy(
        np.random.default_rng(anatomy_seq),
        n_lesions_range=n_lesions_range,
        lesion_volume_range_ml=lesion_volume_range_ml,
        lesion_volume_sampling=lesion_volume_sampling,
        lesion_shape_rng=np.random.default_rng(shape_seq) if anatomy_realism else None,
    )
    rng = np.random.default_rng(kinetics_seq)
    n_cycles = protocol.n_cycles if max_cycles is None else min(max_cycles, protocol.n_cycles)
    base: dict[str, UptakeMultiExponential] = {}
    for region in (*anatomy.vois, anatomy.body):
        volume_ml = (
            shape_volume_ml(region.shape)
            if isinstance(region.shape, Ellipsoid | IrregularLesion)
            else 0.0
        )
        base[region.label] = draw_multi_phase(
            MULTI_PHASE_PRIORS[_prior_key(region.label, region.voi_type)],
            injected_activity_mbq=INJECTED_ACTIVITY_MBQ,
            volume_ml=volume_ml,
            rng=rng,
        )
    # issue 20, item 2: the tumour-sink effect scales the OARs' uptake by the tumour burden
    sink_per_litre = SINK_EFFECT_PER_LITRE if sink_effect else 0.0
    sink_factor = sink_effect_factor(
        sum(
            shape_volume_ml(lesion.shape)
            for lesion in anatomy.vois
            if lesion.voi_type is VoiType.LESION
        ),
        sink_per_litre,
    )
    for region in anatomy.vois:
        if _prior_key(region.label, region.voi_type) in SINK_EFFECT_PRIORS:
            base[region.label] = base[region.label].scaled(sink_factor)
    decline = float(rng.uniform(*TUMOUR_DECLINE_PER_CYCLE_RANGE))
    curves: dict[int, dict[str, UptakeMultiExponential]] = {}
    for cycle in range(1, n_cycles + 1):
        per_cycle: dict[str, UptakeMultiExponential] = {}
        for region in (*anatomy.vois, anatomy.body):
            if cycle == 1:
                factor = 1.0
            elif region.voi_type is VoiType.LESION:
                factor = decline ** (cycle - 1)
            else:
                factor = float(rng.uniform(1 - ORGAN_CYCLE_VARIATION, 1 + ORGAN_CYCLE_VARIATION))
            per_cycle[region.label] = base[region.label].scaled(factor)
        curves[cycle] = per_cycle

    demo = np.random.default_rng(demo_seq)
    first = _BASE_INJECTION + dt.timedelta(days=int(demo.integers(0, 180)))
    injections = {
        c: first + dt.timedelta(days=protocol.cycle_interval_days * (c - 1))
        for c in range(1, n_cycles + 1)
    }
    imaged = protocol.imaged_cycles(n_cycles)
    shift_rng = np.random.default_rng(shift_seq)
    shifts: dict[int, tuple[tuple[float, float, float], ...]] = {}
    for cycle in imaged:
        n_points = len(protocol.time_points_h_by_cycle[cycle])
        drawn = shift_rng.uniform(-1.0, 1.0, size=(n_points, 3)) * ct_shift_max_mm
        shifts[cycle] = tuple((float(a), float(b), float(c)) for a, b, c in drawn)
    return VirtualPatient(
        subject=f"P{number:03d}",
        anatomy=anatomy,
        sex=str(demo.choice(["M", "F"])),
        birth_date=dt.date(1950, 1, 1) + dt.timedelta(days=int(demo.integers(0, 25 * 365))),
        weight_kg=round(float(demo.uniform(55.0, 95.0)), 1),
        height_m=round(float(demo.uniform(1.55, 1.90)), 2),
        injection_datetimes=injections,
        curves=curves,
        time_points_h={c: protocol.time_points_h_by_cycle[c] for c in imaged},
        shifts_mm=shifts,
        tumour_decline_per_cycle=decline,
        sink_effect_per_litre=sink_per_litre,
        sink_effect_oar_factor=sink_factor,
    )


def true_mean_dose_gy(tia_mbq_h: float, mass_g: float) -> float | None:
    """Reference mean absorbed dose (module docstring): TIA × S(m), Gy; None outside the table."""
    s_mgy_per_mbq_h = float(lu177_sphere_table().s_value_mgy_per_mbq_h(mass_g))
    if math.isnan(s_mgy_per_mbq_h):
        return None
    return tia_mbq_h * s_mgy_per_mbq_h / 1000.0


def region_truth(patient: VirtualPatient) -> list[dict[str, Any]]:
    """Site-independent description of every VOI: label, type, segment, shape, volume, mass.

    ``volume_ml`` is the analytic volume (ellipsoid, or the irregular lesion's surface
    integral); the volume on a site's grid is in its ground truth per cycle."""
    rows = []
    for voi in patient.anatomy.vois:
        shape_json: dict[str, object]
        if isinstance(voi.shape, IrregularLesion):
            shape_json = voi.shape.to_json()
        elif isinstance(voi.shape, Ellipsoid):
            shape_json = {
                "kind": "ellipsoid",
                "centre_mm": list(voi.shape.centre_mm),
                "semi_axes_mm": list(voi.shape.semi_axes_mm),
            }
        else:
            raise TypeError(f"VOI {voi.label!r}: expected a bounded shape, found {voi.shape!r}")
        volume_ml = shape_volume_ml(voi.shape)
        rows.append(
            {
                "label": voi.label,
                "voi_type": str(voi.voi_type),
                "segment_number": voi.value,
                "shape": shape_json,
                "volume_ml": volume_ml,
                "mass_g": volume_ml * TISSUE_DENSITY_G_PER_ML,
            }
        )
    return rows


def cycle_truth(patient: VirtualPatient, cycle: int) -> dict[str, Any]:
    """Truth of one treated cycle: per region kinetics, activity at each time point, TIA, dose."""
    times_h = patient.time_points_h.get(cycle, ())
    masses = {row["label"]: row["mass_g"] for row in region_truth(patient)}
    regions = []
    for label, curve in patient.curves[cycle].items():
        tia = curve.tia_mbq_h
        regions.append(
            {
                "label": label,
                "kinetics": curve.to_json(),
                "activity_mbq": [float(a) for a in curve.activity_mbq(np.asarray(times_h))],
                "tia_mbq_h": tia,
                "mean_dose_gy": None
                if label == BODY_LABEL
                else true_mean_dose_gy(tia, masses[label]),
            }
        )
    truth: dict[str, Any] = {
        "cycle": cycle,
        "injection_datetime": patient.injection_datetimes[cycle].isoformat(),
        "injected_activity_mbq": INJECTED_ACTIVITY_MBQ,
        "imaged": cycle in patient.time_points_h,
        "time_points_h": list(times_h),
        "ct_shift_mm": [list(s) for s in patient.shifts_mm.get(cycle, ())],
        "vois": [r for r in regions if r["label"] != BODY_LABEL],
        "body_remainder": next(r for r in regions if r["label"] == BODY_LABEL),
    }
    if patient.sink_effect_per_litre:  # issue 20, item 2 (absent without the effect)
        truth["sink_effect"] = {
            "coefficient_per_litre": patient.sink_effect_per_litre,
            "total_lesion_volume_ml": sum(
                row["volume_ml"]
                for row in region_truth(patient)
                if row["voi_type"] == str(VoiType.LESION)
            ),
            "oar_factor": patient.sink_effect_oar_factor,
            "oars": list(SINK_EFFECT_PRIORS),
        }
    return truth
