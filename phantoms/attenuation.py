"""The digital consortium's μ maps at 208 keV: from its label maps and the HU it paints.

HU → μ is the library's bilinear model
(:func:`concordose.reconstruction.attenuation.mu_per_mm_from_hu`, with its sources); its bone
point is the HU the generator paints cortical bone with
(:data:`phantoms.anatomy.CORTICAL_BONE_HU`, checked equal in the tests).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
from numpy.typing import NDArray

from concordose.phantoms.anatomy import RIB_HU, EllipticCylinder, rib_mask
from concordose.phantoms.dicom_ct import anatomical_hu_slices
from concordose.phantoms.grid import VoxelGrid
from concordose.reconstruction.attenuation import mu_per_mm_from_hu


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
