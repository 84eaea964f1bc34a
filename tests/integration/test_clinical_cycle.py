"""A clinical-size cycle (512×512 CTs) through the platform in a child process held to a memory
ceiling, with its doses against truth.

The child (`concordose process`) runs under ``RLIMIT_AS`` (a hard stop against runaway
allocation) and reports its own peak RSS, which must stay within the 2 GB target of issue 13
(3 time points here, to bound the suite's time; `benchmarks/bench_clinical_cycle.py` runs 6).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from concordose.dose.sphere_svalues import lu177_sphere_table
from phantoms import generate_patient
from tests.integration.test_demo_path import (
    DOSE_RELATIVE_TOLERANCE,
    MASS_RELATIVE_TOLERANCE,
    TIA_RELATIVE_TOLERANCE,
)

pytestmark = pytest.mark.integration

PEAK_RSS_CEILING_BYTES = 2.0e9
"""Issue 13's target for one clinical cycle."""
ADDRESS_SPACE_LIMIT_BYTES = 12 * 1024**3
"""Virtual memory the child may map (threads' stacks and libraries map far more than they use)."""

CHILD = (
    "import atexit, resource, sys\n"
    "out = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(out, 'w').write("
    "str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))\n"
    "from concordose.cli import main\n"
    "main()\n"
)


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT_BYTES, ADDRESS_SPACE_LIMIT_BYTES))


@pytest.fixture(scope="module")
def clinical_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """A 3-time-point clinical patient processed by `concordose process` in a child process
    under ``RLIMIT_AS``: (patient folder, output folder, the child's peak RSS in bytes)."""
    tmp_path = tmp_path_factory.mktemp("clinical")
    patient = generate_patient(
        tmp_path / "patient", seed=5, preset="clinical", time_points_h=(4.0, 24.0, 96.0)
    )
    peak_file, out = tmp_path / "peak.txt", tmp_path / "out"
    env = {**os.environ, "CONCORDOSE_PSEUDONYM_KEY": "test-secret"}
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(peak_file),
            "process",
            "--spool",
            str(patient.out_dir / "dicom"),
            "--sites",
            str(patient.sites_path),
            "--site",
            patient.site.site_id,
            "--output",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=_limit_address_space,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return patient.out_dir, out, int(peak_file.read_text())


def _rows(out: Path, table: str) -> dict[str, dict[str, Any]]:
    (path,) = (out / table).rglob("*.parquet")
    return {row["voi_label"]: row for row in pq.read_table(path).to_pylist()}


def test_a_clinical_cycle_stays_under_its_memory_ceiling(
    clinical_run: tuple[Path, Path, int],
) -> None:
    _patient, out, peak_bytes = clinical_run
    assert peak_bytes <= PEAK_RSS_CEILING_BYTES, f"peak RSS {peak_bytes / 1e9:.2f} GB"
    (voxel,) = (out / "voxel_dose").rglob("*.parquet")
    assert {row["dose_grid"] for row in pq.read_table(voxel).to_pylist()} == {"ct"}


def test_clinical_masses_and_the_liver_match_truth_as_the_small_presets_do(
    clinical_run: tuple[Path, Path, int],
) -> None:
    patient, out, _peak = clinical_run
    truth = json.loads((patient / "ground_truth.json").read_text())
    doses = _rows(out, "absorbed_dose")
    for voi in truth["vois"]:
        row = doses[voi["label"]]
        assert row["status"] == "ok"
        assert row["mass_g"] == pytest.approx(voi["mass_g"], rel=MASS_RELATIVE_TOLERANCE)
    liver = next(voi for voi in truth["vois"] if voi["label"] == "liver")
    assert doses["liver"]["tia_mbq_h"] == pytest.approx(
        liver["tia_mbq_h"], rel=TIA_RELATIVE_TOLERANCE
    )


@pytest.mark.xfail(
    strict=True,
    reason="known gap (issue 13 item 5), cause not yet proven: the SEG lies on the clinical CT, "
    "whose 2.99 mm slices do not align with the 4.42 mm SPECT slices; nearest-neighbour "
    "resampling probably misplaces boundary voxels: TIA −1 to −6 % for kidneys, spleen and "
    "lesions (liver −0.3 %, masses within 1 %)",
)
def test_every_clinical_voi_matches_truth_within_the_small_presets_tolerances(
    clinical_run: tuple[Path, Path, int],
) -> None:
    patient, out, _peak = clinical_run
    truth = json.loads((patient / "ground_truth.json").read_text())
    table = lu177_sphere_table()
    doses = _rows(out, "absorbed_dose")
    for voi in truth["vois"]:
        row = doses[voi["label"]]
        assert row["tia_mbq_h"] == pytest.approx(voi["tia_mbq_h"], rel=TIA_RELATIVE_TOLERANCE)
        true_dose_gy = voi["tia_mbq_h"] * float(table.s_value_mgy_per_mbq_h(voi["mass_g"])) / 1000
        assert row["mean_dose_gy"] == pytest.approx(true_dose_gy, rel=DOSE_RELATIVE_TOLERANCE)
