"""Reader for quantitative SPECT reconstructions stored as NM Image Storage (RECON TOMO).

Reads the header once (without pixel data) into an :class:`NMAcquisition`; counts are loaded
only when asked for. Missing attributes are returned as ``None``, never defaulted: deciding what
a missing value means is the metadata check's job, not the reader's.

Geometry follows the NM IOD: ImagePositionPatient and ImageOrientationPatient of the first frame
live in DetectorInformationSequence (vendors also put them at top level); frames are stacked
along row × column by SpacingBetweenSlices.

Vendor variants are read, and where a value came from is kept (``*_source`` fields) so the
metadata checks can record each fallback as a finding:

* times are kept as the modality's local clock readings (naive; the cycle's key), with their
  UTC offset when the header states one: an offset written in the DT value, else
  TimezoneOffsetFromUTC (0008,0201), which PS3.3 C.12.1.1.8 applies to every DA/TM and every DT
  without its own offset. :meth:`NMAcquisition.with_time_zone` fills the missing offsets from a
  site's declared IANA time zone;
* the injection is RadiopharmaceuticalStartDateTime, else RadiopharmaceuticalStartTime on the
  scan's date (AcquisitionDate, else SeriesDate, else StudyDate; the day before when the time is
  later than the scan's): right for a scan on the injection day or the next, not later;
* the acquisition duration is Σ ActualFrameDuration × NumberOfFramesInRotation over
  RotationInformationSequence, with a frame duration missing there taken from the top-level
  ActualFrameDuration, else the FrameAcquisitionDuration of the functional groups (every frame
  of a reconstruction is made from the whole acquisition).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import NuclearMedicineImageStorage
from pydicom.valuerep import DA, DT

from concordose.dicom.geometry import VolumeGeometry
from concordose.dicom.header_values import (
    PARSE_ERRORS,
    finite_float,
    finite_floats,
    header_value,
    image_orientation,
    image_position_mm,
    optional_float,
    positive_float,
    positive_int,
    raw_text,
    tag_text,
)
from concordose.errors import MalformedHeaderError, StudyIncompleteError, UnreadableDicomError


@dataclass(frozen=True)
class Radiopharmaceutical:
    """What was injected, as the modality recorded it.

    Attributes:
        name: Radiopharmaceutical (0018,0031), e.g. "Lu-177 DOTATATE".
        radionuclide: code meaning of RadionuclideCodeSequence, e.g. "^177^Lutetium".
        injected_activity_mbq: RadionuclideTotalDose as written; DICOM defines it in MBq for NM
            (a site may declare its modality writes Bq: the gate converts, see
            ``SiteProtocol.injected_activity_unit``).
        injection_datetime: RadiopharmaceuticalStartDateTime (or start time + the scan's date),
            local clock reading.
        radionuclide_code, radionuclide_scheme: code value and scheme designator (SCT, SRT…).
        radiopharmaceutical_code, radiopharmaceutical_scheme: RadiopharmaceuticalCodeSequence.
        injection_utc_offset: the injection's offset from UTC when the header states it.
        injection_source: where the injection time came from (attribute keywords).
    """

    name: str | None
    radionuclide: str | None
    injected_activity_mbq: float | None
    injection_datetime: datetime | None
    radionuclide_code: str | None = None
    radionuclide_scheme: str | None = None
    radiopharmaceutical_code: str | None = None
    radiopharmaceutical_scheme: str | None = None
    injection_utc_offset: timedelta | None = None
    injection_source: str | None = None


INJECTION_FROM_DATETIME = "RadiopharmaceuticalStartDateTime"
"""``injection_source`` of the standard attribute (no finding)."""
DURATION_FROM_ROTATIONS = "RotationInformationSequence"
"""``acquisition_duration_source`` of the standard attributes (no finding)."""
BQML = "BQML"
"""Units (0054,1001) of a vendor-quantified SPECT: voxel values (after RescaleSlope/Intercept)
are activity concentrations in Bq/mL (PS3.3 C.8.9.1.1.3 defined term)."""


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
    acquisition_utc_offset: timedelta | None = None
    time_zone_source: str | None = None
    acquisition_duration_source: str | None = None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0

    @property
    def is_vendor_quantitative(self) -> bool:
        """True when the vendor already converted the image to Bq/mL (Units BQML)."""
        return self.pixel_units == BQML

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
        injection = self.radiopharmaceutical.injection_datetime
        delta = self.acquisition_datetime - injection
        injection_offset = self.radiopharmaceutical.injection_utc_offset
        if self.acquisition_utc_offset is not None and injection_offset is not None:
            # Both on UTC: a daylight-saving change between them does not shift the interval.
            delta -= self.acquisition_utc_offset - injection_offset
        return delta.total_seconds() / 3600.0

    def with_time_zone(self, zone_name: str) -> NMAcquisition:
        """This acquisition with every missing UTC offset taken from the IANA time zone
        ``zone_name`` at that local time (offsets the header states are kept); the first of an
        ambiguous hour (``fold=0``) when clocks go back."""
        zone = ZoneInfo(zone_name)
        drug = self.radiopharmaceutical
        acquisition_offset = self.acquisition_utc_offset
        if acquisition_offset is None and self.acquisition_datetime is not None:
            acquisition_offset = self.acquisition_datetime.replace(tzinfo=zone).utcoffset()
        if (
            drug is not None
            and drug.injection_utc_offset is None
            and drug.injection_datetime is not None
        ):
            drug = replace(
                drug, injection_utc_offset=drug.injection_datetime.replace(tzinfo=zone).utcoffset()
            )
        filled = acquisition_offset != self.acquisition_utc_offset or (
            drug is not self.radiopharmaceutical
        )
        source = self.time_zone_source
        if filled:
            zone_source = f"site time zone {zone_name}"
            source = zone_source if source is None else f"{source}; missing ones: {zone_source}"
        return replace(
            self,
            acquisition_utc_offset=acquisition_offset,
            radiopharmaceutical=drug,
            time_zone_source=source,
        )


def utc_offset(value: object) -> timedelta | None:
    """A UTC offset written ``&ZZXX`` (TimezoneOffsetFromUTC), e.g. ``+0100`` → 1 h."""
    text = str(value or "").strip()
    if len(text) != 5 or text[0] not in "+-" or not text[1:].isdigit():
        return None
    magnitude = timedelta(hours=int(text[1:3]), minutes=int(text[3:5]))
    return magnitude if text[0] == "+" else -magnitude


def _clock_and_offset(value: object) -> tuple[datetime, timedelta | None]:
    """A DT value as its local clock reading and the offset it states (if any)."""
    parsed = DT(str(value))
    return parsed.replace(tzinfo=None), parsed.utcoffset()


_DT = "a DICOM date-time (DT, YYYYMMDDHHMMSS.FFFFFF&ZZXX)"
_DA = "a DICOM date (DA, YYYYMMDD)"
_TM = "a DICOM time (TM, HHMMSS.FFFFFF) on AcquisitionDate"
_KEV = "a number (keV)"


def _date_or_empty(value: object) -> object:
    """Check a DA value parses (empty is fine: missing is the metadata check's finding)."""
    return DA(str(value)) if value else None


def _datetime(date: object, time: object) -> datetime | None:
    if not date or not time:
        return None
    return DT(f"{date}{time}").replace(tzinfo=None)


def _scan_date(dataset: Dataset) -> tuple[str, str, str] | None:
    """The scan's (date, time, date keyword): AcquisitionDate, else SeriesDate, else StudyDate."""
    for date_kw, time_kw in (
        ("AcquisitionDate", "AcquisitionTime"),
        ("SeriesDate", "SeriesTime"),
        ("StudyDate", "StudyTime"),
    ):
        if dataset.get(date_kw):
            return str(dataset.get(date_kw)), str(dataset.get(time_kw) or ""), date_kw
    return None


def read_injection(
    item: Dataset, dataset: Dataset
) -> tuple[datetime | None, timedelta | None, str | None]:
    """Injection of one RadiopharmaceuticalInformationSequence ``item`` of ``dataset``: its local
    clock reading, its UTC offset (the DT value's, else TimezoneOffsetFromUTC) and where it came
    from (see the module docstring); ``(None, None, None)`` when not recorded.

    Raises:
        ValueError: a malformed date or time.
    """
    header_offset = utc_offset(dataset.get("TimezoneOffsetFromUTC"))
    if item.get("RadiopharmaceuticalStartDateTime"):
        clock, offset = _clock_and_offset(item.RadiopharmaceuticalStartDateTime)
        return clock, offset if offset is not None else header_offset, INJECTION_FROM_DATETIME
    start_time = item.get("RadiopharmaceuticalStartTime")
    scan = _scan_date(dataset)
    if not start_time or scan is None:
        return None, None, None
    date, scan_time, date_kw = scan
    injection = _datetime(date, start_time)
    if injection is None:
        return None, None, None
    scanned = _datetime(date, scan_time)
    source = f"RadiopharmaceuticalStartTime on {date_kw}"
    if scanned is not None and injection > scanned:
        injection -= timedelta(days=1)
        source = f"RadiopharmaceuticalStartTime on the day before {date_kw}"
    return injection, header_offset, source


def _code(item: Dataset, keyword: str) -> tuple[str | None, str | None, str | None]:
    """(value, scheme designator, meaning) of the first item of a code sequence."""
    codes = item.get(keyword)
    if not codes:
        return None, None, None
    code = codes[0]
    value = str(code.get("CodeValue") or "").strip() or None
    scheme = str(code.get("CodingSchemeDesignator") or "").strip() or None
    meaning = str(code.get("CodeMeaning") or "").strip() or None
    return value, scheme, meaning


def _radiopharmaceutical(dataset: Dataset, path: Path) -> Radiopharmaceutical | None:
    sequence = dataset.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        return None
    item = sequence[0]
    try:
        injection, offset, source = read_injection(item, dataset)
    except PARSE_ERRORS as exc:
        keyword = (
            "RadiopharmaceuticalStartDateTime"
            if item.get("RadiopharmaceuticalStartDateTime")
            else "RadiopharmaceuticalStartTime"
        )
        raise MalformedHeaderError(
            path,
            keyword,
            tag_text(keyword),
            raw_text(item, keyword),
            "a DICOM date-time (DT) / time (TM), with the scan's date",
        ) from exc
    nuclide_code, nuclide_scheme, nuclide_meaning = _code(item, "RadionuclideCodeSequence")
    drug_code, drug_scheme, _ = _code(item, "RadiopharmaceuticalCodeSequence")
    return Radiopharmaceutical(
        name=str(item.get("Radiopharmaceutical")) if item.get("Radiopharmaceutical") else None,
        radionuclide=nuclide_meaning,
        radionuclide_code=nuclide_code,
        radionuclide_scheme=nuclide_scheme,
        radiopharmaceutical_code=drug_code,
        radiopharmaceutical_scheme=drug_scheme,
        injected_activity_mbq=header_value(
            item, "RadionuclideTotalDose", optional_float, expected="a number (DS)", path=path
        ),
        injection_datetime=injection,
        injection_utc_offset=offset,
        injection_source=source,
    )


def _frame_durations_ms(groups: list[Dataset], path: Path) -> set[float]:
    values: set[float] = set()
    for group in groups:
        for content in group.get("FrameContentSequence", []):
            value = header_value(
                content, "FrameAcquisitionDuration", optional_float, expected=_MS, path=path
            )
            if value is not None:
                values.add(value)
    return values


def _functional_groups_duration_ms(dataset: Dataset, path: Path) -> float | None:
    """FrameAcquisitionDuration (ms) of the shared functional groups, else of the per-frame
    groups when every frame states the same one."""
    shared = dataset.get("SharedFunctionalGroupsSequence")
    values = _frame_durations_ms(list(shared) if shared else [], path)
    if not values:
        per_frame = dataset.get("PerFrameFunctionalGroupsSequence", [])
        values = _frame_durations_ms(list(per_frame), path)
    return values.pop() if len(values) == 1 else None


_MS = "a number of milliseconds"
_COUNT = "an integer count ≥ 1 (IS/US)"


def _frame_ms(item: Dataset, path: Path) -> float | None:
    return header_value(item, "ActualFrameDuration", optional_float, expected=_MS, path=path)


def _frame_count(item: Dataset, path: Path) -> int | None:
    if item.get("NumberOfFramesInRotation") is None:
        return None
    return header_value(item, "NumberOfFramesInRotation", positive_int, expected=_COUNT, path=path)


def _acquisition_duration(dataset: Dataset, path: Path) -> tuple[float | None, str | None]:
    """Total acquisition time (s) and where it came from (see the module docstring)."""
    rotations = dataset.get("RotationInformationSequence") or []
    top_frame_ms = _frame_ms(dataset, path)
    top_frames = _frame_count(dataset, path)
    total_s = 0.0
    frame_from_top = frames_from_top = False
    for rotation in rotations:
        frame_ms = _frame_ms(rotation, path)
        frames = _frame_count(rotation, path)
        if frame_ms is None and top_frame_ms is not None:
            frame_ms, frame_from_top = top_frame_ms, True
        if frames is None and top_frames is not None:
            frames, frames_from_top = top_frames, True
        if frame_ms is None or frames is None:
            break
        total_s += frame_ms / 1000.0 * frames
    else:
        if rotations:
            if not (frame_from_top or frames_from_top):
                return total_s, DURATION_FROM_ROTATIONS
            frame = f"{'top-level ' if frame_from_top else ''}ActualFrameDuration"
            count = f"{'top-level ' if frames_from_top else ''}NumberOfFramesInRotation"
            return total_s, f"{frame} × {count}"
    if not rotations and top_frame_ms is not None and top_frames is not None:
        total_s = top_frame_ms / 1000.0 * top_frames
        return total_s, "top-level ActualFrameDuration × NumberOfFramesInRotation"
    frame_duration_ms = _functional_groups_duration_ms(dataset, path)
    if frame_duration_ms is not None:
        return frame_duration_ms / 1000.0, "functional groups FrameAcquisitionDuration"
    return None, None


def _geometry(dataset: Dataset, path: Path) -> VolumeGeometry:
    detector = dataset.get("DetectorInformationSequence")
    source = detector[0] if detector and "ImagePositionPatient" in detector[0] else dataset
    if "ImagePositionPatient" not in source or "ImageOrientationPatient" not in source:
        raise StudyIncompleteError(
            f"NM file {path}: ImagePositionPatient/ImageOrientationPatient not found at top level"
            " or in DetectorInformationSequence; cannot place the image in patient space"
        )
    spacing = header_value(
        dataset,
        "PixelSpacing",
        finite_floats(2, positive=True),
        expected="2 positive numbers (mm)",
        path=path,
    )
    slice_keyword = (
        "SpacingBetweenSlices" if dataset.get("SpacingBetweenSlices") else "SliceThickness"
    )
    if dataset.get(slice_keyword) is None:
        raise StudyIncompleteError(f"NM file {path}: SpacingBetweenSlices missing")
    slice_spacing_mm = header_value(
        dataset, slice_keyword, positive_float, expected="a non-zero number (mm)", path=path
    )
    frames = 1
    if "NumberOfFrames" in dataset:
        frames = header_value(
            dataset, "NumberOfFrames", positive_int, expected="an integer ≥ 1 (IS)", path=path
        )
    position = image_position_mm(source, path)
    orientation = image_orientation(source, path)
    rows, columns = (
        header_value(dataset, keyword, positive_int, expected="an integer ≥ 1 (US)", path=path)
        for keyword in ("Rows", "Columns")
    )
    return VolumeGeometry.from_plane(
        image_position_mm=(position[0], position[1], position[2]),
        image_orientation=(
            orientation[0],
            orientation[1],
            orientation[2],
            orientation[3],
            orientation[4],
            orientation[5],
        ),
        pixel_spacing_mm=(spacing[0], spacing[1]),
        slice_spacing_mm=slice_spacing_mm,
        shape=(frames, rows, columns),
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
                    header_value(
                        window_range,
                        "EnergyWindowLowerLimit",
                        finite_float,
                        expected=_KEV,
                        path=path,
                    ),
                    header_value(
                        window_range,
                        "EnergyWindowUpperLimit",
                        finite_float,
                        expected=_KEV,
                        path=path,
                    ),
                )
            )
    corrections = dataset.get("CorrectedImage") or ()
    header_offset = utc_offset(dataset.get("TimezoneOffsetFromUTC"))
    acquisition_clock: datetime | None = None
    acquisition_offset: timedelta | None = None
    if dataset.get("AcquisitionDateTime"):
        acquisition_clock, acquisition_offset = header_value(
            dataset, "AcquisitionDateTime", _clock_and_offset, expected=_DT, path=path
        )
    else:
        date = dataset.get("AcquisitionDate")
        header_value(dataset, "AcquisitionDate", _date_or_empty, expected=_DA, path=path)
        acquisition_clock = header_value(
            dataset, "AcquisitionTime", lambda time: _datetime(date, time), expected=_TM, path=path
        )
    if acquisition_offset is None:
        acquisition_offset = header_offset
    radiopharmaceutical = _radiopharmaceutical(dataset, path)
    time_zone_source = _time_zone_source(
        acquisition_offset, radiopharmaceutical, header_offset is not None
    )
    duration_s, duration_source = _acquisition_duration(dataset, path)
    return NMAcquisition(
        path=path,
        sop_instance_uid=str(dataset.SOPInstanceUID),
        study_uid=str(dataset.StudyInstanceUID),
        series_uid=str(dataset.SeriesInstanceUID),
        frame_of_reference_uid=str(dataset.get("FrameOfReferenceUID") or "") or None,
        patient_id=str(dataset.get("PatientID") or "") or None,
        patient_weight_kg=header_value(
            dataset, "PatientWeight", optional_float, expected="a number (kg)", path=path
        ),
        manufacturer=str(dataset.get("Manufacturer") or "") or None,
        camera_model=str(dataset.get("ManufacturerModelName") or "") or None,
        image_type=tuple(str(v) for v in dataset.get("ImageType", ())),
        acquisition_datetime=acquisition_clock,
        acquisition_duration_s=duration_s,
        energy_windows_kev=tuple(windows),
        corrections=tuple(
            str(v) for v in ([corrections] if isinstance(corrections, str) else corrections)
        ),
        radiopharmaceutical=radiopharmaceutical,
        geometry=_geometry(dataset, path),
        collimator=_collimator(dataset),
        pixel_units=_pixel_units(dataset),
        reconstruction=_reconstruction(dataset),
        acquisition_utc_offset=acquisition_offset,
        time_zone_source=time_zone_source,
        acquisition_duration_source=duration_source,
        rescale_slope=header_value(
            dataset, "RescaleSlope", optional_float, expected="a number (DS)", path=path
        )
        or 1.0,
        rescale_intercept=header_value(
            dataset, "RescaleIntercept", optional_float, expected="a number (DS)", path=path
        )
        or 0.0,
    )


def _time_zone_source(
    acquisition_offset: timedelta | None,
    drug: Radiopharmaceutical | None,
    header_offset_given: bool,
) -> str | None:
    """How the UTC offsets were obtained; ``None`` when the header states none."""
    injection_offset = drug.injection_utc_offset if drug is not None else None
    if acquisition_offset is None and injection_offset is None:
        return None
    if header_offset_given:
        return "offsets written in DT values, else TimezoneOffsetFromUTC (0008,0201)"
    return "offsets written in DT values"


_FILE_ERRORS: tuple[type[Exception], ...] = (InvalidDicomError, OSError, EOFError, *PARSE_ERRORS)
"""What pydicom raises for a file it cannot parse at all."""
_VALUE_ERRORS: tuple[type[Exception], ...] = (*PARSE_ERRORS, NotImplementedError)
"""What reading a value not behind a named parse point can raise (NotImplementedError: a VR
pydicom does not know, in a file that did not come through the receiver)."""


def read_nm_header(path: Path) -> NMAcquisition:
    """Read the header of an NM file (pixel data not loaded).

    Raises:
        UnreadableDicomError: not DICOM, or not NM Image Storage, or a header value malformed
            (:class:`~concordose.errors.MalformedHeaderError`: names the keyword, tag, value).
        StudyIncompleteError: geometry attributes missing.
    """
    try:
        dataset = dcmread(path, stop_before_pixels=True)
    except _FILE_ERRORS as exc:
        raise UnreadableDicomError(path, f"{type(exc).__name__}: {exc}") from exc
    if str(dataset.get("SOPClassUID", "")) != NuclearMedicineImageStorage:
        raise UnreadableDicomError(
            path, f"expected NM Image Storage, found SOP class {dataset.get('SOPClassUID')}"
        )
    try:
        return acquisition_from_dataset(dataset, path)
    except _VALUE_ERRORS as exc:
        # A value the parse points above do not name (e.g. a sequence pydicom cannot decode).
        raise UnreadableDicomError(
            path, f"header could not be read: {type(exc).__name__}: {exc}"
        ) from exc


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
    shape = acquisition.geometry.shape
    if pixels.size != shape[0] * shape[1] * shape[2]:
        raise UnreadableDicomError(
            acquisition.path,
            f"PixelData (7FE0,0010) holds {pixels.size} values, expected NumberOfFrames "
            f"(0028,0008) × Rows × Columns = {shape[0]} × {shape[1]} × {shape[2]}",
        )
    return np.asarray(pixels, dtype=np.float64).reshape(shape)


def read_nm_bq_per_ml(acquisition: NMAcquisition) -> npt.NDArray[np.float64]:
    """Activity concentration per voxel in Bq/mL of a vendor-quantified SPECT (Units BQML):
    stored values × RescaleSlope + RescaleIntercept, shape (slices, rows, columns).

    Raises:
        ValueError: the image is not in BQML.
        UnreadableDicomError: pixel data missing or undecodable.
    """
    if not acquisition.is_vendor_quantitative:
        raise ValueError(
            f"NM file {acquisition.path}: expected Units {BQML}, found {acquisition.pixel_units!r}"
        )
    stored = read_nm_counts(acquisition)
    return stored * acquisition.rescale_slope + acquisition.rescale_intercept
