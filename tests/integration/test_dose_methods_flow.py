"""Every VOI-level dose method side by side through the real ``process-spool`` flow.

The small synthetic patient (preset ``test``) is processed from its DICOM folder with all
registered VOI-level dose methods; each must publish one row per VOI, organ S-values must
refuse lesions with a reason, and methods must agree as documented in
``tests/unit/test_dose_method_comparison.py`` (organs: LDM < sphere ≈ organ-S within 1.5 %).
Kinetics: the site protocol's default set (issue 14) on this patient's four time points (4, 24,
72, 168 h), where the six-point reference is not applicable: reported per VOI, not a failure.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from concordose.dose.registry import DOSE_METHODS
from concordose.flows.sweep import process_spool
from concordose.phantoms import GeneratedPatient

pytestmark = pytest.mark.integration


def test_all_voi_dose_methods_publish_side_by_side(
    small_patient: GeneratedPatient,
    prefect_server: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "integration-test-key-" + "0" * 32)
    result = process_spool(
        small_patient.out_dir / "dicom",
        small_patient.sites_path,
        output_uri=str(tmp_path / "out"),
        site_id=small_patient.site.site_id,
        dose_methods=tuple(DOSE_METHODS.names()),
    )
    assert not result.failed
    rows = result.tables["absorbed_dose"].to_pylist()
    by_method: dict[str, dict[str, dict[str, object]]] = defaultdict(dict)
    for row in rows:
        if row["kinetics_method"] == "mono_exponential":
            by_method[row["dose_method"]][row["voi_label"]] = row
    assert set(by_method) == set(DOSE_METHODS.names())
    labels = set(by_method["sphere"])
    assert all(set(per_voi) == labels for per_voi in by_method.values())
    for label in labels:
        ldm = by_method["ldm"][label]["mean_dose_gy"]
        sphere = by_method["sphere"][label]["mean_dose_gy"]
        assert isinstance(ldm, float)
        assert isinstance(sphere, float)
        organ = by_method["organ_s_am"][label]
        if label.startswith("lesion"):
            assert organ["mean_dose_gy"] is None
            assert "no OpenDose AM S-value" in str(organ["status"])
            assert sphere < ldm
        else:
            assert organ["status"] == "ok"
            assert ldm < sphere
            assert organ["mean_dose_gy"] == pytest.approx(sphere, rel=0.015)
    # the reference needs six points: every VOI says so, none of its doses is made up
    kinetics = result.tables["kinetics"].to_pylist()
    reference = [row for row in kinetics if row["kinetics_method"] == "spectacular_6tp"]
    assert len(reference) == len(labels)
    assert all(
        row["status"] == "not applicable: needs ≥ 6 acquired time points, has 4"
        for row in reference
    )
    reference_doses = [row for row in rows if row["kinetics_method"] == "spectacular_6tp"]
    assert len(reference_doses) == len(labels) * len(DOSE_METHODS.names())
    assert all(row["mean_dose_gy"] is None for row in reference_doses)
    assert all(row["status"] != "ok" for row in reference_doses)
