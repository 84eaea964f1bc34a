"""Patient, study, series and equipment attributes shared by the NM and CT writers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from concordose.phantoms.site_profiles import SiteProfile

SOFTWARE_VERSION = "concordose-phantoms 1"
"""SoftwareVersions written into generated objects."""


@dataclass(frozen=True)
class PatientInfo:
    """The synthetic patient (weight in kg, height in m)."""

    patient_id: str
    patient_name: str
    birth_date: dt.date
    sex: str
    weight_kg: float
    height_m: float


@dataclass(frozen=True)
class TimePointStudy:
    """One imaging time point: its study, acquisition time and frame of reference.

    Attributes:
        index: 1-based time point number.
        time_h: acquisition start in h after injection.
        acquisition_datetime: acquisition start (local time, naive).
        study_instance_uid: one study per time point, as sites send them.
        frame_of_reference_uid: shared by the NM and CT of this time point.
        accession_number: RIS accession of this study.
    """

    index: int
    time_h: float
    acquisition_datetime: dt.datetime
    study_instance_uid: UID
    frame_of_reference_uid: UID
    accession_number: str


def da(value: dt.date) -> str:
    """DICOM DA string."""
    return value.strftime("%Y%m%d")


def tm(value: dt.datetime) -> str:
    """DICOM TM string (whole seconds)."""
    return value.strftime("%H%M%S")


def dt_string(value: dt.datetime) -> str:
    """DICOM DT string (whole seconds, no offset: local time like the modality's clock)."""
    return value.strftime("%Y%m%d%H%M%S")


def new_file_dataset(sop_class_uid: UID, sop_instance_uid: UID) -> Dataset:
    """Empty dataset with file meta (explicit VR little endian) and SOP common attributes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    return ds


def add_patient_study_equipment(
    ds: Dataset,
    *,
    patient: PatientInfo,
    study: TimePointStudy,
    site: SiteProfile,
    series_instance_uid: UID,
    series_number: int,
    series_description: str,
    modality: str,
    study_description: str | None = None,
) -> None:
    """Fill the Patient, General Study, General Series, Frame of Reference and Equipment modules.

    Series and content date-times equal the acquisition start (the recon is filed at once).
    """
    acquired = study.acquisition_datetime
    ds.PatientName = patient.patient_name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = da(patient.birth_date)
    ds.PatientSex = patient.sex
    ds.PatientWeight = f"{patient.weight_kg:.1f}"
    ds.PatientSize = f"{patient.height_m:.2f}"

    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyDate = da(acquired)
    ds.StudyTime = tm(acquired)
    ds.StudyID = f"{study.index}"
    ds.AccessionNumber = study.accession_number
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study_description or "Lu-177 DOTATATE post-therapy SPECT/CT"

    ds.Modality = modality
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.SeriesDate = da(acquired)
    ds.SeriesTime = tm(acquired)
    ds.AcquisitionDate = da(acquired)
    ds.AcquisitionTime = tm(acquired)
    ds.AcquisitionDateTime = dt_string(acquired)
    ds.ContentDate = da(acquired)
    ds.ContentTime = tm(acquired)
    ds.PatientPosition = "HFS"

    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""

    ds.Manufacturer = site.manufacturer
    ds.InstitutionName = site.institution_name
    ds.StationName = site.station_name
    ds.ManufacturerModelName = site.camera_model
    ds.DeviceSerialNumber = site.device_serial_number
    ds.SoftwareVersions = SOFTWARE_VERSION
