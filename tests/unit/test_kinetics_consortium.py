"""Every kinetics method on digital patients with six time points, against the phantom's truth.

Stated tolerance: the reference (``spectacular_6tp``) TIA within 2 % of the true TIA for every
organ and every lesion ≥ 4 mL. Why 2 %: VOI activities carry < 0.5 % Poisson noise and the
truth is mono-exponential with instantaneous uptake, which the reference's selection
(the mono-exponential first, a richer model only on a significant F-test) fits without model
bias. Simplified methods are checked
where theory makes them exact (mono-exponential truth: the 2-, 3- and 4-point fits, emulated from
the six acquired points by ``kinetics.timepoints``) and the Hänscheid approximation within its
published −10 … +6.2 % band (x = t/T_eff between 0.75 and 2.5 here).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from concordose.calibration.registry import SiteRegistry
from concordose.kinetics.comparison import bland_altman, ratios_to_reference
from concordose.kinetics.models import KineticsBatch
from concordose.kinetics.registry import KINETICS_METHODS
from concordose.phantoms import generate_patient
from concordose.pipeline.assembly import assemble_cycles
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.quantify import quantify_cycle

SIX_POINTS_H = (4.0, 24.0, 48.0, 96.0, 168.0, 240.0)
REFERENCE_TOLERANCE = 0.02


def _run(tmp: Path, seed: int) -> tuple[dict[str, KineticsBatch], np.ndarray, np.ndarray]:
    patient = generate_patient(tmp, seed=seed, preset="test", time_points_h=SIX_POINTS_H)
    cycle = assemble_cycles(catalogue(patient.out_dir / "dicom"))[0]
    registry = SiteRegistry.load(patient.sites_path)
    tac = quantify_cycle(cycle, registry.site("milan").calibration_on(date(2026, 12, 31)))
    truth = {v["label"]: v for v in json.loads(patient.ground_truth_path.read_text())["vois"]}
    true_tia = np.array([truth[label]["tia_mbq_h"] for label in tac.labels])
    voi_types = [str(kind) for kind in tac.voi_types]
    batches = {
        name: KINETICS_METHODS.get(name).fit(tac.time_h, tac.activity_mbq, voi_types=voi_types)
        for name in KINETICS_METHODS.names()
    }
    return batches, true_tia, tac.volume_ml


@pytest.mark.parametrize("seed", [11, 13])
def test_reference_and_simplified_methods_against_truth(tmp_path: Path, seed: int) -> None:
    batches, true_tia, volume_ml = _run(tmp_path, seed)
    eligible = volume_ml >= 4.0 - 0.05  # the smallest lesion is 4 mL nominal
    reference = batches["spectacular_6tp"]
    assert all(status == "ok" for status in reference.status)
    np.testing.assert_allclose(
        reference.tia_mbq_h[eligible], true_tia[eligible], rtol=REFERENCE_TOLERANCE
    )
    for exact in ("mono_exponential", "lutadose_2tp", "lumen_3tp", "hebert_4tp", "aicc_best_fit"):
        np.testing.assert_allclose(batches[exact].tia_mbq_h, true_tia, rtol=0.01)
    hanscheid = batches["hanscheid_stp"].tia_mbq_h / true_tia - 1
    assert np.all((hanscheid > -0.10) & (hanscheid < 0.0615 + 0.01))  # + noise
    # Hebert's 72 h and 192 h are not in this schedule: emulated by 96 h and 168 h (issue 14;
    # before, Hebert was not applicable here), the distances recorded.
    assert batches["hebert_4tp"].time_points_used_h == (4.0, 24.0, 96.0, 168.0)
    assert batches["hebert_4tp"].time_point_offsets_h == (0.0, 0.0, 24.0, -24.0)
    ratios = {r.method: r.ratio for r in ratios_to_reference(list(batches.values()))}
    assert set(ratios) == set(KINETICS_METHODS.names()) - {"spectacular_6tp"}
    agreement = bland_altman(
        batches["lutadose_2tp"].tia_mbq_h, reference.tia_mbq_h, method="lutadose_2tp"
    )
    assert agreement.n_pairs == len(true_tia)
    assert abs(agreement.bias_percent) < 2.0
