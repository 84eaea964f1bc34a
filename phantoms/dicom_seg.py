"""Writer of the VOI segmentation: one DICOM SEG (BINARY) on the first time point's CT.

One segment per VOI (organs and lesions, not the body remainder), SegmentLabel = VOI label,
segment number = the VOI's label-map value, one bit per pixel. By default every CT slice gets a
frame per segment (empty frames are kept), so the SEG volume has exactly the CT grid; a large CT
(the ``clinical`` preset) keeps only the frames that hold a segment, as segmentation tools do:
readers place frames by their position (highdicom's ``get_volume`` fills the gaps).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import UID

from concordose.phantoms.anatomy import Voi, VoiType
from concordose.phantoms.dicom_study import SOFTWARE_VERSION, da, dt_string, tm

_PROPERTY_TYPE_BY_PREFIX: dict[str, Code] = {
    "kidney": codes.SCT.Kidney,
    "bone": codes.SCT.BoneMarrow,
    "liver": codes.SCT.Liver,
    "spleen": codes.SCT.Spleen,
    "lesion": codes.SCT.Neoplasm,
}


def _segment_codes(voi: Voi) -> tuple[Code, Code]:
    """(category, property type) of a VOI."""
    category = (
        codes.SCT.MorphologicallyAbnormalStructure
        if voi.voi_type is VoiType.LESION
        else codes.SCT.AnatomicalStructure
    )
    prefix = voi.label.split("_", 1)[0]
    if prefix not in _PROPERTY_TYPE_BY_PREFIX:
        raise ValueError(
            f"VOI {voi.label!r} has no segmented property type; known prefixes: "
            f"{sorted(_PROPERTY_TYPE_BY_PREFIX)}"
        )
    return category, _PROPERTY_TYPE_BY_PREFIX[prefix]


def write_seg(
    path: Path,
    *,
    ct_slices: Sequence[Dataset],
    ct_labels: NDArray[np.uint8],
    vois: Sequence[Voi],
    series_instance_uid: UID,
    sop_instance_uid: UID,
    content_datetime: dt.datetime,
    uid_for_tracking: Sequence[UID],
    dimension_organization_uid: UID,
    omit_empty_frames: bool = False,
    drawn_by: str | None = None,
) -> hd.seg.Segmentation:
    """Write the SEG of ``vois`` from ``ct_labels`` (CT grid, values = segment numbers).

    ``ct_slices`` must be in slice order (the order of ``ct_labels``' first axis); values of
    ``ct_labels`` that are no VOI's segment number (body, outside) are background.
    ``omit_empty_frames`` keeps only the frames where a segment has a pixel. ``drawn_by``
    (e.g. ``"manual_margin"``) says the VOIs are a site's segmentation, not the true outlines
    (content and series descriptions); ``None`` keeps the ground-truth descriptions.
    """
    labelmap = np.where(np.isin(ct_labels, [v.value for v in vois]), ct_labels, 0).astype(np.uint8)
    descriptions = []
    for voi, tracking_uid in zip(vois, uid_for_tracking, strict=True):
        category, property_type = _segment_codes(voi)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=voi.value,
                segment_label=voi.label,
                segmented_property_category=category,
                segmented_property_type=property_type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
                tracking_id=voi.label,
                tracking_uid=tracking_uid,
            )
        )
    seg = hd.seg.Segmentation(
        source_images=list(ct_slices),
        pixel_array=labelmap,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid,
        series_number=100,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer="concordose",
        manufacturer_model_name="digital phantom generator",
        software_versions=SOFTWARE_VERSION,
        device_serial_number="0",
        content_label="VOIS",
        content_description="Ground-truth VOIs of the digital phantom"
        if drawn_by is None
        else f"Site VOIs of the digital phantom ({drawn_by})",
        series_description="VOIs (ground truth)" if drawn_by is None else "VOIs (site)",
        omit_empty_frames=omit_empty_frames,
    )
    # highdicom stamps the wall clock (content, contributing equipment) and a random dimension
    # organisation UID: pin them so that the same seed gives byte-identical files.
    for keyword in ("ContentDate", "SeriesDate", "InstanceCreationDate"):
        if keyword in seg:
            setattr(seg, keyword, da(content_datetime))
    for keyword in ("ContentTime", "SeriesTime", "InstanceCreationTime"):
        if keyword in seg:
            setattr(seg, keyword, tm(content_datetime))
    for equipment in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in equipment:
            equipment.ContributionDateTime = dt_string(content_datetime)
    for item in (*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence):
        item.DimensionOrganizationUID = dimension_organization_uid
    seg.save_as(path)
    return seg
