"""Per-cycle rows of a digital cohort with (or without) the tumour-sink effect, from many
virtual patients' truth plus measurement noise (issue 20, item 2): what the cohort rebuild
reads, without running dozens of patients through the platform. Used by the sink-effect,
dashboard and cycle-report tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa

from concordose.consortium.sink_effect import build_sink_effect
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.phantoms.protocols import protocol
from concordose.phantoms.virtual_patient import (
    INJECTED_ACTIVITY_MBQ,
    VirtualPatient,
    cycle_truth,
    draw_virtual_patient,
    region_truth,
)
from concordose.results.provenance import Provenance

SEED = 20261206
SITES = ("site_a", "site_b", "site_c")
PATIENTS_PER_SITE = 40
SITE_BIAS = {"site_a": -0.04, "site_b": 0.0, "site_c": 0.05}  # residual calibration offsets
ORGAN_TIA_CV = 0.08  # reference-fit TIA noise of an organ (order of the platform's)
LESION_TIA_CV = 0.15
LESION_VOLUME_CV = 0.10
LDM_GY_PER_MBQ_H_PER_G = 0.0240  # any constant energy per decay: dose per TIA = this / mass
PROVENANCE = Provenance(run_id="sink-test", created_at=dt.datetime(2026, 12, 6, tzinfo=dt.UTC))


def sink_patients(
    *, sink_effect: bool, sites: tuple[str, ...] = SITES, per_site: int = PATIENTS_PER_SITE
) -> list[tuple[str, VirtualPatient]]:
    """``per_site`` distinct virtual patients per site (cycle 1), with the effect or not."""
    schedule = protocol("spectacular")
    return [
        (
            site,
            draw_virtual_patient(
                SEED, 1 + i * per_site + n, protocol=schedule, max_cycles=1,
                sink_effect=sink_effect,
            ),
        )
        for i, site in enumerate(sites)
        for n in range(per_site)
    ]  # fmt: skip


def sink_tables(patients: list[tuple[str, VirtualPatient]]) -> dict[str, pa.Table]:
    """The per-cycle rows the cohort builder reads, from truth plus measurement noise."""
    rng = np.random.default_rng(SEED)
    summary: list[dict[str, Any]] = []
    kinetics: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    doses: list[dict[str, Any]] = []
    for site, patient in patients:
        cycle_key = f"{site}-{patient.subject}-c1"
        subject_key = f"{site}-{patient.subject}"
        truth = cycle_truth(patient, 1)
        volumes = {
            row["label"]: (row["voi_type"], row["volume_ml"]) for row in region_truth(patient)
        }
        summary.append(
            {
                "site_id": site,
                "subject_key": subject_key,
                "cycle_key": cycle_key,
                "cycle_number": 1,
                "injected_activity_mbq": INJECTED_ACTIVITY_MBQ * (1 + rng.normal(0, 0.02)),
                "injected_activity_traceable_mbq": None,
            }
        )
        for voi in truth["vois"]:
            voi_type, volume_ml = volumes[voi["label"]]
            lesion = voi_type == "lesion"
            cv = LESION_TIA_CV if lesion else ORGAN_TIA_CV
            tia = voi["tia_mbq_h"] * (1 + SITE_BIAS.get(site, 0.0)) * (1 + rng.normal(0, cv))
            measured_ml = volume_ml * (1 + rng.normal(0, LESION_VOLUME_CV)) if lesion else volume_ml
            kinetics.append(
                {
                    "cycle_key": cycle_key,
                    "voi_label": voi["label"],
                    "voi_type": voi_type,
                    "kinetics_method": REFERENCE_METHOD_NAME,
                    "tia_mbq_h": tia,
                    "method_parameters_hash": "h1",
                }
            )
            points.append(
                {
                    "cycle_key": cycle_key,
                    "voi_label": voi["label"],
                    "time_point_index": 0,
                    "volume_ml": measured_ml,
                }
            )
            doses.append(
                {
                    "cycle_key": cycle_key,
                    "voi_label": voi["label"],
                    "voi_type": voi_type,
                    "kinetics_method": REFERENCE_METHOD_NAME,
                    "dose_method": "ldm",
                    "mean_dose_gy": tia * LDM_GY_PER_MBQ_H_PER_G / volume_ml,
                    "tia_mbq_h": tia,
                    "mass_g": volume_ml,
                }
            )
    return {
        "patient_summary": pa.Table.from_pylist(summary),
        "kinetics": pa.Table.from_pylist(kinetics),
        "voi_timepoints": pa.Table.from_pylist(points),
        "absorbed_dose": pa.Table.from_pylist(doses),
    }


def sink_effect_table(tables: dict[str, pa.Table]) -> pa.Table:
    """The ``sink_effect`` table the cohort rebuild would publish from ``tables``."""
    return build_sink_effect(
        tables["kinetics"],
        tables["voi_timepoints"],
        tables["patient_summary"],
        PROVENANCE,
        absorbed_dose=tables["absorbed_dose"],
    )
