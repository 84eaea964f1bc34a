"""The platform's organ volume (quant.organ_outline) against known truth: spheres and
ellipsoids of a known concentration blurred by a known Gaussian PSF, drawn by sites with a
+3 mm (generous) or −2 mm (tight) margin."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from concordose.quant.gtm import FWHM_PER_SIGMA, body_outline
from concordose.quant.organ_outline import (
    FAINT,
    FITTED,
    organ_outline,
    platform_organ_outlines,
)

SPACING_MM = 4.0
FWHM_MM = 15.0
SUPERSAMPLE = 4
N = 48
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
CENTRE = np.array([N * SPACING_MM / 2 + 1.1, N * SPACING_MM / 2 - 0.6, N * SPACING_MM / 2 + 0.3])


def _ellipsoid(
    shape: tuple[int, int, int], centre: FloatArray, axes_mm: tuple[float, ...], step_mm: float
) -> BoolArray:
    grid = (np.indices(shape, dtype=np.float64) + 0.5) * step_mm
    inside: BoolArray = sum(((grid[a] - centre[a]) / axes_mm[a]) ** 2 for a in range(3)) <= 1.0
    return inside


def _image(objects: list[tuple[FloatArray, tuple[float, ...], float]]) -> FloatArray:
    """Ellipsoids (centre mm, semi-axes mm, concentration) in a body of concentration 1,
    blurred on a fine grid and averaged into SPACING_MM voxels."""
    fine = SPACING_MM / SUPERSAMPLE
    truth = np.ones((N * SUPERSAMPLE,) * 3)
    for centre, axes, value in objects:
        truth[_ellipsoid(truth.shape, centre, axes, fine)] = value
    blurred = ndimage.gaussian_filter(truth, FWHM_MM / FWHM_PER_SIGMA / fine, mode="nearest")
    image: FloatArray = blurred.reshape(N, SUPERSAMPLE, N, SUPERSAMPLE, N, SUPERSAMPLE).mean(
        axis=(1, 3, 5)
    )
    return image


def _volume_ml(axes_mm: tuple[float, ...]) -> float:
    return 4.0 / 3.0 * math.pi * float(np.prod(axes_mm)) / 1000.0


@pytest.mark.parametrize("margin_mm", [3.0, -2.0])
@pytest.mark.parametrize("contrast", [8.0, 3.0])
@pytest.mark.parametrize("axes_mm", [(30.0, 30.0, 30.0), (45.0, 25.0, 30.0)])
def test_an_organ_drawn_with_a_margin_gets_its_true_volume_back(
    axes_mm: tuple[float, float, float], contrast: float, margin_mm: float
) -> None:
    """A sphere or an ellipsoid (kidney-like 8:1, liver-like 3:1 over the body) drawn 3 mm
    outside or 2 mm inside: the site's volume is 18-33 % off, the platform's within 2 % of the
    truth, the offset found is minus the margin (±0.5 mm)."""
    image = _image([(CENTRE, axes_mm, contrast)])
    drawn = tuple(a + margin_mm for a in axes_mm)
    site = _ellipsoid((N, N, N), CENTRE, drawn, SPACING_MM)
    truth_ml = _volume_ml(axes_mm)
    result = organ_outline(
        image,
        site,
        np.zeros((0, N, N, N), dtype=bool),
        body=body_outline(image),
        spacing_mm_zyx=(SPACING_MM,) * 3,
        fwhm_mm=FWHM_MM,
        site_volume_ml=_volume_ml(drawn),
    )
    assert result.status == FITTED
    assert abs(result.site_volume_ml / truth_ml - 1.0) > 0.15
    assert result.volume_ml == pytest.approx(truth_ml, rel=0.02)
    assert result.offset_mm == pytest.approx(-margin_mm, abs=0.5)
    assert result.organ_mbq_per_ml == pytest.approx(contrast, rel=0.03)


def test_neighbours_and_noise_leave_the_volume_site_independent() -> None:
    """A liver-like ellipsoid (3:1) holding a hot lesion (30:1) with a hot neighbour (10:1)
    7 mm from it, in noise: both sites' volumes (+3 mm and −2 mm) come back within 2 % of the
    truth (so within 2 % of each other, where the sites' own differ by 60 %); a lesion gets
    None."""
    axes = (45.0, 25.0, 30.0)
    lesion_centre = CENTRE + np.array([10.0, 0.0, 0.0])
    neighbour_centre = CENTRE + np.array([0.0, 0.0, 52.0])
    image = _image(
        [
            (CENTRE, axes, 3.0),
            (lesion_centre, (8.0, 8.0, 8.0), 30.0),
            (neighbour_centre, (15.0, 15.0, 15.0), 10.0),
        ]
    )
    noisy = image + np.random.default_rng(1).normal(0.0, 0.1, image.shape) * np.sqrt(image)
    lesion = _ellipsoid((N, N, N), lesion_centre, (8.0, 8.0, 8.0), SPACING_MM)
    neighbour = _ellipsoid((N, N, N), neighbour_centre, (15.0, 15.0, 15.0), SPACING_MM)
    volumes = []
    for margin in (3.0, -2.0):
        drawn = tuple(a + margin for a in axes)
        site = _ellipsoid((N, N, N), CENTRE, drawn, SPACING_MM)
        outlines = platform_organ_outlines(
            noisy,
            np.stack([site, lesion, neighbour]),
            [False, True, False],
            spacing_mm_zyx=(SPACING_MM,) * 3,
            fwhm_mm=FWHM_MM,
            site_volumes_ml=[_volume_ml(drawn), _volume_ml((8.0,) * 3), _volume_ml((15.0,) * 3)],
        )
        assert outlines[1] is None
        organ = outlines[0]
        assert organ is not None
        assert organ.status == FITTED
        volumes.append(organ.volume_ml)
    assert volumes == pytest.approx([_volume_ml(axes)] * 2, rel=0.02)


def test_a_faint_organ_keeps_the_sites_volume() -> None:
    """1.2× its surroundings (the marrow): no edge to fit, the site's volume kept."""
    axes = (30.0, 30.0, 30.0)
    image = _image([(CENTRE, axes, 1.2)])
    site = _ellipsoid((N, N, N), CENTRE, (33.0, 33.0, 33.0), SPACING_MM)
    result = organ_outline(
        image,
        site,
        np.zeros((0, N, N, N), dtype=bool),
        body=body_outline(image),
        spacing_mm_zyx=(SPACING_MM,) * 3,
        fwhm_mm=FWHM_MM,
        site_volume_ml=_volume_ml((33.0, 33.0, 33.0)),
    )
    assert result.status == FAINT
    assert result.volume_ml == pytest.approx(_volume_ml((33.0, 33.0, 33.0)))
