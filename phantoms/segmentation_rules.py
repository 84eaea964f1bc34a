"""How each site draws its VOIs: the segmentation rule its SEG follows (anatomy realism).

Real centres do not segment alike: one outlines by hand with a habitual margin, one thresholds
the SPECT, one draws organs on the CT and erodes them against spill-in. Each
:class:`~phantoms.site_profiles.SiteProfile` names its rule (``segmentation``); with anatomy
realism on, the SEG a site sends carries the VOIs its rule gives on the first time point's CT,
while the ground truth stays the true activity in the true lesion or organ. With it off (the
default) every site sends the true outlines.

Rules (lengths in mm, on the CT grid of the SEG unless stated):

* :class:`TrueOutline`: the true shapes (voxel centres inside).
* :class:`ManualMargin`: every VOI's true outline moved outward (``margin_mm`` > 0) or inward
  (< 0) by the margin: a voxel joins when its centre lies within ``margin_mm`` + h/4 of a true
  VOI voxel's centre; it leaves when it lies within ``|margin_mm|`` + h/4 of a non-VOI voxel's
  centre (h the finest voxel spacing: in 3-D the voxel centres nearest an outline lie ≈ h/4
  inside it on average; without it, shells of voxelised 10–28 mm spheres came out 5–12 % thin,
  with it within 2 % grown and 5–7 % too thick shrunk, 1 mm voxels).
* :class:`FixedThreshold`: lesions by a fixed fraction of their maximum on the site's own
  reconstructed SPECT (first time point, noise and blur included; the maximum over the lesion's
  own voxels, as the operator clicks the lesion) inside a search region (the true lesion dilated
  by ``search_margin_mm``), keeping the connected part that holds the maximum: a faint lesion in
  a hot liver grows to the search region, as a fixed threshold does. Carried onto the CT grid
  by voxel centre (each CT voxel takes the SPECT voxel its centre lies in). Organs: true
  outlines. 40–42 % of the maximum is the classic fixed threshold
  (Erdi et al., Cancer 1997;80:2505-2509, for PET), widely used for SPECT lesions too.
* :class:`CtOrganOutline`: organs drawn on the CT: the true outline smoothed (Gaussian of
  ``smoothing_sigma_mm``, kept where ≥ 0.5) then eroded by ``erosion_mm`` (a common guard
  against spill-in from neighbours). Lesions: true outlines.

Margins and smoothing act on the continuous true shape, not on its voxels: a margin of 3 mm
must show on a CT of 4.4 mm pixels as it does on a 1 mm one. Each VOI's shape is sampled on a
grid refined by an odd factor per axis (spacing ≈ :data:`FINE_SPACING_MM`) around it, whose
voxel centres include the CT's, the rule is applied there, and the CT's voxel centres are read
back. A rule that would leave a VOI empty keeps the true VOI's deepest voxel (a reader always
finds every segment). Deterministic: no random draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from concordose.phantoms.anatomy import Shape, Voi, VoiType
from concordose.phantoms.grid import VoxelGrid


@dataclass(frozen=True)
class TrueOutline:
    """The true shapes (the generator's default: every site alike)."""

    def to_json(self) -> dict[str, object]:
        """The rule as recorded in a site's ground truth."""
        return {"method": "true_outline"}


@dataclass(frozen=True)
class ManualMargin:
    """Manual outlines with a habitual margin: + outward (generous), − inward (tight), mm."""

    margin_mm: float

    def to_json(self) -> dict[str, object]:
        """The rule as recorded in a site's ground truth."""
        return {"method": "manual_margin", "margin_mm": self.margin_mm}


@dataclass(frozen=True)
class FixedThreshold:
    """Lesions by ``fraction_of_max`` of the lesion's SPECT maximum within ``search_margin_mm``
    of the true lesion; organs true."""

    fraction_of_max: float = 0.40
    search_margin_mm: float = 10.0

    def to_json(self) -> dict[str, object]:
        """The rule as recorded in a site's ground truth."""
        return {
            "method": "fixed_threshold",
            "fraction_of_max": self.fraction_of_max,
            "search_margin_mm": self.search_margin_mm,
        }


@dataclass(frozen=True)
class CtOrganOutline:
    """Organs on the CT, smoothed (σ mm) and eroded (mm); lesions true."""

    smoothing_sigma_mm: float = 3.0
    erosion_mm: float = 2.0

    def to_json(self) -> dict[str, object]:
        """The rule as recorded in a site's ground truth."""
        return {
            "method": "ct_organ_outline",
            "smoothing_sigma_mm": self.smoothing_sigma_mm,
            "erosion_mm": self.erosion_mm,
        }


FINE_SPACING_MM = 1.0
"""Target spacing of the refined grid a margin or smoothing is applied on, mm: each axis is
refined by the smallest odd factor ≥ round(spacing / this), so a CT of ≤ 1.5 mm pixels (the
``clinical`` preset's 1.1 mm) is used as it is and coarser ones get 0.7–1.0 mm."""
_SURFACE_OFFSET_VOXELS = 0.25
"""Mean depth of the voxel centres nearest an outline, in voxels (module docstring)."""

SegmentationRule = TrueOutline | ManualMargin | FixedThreshold | CtOrganOutline
"""A site's segmentation rule (module docstring)."""


def _box(mask: NDArray[np.bool_], pad_voxels: Sequence[int]) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` padded by ``pad_voxels`` per axis (clipped), or None if empty."""
    where = np.nonzero(mask)
    if where[0].size == 0:
        return None
    return tuple(
        slice(max(0, int(idx.min()) - pad), min(size, int(idx.max()) + pad + 1))
        for idx, pad, size in zip(where, pad_voxels, mask.shape, strict=True)
    )


def margin_mask(
    mask: NDArray[np.bool_], margin_mm: float, spacing_mm_zyx: tuple[float, float, float]
) -> NDArray[np.bool_]:
    """``mask`` grown (``margin_mm`` > 0) or shrunk (< 0) by the margin (module docstring):
    Euclidean distances between voxel centres on the anisotropic grid, over the mask's box."""
    if margin_mm == 0.0:
        return mask.copy()
    reach_mm = abs(margin_mm) + _SURFACE_OFFSET_VOXELS * min(spacing_mm_zyx)
    pad = [int(np.ceil(reach_mm / s)) + 1 for s in spacing_mm_zyx]
    box = _box(mask, pad)
    result = np.zeros_like(mask)
    if box is None:
        return result
    crop = mask[box]
    if margin_mm > 0.0:
        distance_out = ndimage.distance_transform_edt(~crop, sampling=spacing_mm_zyx)
        result[box] = distance_out <= reach_mm
    else:
        # Pad with background so that the box's faces count as outside.
        padded = np.pad(crop, 1, constant_values=False)
        distance_in = ndimage.distance_transform_edt(padded, sampling=spacing_mm_zyx)
        result[box] = (distance_in > reach_mm)[1:-1, 1:-1, 1:-1]
    return result


def smoothed_eroded_mask(
    mask: NDArray[np.bool_],
    *,
    smoothing_sigma_mm: float,
    erosion_mm: float,
    spacing_mm_zyx: tuple[float, float, float],
) -> NDArray[np.bool_]:
    """``mask`` smoothed by a Gaussian of ``smoothing_sigma_mm`` (kept where ≥ 0.5), then eroded
    by ``erosion_mm`` (:func:`margin_mask` with −erosion)."""
    smoothed = mask.copy()
    if smoothing_sigma_mm > 0.0:
        pad = [int(np.ceil(4.0 * smoothing_sigma_mm / s)) + 1 for s in spacing_mm_zyx]
        box = _box(mask, pad)
        if box is not None:
            sigma = [smoothing_sigma_mm / s for s in spacing_mm_zyx]
            blurred = ndimage.gaussian_filter(mask[box].astype(np.float64), sigma, mode="constant")
            smoothed[box] = blurred >= 0.5
    return margin_mask(smoothed, -erosion_mm, spacing_mm_zyx)


def threshold_mask(
    image: NDArray[np.float64] | NDArray[np.uint16],
    region: NDArray[np.bool_],
    fraction_of_max: float,
    *,
    peak_region: NDArray[np.bool_] | None = None,
) -> NDArray[np.bool_]:
    """Voxels of ``region`` at or above ``fraction_of_max`` × the maximum of ``image`` over
    ``peak_region`` (default: ``region``), the 26-connected part holding that maximum (the first
    in C order on ties)."""
    values = np.where(region, image.astype(np.float64), -np.inf)
    searched = values if peak_region is None else np.where(peak_region, values, -np.inf)
    peak = int(np.argmax(searched))
    above = region & (values >= fraction_of_max * values.flat[peak])
    components, _ = ndimage.label(above, structure=np.ones((3, 3, 3), dtype=bool))
    kept: NDArray[np.bool_] = components == components.flat[peak]
    return kept


def _deepest_voxel(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The voxel of ``mask`` farthest from its outside (first on ties), as a mask."""
    padded = np.pad(mask, 1, constant_values=False)
    depth = ndimage.distance_transform_edt(padded)[1:-1, 1:-1, 1:-1]
    single = np.zeros_like(mask)
    single.flat[int(np.argmax(depth))] = True
    return single


def nm_mask_on_ct(
    nm_mask: NDArray[np.bool_], nm_grid: VoxelGrid, ct_grid: VoxelGrid
) -> NDArray[np.bool_]:
    """A SPECT-grid mask carried onto the CT grid by voxel centre (same frame of reference):
    each CT voxel takes the SPECT voxel its centre lies in (outside the SPECT: False)."""
    ct_mask = np.zeros(ct_grid.shape_zyx, dtype=bool)
    box = _box(nm_mask, (0, 0, 0))
    if box is None:
        return ct_mask
    nm_axes = nm_grid.axis_coordinates_mm()
    ct_axes = ct_grid.axis_coordinates_mm()
    indices = []
    for nm_axis, ct_axis, spacing, axis_box in zip(
        nm_axes, ct_axes, nm_grid.spacing_mm_xyz, (box[2], box[1], box[0]), strict=True
    ):
        # floor(· + 0.5), not rint: a CT centre midway between two SPECT centres (a 2× finer
        # CT) always goes to the upper one (1e-9 voxel absorbs rounding of the coordinates), so
        # each SPECT voxel gets the same number of CT voxels.
        nm_index = np.floor((ct_axis - nm_axis[0]) / spacing + 0.5 + 1e-9).astype(np.int64)
        (hits,) = np.nonzero((nm_index >= axis_box.start) & (nm_index < axis_box.stop))
        indices.append((hits, nm_index[hits]))
    (ct_i, nm_i), (ct_j, nm_j), (ct_k, nm_k) = indices
    ct_mask[np.ix_(ct_k, ct_j, ct_i)] = nm_mask[np.ix_(nm_k, nm_j, nm_i)]
    return ct_mask


FineOperation = Callable[[NDArray[np.bool_], tuple[float, float, float]], NDArray[np.bool_]]
"""(fine mask, fine spacing zyx mm) → fine mask."""


def _unchanged(
    fine: NDArray[np.bool_], spacing_mm_zyx: tuple[float, float, float]
) -> NDArray[np.bool_]:
    """The identity operation: the shape's own voxel centres."""
    return fine


def _refinement(spacing_mm: float) -> int:
    """Smallest odd factor ≥ round(``spacing_mm`` / :data:`FINE_SPACING_MM`) (at least 1)."""
    factor = max(1, round(spacing_mm / FINE_SPACING_MM))
    return factor if factor % 2 == 1 else factor + 1


def shape_rule_mask(
    shape: Shape,
    grid: VoxelGrid,
    box: tuple[slice, slice, slice],
    rule_on_fine_grid: FineOperation,
    *,
    refine: bool = True,
) -> NDArray[np.bool_]:
    """Apply a mask operation to ``shape`` sampled finely, read back at ``grid``'s voxel centres.

    Args:
        shape: the true continuous shape (patient frame).
        grid: the coarse grid (e.g. the CT), patient placed as imaged.
        box: the part of ``grid`` (z, y, x slices) holding the shape and the rule's reach.
        rule_on_fine_grid: (fine mask, fine spacing zyx mm) → fine mask.
        refine: ``False`` samples ``grid`` itself (for an operation that needs no finer grid).

    Returns:
        a mask of ``grid``'s shape, set inside ``box`` only. The refined grid's central
        sub-voxels have exactly ``grid``'s centres, so the identity operation gives the voxels
        :func:`phantoms.anatomy.sample_label_map` gives the shape.
    """
    factors = [_refinement(s) if refine else 1 for s in grid.spacing_mm_zyx]
    fine_axes = []
    for axis_mm, spacing, factor, part in zip(
        reversed(grid.axis_coordinates_mm()), grid.spacing_mm_zyx, factors, box, strict=True
    ):
        coarse = axis_mm[part]
        offsets = (np.arange(factor) - (factor - 1) / 2.0) * spacing / factor
        fine_axes.append((coarse[:, None] + offsets[None, :]).ravel())
    z_mm, y_mm, x_mm = fine_axes
    fine = shape.contains(x_mm[None, None, :], y_mm[None, :, None], z_mm[:, None, None])
    fine_spacing = (
        grid.spacing_mm_zyx[0] / factors[0],
        grid.spacing_mm_zyx[1] / factors[1],
        grid.spacing_mm_zyx[2] / factors[2],
    )
    ruled = rule_on_fine_grid(np.asarray(fine, dtype=bool), fine_spacing)
    centres = ruled[
        (factors[0] - 1) // 2 :: factors[0],
        (factors[1] - 1) // 2 :: factors[1],
        (factors[2] - 1) // 2 :: factors[2],
    ]
    mask = np.zeros(grid.shape_zyx, dtype=bool)
    mask[box] = centres
    return mask


def _reach_box(
    truth: NDArray[np.bool_], reach_mm: float, spacing_mm_zyx: tuple[float, float, float]
) -> tuple[slice, slice, slice] | None:
    """Box of ``truth`` padded by ``reach_mm`` plus two voxels (the continuous shape reaches up
    to a voxel beyond its voxel centres)."""
    box = _box(truth, [int(np.ceil(reach_mm / s)) + 2 for s in spacing_mm_zyx])
    return None if box is None else (box[0], box[1], box[2])


def _shape_operation(
    rule: SegmentationRule, voi_type: VoiType
) -> tuple[FineOperation, float] | None:
    """The operation ``rule`` applies to a VOI's continuous shape and its reach (mm), or None
    when the rule takes that VOI by another route (the true outline, the SPECT threshold)."""
    if isinstance(rule, ManualMargin):
        margin_mm = rule.margin_mm

        def with_margin(
            fine: NDArray[np.bool_], spacing_mm_zyx: tuple[float, float, float]
        ) -> NDArray[np.bool_]:
            return margin_mask(fine, margin_mm, spacing_mm_zyx)

        return with_margin, abs(margin_mm)
    if isinstance(rule, CtOrganOutline) and voi_type is VoiType.ORGAN:
        sigma_mm, erosion_mm = rule.smoothing_sigma_mm, rule.erosion_mm

        def outlined(
            fine: NDArray[np.bool_], spacing_mm_zyx: tuple[float, float, float]
        ) -> NDArray[np.bool_]:
            return smoothed_eroded_mask(
                fine,
                smoothing_sigma_mm=sigma_mm,
                erosion_mm=erosion_mm,
                spacing_mm_zyx=spacing_mm_zyx,
            )

        return outlined, 4.0 * sigma_mm
    return None


def site_voi_labels(
    rule: SegmentationRule,
    *,
    vois: Sequence[Voi],
    ct_labels: NDArray[np.uint8],
    ct_grid: VoxelGrid,
    nm_labels: NDArray[np.uint8],
    nm_counts: NDArray[np.uint16],
    nm_grid: VoxelGrid,
) -> NDArray[np.uint8]:
    """The label map (CT grid, values = segment numbers, 0 elsewhere) a site following ``rule``
    draws on the first time point's CT.

    Args:
        rule: the site's rule.
        vois: organs and lesions (label-map value = segment number).
        ct_labels: true label map on ``ct_grid`` (voxel centres).
        ct_grid: the first CT's grid (patient placed as imaged).
        nm_labels: true label map on ``nm_grid`` (for the threshold rule's search region).
        nm_counts: the site's reconstructed first SPECT (stored counts) on ``nm_grid``.
        nm_grid: the first SPECT's grid, in the CT's frame of reference.

    Every VOI starts from its whole shape (an organ with the lesions it hosts: the site outlines
    the organ, not the organ minus the true lesions it cannot know); organs are painted first,
    then lesions, so a lesion as the site drew it wins where outlines overlap.
    """
    spacing_ct = ct_grid.spacing_mm_zyx
    out = np.zeros(ct_labels.shape, dtype=np.uint8)
    ordered = sorted(vois, key=lambda v: v.voi_type is VoiType.LESION)
    for voi in ordered:
        visible = ct_labels == voi.value
        operation = _shape_operation(rule, voi.voi_type)
        box = _reach_box(visible, 0.0 if operation is None else operation[1], spacing_ct)
        if box is None:
            continue
        truth = shape_rule_mask(voi.shape, ct_grid, box, _unchanged, refine=False)
        if operation is not None:
            mask = shape_rule_mask(voi.shape, ct_grid, box, operation[0])
        elif isinstance(rule, FixedThreshold) and voi.voi_type is VoiType.LESION:
            nm_truth = nm_labels == voi.value
            region = margin_mask(nm_truth, rule.search_margin_mm, nm_grid.spacing_mm_zyx)
            if region.any():
                nm_mask = threshold_mask(
                    nm_counts, region, rule.fraction_of_max, peak_region=nm_truth
                )
                mask = nm_mask_on_ct(nm_mask, nm_grid, ct_grid)
            else:
                mask = truth
        else:
            mask = truth
        if not mask.any() and truth.any():
            mask = _deepest_voxel(truth)
        out[mask] = voi.value
    return out


__all__ = [
    "CtOrganOutline",
    "FixedThreshold",
    "ManualMargin",
    "SegmentationRule",
    "TrueOutline",
    "margin_mask",
    "nm_mask_on_ct",
    "shape_rule_mask",
    "site_voi_labels",
    "smoothed_eroded_mask",
    "threshold_mask",
]
