"""Counts → activity and the whole cycle quantification against the phantom's truth."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from concordose.calibration.registry import SiteRegistry
from concordose.errors import StudyIncompleteError
from concordose.phantoms import GeneratedPatient
from concordose.pipeline.assembly import assemble_cycles
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.quantify import quantify_cycle
from concordose.quant.activity import counts_to_activity_mbq


def test_activity_is_counts_over_cf_times_duration() -> None:
    counts = np.array([9100.0 * 1200.0, 0.0])
    activity = counts_to_activity_mbq(
        counts, calibration_factor_cps_per_mbq=9.1, acquisition_duration_s=1200.0
    )
    np.testing.assert_allclose(activity, [1000.0, 0.0])


def test_missing_duration_is_a_clear_error() -> None:
    with pytest.raises(StudyIncompleteError, match="acquisition duration unknown"):
        counts_to_activity_mbq(
            np.ones(2),
            calibration_factor_cps_per_mbq=9.1,
            acquisition_duration_s=None,
            source="NM x",
        )


def test_cycle_activity_matches_truth_within_poisson_noise(small_patient: GeneratedPatient) -> None:
    cycles = assemble_cycles(catalogue(small_patient.out_dir / "dicom"))
    assert len(cycles) == 1
    registry = SiteRegistry.load(small_patient.sites_path)
    calibration = registry.site("milan").calibration_on(date(2026, 12, 31))
    tac = quantify_cycle(cycles[0], calibration)
    truth = {
        voi["label"]: voi for voi in json.loads(small_patient.ground_truth_path.read_text())["vois"]
    }
    assert set(tac.labels) == set(truth)
    np.testing.assert_allclose(tac.time_h, [4.0, 24.0, 72.0, 168.0])
    for index, label in enumerate(tac.labels):
        true_activity = np.array(truth[label]["activity_mbq"])
        # Poisson: σ(A)/A = 1/sqrt(counts); 5 σ bound.
        counts = true_activity * calibration.calibration_factor_cps_per_mbq * 1200.0
        np.testing.assert_array_less(
            np.abs(tac.activity_mbq[index] - true_activity), 5 * true_activity / np.sqrt(counts)
        )
        assert str(tac.voi_types[index]) == truth[label]["voi_type"]
