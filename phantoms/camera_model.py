"""The digital consortium's cameras: each site's :class:`~concordose.reconstruction.CameraModel`.

The camera physics (collimator-detector response, dead time, their sources) is the library's
(:mod:`concordose.reconstruction.camera`): the platform's perturbation-based GTM models the same
cameras from each site's protocol.
"""

from __future__ import annotations

from concordose.phantoms.site_profiles import SiteProfile
from concordose.reconstruction.camera import (
    COLLIMATORS,
    DEAD_TIME_PARALYSABLE_S,
    GE_MEGP,
    INTRINSIC_FWHM_208KEV_MM,
    SIEMENS_ME,
    CameraModel,
    Collimator,
)
from concordose.reconstruction.protocol import SiteReconstruction


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


def site_reconstruction(site: SiteProfile) -> SiteReconstruction:
    """What ``site``'s protocol records of its acquisition and reconstruction (the packaged
    ``schemas/protocols/<site>.yaml`` carry these, checked equal in the tests): the camera of
    :func:`camera_model`, the site's views and OSEM settings.

    Raises:
        ValueError: the site's collimator is not a medium-energy one (MEGP or MELP).
    """
    collimator = site_collimator(site)
    camera = camera_model(site)
    return SiteReconstruction(
        collimator=next(key for key, value in COLLIMATORS.items() if value == collimator),
        radius_of_rotation_mm=camera.radius_of_rotation_mm,
        n_views=site.n_views,
        iterations=site.recon.iterations,
        subsets=site.recon.subsets,
        resolution_recovery=site.recon.resolution_recovery,
        post_filter_fwhm_mm=site.recon.post_filter_fwhm_mm,
        intrinsic_fwhm_mm=camera.intrinsic_fwhm_mm,
    )
