"""`concordose calibrate` on a site's generated phantom scans: what it prints of the PSF."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from concordose.calibration.ledger import read_ledger
from concordose.cli import app
from concordose.phantoms.consortium import generate_consortium
from concordose.phantoms.site_profiles import consortium_site
from concordose.quant.pvc import psf_from_record

runner = CliRunner()


def test_calibrate_prints_both_psf_fits_and_the_one_the_gtm_uses(tmp_path: Path) -> None:
    site = consortium_site("milan")
    generate_consortium(tmp_path, preset="test", sites=[site], n_patients=1)
    sites_file = tmp_path / "sites.yaml"
    document = yaml.safe_load(sites_file.read_text())
    document["calibration_ledger"] = "calibrations.jsonl"
    sites_file.write_text(yaml.safe_dump(document))
    phantoms = tmp_path / "sites" / "milan" / "phantoms"

    result = runner.invoke(
        app,
        [
            "calibrate",
            "--site", "milan",
            "--cylinder", str(phantoms / "uniform_cylinder" / "calibration_sheet.yaml"),
            "--nema", str(phantoms / "nema_iec_body" / "calibration_sheet.yaml"),
            "--sites", str(sites_file),
            "--record-id", "milan-2026",
            "--valid-from", "2026-01-01",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    (record,) = (entry.record for entry in read_ledger(tmp_path / "calibrations.jsonl"))
    assert record.psf_fwhm_mm is not None
    assert record.psf_large_object_fwhm_mm is not None
    used_mm, _ = psf_from_record(record)
    text = " ".join(result.output.split())
    assert f"spheres {record.psf_fwhm_mm:.2f}" in text
    assert f"large object {record.psf_large_object_fwhm_mm:.2f}" in text
    assert re.search(rf"the GTM uses {used_mm:.2f} ± \d+\.\d\d mm", text)
