"""Site profiles: what one consortium site's SPECT/CT camera and protocol look like.

A :class:`SiteProfile` carries everything the generator needs to write DICOM the way that site
sends it (AE title, institution, camera, collimator, energy window) plus the site's camera
calibration factor, which is the truth the library's calibration registry must reproduce.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class SiteProfile:
    """One site's camera, acquisition protocol and calibration.

    Attributes:
        site_id: short lower-case site key used in ``sites.yaml`` (e.g. ``"milan"``).
        calling_ae_title: DICOM AE title the site's modality/PACS sends from.
        institution_name: InstitutionName written into every object.
        manufacturer: camera Manufacturer as written by the modality.
        camera_model: ManufacturerModelName.
        station_name: StationName.
        device_serial_number: DeviceSerialNumber.
        collimator: collimator name (Collimator/grid Name), e.g. ``"MEGP"``.
        energy_window_lower_kev: photopeak window lower limit in keV.
        energy_window_upper_kev: photopeak window upper limit in keV.
        calibration_factor_cps_per_mbq: reconstructed counts per second per MBq in the FOV.
        calibration_record_id: id of the calibration record in ``sites.yaml``.
        calibration_valid_from: first day the calibration record applies.
        nm_voxel_mm: reconstructed SPECT voxel edge in mm (isotropic).
        nm_matrix: reconstructed SPECT matrix as (columns, rows, slices).
        n_views: projections in the rotation (views per rotation).
        view_duration_s: time per view in seconds.
    """

    site_id: str
    calling_ae_title: str
    institution_name: str
    manufacturer: str
    camera_model: str
    station_name: str
    device_serial_number: str
    collimator: str
    energy_window_lower_kev: float
    energy_window_upper_kev: float
    calibration_factor_cps_per_mbq: float
    calibration_record_id: str
    calibration_valid_from: dt.date
    nm_voxel_mm: float
    nm_matrix: tuple[int, int, int]
    n_views: int
    view_duration_s: float

    @property
    def acquisition_duration_s(self) -> float:
        """Acquisition time in s: views × time per view (the recon's counts accrue over it)."""
        return self.n_views * self.view_duration_s


DEFAULT_SITE = SiteProfile(
    site_id="milan",
    calling_ae_title="MILAN_SPECT",
    institution_name="Ospedale Digitale di Milano",
    manufacturer="SIEMENS NM",
    camera_model="Symbia Intevo",
    station_name="SYMBIAINTEVO",
    device_serial_number="1009",
    collimator="MEGP",
    # Lu-177 208.4 keV photopeak (ICRP-107: 208.37 keV), ±10 % window: 187.5-229.2 keV.
    energy_window_lower_kev=187.5,
    energy_window_upper_kev=229.2,
    calibration_factor_cps_per_mbq=9.1,
    calibration_record_id="milan-phantom-2026-01",
    calibration_valid_from=dt.date(2026, 1, 1),
    nm_voxel_mm=4.42,
    nm_matrix=(80, 64, 48),
    # Two heads × 60 stops = 120 projections over 360°; reconstructed counts accrue over the
    # rotation time, i.e. 60 stops × 20 s.
    n_views=60,
    view_duration_s=20.0,
)
"""The Milan site: Siemens Symbia Intevo, MEGP, CF 9.1 cps/MBq, 4.42 mm voxels."""
