"""Linear attenuation coefficients at the Lu-177 208 keV photopeak from CT Hounsfield units.

A bilinear HU → μ conversion (the form of Brown et al. 2008, Appl. Radiat. Isot. 66:1206–1212,
"Investigation of the relationship between linear attenuation coefficients and CT Hounsfield
units using radionuclides for SPECT"): below 0 HU a mixture of air and water,
μ = μ_water·(1 + HU/1000); above 0 HU a mixture of water and cortical bone,
μ = μ_water + HU·(μ_bone − μ_water)/HU_bone. Air counts as μ = 0.

Coefficients (NIST XCOM / NIST Standard Reference Database 126, Hubbell & Seltzer): mass
attenuation coefficients at 200 keV are 0.1370 cm²/g for liquid water and 0.1309 cm²/g for
cortical bone (ICRU-44, ρ = 1.92 g/cm³); water's 300 keV value is 0.1186 cm²/g. Interpolated
log-log to 208 keV, water's slope d ln μ / d ln E = ln(0.1186/0.1370)/ln(1.5) = −0.356 gives the
factor (208/200)^−0.356 = 0.9862; bone is given the same factor (both are Compton-dominated at
this energy, the bone/water ratio changes by < 0.5 % between 200 and 300 keV). So μ_water =
0.1370·0.9862 cm²/g × 1.00 g/cm³ = 0.01351 /mm and μ_bone = 0.1309·0.9862 × 1.92 = 0.02479 /mm.
``HU_CORTICAL_BONE`` is the HU this generator paints cortical bone with
(:data:`phantoms.anatomy.CORTICAL_BONE_HU`), so its CT and its μ map agree by construction.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
from numpy.typing import NDArray

from concordose.phantoms.anatomy import CORTICAL_BONE_HU, RIB_HU, EllipticCylinder, rib_mask
from concordose.phantoms.dicom_ct import anatomical_hu_slices
from concordose.phantoms.grid import VoxelGrid

LU177_PHOTOPEAK_KEV = 208.37
"""Lu-177 main γ line, keV (ICRP-107: 208.37 keV)."""
MU_WATER_PER_MM = 0.1370 * 0.9862 * 1.00 / 10.0
"""Water at 208 keV, /mm (NIST XCOM 200 keV value, log-log to 208 keV; module docstring)."""
MU_CORTICAL_BONE_PER_MM = 0.1309 * 0.9862 * 1.92 / 10.0
"""ICRU-44 cortical bone (1.92 g/cm³) at 208 keV, /mm (NIST; module docstring)."""
HU_CORTICAL_BONE = CORTICAL_BONE_HU
"""HU of the bilinear model's bone point: the generator's cortical bone (+1000 HU)."""


def mu_per_mm_from_hu(hu: NDArray[np.floating] | NDArray[np.integer]) -> NDArray[np.float64]:
    """μ at 208 keV (/mm) from HU by the bilinear model (module docstring); never negative."""
    values = np.asarray(hu, dtype=np.float64)
    soft = MU_WATER_PER_MM * (1.0 + values / 1000.0)
    bone = MU_WATER_PER_MM + values * (MU_CORTICAL_BONE_PER_MM - MU_WATER_PER_MM) / HU_CORTICAL_BONE
    mu: NDArray[np.float64] = np.clip(np.where(values <= 0.0, soft, bone), 0.0, None)
    return mu


def mu_map_from_labels(
    labels: NDArray[np.uint8], hu_by_value: Mapping[int, float]
) -> NDArray[np.float64]:
    """μ map (/mm) on the grid of ``labels`` from each label's mean CT HU.

    This is the μ map of the CT as the generator paints it per region, without the CT's 5 HU
    noise (it averages out over a SPECT voxel) and without the CT-only tissues (ribs, spine,
    lungs, fat) that the ``clinical`` CT paints over body remainder.

    Raises:
        ValueError: a label present in ``labels`` has no HU.
    """
    table = np.full(256, np.nan)
    for value, hu in hu_by_value.items():
        table[value] = hu
    hu_map = table[labels]
    if np.isnan(hu_map).any():
        missing = sorted({int(v) for v in np.unique(labels[np.isnan(hu_map)])})
        raise ValueError(f"no HU for label value(s) {missing} of the μ map")
    return mu_per_mm_from_hu(hu_map)


def ct_hu_on_grid(
    labels: NDArray[np.uint8],
    grid: VoxelGrid,
    hu_by_value: Mapping[int, float],
    *,
    body: EllipticCylinder | None = None,
    paint_over: Collection[int] = (),
    anatomical: bool = False,
    ribs: bool = False,
) -> NDArray[np.float64]:
    """The CT's HU as the generator paints it, sampled at the voxel centres of ``grid`` (the
    SPECT grid, in the patient frame) without the CT's noise: the input of the μ map.

    Args:
        labels: label map on ``grid``.
        grid: the grid ``labels`` was sampled on (a shifted patient's translated grid).
        hu_by_value: mean HU per label value.
        body: the body outline; with ``anatomical`` or ``ribs`` the CT-only tissues follow it.
        paint_over: label values the CT-only tissues replace (body remainder, marrow proxy).
        anatomical: paint the ``clinical`` CT's tissues (fat, lungs, ribs, spine;
            :func:`phantoms.dicom_ct.anatomical_hu_slices`).
        ribs: paint the consortium's ribs over body remainder (``test``/``demo`` CTs).

    Raises:
        KeyError: a label value without HU.
    """
    if anatomical and body is not None:
        slices = anatomical_hu_slices(
            labels,
            grid,
            hu_by_value,
            body=body,
            paint_over=paint_over,
            noise_sd_hu=0.0,
            rng=np.random.default_rng(0),  # no noise drawn that matters; the caller's rng untouched
        )
        return np.stack([s.astype(np.float64) for s in slices])
    table = np.full(256, np.nan)
    for value, hu in hu_by_value.items():
        table[value] = hu
    hu_map: NDArray[np.float64] = table[labels]
    if np.isnan(hu_map).any():
        missing = sorted({int(v) for v in np.unique(labels[np.isnan(hu_map)])})
        raise KeyError(f"no HU for label value(s) {missing}")
    if ribs and body is not None:
        paintable = np.isin(labels, list(paint_over))
        hu_map[rib_mask(body, grid) & paintable] = RIB_HU
    return hu_map
