"""Cycle-level tables: acquisitions with QC, method comparison."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from concordose.calibration.gate import CycleVerdict, gate_cycle
from concordose.calibration.registry import SiteRegistry
from concordose.dicom.seg import VoiType
from concordose.dose.models import DoseBatch
from concordose.errors import StudyIncompleteError
from concordose.kinetics.models import KineticsBatch
from concordose.phantoms import GeneratedPatient
from concordose.pipeline.assembly import CycleStudy, assemble_cycles
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.quantify import CycleTimeActivity
from concordose.quant.delineation import (
    CENTRAL_PEAK_ONLY,
    DELINEATED,
    SEVERAL_FIXED_POINTS,
    UNDETECTABLE,
    LesionDelineation,
)
from concordose.quant.organ_outline import FAINT, FITTED, OrganOutline
from concordose.results.cycle_summary import (
    PARTIAL_VOLUME_CHECK,
    build_acquisition_tables,
    build_method_comparison,
    build_qc_findings,
    with_partial_volume_findings,
)
from concordose.results.cycle_tables import CycleIdentity
from concordose.results.provenance import Provenance
from concordose.results.validation import validate_tables
from concordose.schemas.tables import QC_FINDINGS

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
    doses = [_pair("spectacular_6tp", [40.0, 4.0]), _pair("stp_hanscheid", [44.0, np.nan])]
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


def _cycle_with_first(small_patient: GeneratedPatient, **changes: Any) -> CycleStudy:
    (cycle,) = assemble_cycles(catalogue(small_patient.out_dir / "dicom"))
    first = cycle.time_points[0]
    changed = replace(first.acquisition, **changes)
    return replace(cycle, time_points=(replace(first, acquisition=changed), *cycle.time_points[1:]))


def _verdict(cycle: CycleStudy, small_patient: GeneratedPatient) -> CycleVerdict:
    registry = SiteRegistry.load(small_patient.sites_path)
    return gate_cycle([(p.acquisition, None) for p in cycle.time_points], registry, site_id="milan")


def test_warnings_pass_and_set_the_acquisition_qc_status(small_patient: GeneratedPatient) -> None:
    cycle = _cycle_with_first(small_patient, patient_weight_kg=None)
    verdict = _verdict(cycle, small_patient)
    assert not verdict.held
    tables = build_acquisition_tables(IDENTITY, cycle, verdict, Provenance(run_id="r"))
    acquisitions = tables["acquisitions"].to_pylist()
    # The "test" preset's 8.84 mm voxels are outside milan's 4.3–4.5 mm: a warning everywhere.
    assert [row["qc_status"] for row in acquisitions] == ["warn"] * len(acquisitions)
    assert acquisitions[0]["n_qc_findings"] == acquisitions[1]["n_qc_findings"] + 1
    assert acquisitions[1]["energy_window_kev"] == pytest.approx(208.0, abs=2.0)
    findings = tables["qc_findings"].to_pylist()
    assert {(f["check_name"], f["severity"]) for f in findings if f["time_point_index"] == 0} == {
        ("patient_weight", "warning"),
        ("voxel_geometry", "warning"),
        ("time_zone", "info"),  # provenance: no time zone known, local clock used
    }


def test_a_held_cycle_publishes_its_findings_only(small_patient: GeneratedPatient) -> None:
    cycle = _cycle_with_first(small_patient, energy_windows_kev=((100.0, 125.0),))
    verdict = _verdict(cycle, small_patient)
    assert verdict.held
    with pytest.raises(StudyIncompleteError, match="held cycle"):
        build_acquisition_tables(IDENTITY, cycle, verdict, Provenance(run_id="r"))
    findings = build_qc_findings(IDENTITY, cycle, verdict, Provenance(run_id="r")).to_pylist()
    errors = [f for f in findings if f["severity"] == "error"]
    assert [(f["check_name"], f["time_point_index"]) for f in errors] == [("energy_window", 0)]
    assert "208.37 keV photopeak" in errors[0]["message"]
    assert {f["calibration_record_id"] for f in findings} == {"none"}


def test_acquisitions_carry_the_extracted_metadata_and_gx_guards_them(
    small_patient: GeneratedPatient,
) -> None:
    (cycle,) = assemble_cycles(catalogue(small_patient.out_dir / "dicom"))
    verdict = _verdict(cycle, small_patient)
    table = build_acquisition_tables(IDENTITY, cycle, verdict, Provenance(run_id="r"))[
        "acquisitions"
    ]
    row = table.to_pylist()[0]
    assert row["injected_activity_mbq"] == pytest.approx(7400.0)
    assert (row["camera_model"], row["collimator"]) == ("Symbia Intevo", "MEGP")
    assert row["voxel_mm"] == pytest.approx(8.84)
    assert row["patient_weight_kg"] is not None
    assert validate_tables({"acquisitions": table})["acquisitions"].success
    in_bq = table.set_column(
        table.schema.get_field_index("injected_activity_mbq"),
        table.schema.field("injected_activity_mbq"),
        pa.array([7.4e9] * table.num_rows),
    )
    failed = validate_tables({"acquisitions": in_bq})["acquisitions"]
    assert not failed.success


def test_a_per_time_point_extent_fallback_is_a_warning_naming_the_voi() -> None:
    """gtm_platform_voi: an organ corrected at every time point, by the GTM's T·V where its
    extent activity was not > 0, is published as one warning naming it and the time points
    (the other VOIs, corrected without a fallback, give none)."""
    tac = replace(
        TAC,
        partial_volume_model="gtm_platform_voi",
        partial_volume_status=("ok", "ok"),
        partial_volume_fallback=("", "time point 3: extent activity not > 0, GTM T·V used"),
    )
    findings = with_partial_volume_findings(
        QC_FINDINGS.schema.empty_table(), IDENTITY, tac, Provenance(run_id="r")
    ).to_pylist()
    assert len(findings) == 1
    assert findings[0]["check_name"] == PARTIAL_VOLUME_CHECK
    assert findings[0]["severity"] == "warning"
    assert "[kidney_left]" in findings[0]["message"]
    assert findings[0]["voi_labels"] == ["kidney_left"]
    assert "time point 3" in findings[0]["message"]


def test_where_the_platform_used_the_sites_drawing_is_a_warning_naming_the_vois() -> None:
    """gtm_platform_voi: a lesion the platform could not re-delineate is measured on the site's
    VOI, and an organ whose outline it could not fit keeps the site's volume as its dose mass;
    each is published as a warning naming the VOIs and the reason (a re-delineated lesion and a
    fitted organ give none)."""
    labels = ("lesion_1", "lesion_2", "kidney_left", "bone_marrow")
    kinds = (VoiType.LESION, VoiType.LESION, VoiType.ORGAN, VoiType.ORGAN)

    def delineation(status: str) -> LesionDelineation:
        return LesionDelineation(
            np.zeros((2, 2, 2), dtype=bool), status, 0.5, 1.0, 0.1, 0.01, 9.5, 9.5
        )

    def outline(status: str) -> OrganOutline:
        return OrganOutline(status, 0.0, 75.0, 75.0, 0.05, 0.04)

    tac = replace(
        TAC,
        labels=labels,
        voi_types=kinds,
        volume_ml=np.array([9.5, 20.0, 150.0, 75.0]),
        mass_g=np.array([9.5, 20.0, 150.0, 75.0]),
        activity_mbq=np.ones((4, 4)),
        partial_volume_model="gtm_platform_voi",
        partial_volume_status=("ok",) * 4,
        delineations=(delineation(UNDETECTABLE), delineation(DELINEATED), None, None),
        organ_outlines=(None, None, outline(FITTED), outline(FAINT)),
    )
    findings = with_partial_volume_findings(
        QC_FINDINGS.schema.empty_table(), IDENTITY, tac, Provenance(run_id="r")
    ).to_pylist()
    messages = [f["message"] for f in findings]
    assert len(messages) == 2, messages
    assert {f["severity"] for f in findings} == {"warning"}
    assert messages[0].startswith("1 lesion VOI(s) [lesion_1]: gtm_platform_voi not re-delineated")
    assert UNDETECTABLE in messages[0]
    assert messages[1].startswith("1 organ VOI(s) [bone_marrow]: gtm_platform_voi outline not")
    assert FAINT in messages[1]
    assert [f["finding_index"] for f in findings] == [0, 1]


@pytest.mark.parametrize(
    ("flagged", "message"),
    [
        ({"central_peak_only": True}, CENTRAL_PEAK_ONLY),
        ({"other_fixed_point_volumes_ml": (1.1,)}, SEVERAL_FIXED_POINTS),
    ],
)
def test_a_lesion_drawn_with_an_ambiguous_region_is_a_warning_naming_it(
    flagged: dict[str, Any], message: str
) -> None:
    """gtm_platform_voi: a lesion the rule found only the central peak of (published at that
    region with the site's VOI as its SD's other end), or whose threshold has other stable
    fixed points at its scale (published at the lowest, the others as its SD's ends), gives a
    warning naming it; a lesion drawn at its scale with one fixed point gives none."""
    found = LesionDelineation(
        np.zeros((2, 2, 2), dtype=bool), DELINEATED, 0.75, 1.0, 0.1, 0.01, 9.5, 2.5
    )
    tac = replace(
        TAC,
        labels=("lesion_1", "lesion_2"),
        voi_types=(VoiType.LESION, VoiType.LESION),
        volume_ml=np.array([2.5, 20.0]),
        mass_g=np.array([2.5, 20.0]),
        activity_mbq=np.ones((2, 4)),
        partial_volume_model="gtm_platform_voi",
        partial_volume_status=("ok",) * 2,
        delineations=(replace(found, **flagged), found),
        organ_outlines=(None, None),
    )
    findings = with_partial_volume_findings(
        QC_FINDINGS.schema.empty_table(), IDENTITY, tac, Provenance(run_id="r")
    ).to_pylist()
    assert [f["message"] for f in findings] == [
        f"1 lesion VOI(s) [lesion_1]: gtm_platform_voi {message}"
    ]
    assert findings[0]["voi_labels"] == ["lesion_1"]
    assert findings[0]["severity"] == "warning"
