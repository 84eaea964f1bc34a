"""Cycle-level tables: acquisitions with QC, method comparison."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from concordose.calibration.registry import SiteRegistry
from concordose.dicom.catalogue import catalogue
from concordose.dicom.seg import VoiType
from concordose.dicom.study import assemble_cycles
from concordose.dose.models import DoseBatch
from concordose.kinetics.models import KineticsBatch
from concordose.quant.cycle import CycleTimeActivity
from concordose.results.cycle_summary import build_acquisition_tables, build_method_comparison
from concordose.results.cycle_tables import CycleIdentity
from concordose.results.provenance import Provenance
from phantoms import GeneratedPatient

IDENTITY = CycleIdentity(subject_key="sub-1", cycle_key="cyc-1", site_id="milan")
TAC = CycleTimeActivity(
    labels=("lesion_1", "kidney_left"),
    voi_types=(VoiType.LESION, VoiType.ORGAN),
    volume_ml=np.array([10.0, 150.0]),
    mass_g=np.array([10.0, 150.0]),
    time_h=np.array([4.0, 24.0, 72.0, 168.0]),
    activity_mbq=np.ones((2, 4)),
    sop_instance_uids=("1.2.3", "1.2.4", "1.2.5", "1.2.6"),
    calibration_record_id="cal-1",
)


def _pair(kinetics: str, doses_gy: list[float]) -> tuple[KineticsBatch, DoseBatch]:
    tia = np.array([1.0, 1.0])
    return (
        KineticsBatch(kinetics, "1", "k-" + kinetics, tia, {}, ("ok", "ok")),
        DoseBatch("sphere", "1", "d", np.array(doses_gy), ("ok", "ok")),
    )


def test_each_method_is_compared_with_the_reference() -> None:
    doses = [_pair("tri_exponential", [40.0, 4.0]), _pair("stp_hanscheid", [44.0, np.nan])]
    rows = build_method_comparison(IDENTITY, TAC, doses, Provenance(run_id="r")).to_pylist()
    assert [(r["voi_label"], r["kinetics_method"]) for r in rows] == [
        ("lesion_1", "stp_hanscheid"),
        ("kidney_left", "stp_hanscheid"),
    ]
    assert rows[0]["relative_difference"] == pytest.approx(0.1)
    assert rows[1]["dose_gy"] is None
    assert rows[1]["relative_difference"] is None


def test_no_reference_no_comparison() -> None:
    doses = [_pair("mono_exponential", [40.0, 4.0])]
    assert build_method_comparison(IDENTITY, TAC, doses, Provenance(run_id="r")).num_rows == 0


def test_acquisition_without_lu177_photopeak_window_is_flagged(
    small_patient: GeneratedPatient,
) -> None:
    (cycle,) = assemble_cycles(catalogue(small_patient.out_dir / "dicom"))
    calibration = (
        SiteRegistry.load(small_patient.sites_path)
        .site("milan")
        .calibration_on(cycle.injection_datetime.date())
    )
    first = cycle.time_points[0]
    wrong_window = replace(first.acquisition, energy_windows_kev=((100.0, 125.0),))
    cycle = replace(
        cycle, time_points=(replace(first, acquisition=wrong_window), *cycle.time_points[1:])
    )
    tables = build_acquisition_tables(IDENTITY, cycle, calibration, Provenance(run_id="r"))

    acquisitions = tables["acquisitions"].to_pylist()
    assert [row["qc_status"] for row in acquisitions] == ["warn"] + ["pass"] * (
        len(acquisitions) - 1
    )
    assert acquisitions[1]["energy_window_kev"] == pytest.approx(208.0, abs=2.0)
    (finding,) = tables["qc_findings"].to_pylist()
    assert finding["check_name"] == "photopeak_window"
    assert finding["time_point_index"] == 0
    assert "208.4 keV" in finding["message"]
