"""OSEM reconstruction (Hudson & Larkin 1994, IEEE TMI 13:601) on :class:`SpectProjector`.

x ← x / s_b · Σ_{k ∈ b} Bₖ[ pₖ / (Fₖ x + aₖ) ] for each subset b of views, where Fₖ and Bₖ
are view k's forward and back projectors (attenuation always, the CDR only with resolution
modelling), aₖ an additive term in the projection model (the scatter estimate) and
s_b = Σ_{k ∈ b} Bₖ 1 the subset's sensitivity. Subsets interleave the views (view k belongs to
subset k mod n_subsets). The image lives on the projector's padded square grid (z fastest) and
is cropped at the end;
voxels outside the circular field of view stay 0.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from concordose.reconstruction.projector import SpectProjector

SENSITIVITY_FLOOR = 1e-6
"""Relative sensitivity below which a voxel is not updated (outside every view's reach)."""


def osem(
    projections: NDArray[np.float64],
    projector: SpectProjector,
    *,
    iterations: int,
    subsets: int,
    resolution_modelling: bool,
    additive: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Reconstruct ``projections`` (views, z bins, transaxial bins; counts) with OSEM.

    Args:
        projections: measured counts per view.
        projector: the system model (its attenuation map is the attenuation correction).
        iterations: full passes over the views.
        subsets: number of subsets (≤ views).
        resolution_modelling: model the CDR in the system matrix.
        additive: expected additive counts per view (e.g. the scatter estimate), or ``None``.

    Returns:
        the image on the projector's image grid, in counts per view of an unattenuated voxel
        (multiply by the number of views for the acquisition's total).

    Raises:
        ValueError: on a shape mismatch or non-positive iterations/subsets.
    """
    geometry = projector.geometry
    if projections.shape != geometry.projection_shape:
        raise ValueError(
            f"projections of shape {projections.shape}; the geometry makes "
            f"{geometry.projection_shape}"
        )
    if iterations < 1 or not 1 <= subsets <= geometry.n_views:
        raise ValueError(
            f"need iterations ≥ 1 and 1 ≤ subsets ≤ {geometry.n_views}; got {iterations}, {subsets}"
        )
    cdr = resolution_modelling
    views_by_subset = [list(range(b, geometry.n_views, subsets)) for b in range(subsets)]
    ones = np.ones(geometry.projection_shape[1:])
    sensitivities = []
    for views in views_by_subset:
        sensitivity = sum(
            (projector.back_view(ones, view, cdr=cdr) for view in views),
            start=np.zeros(projector.padded_shape),
        )
        sensitivities.append(sensitivity)
    reachable = [s > SENSITIVITY_FLOOR * float(s.max()) for s in sensitivities]
    total = float(projections.sum()) / geometry.n_views
    n_fov = int(projector.fov_mask.sum()) * geometry.shape_zyx[0]
    image = np.where(projector.fov_mask[:, :, None], total / max(n_fov, 1), 0.0) * np.ones(
        projector.padded_shape
    )
    for _ in range(iterations):
        for views, sensitivity, mask in zip(views_by_subset, sensitivities, reachable, strict=True):
            correction = np.zeros_like(image)
            for view in views:
                expected = projector.forward_view(image, view, cdr=cdr)
                if additive is not None:
                    expected = expected + additive[view]
                ratio = np.divide(
                    projections[view],
                    expected,
                    out=np.zeros_like(expected),
                    where=expected > 0.0,
                )
                correction += projector.back_view(ratio, view, cdr=cdr)
            image = np.where(mask, image * correction / np.where(mask, sensitivity, 1.0), 0.0)
    return projector.crop(image)
