"""The digital consortium through real peers: dcmtk parses every object, and the platform's whole
processing path (catalogue → Prefect flow → Parquet) runs on one site's virtual patient.

Tolerance of the processing check: with blur and shifts off (``Realism(blur=False,
ct_shift_max_mm=0)``) the SEG resampled onto each SPECT grid selects exactly the voxels the truth
counted, so each VOI's activity at each time point differs from the truth by Poisson noise only
(< 1 % here): 3 % is asserted. TIAs are not compared: the skeleton fits a mono-exponential to a
true uptake + multi-phase curve, a model error this generator exists to expose.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from concordose.cli import app
from concordose.phantoms.consortium import GeneratedConsortium, Realism, generate_consortium
from concordose.phantoms.site_profiles import consortium_site

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ideal_site(tmp_path_factory: pytest.TempPathFactory) -> GeneratedConsortium:
    return generate_consortium(
        tmp_path_factory.mktemp("consortium"),
        seed=8,
        preset="test",
        sites=(consortium_site("montpellier"),),
        realism=Realism(blur=False, noise=True, ct_shift_max_mm=0.0),
    )


@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="dcmtk's dcmdump is not installed")
def test_dcmtk_parses_every_nm_seg_and_a_ct(ideal_site: GeneratedConsortium) -> None:
    generated = ideal_site.sites[0]
    paths = [p for p in generated.dicom_files if p.name in ("nm.dcm", "seg.dcm")]
    paths += [scan.nm_path for scan in generated.phantom_scans]
    paths.append(next(p for p in generated.dicom_files if p.parent.name == "ct"))
    for path in paths:
        result = subprocess.run(
            ["dcmdump", "-q", "+E", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, (path, result.stderr)
        assert "E:" not in result.stderr, (path, result.stderr)


def test_the_platform_processes_a_consortium_patient(
    ideal_site: GeneratedConsortium, tmp_path: Path, prefect_server: None
) -> None:
    generated = ideal_site.sites[0]
    truth: dict[str, Any] = json.loads(generated.ground_truth_paths[0].read_text())
    output = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "process",
            "--spool", str(generated.folder / "patients" / "P001" / "dicom"),
            "--sites", str(ideal_site.sites_path),
            "--site", "montpellier",
            "--output", str(output),
        ],
        env={"CONCORDOSE_PSEUDONYM_KEY": "integration-test-key"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifests = [json.loads(p.read_text()) for p in (output / "_manifests").glob("*.json")]
    (manifest,) = [m for m in manifests if "cycle_key" in m["scopes"]]  # not the cohort's
    (points_object,) = [o for o in manifest["objects"] if o["table"] == "voi_timepoints"]
    rows = pq.read_table(points_object["path"]).to_pylist()
    (cycle,) = truth["cycles"]
    by_label = {voi["label"]: voi for voi in cycle["vois"]}
    assert {row["voi_label"] for row in rows} == set(by_label)
    assert len(rows) == len(by_label) * len(cycle["time_points_h"])
    for row in rows:
        expected_mbq = by_label[row["voi_label"]]["activity_mbq"][row["time_point_index"]]
        assert row["activity_mbq"] == pytest.approx(expected_mbq, rel=0.03), row["voi_label"]
