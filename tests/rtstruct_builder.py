"""An RTSTRUCT drawn on a generated patient's first CT from its SEG's masks (rt-utils turns each
mask into contours), for the RTSTRUCT reader's tests: the same VOIs in the other object."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from rt_utils import RTStructBuilder

from concordose.dicom.ct import read_ct_series
from concordose.dicom.seg import VoiMask, read_segmentation
from concordose.phantoms import GeneratedPatient


def on_grid(voi: VoiMask, grid: sitk.Image) -> np.ndarray:
    """A VOI's cropped mask on a full grid, as a bool array (slice, row, column)."""
    resampled = sitk.Resample(
        voi.mask, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    return sitk.GetArrayFromImage(resampled).astype(bool)


def first_ct_files(patient: GeneratedPatient) -> list[Path]:
    """The slices of the CT the SEG was drawn on (the first time point's)."""
    return sorted((patient.out_dir / "dicom" / "tp01" / "ct").glob("*.dcm"))


def write_rtstruct_from_seg(
    patient: GeneratedPatient, path: Path, *, interpreted_types: dict[str, str] | None = None
) -> Path:
    """Write an RTSTRUCT at ``path`` holding every SEG segment of ``patient`` as an ROI of the
    same name, contoured by rt-utils on the first CT. ``interpreted_types``: ROI name → RT ROI
    Interpreted Type to set (rt-utils leaves it empty)."""
    ct_files = first_ct_files(patient)
    ct = read_ct_series(ct_files)  # ordered along the slice normal, as rt-utils orders them
    structure = RTStructBuilder.create_new(dicom_series_path=str(ct_files[0].parent))
    for voi in read_segmentation(patient.seg_path):
        # rt-utils takes masks as (row, column, slice)
        structure.add_roi(mask=on_grid(voi, ct).transpose(1, 2, 0), name=voi.label)
    for roi, observation in zip(
        structure.ds.StructureSetROISequence, structure.ds.RTROIObservationsSequence, strict=True
    ):
        kind = (interpreted_types or {}).get(str(roi.ROIName))
        if kind is not None:
            observation.RTROIInterpretedType = kind
    path.parent.mkdir(parents=True, exist_ok=True)
    structure.ds.save_as(path)  # rt-utils' save() prints; the dataset saves quietly
    return path


def folder_with_rtstruct(patient: GeneratedPatient, folder: Path) -> Path:
    """A copy of the patient's DICOM folder with the SEG replaced by an RTSTRUCT of its VOIs."""
    shutil.copytree(patient.out_dir / "dicom", folder)
    (folder / "seg.dcm").unlink()
    write_rtstruct_from_seg(patient, folder / "rtstruct.dcm")
    return folder
