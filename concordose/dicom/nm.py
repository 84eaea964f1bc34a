"""Reader for quantitative SPECT reconstructions stored as NM Image Storage (RECON TOMO).

Reads the header once (without pixel data) into an :class:`NMAcquisition`; counts are loaded
only when asked for. Missing attributes are returned as ``None``, never defaulted: deciding what
a missing value means is the metadata check's job, not the reader's.

Geometry follows the NM IOD: ImagePositionPatient and ImageOrientationPatient of the first frame
live in DetectorInformationSequence (vendors also put them at top level); frames are stacked
along row × column by SpacingBetweenSlices.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import NuclearMedicineImageStorage
from pydicom.valuerep import DT

from concordose.dicom.geometry import VolumeGeometry
from concordose.errors import StudyIncompleteError, UnreadableDicomError


@dataclass(frozen=True)
class Radiopharmaceutical:
    """What was injected, as the modality recorded it.

    Attributes:
        name: Radiopharmaceutical (0018,0031), e.g. "Lu-177 DOTATATE".
        radionuclide: code meaning of RadionuclideCodeSequence, e.g. "^177^Lutetium".
        injected_activity_mbq: RadionuclideTotalDose; DICOM defines it in MBq for NM.
        injection_datetime: RadiopharmaceuticalStartDateTime (or date + time when split).
    """

    name: str | None
    radionuclide: str | None
    injected_activity_mbq: float | None
    injection_datetime: datetime | None
    radionuclide_code: str | None = None


@dataclass(frozen=True)
class NMAcquisition:
    """Header of one reconstructed SPECT time point."""

    path: Path
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str | None
    patient_id: str | None
    patient_weight_kg: float | None
    manufacturer: str | None
    camera_model: str | None
    image_type: tuple[str, ...]
    acquisition_datetime: datetime | None
    acquisition_duration_s: float | None
    energy_windows_kev: tuple[tuple[float, float], ...]
    corrections: tuple[str, ...]
    radiopharmaceutical: Radiopharmaceutical | None
    geometry: VolumeGeometry
    collimator: str | None = None
    pixel_units: str | None = None
    reconstruction: str | None = None

    @property
    def is_recon_tomo(self) -> bool:
        """True for a tomographic reconstruction (the only NM image we quantify)."""
        return "RECON TOMO" in self.image_type

    def hours_since_injection(self) -> float:
        """Time of this acquisition after injection, in hours.

        Raises:
            StudyIncompleteError: acquisition or injection date/time is missing.
        """
        if self.acquisition_datetime is None:
            raise StudyIncompleteError(
                f"NM file {self.path}: AcquisitionDate/AcquisitionTime missing; "
                "cannot place this time point on the time-activity curve"
            )
        if self.radiopharmaceutical is None or self.radiopharmaceutical.injection_datetime is None:
            raise StudyIncompleteError(
                f"NM file {self.path}: RadiopharmaceuticalStartDateTime missing "
                "(RadiopharmaceuticalInformationSequence); injection time is required"
            )
        delta = self.acquisition_datetime - self.radiopharmaceutical.injection_datetime
        return delta.total_seconds() / 3600.0


def _datetime(date: object, time: object) -> datetime | None:
    if not date or not time:
        return None
    return DT(f"{date}{time}").replace(tzinfo=None)


def _float(value: object) -> float | None:
    if value is None or value == "":
        return None
    return float(value)  # type: ignore[arg-type]


def _radiopharmaceutical(dataset: Dataset) -> Radiopharmaceutical | None:
    sequence = dataset.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        return None
    item = sequence[0]
    injection: datetime | None = None
    if item.get("RadiopharmaceuticalStartDateTime"):
        injection = DT(item.RadiopharmaceuticalStartDateTime).replace(tzinfo=None)
    else:
        # Older modalities split it; without a date the time alone is not enough.
        injection = _datetime(
            item.get("RadiopharmaceuticalStartDate"), item.get("RadiopharmaceuticalStartTime")
        )
    codes = item.get("RadionuclideCodeSequence")
    return Radiopharmaceutical(
        name=str(item.get("Radiopharmaceutical")) if item.get("Radiopharmaceutical") else None,
        radionuclide=str(codes[0].CodeMeaning) if codes else None,
        radionuclide_code=str(codes[0].CodeValue) if codes else None,
        injected_activity_mbq=_float(item.get("RadionuclideTotalDose")),
        injection_datetime=injection,
    )


def _acquisition_duration_s(dataset: Dataset) -> float | None:
    """Total acquisition time: Σ over rotations of frame duration × frames in the rotation."""
    rotations = dataset.get("RotationInformationSequence")
    if not rotations:
        return None
    total_s = 0.0
    for rotation in rotations:
        frame_ms = rotation.get("ActualFrameDuration")
        frames = rotation.get("NumberOfFramesInRotation")
        if frame_ms is None or frames is None:
            return None
        total_s += float(frame_ms) / 1000.0 * int(frames)
    return total_s


def _geometry(dataset: Dataset, path: Path) -> VolumeGeometry:
    detector = dataset.get("DetectorInformationSequence")
    source = detector[0] if detector and "ImagePositionPatient" in detector[0] else dataset
    if "ImagePositionPatient" not in source or "ImageOrientationPatient" not in source:
        raise StudyIncompleteError(
            f"NM file {path}: ImagePositionPatient/ImageOrientationPatient not found at top level"
            " or in DetectorInformationSequence; cannot place the image in patient space"
        )
    spacing = [float(v) for v in dataset.PixelSpacing]
    slice_spacing = dataset.get("SpacingBetweenSlices") or dataset.get("SliceThickness")
    if slice_spacing is None:
        raise StudyIncompleteError(f"NM file {path}: SpacingBetweenSlices missing")
    frames = int(dataset.get("NumberOfFrames", 1))
    return VolumeGeometry.from_plane(
        image_position_mm=tuple(float(v) for v in source.ImagePositionPatient),  # type: ignore[arg-type]
        image_orientation=tuple(float(v) for v in source.ImageOrientationPatient),  # type: ignore[arg-type]
        pixel_spacing_mm=(spacing[0], spacing[1]),
        slice_spacing_mm=abs(float(slice_spacing)),
        shape=(frames, int(dataset.Rows), int(dataset.Columns)),
    )


def _collimator(dataset: Dataset) -> str | None:
    """Collimator name (CollimatorGridName), else its type, from the first detector."""
    detectors = dataset.get("DetectorInformationSequence")
    if not detectors:
        return None
    detector = detectors[0]
    for keyword in ("CollimatorGridName", "CollimatorType"):
        value = str(detector.get(keyword) or "").strip()
        if value:
            return value
    return None


def _pixel_units(dataset: Dataset) -> str | None:
    """Units of stored values: (0054,1001) Units, else the real-world value mapping's unit."""
    units = str(dataset.get("Units") or "").strip()
    if units:
        return units
    for mapping in dataset.get("RealWorldValueMappingSequence", []):
        codes = mapping.get("MeasurementUnitsCodeSequence")
        if codes:
            return str(codes[0].CodeValue)
    return None


def _reconstruction(dataset: Dataset) -> str | None:
    """A fingerprint of the reconstruction: method and kernel as the vendor wrote them."""
    parts: list[str] = []
    for keyword in ("ReconstructionMethod", "ConvolutionKernel"):
        value = dataset.get(keyword)
        if value is None or value == "":
            continue
        values = [value] if isinstance(value, str) else list(value)
        parts.extend(str(v).strip() for v in values if str(v).strip() not in ("", "None"))
    return "|".join(parts) or None


def acquisition_from_dataset(dataset: Dataset, path: Path) -> NMAcquisition:
    """Build an :class:`NMAcquisition` from an already-read header."""
    windows = []
    for window in dataset.get("EnergyWindowInformationSequence", []):
        for window_range in window.get("EnergyWindowRangeSequence", []):
            windows.append(
                (
                    float(window_range.EnergyWindowLowerLimit),
                    float(window_range.EnergyWindowUpperLimit),
                )
            )
    corrections = dataset.get("CorrectedImage") or ()
    return NMAcquisition(
        path=path,
        sop_instance_uid=str(dataset.SOPInstanceUID),
        study_uid=str(dataset.StudyInstanceUID),
        series_uid=str(dataset.SeriesInstanceUID),
        frame_of_reference_uid=str(dataset.get("FrameOfReferenceUID") or "") or None,
        patient_id=str(dataset.get("PatientID") or "") or None,
        patient_weight_kg=_float(dataset.get("PatientWeight")),
        manufacturer=str(dataset.get("Manufacturer") or "") or None,
        camera_model=str(dataset.get("ManufacturerModelName") or "") or None,
        image_type=tuple(str(v) for v in dataset.get("ImageType", ())),
        acquisition_datetime=(
            DT(dataset.AcquisitionDateTime).replace(tzinfo=None)
            if dataset.get("AcquisitionDateTime")
            else _datetime(dataset.get("AcquisitionDate"), dataset.get("AcquisitionTime"))
        ),
        acquisition_duration_s=_acquisition_duration_s(dataset),
        energy_windows_kev=tuple(windows),
        corrections=tuple(
            str(v) for v in ([corrections] if isinstance(corrections, str) else corrections)
        ),
        radiopharmaceutical=_radiopharmaceutical(dataset),
        geometry=_geometry(dataset, path),
        collimator=_collimator(dataset),
        pixel_units=_pixel_units(dataset),
        reconstruction=_reconstruction(dataset),
    )


def read_nm_header(path: Path) -> NMAcquisition:
    """Read the header of an NM file (pixel data not loaded).

    Raises:
        UnreadableDicomError: not DICOM, or not NM Image Storage.
        StudyIncompleteError: geometry attributes missing.
    """
    try:
        dataset = dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError) as exc:
        raise UnreadableDicomError(path, str(exc)) from exc
    if str(dataset.get("SOPClassUID", "")) != NuclearMedicineImageStorage:
        raise UnreadableDicomError(
            path, f"expected NM Image Storage, found SOP class {dataset.get('SOPClassUID')}"
        )
    return acquisition_from_dataset(dataset, path)


def read_nm_counts(acquisition: NMAcquisition) -> npt.NDArray[np.float64]:
    """Reconstructed counts per voxel as float64, shape (slices, rows, columns).

    Raises:
        UnreadableDicomError: pixel data missing or undecodable.
    """
    try:
        dataset = dcmread(acquisition.path)
        pixels = dataset.pixel_array
    except (InvalidDicomError, OSError, AttributeError, ValueError, RuntimeError) as exc:
        raise UnreadableDicomError(acquisition.path, f"pixel data: {exc}") from exc
    counts = np.asarray(pixels, dtype=np.float64).reshape(acquisition.geometry.shape)
    return counts
