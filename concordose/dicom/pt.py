"""Reader for a PET image series (PT modality, one file per slice) and its SUV scaling (issue 20).

Stored values are mapped to activity concentration slice by slice (each PET slice has its own
RescaleSlope/Intercept), the slices are stacked along their normal, and the SUV factor is read
from the headers. SUV normalised by body weight (SUVbw; Kinahan & Fletcher, Semin Ultrasound CT
MR 2010;31:496–505; the QIBA FDG-PET/CT profile's SUV algorithm):

    SUVbw = C [Bq/mL] × W [g] / (A_inj [Bq] × exp(−ln2 · Δt / T½))

where Δt runs from the injection (RadiopharmaceuticalStartDateTime, else the start time on the
series' date) to the series start (SeriesDate/SeriesTime) for ``DecayCorrection = START`` (values
decay-corrected to the series start), and Δt = 0 for ``ADMIN`` (already decay-corrected to the
injection). Units must be ``BQML``; ``NONE`` decay correction (values at each frame's own time)
is refused, as are other units (``CNTS``, ``GML``: a vendor's own SUV image), because a factor
taken from such headers would be a guess. 1 mL of tissue is taken as 1 g (the SUVbw
convention). Every refusal names the attribute, its tag and the value found.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from concordose.dicom.header_values import (
    finite_float,
    finite_floats,
    header_value,
    image_orientation,
    image_position_mm,
    positive_float,
    raw_text,
    tag_text,
)
from concordose.dicom.nm import read_injection
from concordose.errors import MalformedHeaderError, StudyIncompleteError, UnreadableDicomError

PT_MODALITY = "PT"
SUPPORTED_UNITS = "BQML"
DECAY_CORRECTIONS = ("START", "ADMIN")
"""Decay corrections the SUV factor is defined for (module docstring)."""


@dataclass(frozen=True)
class PetSeries:
    """One PET series in patient space, ready for SUV.

    Attributes:
        image_bq_per_ml: float32 activity concentration (decay-corrected as the series says).
        suv_factor_ml_per_bq: multiply Bq/mL by this for SUVbw (g/Bq, 1 g = 1 mL).
        weight_kg: PatientWeight.
        injected_activity_bq: RadionuclideTotalDose.
        half_life_s: RadionuclideHalfLife.
        injection_datetime: the injection's local clock reading.
        reference_datetime: the time the values are decay-corrected to (series start for START,
            the injection for ADMIN).
        radiopharmaceutical: Radiopharmaceutical (0018,0031), may be empty.
        frame_of_reference_uid, study_instance_uid, series_instance_uid: identity of the series.
    """

    image_bq_per_ml: sitk.Image
    suv_factor_ml_per_bq: float
    weight_kg: float
    injected_activity_bq: float
    half_life_s: float
    injection_datetime: datetime
    reference_datetime: datetime
    radiopharmaceutical: str
    frame_of_reference_uid: str
    study_instance_uid: str
    series_instance_uid: str

    def suv_image(self) -> sitk.Image:
        """SUVbw image (float32), same grid."""
        scaled: sitk.Image = sitk.Cast(
            self.image_bq_per_ml * self.suv_factor_ml_per_bq, sitk.sitkFloat32
        )
        return scaled


def suv_bw_factor(
    *, weight_kg: float, injected_activity_bq: float, half_life_s: float, elapsed_s: float
) -> float:
    """SUVbw per Bq/mL: W[g] / (A_inj · exp(−ln2·Δt/T½)) (module docstring)."""
    decayed_bq = injected_activity_bq * math.exp(-math.log(2.0) * elapsed_s / half_life_s)
    return weight_kg * 1000.0 / decayed_bq


def _series_start(header: Dataset, path: Path) -> datetime:
    for date_kw, time_kw in (("SeriesDate", "SeriesTime"), ("AcquisitionDate", "AcquisitionTime")):
        date, time = header.get(date_kw), header.get(time_kw)
        if date and time:
            text = f"{date}{str(time).split('.')[0]:0<6}"
            try:
                return datetime.strptime(text[:14], "%Y%m%d%H%M%S")
            except ValueError as exc:
                raise MalformedHeaderError(
                    path, time_kw, tag_text(time_kw), raw_text(header, time_kw), "a DICOM TM"
                ) from exc
    raise MalformedHeaderError(
        path, "SeriesTime", tag_text("SeriesTime"), "missing", "the series start (DA + TM)"
    )


def _suv_parameters(header: Dataset, path: Path) -> tuple[float, float, float, datetime, datetime]:
    """(weight kg, injected Bq, half-life s, injection, reference time) of a PT header."""
    units = str(header.get("Units") or "").strip().upper()
    if units != SUPPORTED_UNITS:
        raise MalformedHeaderError(
            path, "Units", tag_text("Units"), raw_text(header, "Units"), "BQML (Bq/mL)"
        )
    decay = str(header.get("DecayCorrection") or "").strip().upper()
    if decay not in DECAY_CORRECTIONS:
        raise MalformedHeaderError(
            path,
            "DecayCorrection",
            tag_text("DecayCorrection"),
            raw_text(header, "DecayCorrection"),
            " or ".join(DECAY_CORRECTIONS),
        )
    weight_kg = header_value(
        header, "PatientWeight", positive_float, expected="body weight > 0 kg", path=path
    )
    sequence = header.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        raise MalformedHeaderError(
            path,
            "RadiopharmaceuticalInformationSequence",
            tag_text("RadiopharmaceuticalInformationSequence"),
            "missing",
            "one item with the injected activity, its time and the half-life",
        )
    item = sequence[0]
    dose_bq = header_value(
        item,
        "RadionuclideTotalDose",
        positive_float,
        expected="injected activity > 0 Bq",
        path=path,
    )
    half_life_s = header_value(
        item, "RadionuclideHalfLife", positive_float, expected="half-life > 0 s", path=path
    )
    try:
        injection = read_injection(item, header)[0]
    except ValueError as exc:
        raise MalformedHeaderError(
            path,
            "RadiopharmaceuticalStartDateTime",
            tag_text("RadiopharmaceuticalStartDateTime"),
            raw_text(item, "RadiopharmaceuticalStartDateTime"),
            "a DICOM DT",
        ) from exc
    if injection is None:
        raise MalformedHeaderError(
            path,
            "RadiopharmaceuticalStartDateTime",
            tag_text("RadiopharmaceuticalStartDateTime"),
            "missing",
            "the injection date-time (or RadiopharmaceuticalStartTime)",
        )
    if decay == "ADMIN":
        return weight_kg, dose_bq, half_life_s, injection, injection
    start = _series_start(header, path)
    if start < injection:
        raise MalformedHeaderError(
            path,
            "SeriesTime",
            tag_text("SeriesTime"),
            raw_text(header, "SeriesTime"),
            f"a series start after the injection ({injection.isoformat()})",
        )
    return weight_kg, dose_bq, half_life_s, injection, start


def read_pt_series(files: Sequence[Path]) -> PetSeries:
    """Read a PT series (one file per slice) as Bq/mL in patient space with its SUVbw factor.

    Raises:
        StudyIncompleteError: fewer than 2 slices, slices of several orientations or series.
        UnreadableDicomError: a file is not readable DICOM;
            :class:`~concordose.errors.MalformedHeaderError` (keyword, tag, value, expected) for
            a value the SUV or the geometry cannot use (Units, DecayCorrection, PatientWeight,
            RadionuclideTotalDose, RadionuclideHalfLife, injection time, position, spacing).
    """
    if len(files) < 2:
        raise StudyIncompleteError(f"a PT series needs ≥ 2 slices, got {len(files)}")
    slices = []
    for path in files:
        try:
            dataset = dcmread(path)
        except (InvalidDicomError, OSError) as exc:
            raise UnreadableDicomError(path, str(exc)) from exc
        modality = str(dataset.get("Modality") or "")
        if modality != PT_MODALITY:
            raise MalformedHeaderError(
                path, "Modality", tag_text("Modality"), raw_text(dataset, "Modality"), "PT"
            )
        cosines = image_orientation(dataset, path)
        position = image_position_mm(dataset, path)
        slope = header_value(dataset, "RescaleSlope", finite_float, expected="a number", path=path)
        intercept = (
            header_value(dataset, "RescaleIntercept", finite_float, expected="a number", path=path)
            if "RescaleIntercept" in dataset
            else 0.0
        )
        slices.append(
            (path, dataset, tuple(round(v, 6) for v in cosines), position, slope, intercept)
        )
    if len({s[2] for s in slices}) != 1 or len({str(s[1].SeriesInstanceUID) for s in slices}) != 1:
        raise StudyIncompleteError(
            f"PT files {files[0]}…: {len(files)} slices of more than one series or orientation"
        )
    orientation = slices[0][2]
    normal = np.cross(orientation[:3], orientation[3:])
    slices.sort(key=lambda s: float(np.dot(s[3], normal)))
    first_path, first = slices[0][0], slices[0][1]
    weight_kg, dose_bq, half_life_s, injection, reference = _suv_parameters(first, first_path)
    planes = [
        np.asarray(dataset.pixel_array, dtype=np.float64) * slope + intercept
        for _, dataset, _, _, slope, intercept in slices
    ]
    volume = np.stack(planes).astype(np.float32)
    pixel = header_value(
        first,
        "PixelSpacing",
        finite_floats(2, positive=True),
        expected="2 numbers > 0 (mm)",
        path=first_path,
    )
    offsets = np.diff([float(np.dot(s[3], normal)) for s in slices])
    if np.any(offsets <= 0) or float(np.ptp(offsets)) > 1e-3 * float(np.mean(offsets)):
        raise StudyIncompleteError(
            f"PT series {first_path.parent}: slices not evenly spaced along their normal "
            f"({offsets.min():.4g}–{offsets.max():.4g} mm)"
        )
    image = sitk.GetImageFromArray(volume)
    image.SetOrigin(tuple(float(v) for v in slices[0][3]))
    image.SetSpacing((float(pixel[1]), float(pixel[0]), float(np.mean(offsets))))
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    image.SetDirection(tuple(float(v) for v in np.column_stack([row, column, normal]).ravel()))
    elapsed_s = (reference - injection).total_seconds()
    return PetSeries(
        image_bq_per_ml=image,
        suv_factor_ml_per_bq=suv_bw_factor(
            weight_kg=weight_kg,
            injected_activity_bq=dose_bq,
            half_life_s=half_life_s,
            elapsed_s=elapsed_s,
        ),
        weight_kg=weight_kg,
        injected_activity_bq=dose_bq,
        half_life_s=half_life_s,
        injection_datetime=injection,
        reference_datetime=reference,
        radiopharmaceutical=str(
            first.RadiopharmaceuticalInformationSequence[0].get("Radiopharmaceutical") or ""
        ),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID") or ""),
        study_instance_uid=str(first.get("StudyInstanceUID") or ""),
        series_instance_uid=str(first.get("SeriesInstanceUID") or ""),
    )
