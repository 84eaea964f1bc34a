"""Writer of a pre-therapy PET (e.g. [68Ga]Ga-DOTATATE) as a PET Image Storage series (issue 20).

One single-frame file per slice, as PET scanners file them: Modality ``PT``, Units ``BQML``
(activity concentration, Bq/mL), DecayCorrection ``START`` (values decay-corrected to the series
start, SeriesDate/SeriesTime), corrected for decay, attenuation, scatter and dead time. Each slice
has its own RescaleSlope (int16 stored values scaled to the slice's maximum), the layout SUV
software must cope with. The Radiopharmaceutical Information Sequence carries the injected
activity (RadionuclideTotalDose, Bq), the injection date-time and the half-life in s, and the
Patient Study module PatientWeight (kg): everything SUVbw needs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import UID, PositronEmissionTomographyImageStorage

from concordose.phantoms.dicom_study import (
    PatientInfo,
    TimePointStudy,
    add_patient_study_equipment,
    dt_string,
    new_file_dataset,
)
from concordose.phantoms.grid import VoxelGrid
from concordose.phantoms.site_profiles import SiteProfile

PT_STORED_MAX = 32767
"""Largest stored value of a slice (int16): each slice's RescaleSlope maps its maximum here."""


def write_pt_series(
    folder: Path,
    *,
    bq_per_ml: NDArray[np.float64],
    grid: VoxelGrid,
    site: SiteProfile,
    patient: PatientInfo,
    study: TimePointStudy,
    radiopharmaceutical: str,
    injection_datetime: dt.datetime,
    injected_activity_bq: float,
    half_life_s: float,
    series_instance_uid: UID,
    sop_instance_uids: list[UID],
    study_description: str,
    series_description: str,
) -> list[Path]:
    """Write ``bq_per_ml`` (shape ``grid.shape_zyx``, decay-corrected to the series start) as
    ``folder/0001.dcm``, … (slice k at z = origin_z + k·slice spacing).

    Raises:
        ValueError: when the image does not match the grid or the number of UIDs, or holds a
            negative or non-finite value.
    """
    if bq_per_ml.shape != grid.shape_zyx:
        raise ValueError(f"PT image must have shape {grid.shape_zyx}, got {bq_per_ml.shape}")
    if len(sop_instance_uids) != grid.n_slices:
        raise ValueError(
            f"PT needs one UID per slice: {grid.n_slices} slices, {len(sop_instance_uids)} UIDs"
        )
    if not np.all(np.isfinite(bq_per_ml)) or float(bq_per_ml.min()) < 0.0:
        raise ValueError("PT image must hold finite non-negative Bq/mL")
    folder.mkdir(parents=True, exist_ok=True)
    x0_mm, y0_mm, z0_mm = grid.origin_mm_xyz
    sx_mm, sy_mm, sz_mm = grid.spacing_mm_xyz
    acquired = study.acquisition_datetime
    written = []
    for k in range(grid.n_slices):
        ds = new_file_dataset(PositronEmissionTomographyImageStorage, sop_instance_uids[k])
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        add_patient_study_equipment(
            ds,
            patient=patient,
            study=study,
            site=site,
            series_instance_uid=series_instance_uid,
            series_number=2000 + study.index,
            series_description=series_description,
            modality="PT",
            study_description=study_description,
        )
        ds.InstanceNumber = k + 1
        ds.ImageIndex = k + 1
        ds.NumberOfSlices = grid.n_slices
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.Units = "BQML"
        ds.CountsSource = "EMISSION"
        ds.DecayCorrection = "START"
        ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"]
        ds.ReconstructionMethod = "OSEM"
        ds.ActualFrameDuration = 120_000  # ms per bed position
        ds.FrameReferenceTime = 0.0
        ds.DecayFactor = "1.0"

        item = Dataset()
        item.Radiopharmaceutical = radiopharmaceutical
        item.RadiopharmaceuticalStartDateTime = dt_string(injection_datetime)
        item.RadiopharmaceuticalStartTime = injection_datetime.strftime("%H%M%S")
        item.RadionuclideTotalDose = f"{injected_activity_bq:.6g}"
        item.RadionuclideHalfLife = f"{half_life_s:.6g}"
        ds.RadiopharmaceuticalInformationSequence = [item]

        z_mm = z0_mm + k * sz_mm
        ds.ImagePositionPatient = [f"{x0_mm:.6f}", f"{y0_mm:.6f}", f"{z_mm:.6f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = f"{z_mm:.6f}"
        ds.PixelSpacing = [f"{sy_mm:.6g}", f"{sx_mm:.6g}"]
        ds.SliceThickness = f"{sz_mm:.6g}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = grid.n_rows
        ds.Columns = grid.n_columns
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        plane = bq_per_ml[k]
        peak = float(plane.max())
        slope = peak / PT_STORED_MAX if peak > 0.0 else 1.0
        # DS holds 16 characters: the slope written is the one the reader will apply.
        slope_text = f"{slope:.10g}"
        ds.RescaleSlope = slope_text
        ds.RescaleIntercept = "0"
        stored = np.clip(np.rint(plane / float(slope_text)), 0, PT_STORED_MAX).astype(np.int16)
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        ds.AcquisitionDateTime = dt_string(acquired)
        path = folder / f"{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written
