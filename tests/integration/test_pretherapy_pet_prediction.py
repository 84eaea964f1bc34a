"""Issue 20 item 3, end to end on the digital consortium: pre-therapy PET/CTs generated with
known SUVs, received by C-STORE, filed as pre-therapy studies, registered to each patient's
first cycle, SUV features per VOI, and the dose predictor trained leave-one-site-out on the
patients' first-cycle doses; PET-only patients predicted and checked against their (future)
therapy truth. The measured doses here are the generator's true doses (the SPECT dosimetry that
publishes them is tested elsewhere), so this tests the PET path and the learner, not the SPECT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pydantic import SecretStr
from pydicom import dcmread

from concordose.dicom.pseudonym import subject_key
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.phantoms.consortium import GeneratedConsortium, generate_consortium
from concordose.phantoms.site_profiles import CONSORTIUM_SITES
from concordose.pipeline.pretherapy_pet import spool_pet_features
from concordose.prediction import build_dose_prediction
from concordose.results.provenance import Provenance
from concordose.results.validation import validate_tables
from concordose.spool.store import InstanceIdentity, Spool
from concordose.spool.timepoints import InstanceSummary
from tests.fakes import FakeClock

KEY = SecretStr("consortium-test-key")
SITES = CONSORTIUM_SITES[:3]
N_PATIENTS = 3  # with therapy
PET_ONLY = 1


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> GeneratedConsortium:
    return generate_consortium(
        tmp_path_factory.mktemp("pet-prediction"),
        preset="test",
        sites=SITES,
        n_patients=N_PATIENTS,
        phantoms=False,
        pretherapy_pet=True,
        pet_only_patients=PET_ONLY,
    )


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_pet_studies_received_give_features_and_predictions(
    consortium: GeneratedConsortium, tmp_path: Path
) -> None:
    # Filed as the receiver files them (its C-STORE path: test_pretherapy_pet_ingest.py).
    spool = Spool(tmp_path / "spool")
    clock = FakeClock()
    for at_site in consortium.sites:
        for path in [*at_site.dicom_files, *at_site.pet_files]:
            dataset = dcmread(path, stop_before_pixels=True)
            identity = InstanceIdentity.checked(
                sop_class_uid=str(dataset.SOPClassUID),
                sop_instance_uid=str(dataset.SOPInstanceUID),
                study_uid=str(dataset.StudyInstanceUID),
                series_uid=str(dataset.SeriesInstanceUID),
                transfer_syntax=str(dataset.file_meta.TransferSyntaxUID),
            )
            summary = InstanceSummary.from_dataset(dataset)
            spool.store(
                identity, path.read_bytes(), at_site.site.calling_ae_title, summary, now=clock()
            )
    assert len(spool.cycles()) == len(SITES) * N_PATIENTS
    rows, problems = spool_pet_features(
        spool, site_by_ae_title={s.calling_ae_title: s.site_id for s in SITES}, pseudonym_key=KEY
    )
    assert problems == []

    # Features against the generator's SUV; measured doses from the truth of cycle 1.
    doses, summaries, future = [], [], {}
    features_by_key = {(r["site_id"], r["subject_key"], r["voi_label"]): r for r in rows}
    for at_site in consortium.sites:
        site = at_site.site.site_id
        for number in range(1, N_PATIENTS + PET_ONLY + 1):
            folder = at_site.folder / "patients" / f"P{number:03d}"
            subject = subject_key(f"{site.upper()}-P{number:03d}", KEY)
            pet = {v["label"]: v for v in _load(folder / "pretherapy_pet.json")["vois"]}
            liver = features_by_key[(site, subject, "liver")]
            assert liver["suv_mean"] == pytest.approx(pet["liver"]["suv_mean"], rel=0.15)
            if number > N_PATIENTS:
                truth = _load(folder / "therapy_truth.json")["cycle"]
                for voi in truth["vois"]:
                    if voi["mean_dose_gy"] is not None:
                        future[(site, subject, voi["label"])] = voi["mean_dose_gy"] / 7.4
                continue
            cycle = _load(folder / "ground_truth.json")["cycles"][0]
            cycle_key = f"{subject}-c1"
            summaries.append(
                {
                    "cycle_key": cycle_key,
                    "cycle_number": 1,
                    "injected_activity_mbq": cycle["injected_activity_mbq"],
                    "injected_activity_traceable_mbq": None,
                }
            )
            for voi in cycle["vois"]:
                doses.append(
                    {
                        "site_id": site,
                        "subject_key": subject,
                        "cycle_key": cycle_key,
                        "voi_label": voi["label"],
                        "kinetics_method": REFERENCE_METHOD_NAME,
                        "dose_method": "sphere",
                        "mean_dose_gy": voi["mean_dose_gy"],
                    }
                )
    table = build_dose_prediction(
        pa.Table.from_pylist(rows),
        pa.Table.from_pylist(doses),
        pa.Table.from_pylist(summaries),
        Provenance(run_id="run-pet"),
        reference_method=REFERENCE_METHOD_NAME,
    )
    assert validate_tables({"dose_prediction": table})["dose_prediction"].success
    out = table.to_pylist()
    vois = [r for r in out if r["row_kind"] == "voi"]
    predicted_future = [r for r in vois if r["validation"] == "no_therapy_yet"]
    assert {(r["site_id"], r["subject_key"]) for r in predicted_future} == {
        (s.site_id, subject_key(f"{s.site_id.upper()}-P{N_PATIENTS + 1:03d}", KEY)) for s in SITES
    }
    metrics = {(r["site_id"], r["voi_type"]): r for r in out if r["row_kind"] == "metrics"}
    assert {site for site, _ in metrics} == {*(s.site_id for s in SITES), "*"}
    pooled, lesions = metrics["*", "*"], metrics["*", "lesion"]
    assert pooled["n_vois"] == len(doses)
    # Measured with seed 20261124 (DESIGN.md): pooled MAPE 22 % against the baseline's 26 %,
    # lesions 26 % against 43 %; organs (whose dose per GBq varies little in the generator)
    # 19 % against 16 %: the PET's uptake mismatch costs more than it tells there.
    assert pooled["mape_percent"] < pooled["baseline_mape_percent"]
    assert lesions["mape_percent"] < 0.75 * lesions["baseline_mape_percent"]
    assert pooled["interval_coverage"] >= 0.8
    # The PET-only patient (its therapy truth is known): the same person at three sites gets
    # the same predictions within 5 % (harmonised features), and most truths fall inside.
    by_voi: dict[str, list[float]] = {}
    inside = []
    for r in predicted_future:
        truth = future.get((r["site_id"], r["subject_key"], r["voi_label"]))
        by_voi.setdefault(r["voi_label"], []).append(r["predicted_dose_gy_per_gbq"])
        if truth is not None:
            high = r["prediction_high_gy_per_gbq"] or np.inf
            inside.append(r["prediction_low_gy_per_gbq"] <= truth <= high)
    for label, values in by_voi.items():
        assert max(values) / min(values) < 1.05, label
    assert len(inside) == len(predicted_future)
    assert np.mean(inside) >= 0.5
