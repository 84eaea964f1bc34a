"""Writer of the reconstructed Lu-177 SPECT as one multi-frame NM Image Storage file.

Modelled on a Siemens Symbia Intevo reconstruction (RECON TOMO, one frame per slice, geometry in
the single Detector Information Sequence item). Pixel values are reconstructed counts over the whole
acquisition, attenuation- and scatter-corrected but NOT decay-corrected.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID, NuclearMedicineImageStorage

from concordose.nuclides import LU177
from concordose.phantoms.dicom_study import (
    PatientInfo,
    TimePointStudy,
    add_patient_study_equipment,
    dt_string,
    new_file_dataset,
)
from concordose.phantoms.grid import VoxelGrid
from concordose.phantoms.site_profiles import SiteProfile

RADIOPHARMACEUTICAL = "Lu-177 DOTATATE"
"""Radiopharmaceutical (0018,0031) as written."""

_SLICE_VECTOR_TAG = 0x00540080


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def write_nm(
    path: Path,
    *,
    counts: NDArray[np.uint16],
    grid: VoxelGrid,
    site: SiteProfile,
    patient: PatientInfo,
    study: TimePointStudy,
    injection_datetime: dt.datetime,
    injected_activity_mbq: float,
    series_instance_uid: UID,
    sop_instance_uid: UID,
    radiopharmaceutical: str = RADIOPHARMACEUTICAL,
    series_description: str | None = None,
    study_description: str | None = None,
) -> Dataset:
    """Write ``counts`` (shape ``grid.shape_zyx``, reconstructed counts) as an NM file at ``path``.

    ``radiopharmaceutical`` other than the default (e.g. ``"Lu-177 chloride"`` in a phantom)
    gets no RadiopharmaceuticalCodeSequence. The site's extra energy windows follow the
    photopeak window. ``series_description``/``study_description`` override the defaults.

    Raises:
        ValueError: when ``counts`` does not match the grid or is not uint16.
    """
    if counts.shape != grid.shape_zyx or counts.dtype != np.uint16:
        raise ValueError(
            f"NM counts must be uint16 of shape {grid.shape_zyx}, got {counts.dtype} {counts.shape}"
        )
    ds = new_file_dataset(NuclearMedicineImageStorage, sop_instance_uid)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    add_patient_study_equipment(
        ds,
        patient=patient,
        study=study,
        site=site,
        series_instance_uid=series_instance_uid,
        series_number=1000 + study.index,
        series_description=series_description
        or f"Lu177 SPECT TP{study.index} {study.time_h:g}h p.i. [RECON AC SC]",
        modality="NM",
        study_description=study_description,
    )
    ds.InstanceNumber = 1

    # NM Image / Multi-frame: one frame per slice, slices along +z.
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = grid.n_slices
    ds.FrameIncrementPointer = _SLICE_VECTOR_TAG
    ds.SliceVector = list(range(1, grid.n_slices + 1))
    ds.NumberOfSlices = grid.n_slices
    ds.Rows = grid.n_rows
    ds.Columns = grid.n_columns
    ds.PixelSpacing = [f"{grid.spacing_mm_xyz[1]:.6g}", f"{grid.spacing_mm_xyz[0]:.6g}"]
    ds.SliceThickness = f"{grid.spacing_mm_xyz[2]:.6g}"
    ds.SpacingBetweenSlices = f"{grid.spacing_mm_xyz[2]:.6g}"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    # No DECY: counts are not decay-corrected.
    ds.CorrectedImage = ["ATTN", "SCAT"]
    ds.AcquisitionTerminationCondition = "TIME"
    ds.TypeOfDetectorMotion = "STEP AND SHOOT"

    # Energy window: Lu-177 208 keV photopeak.
    window_range = Dataset()
    window_range.EnergyWindowLowerLimit = f"{site.energy_window_lower_kev:g}"
    window_range.EnergyWindowUpperLimit = f"{site.energy_window_upper_kev:g}"
    window = Dataset()
    window.EnergyWindowRangeSequence = [window_range]
    window.EnergyWindowName = "Lu177 208keV"
    windows = [window]
    for name, lower_kev, upper_kev in site.extra_energy_windows_kev:
        extra_range = Dataset()
        extra_range.EnergyWindowLowerLimit = f"{lower_kev:g}"
        extra_range.EnergyWindowUpperLimit = f"{upper_kev:g}"
        extra = Dataset()
        extra.EnergyWindowRangeSequence = [extra_range]
        extra.EnergyWindowName = name
        windows.append(extra)
    ds.NumberOfEnergyWindows = len(windows)
    ds.EnergyWindowInformationSequence = windows

    # Radiopharmaceutical: RadionuclideTotalDose is in MBq for NM (PET uses Bq), half-life in s.
    radionuclide = codes.SCT._177Lutetium
    pharmaceutical_code = codes.SCT.Lutetium177DOTATATE
    pharma = Dataset()
    pharma.Radiopharmaceutical = radiopharmaceutical
    pharma.RadiopharmaceuticalStartDateTime = dt_string(injection_datetime)
    pharma.RadiopharmaceuticalRoute = "Intravenous"
    pharma.RadionuclideTotalDose = f"{injected_activity_mbq:g}"
    pharma.RadionuclideHalfLife = f"{LU177.half_life_s:.1f}"
    pharma.RadionuclideCodeSequence = [
        _code_item(radionuclide.value, radionuclide.scheme_designator, radionuclide.meaning)
    ]
    if radiopharmaceutical == RADIOPHARMACEUTICAL:
        pharma.RadiopharmaceuticalCodeSequence = [
            _code_item(
                pharmaceutical_code.value,
                pharmaceutical_code.scheme_designator,
                pharmaceutical_code.meaning,
            )
        ]
    ds.RadiopharmaceuticalInformationSequence = [pharma]

    # Detector: one item for a reconstructed volume, holding the volume's geometry.
    detector = Dataset()
    detector.CollimatorGridName = site.collimator
    detector.CollimatorType = "PARA"
    detector.ImagePositionPatient = [f"{v:.6f}" for v in grid.origin_mm_xyz]
    detector.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    detector.ZoomFactor = [1, 1]
    detector.StartAngle = "180"
    ds.NumberOfDetectors = 1
    ds.DetectorInformationSequence = [detector]

    # Rotation: n_views stops over 360°, ActualFrameDuration per view in ms.
    rotation = Dataset()
    rotation.RotationDirection = "CW"
    rotation.ScanArc = "360"
    rotation.AngularStep = f"{360.0 / site.n_views:g}"
    rotation.ActualFrameDuration = round(site.view_duration_s * 1000.0)
    rotation.NumberOfFramesInRotation = site.n_views
    rotation.StartAngle = "180"
    ds.NumberOfRotations = 1
    ds.RotationInformationSequence = [rotation]

    ds.PatientOrientationCodeSequence = [_code_item("102538003", "SCT", "recumbent")]
    ds.PatientOrientationCodeSequence[0].PatientOrientationModifierCodeSequence = [
        _code_item("40199007", "SCT", "supine")
    ]
    ds.PatientGantryRelationshipCodeSequence = [_code_item("102540008", "SCT", "headfirst")]

    ds.PixelData = np.ascontiguousarray(counts).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds
