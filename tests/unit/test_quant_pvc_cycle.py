"""Partial-volume correction wired into the cycle's quantification, opt-in.

On a blurred, noiseless consortium patient ("test" preset, one site), with the site's RC curve
from its own phantom scans (``calibrate_site``): each lesion inside the curve's measured volume
range is divided by RC(V) of the record's curve at its segmented volume, lesions outside it are
left as measured with a reason, organs and the default quantification are untouched, and a
record without an RC curve is refused with a reason.

Not asserted, because it does not hold on this simulator: that corrected lesions are closer to
the truth. The NEMA spheres' RC (0.65-0.82 for 6-26 mL) is well below the consortium lesions'
effective recovery (uncorrected errors only -10 to -17 %), so the correction overshoots to
+10 to +32 % (measured on six seeds; see the issue-6 report). Two causes, both measured since:
the NEMA RC holds the phantom background's spill-in, and this preset renders lesions on whole
8.8 mm voxels (recovered far better than a real sphere). The background-aware correction on
continuous lesions is tested in ``test_quant_pvc_consortium.py``.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from concordose.calibration.calibrate import calibrate_site
from concordose.calibration.records import CalibrationRecord
from concordose.errors import ConfigurationError
from concordose.phantoms.consortium import Realism, generate_consortium
from concordose.phantoms.site_profiles import DEFAULT_SITE
from concordose.pipeline.assembly import CycleStudy, assemble_cycles
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.quantify import CycleTimeActivity, quantify_cycle
from concordose.quant.pvc import (
    NEMA_IEC_VOLUME_RANGE_ML,
    STATUS_OK,
    FittedRecoveryCurve,
    recovery_curve_from_record,
)
from concordose.results.cycle_tables import CycleIdentity, build_cycle_tables
from concordose.results.provenance import Provenance


@pytest.fixture(scope="module")
def blurred(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[CycleStudy, dict[str, object], CalibrationRecord]:
    out = tmp_path_factory.mktemp("blurred")
    generate_consortium(
        out,
        preset="test",
        sites=(DEFAULT_SITE,),
        realism=Realism(blur=True, noise=False, ct_shift_max_mm=0.0),
    )
    site_dir = out / "sites" / DEFAULT_SITE.site_id
    phantoms = site_dir / "phantoms"
    calibration = calibrate_site(
        site_id=DEFAULT_SITE.site_id,
        cylinder_sheet=phantoms / "uniform_cylinder" / "calibration_sheet.yaml",
        nema_sheet=phantoms / "nema_iec_body" / "calibration_sheet.yaml",
        record_id="milan-pvc-test",
        valid_from=date(2026, 1, 1),
        ledger=None,
    )
    subject = sorted((site_dir / "patients").iterdir())[0]
    (cycle,) = assemble_cycles(catalogue(subject / "dicom"))
    truth = json.loads((subject / "ground_truth.json").read_text())
    return cycle, truth, calibration.record


@pytest.fixture(scope="module")
def both(
    blurred: tuple[CycleStudy, dict[str, object], CalibrationRecord],
) -> tuple[CycleTimeActivity, CycleTimeActivity]:
    cycle, _, record = blurred
    return (
        quantify_cycle(cycle, record),
        quantify_cycle(cycle, record, partial_volume_correction=True),
    )


def test_pvc_divides_lesions_in_range_by_the_site_curve(
    blurred: tuple[CycleStudy, dict[str, object], CalibrationRecord],
    both: tuple[CycleTimeActivity, CycleTimeActivity],
) -> None:
    _, _, record = blurred
    plain, corrected = both
    assert corrected.recovery_coefficient is not None
    curve = recovery_curve_from_record(record)
    n_corrected = 0
    for index in range(len(corrected.labels)):
        if corrected.voi_types[index] != "lesion":
            continue
        rc = corrected.recovery_coefficient[index]
        volume = corrected.volume_ml[index]
        if not NEMA_IEC_VOLUME_RANGE_ML[0] <= volume <= NEMA_IEC_VOLUME_RANGE_ML[1]:
            assert np.isnan(rc)  # refused, not extrapolated: left as measured, with a reason
            assert "not extrapolated" in corrected.partial_volume_status[index]
            np.testing.assert_array_equal(corrected.activity_mbq[index], plain.activity_mbq[index])
            continue
        n_corrected += 1
        assert corrected.partial_volume_status[index] == STATUS_OK
        assert rc == pytest.approx(
            1.0 / (1.0 + (record.recovery_a_ml / volume) ** record.recovery_b)
        )
        assert rc == pytest.approx(float(curve.at(np.array([volume]))[0]))
        assert 0.0 < rc < 1.0
        np.testing.assert_allclose(corrected.activity_mbq[index], plain.activity_mbq[index] / rc)
    assert n_corrected >= 1


def test_pvc_leaves_organs_and_the_default_untouched(
    both: tuple[CycleTimeActivity, CycleTimeActivity],
) -> None:
    plain, corrected = both
    assert plain.recovery_coefficient is None
    assert plain.partial_volume_status == ()
    assert corrected.recovery_coefficient is not None
    organs = np.array([kind == "organ" for kind in corrected.voi_types])
    np.testing.assert_array_equal(corrected.recovery_coefficient[organs], 1.0)
    np.testing.assert_array_equal(corrected.activity_mbq[organs], plain.activity_mbq[organs])


def test_pvc_without_an_rc_curve_is_refused(
    blurred: tuple[CycleStudy, dict[str, object], CalibrationRecord],
) -> None:
    cycle, _, record = blurred
    bare = record.model_copy(update={"recovery_a_ml": None, "recovery_b": None})
    with pytest.raises(ConfigurationError, match="carries no recovery curve"):
        quantify_cycle(cycle, bare, partial_volume_correction=True)


def test_fitted_curve_refuses_volumes_outside_the_measured_spheres() -> None:
    curve = FittedRecoveryCurve(a_ml=2.0, b=1.5, source="test")
    low, high = NEMA_IEC_VOLUME_RANGE_ML
    rc = curve.at(np.array([low / 2, 2.0, high * 2]))
    assert np.isnan(rc[0])
    assert np.isnan(rc[2])
    assert rc[1] == pytest.approx(0.5)


def test_published_rows_carry_the_rc_applied_and_a_distinct_settings_hash(
    both: tuple[CycleTimeActivity, CycleTimeActivity],
) -> None:
    plain, corrected = both
    identity = CycleIdentity("sub-1", "cyc-1", "milan")
    rows = {
        name: build_cycle_tables(identity, tac, [], [], Provenance(run_id="r1"))[
            "voi_timepoints"
        ].to_pylist()
        for name, tac in (("plain", plain), ("corrected", corrected))
    }
    assert all(row["recovery_coefficient"] is None for row in rows["plain"])
    assert corrected.recovery_coefficient is not None
    for row in rows["corrected"]:
        rc = corrected.recovery_coefficient[corrected.labels.index(row["voi_label"])]
        if np.isfinite(rc):
            assert row["recovery_coefficient"] == pytest.approx(rc)
        else:
            assert row["recovery_coefficient"] is None
    assert (
        rows["plain"][0]["method_parameters_hash"] != rows["corrected"][0]["method_parameters_hash"]
    )
