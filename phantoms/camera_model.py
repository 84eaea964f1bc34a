"""The digital consortium's cameras: each site's :class:`~concordose.reconstruction.CameraModel`.

The camera physics (collimator-detector response, dead time, their sources) is the library's
(:mod:`concordose.reconstruction.camera`): the platform's perturbation-based GTM models the same
cameras from each site's protocol.
"""

from __future__ import annotations

from concordose.phantoms.site_profiles import SiteProfile
from concordose.reconstruction.camera import (
    DEAD_TIME_PARALYSABLE_S,
    GE_MEGP,
    INTRINSIC_FWHM_208KEV_MM,
    SIEMENS_ME,
    CameraModel,
    Collimator,
)


def site_collimator(site: SiteProfile) -> Collimator:
    """The collimator of ``site``: Siemens cameras get the Siemens ME geometry, others the GE
    MEGP one (every consortium site images Lu-177 with a medium-energy collimator).

    Raises:
        ValueError: the site's collimator is not a medium-energy one (MEGP or MELP).
    """
    if site.collimator not in ("MEGP", "MELP"):
        raise ValueError(
            f"{site.site_id}: realistic imaging models MEGP and MELP collimators, not "
            f"{site.collimator!r}"
        )
    return SIEMENS_ME if site.manufacturer.upper().startswith("SIEMENS") else GE_MEGP


def camera_model(site: SiteProfile) -> CameraModel:
    """The camera model of ``site`` (:func:`site_collimator`, the 208 keV intrinsic resolution,
    the site's radius of rotation, the paralysable dead time).

    Raises:
        ValueError: the site's collimator is not a medium-energy one (MEGP or MELP).
    """
    return CameraModel(
        collimator=site_collimator(site),
        intrinsic_fwhm_mm=INTRINSIC_FWHM_208KEV_MM,
        radius_of_rotation_mm=site.radius_of_rotation_mm,
        dead_time_s=DEAD_TIME_PARALYSABLE_S,
    )
