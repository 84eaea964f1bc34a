"""`concordose calibrate` on a site's generated phantom scans: what it prints of the PSF and of the
photopeak window's scatter."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner, Result

from concordose.calibration.ledger import read_ledger
from concordose.calibration.records import CalibrationRecord
from concordose.cli import app
from concordose.phantoms.camera_model import site_reconstruction
from concordose.phantoms.consortium import Realism, generate_consortium
from concordose.phantoms.imaging import ImagingMode
from concordose.phantoms.site_profiles import consortium_site
from concordose.quant.pvc import psf_from_record

runner = CliRunner()


def _calibrate(tmp_path: Path, site_id: str, **registry: str) -> tuple[Result, CalibrationRecord]:
    """`concordose calibrate` of ``site_id``'s generated phantoms in ``tmp_path``, its ledger
    (and ``registry``'s further keys) added to the generated sites file; the output and the
    one record appended."""
    sites_file = tmp_path / "sites.yaml"
    document = yaml.safe_load(sites_file.read_text())
    document.update(calibration_ledger="calibrations.jsonl", **registry)
    sites_file.write_text(yaml.safe_dump(document))
    phantoms = tmp_path / "sites" / site_id / "phantoms"
    result = runner.invoke(
        app,
        [
            "calibrate",
            "--site", site_id,
            "--cylinder", str(phantoms / "uniform_cylinder" / "calibration_sheet.yaml"),
            "--nema", str(phantoms / "nema_iec_body" / "calibration_sheet.yaml"),
            "--sites", str(sites_file),
            "--record-id", f"{site_id}-2026",
            "--valid-from", "2026-01-01",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (record,) = (entry.record for entry in read_ledger(tmp_path / "calibrations.jsonl"))
    return result, record


def test_calibrate_prints_both_psf_fits_and_the_one_the_gtm_uses(tmp_path: Path) -> None:
    site = consortium_site("milan")
    generate_consortium(tmp_path, preset="test", sites=[site], n_patients=1)
    result, record = _calibrate(tmp_path, "milan")
    assert record.psf_fwhm_mm is not None
    assert record.psf_large_object_fwhm_mm is not None
    used_mm, _ = psf_from_record(record)
    text = " ".join(result.output.split())
    assert f"spheres {record.psf_fwhm_mm:.2f}" in text
    assert f"large object {record.psf_large_object_fwhm_mm:.2f}" in text
    assert re.search(rf"the GTM uses {used_mm:.2f} ± \d+\.\d\d mm", text)
    # milan's protocol corrects with gtm_platform_voi: nothing images through its
    # reconstruction, so no scatter is fitted (no OSEM of the phantom is paid for)
    assert record.scatter_to_primary is None
    assert "scatter-to-primary" not in text
    assert "note:" not in text  # milan models resolution: its Gaussian is not advised against


def test_calibrate_notes_a_gaussian_gtm_at_a_site_without_resolution_modelling(
    tmp_path: Path,
) -> None:
    """grandrapids' OSEM does not model resolution: a protocol correcting it with the Gaussian
    GTM gets a note naming the model that images through its reconstruction (the record is
    written all the same: the choice is the site's)."""
    site = consortium_site("grandrapids")
    generate_consortium(tmp_path, preset="test", sites=[site], n_patients=1)
    protocols = tmp_path / "protocols"
    protocols.mkdir()
    (protocols / "grandrapids.yaml").write_text(
        yaml.safe_dump(
            {
                "partial_volume_correction": {"model": "gtm_platform_voi"},
                "reconstruction": site_reconstruction(site).model_dump(mode="json"),
            }
        )
    )
    result, record = _calibrate(tmp_path, "grandrapids", protocol_dir="protocols")
    text = " ".join(result.output.split())
    assert "note: the site reconstructs without resolution modelling" in text
    assert "partial_volume_correction.model: perturbation_gtm" in text
    assert record.scatter_to_primary is None  # the Gaussian images through no reconstruction


def test_calibrate_fits_the_window_scatter_where_the_protocol_images_through_it(
    tmp_path: Path,
) -> None:
    """A site whose protocol chooses perturbation_gtm gets its scatter-to-primary ratio fitted on
    the NEMA lung insert of its (realistic) phantom scan: printed with the levels it was
    fitted to, and in the ledger's record."""
    site = consortium_site("grandrapids")
    generate_consortium(
        tmp_path,
        preset="test",
        sites=[site],
        n_patients=1,
        realism=Realism(imaging=ImagingMode.REALISTIC, realistic_max_views=12),
    )
    protocols = tmp_path / "protocols"
    protocols.mkdir()
    reconstruction = site_reconstruction(site).model_copy(update={"n_views": 12})
    (protocols / "grandrapids.yaml").write_text(
        yaml.safe_dump(
            {
                "partial_volume_correction": {"model": "perturbation_gtm"},
                "reconstruction": reconstruction.model_dump(mode="json"),
            }
        )
    )
    result, record = _calibrate(tmp_path, "grandrapids", protocol_dir="protocols")
    correction = record.scatter_correction()
    assert correction is not None
    assert 0.0 < correction.scatter_to_primary < 1.0
    text = " ".join(result.output.split())
    assert f"scatter-to-primary ratio {correction.scatter_to_primary:.3f} ±" in text
    measured, without = (
        float(v)
        for v in re.search(
            r"measured (\d\.\d+), the site's reconstruction of scatter-free data (\d\.\d+)", text
        ).groups()  # type: ignore[union-attr]
    )
    assert measured > without
