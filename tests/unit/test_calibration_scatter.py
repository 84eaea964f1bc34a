"""The photopeak window's scatter in the system model (reconstruction.scatter) and its fit on the
NEMA phantom's lung insert (calibration.scatter), against a phantom imaged noise-free through a
site's OSEM with a known scatter-to-primary ratio."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from concordose.calibration.phantom_geometry import nema_iec_phantom
from concordose.calibration.psf import PhantomModel, nema_phantom_model
from concordose.calibration.records import CalibrationRecord
from concordose.calibration.scatter import (
    ScatterFit,
    fit_scatter_to_primary,
    lung_core_and_reference,
)
from concordose.dicom.geometry import VolumeGeometry, voxel_centres_mm
from concordose.errors import OutOfRangeError
from concordose.reconstruction import MU_WATER_PER_MM
from concordose.reconstruction.protocol import ReconstructionModel, SiteReconstruction
from concordose.reconstruction.scatter import SCATTER_KERNEL_FWHM_MM, ScatterCorrection

SPACING_MM = 6.0
SHAPE = (32, 56, 56)  # slices, rows, columns: the 294 × 224 × 180 mm body inside the orbit
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
SPHERE_MBQ_PER_ML, BACKGROUND_MBQ_PER_ML = 0.4, 0.1
TRUE_SCATTER_TO_PRIMARY = 0.25
SITE = SiteReconstruction(
    collimator="ge_megp",
    radius_of_rotation_mm=230.0,
    n_views=24,
    iterations=3,
    subsets=4,
    resolution_recovery=True,
)
Scan = tuple[PhantomModel, NDArray[np.float64], NDArray[np.float64]]


@pytest.fixture(scope="module")
def scan() -> Scan:
    """(placed phantom, truth MBq/mL, μ /mm): lung insert at 0.3 × water's μ."""
    origin = tuple(-(n - 1) / 2.0 * SPACING_MM for n in (SHAPE[2], SHAPE[1], SHAPE[0]))
    geometry = VolumeGeometry((origin[0], origin[1], origin[2]), (SPACING_MM,) * 3, IDENTITY, SHAPE)
    phantom = nema_iec_phantom((0.0, 0.0, 0.0))
    model = nema_phantom_model(geometry, phantom)
    truth = model.fill_mbq_per_ml(SPHERE_MBQ_PER_ML, BACKGROUND_MBQ_PER_ML)
    x, y, z = voxel_centres_mm(geometry)
    mu = np.where(phantom.body.contains(x, y, z), MU_WATER_PER_MM, 0.0)
    mu[phantom.lung_insert.contains(x, y, z)] = 0.3 * MU_WATER_PER_MM
    return model, truth, mu


def _image(scan: Scan, scatter: ScatterCorrection | None) -> NDArray[np.float64]:
    _, truth, mu = scan
    return ReconstructionModel(SITE, mu, (SPACING_MM,) * 3, scatter=scatter).image(truth)


def _fit(scan: Scan, image: NDArray[np.float64]) -> ScatterFit:
    model, _, mu = scan
    return fit_scatter_to_primary(
        image,
        model,
        sphere_mbq_per_ml=SPHERE_MBQ_PER_ML,
        background_mbq_per_ml=BACKGROUND_MBQ_PER_ML,
        mu_per_mm=mu,
        reconstruction=SITE,
    )


def test_the_fit_recovers_the_scatter_the_lung_insert_shows(scan: Scan) -> None:
    """A scan whose data held k = 0.25 of scatter (exactly corrected inside OSEM) reads more in
    the lung core than the scatter-free model; the fit finds k within 0.02 in ≤ 4 OSEM."""
    fit = _fit(scan, _image(scan, ScatterCorrection(TRUE_SCATTER_TO_PRIMARY)))
    assert fit.lung_ratio_measured > fit.lung_ratio_without + 0.01
    assert fit.correction.scatter_to_primary == pytest.approx(TRUE_SCATTER_TO_PRIMARY, abs=0.02)
    assert fit.lung_ratio_fitted == pytest.approx(fit.lung_ratio_measured, abs=1e-3)
    assert fit.correction.kernel_fwhm_mm == SCATTER_KERNEL_FWHM_MM
    assert fit.correction.residual_fraction == 0.0
    assert 3 <= fit.evaluations <= 4
    # noise-free: every slice of the core reads alike, so the SD is small but not zero
    assert 0.0 <= fit.scatter_to_primary_sd < 0.05


def test_a_scatter_free_scan_gives_no_scatter(scan: Scan) -> None:
    fit = _fit(scan, _image(scan, None))
    assert fit.correction.scatter_to_primary == pytest.approx(0.0, abs=0.01)
    assert fit.evaluations <= 3


def test_a_lung_the_model_cannot_explain_is_refused(scan: Scan) -> None:
    """A lung insert reading as warm as the background is not scatter: refused, with the
    measured and modelled levels in the message."""
    model, _, _ = scan
    image = _image(scan, None)
    core, _ = lung_core_and_reference(model)
    image[core] = BACKGROUND_MBQ_PER_ML
    with pytest.raises(OutOfRangeError, match=r"expected at most 2.*measured"):
        _fit(scan, image)


def test_the_model_with_scatter_stays_linear_in_scale(scan: Scan) -> None:
    """What the perturbation GTM relies on: twice the activity, twice the image, with the
    scatter and its additive estimate in the OSEM."""
    _, truth, mu = scan
    site_model = ReconstructionModel(SITE, mu, (SPACING_MM,) * 3, scatter=ScatterCorrection(0.3))
    np.testing.assert_allclose(
        site_model.image(2.0 * truth), 2.0 * site_model.image(truth), rtol=1e-4, atol=1e-7
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"scatter_to_primary": -0.1}, "scatter-to-primary ratio: expected ≥ 0, found -0.1"),
        (
            {"scatter_to_primary": 0.3, "residual_fraction": 1.0},
            "residual fraction: expected in",
        ),
        ({"scatter_to_primary": 0.3, "kernel_fwhm_mm": 0.0}, "kernel FWHM: expected > 0 mm"),
    ],
)
def test_bad_scatter_settings_say_what_was_expected(
    arguments: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ScatterCorrection(**arguments)


def test_the_record_holds_the_fit_with_its_assumptions_or_none_of_it() -> None:
    base: dict[str, Any] = {
        "record_id": "r",
        "calibration_factor_cps_per_mbq": 10.0,
        "valid_from": date(2026, 1, 1),
    }
    assert CalibrationRecord(**base).scatter_correction() is None
    record = CalibrationRecord(
        **base,
        scatter_to_primary=0.28,
        scatter_to_primary_sd=0.05,
        scatter_residual_fraction=0.0,
        scatter_kernel_fwhm_mm=60.0,
    )
    assert record.scatter_correction() == ScatterCorrection(0.28, 0.0, 60.0)
    with pytest.raises(ValueError, match="expected all or none"):
        CalibrationRecord(**base, scatter_to_primary=0.28)
