"""Organ and lesion doses from the pipeline's TIA on the digital consortium, against its truth.

One consortium patient at the default site (preset "test": 8.84 mm SPECT voxels; blur with the
site's resolution, Poisson noise and a random shift of up to 5 mm per axis at each of the six
SPECTacular time points, i.e. the default realism) goes through the VOI pipeline: registration of
each time point onto the VOIs' CT and VOI activities (``quant.cycle.quantify_cycle``), TIA by
``spectacular_6tp`` and dose by ``sphere``, ``organ_s_am`` and ``organ_s_af`` with the
pipeline's masses. The truth (``ground_truth.json`` format 2, ``mean_dose_gy``) is the sphere
model on the true TIA and the true mass.

Stated tolerances (dose / true dose; measured 2026-11-24 with this seed in brackets):

* organs (kidneys, liver, spleen), every method: within ±12 % [0.905–1.071]; the spread is
  mostly the TIA (partial-volume spill-out of the kidneys and spleen, spill-in into the liver;
  no recovery correction in this path) — without blur the same run gives 0.95–1.07;
* bone marrow (sphere): within ±15 % [0.890];
* lesions (sphere): 0.70–1.00 [0.814–0.853]: partial-volume loss of the 24–47 mL lesions on
  8.84 mm voxels, an underestimate by construction (0.88–0.93 without blur);
* organ S-values are not defined for lesions or bone marrow (NaN), and agree with the sphere
  model on the organs within 2 % (both count photon self-absorption).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from concordose.calibration.registry import SiteRegistry
from concordose.dose.models import DoseInput
from concordose.dose.registry import DOSE_METHODS
from concordose.kinetics.registry import KINETICS_METHODS
from concordose.phantoms.consortium import Realism, generate_consortium
from concordose.phantoms.site_profiles import DEFAULT_SITE
from concordose.pipeline.assembly import assemble_cycles
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.quantify import quantify_cycle

ORGANS = ("kidney_left", "kidney_right", "liver", "spleen")
ORGAN_TOLERANCE = 0.12
MARROW_TOLERANCE = 0.15
LESION_RANGE = (0.70, 1.00)


def test_pipeline_doses_are_within_stated_tolerance_of_consortium_truth(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    out = tmp_path_factory.mktemp("consortium_dose")
    generate_consortium(
        out, preset="test", sites=(DEFAULT_SITE,), realism=Realism(), phantoms=False
    )
    subject = sorted((out / "sites" / DEFAULT_SITE.site_id / "patients").iterdir())[0]
    truth = json.loads((subject / "ground_truth.json").read_text())
    cycle = assemble_cycles(catalogue(subject / "dicom"))[0]
    calibration = SiteRegistry.load(out / "sites.yaml").site(DEFAULT_SITE.site_id).calibrations[0]
    quantified = quantify_cycle(cycle, calibration)
    kinetics = KINETICS_METHODS.get("spectacular_6tp").fit(
        quantified.time_h,
        quantified.activity_mbq,
        voi_types=[t.value for t in quantified.voi_types],
    )
    dose_input = DoseInput(
        labels=quantified.labels, tia_mbq_h=kinetics.tia_mbq_h, mass_g=quantified.mass_g
    )
    true_dose = {v["label"]: v["mean_dose_gy"] for v in truth["cycles"][0]["vois"]}
    expected = np.array([true_dose[label] for label in quantified.labels], dtype=float)
    labels = np.array(quantified.labels)
    organs = np.isin(labels, ORGANS)
    marrow = labels == "bone_marrow"
    lesions = np.char.startswith(labels, "lesion")
    assert organs.sum() == 4
    assert marrow.sum() == 1
    assert lesions.sum() >= 1

    doses = {
        name: DOSE_METHODS.get(name).compute(dose_input).mean_dose_gy
        for name in ("sphere", "organ_s_am", "organ_s_af")
    }
    for name, dose in doses.items():
        ratio = dose[organs] / expected[organs]
        assert np.all(np.abs(ratio - 1) < ORGAN_TOLERANCE), (name, ratio)
    sphere_ratio = doses["sphere"] / expected
    assert abs(sphere_ratio[marrow][0] - 1) < MARROW_TOLERANCE, sphere_ratio[marrow]
    lesion_ratio = sphere_ratio[lesions]
    assert np.all((lesion_ratio > LESION_RANGE[0]) & (lesion_ratio < LESION_RANGE[1])), lesion_ratio
    for name in ("organ_s_am", "organ_s_af"):
        assert np.isnan(doses[name][lesions | marrow]).all()
        np.testing.assert_allclose(doses[name][organs], doses["sphere"][organs], rtol=0.02)
