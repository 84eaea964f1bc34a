"""The large-object PSF fitted across the NEMA body's surface, and which FWHM the GTM uses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from concordose.calibration.phantom_geometry import nema_iec_phantom
from concordose.calibration.psf import (
    EDGE_SHELLS,
    PhantomModel,
    fit_edge_fwhm,
    fit_psf_fwhm,
    nema_phantom_model,
)
from concordose.calibration.records import CalibrationRecord
from concordose.dicom.geometry import VolumeGeometry
from concordose.errors import OutOfRangeError
from concordose.quant.gtm import FWHM_PER_SIGMA
from concordose.quant.pvc import alternative_psf_fwhm, chosen_psf_fwhm, psf_from_record

SPACING_MM = 6.0
SHAPE = (44, 56, 64)  # slices, rows, columns: the 300 × 230 × 180 mm body with room around it
SPHERE_MBQ_PER_ML, BACKGROUND_MBQ_PER_ML = 0.4, 0.1
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _geometry() -> VolumeGeometry:
    origin = tuple(-(n - 1) / 2.0 * SPACING_MM for n in (SHAPE[2], SHAPE[1], SHAPE[0]))
    return VolumeGeometry((origin[0], origin[1], origin[2]), (SPACING_MM,) * 3, IDENTITY, SHAPE)


def _image(fwhm_mm: float, *, tail_fraction: float = 0.0) -> tuple[np.ndarray, PhantomModel]:
    """The phantom at its true concentrations, blurred by a Gaussian (plus an optional broad
    60 mm component holding ``tail_fraction`` of the counts)."""
    model = nema_phantom_model(_geometry(), nema_iec_phantom((0.0, 0.0, 0.0)))
    truth = model.fill_mbq_per_ml(SPHERE_MBQ_PER_ML, BACKGROUND_MBQ_PER_ML)

    def blur(width_mm: float) -> np.ndarray:
        sigma = width_mm / FWHM_PER_SIGMA / SPACING_MM
        blurred: np.ndarray = ndimage.gaussian_filter(truth, sigma, mode="nearest", truncate=4.0)
        return blurred

    image = (1.0 - tail_fraction) * blur(fwhm_mm) + tail_fraction * blur(60.0)
    return image, model


@pytest.mark.parametrize("fwhm_mm", [8.0, 12.0, 16.0])
def test_edge_fit_recovers_the_gaussian_the_image_was_blurred_with(fwhm_mm: float) -> None:
    image, model = _image(fwhm_mm)
    fit = fit_edge_fwhm(model, image, SPHERE_MBQ_PER_ML, BACKGROUND_MBQ_PER_ML)
    assert fit.fwhm_mm == pytest.approx(fwhm_mm, rel=0.01)
    assert fit.residual_rms < 1e-3
    assert fit.n_spheres == EDGE_SHELLS == len(model.edge_shells)


def test_edge_shells_lie_on_both_sides_of_the_surface_and_do_not_overlap() -> None:
    _, model = _image(10.0)
    shells = [s.mask for s in model.edge_shells]
    assert all(shell.any() for shell in shells)
    assert int(np.sum(shells, axis=0).max()) == 1
    background = model.background.weight
    inner, outer = shells[0], shells[2]
    assert background[inner].mean() > 0.9  # inside the warm body (sphere-free near the wall)
    assert background[outer].max() == 0.0


def test_a_broad_tail_widens_the_spheres_fit_more_than_the_edge_fit_sees_it() -> None:
    # The two fits answer different questions; with a scatter-like tail they disagree, and the
    # GTM takes the smaller (chosen_psf_fwhm): what this test pins is that both see the tail.
    image, model = _image(10.0, tail_fraction=0.1)
    edge = fit_edge_fwhm(model, image, SPHERE_MBQ_PER_ML, BACKGROUND_MBQ_PER_ML)
    measured = np.array([float(image[v.box][v.mask].mean()) for v in model.sphere_vois])
    spheres = fit_psf_fwhm(model, measured, SPHERE_MBQ_PER_ML, BACKGROUND_MBQ_PER_ML)
    assert edge.fwhm_mm > 10.2
    assert spheres.fwhm_mm > 10.2


def test_edge_fit_refuses_a_background_it_cannot_normalise_by() -> None:
    image, model = _image(10.0)
    with pytest.raises(OutOfRangeError, match="background concentration"):
        fit_edge_fwhm(model, image, SPHERE_MBQ_PER_ML, 0.0)


def test_the_gtm_uses_the_smaller_fit_with_its_own_sd() -> None:
    assert chosen_psf_fwhm(16.8, 1.3, 11.3, 1.8) == (11.3, 1.8)
    assert chosen_psf_fwhm(8.4, 0.2, 9.0, 0.1) == (8.4, 0.2)
    assert chosen_psf_fwhm(8.4, 0.2, None, None) == (8.4, 0.2)
    assert chosen_psf_fwhm(16.8, 1.3, 11.3, None) == (11.3, 0.0)


def test_the_alternative_fit_is_the_one_the_gtm_did_not_choose() -> None:
    def record(spheres: float, large: float | None) -> CalibrationRecord:
        return CalibrationRecord(
            record_id="r",
            calibration_factor_cps_per_mbq=9.0,
            valid_from="2026-01-01",  # type: ignore[arg-type]
            psf_fwhm_mm=spheres,
            psf_fwhm_sd_mm=1.0,
            psf_large_object_fwhm_mm=large,
            psf_large_object_fwhm_sd_mm=None if large is None else 2.0,
        )

    assert psf_from_record(record(16.8, 11.3)) == (11.3, 2.0)
    assert alternative_psf_fwhm(record(16.8, 11.3)) == 16.8
    assert alternative_psf_fwhm(record(8.4, 9.0)) == 9.0
    assert alternative_psf_fwhm(record(8.4, None)) is None
