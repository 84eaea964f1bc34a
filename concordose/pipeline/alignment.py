"""Alignment of each time point to the VOIs' frame of reference (the first CT).

A time point that shares the segmentation's frame of reference needs nothing. Any other is
registered through its own CT: rigid CT-to-CT registration onto the segmentation's CT
(:func:`concordose.quant.registration.register_rigid`), and the VOI masks are then resampled onto
that time point's SPECT grid through the transform. The registration's quality (final metric,
translation, rotation, stop condition) is kept for publication.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import SimpleITK as sitk

from concordose.dicom.ct import read_ct_series
from concordose.errors import StudyIncompleteError
from concordose.pipeline.assembly import CycleStudy
from concordose.pipeline.result_cache import ResultCache, file_identity
from concordose.quant.registration import RigidRegistration, register_rigid


@dataclass(frozen=True)
class TimePointAlignment:
    """How a time point's SPECT relates to the VOIs.

    Attributes:
        registration: ``None`` when the time point shares the VOIs' frame of reference.
    """

    registration: RigidRegistration | None

    def mask_transform(self) -> sitk.Transform:
        """Maps SPECT (time point) points to VOI (first CT) points, as resampling needs."""
        if self.registration is None:
            return sitk.Transform()
        # register_rigid maps fixed (first CT) points to moving (this CT) points.
        inverse: sitk.Transform = self.registration.transform.GetInverse()
        return inverse


REGISTRATION_CACHE_KIND = "registration"
REGISTRATION_CACHE_VERSION = "1"
"""Bumped when :func:`register_rigid` changes, so older cached transforms are not reused."""


def align_time_points(
    cycle: CycleStudy, cache: ResultCache | None = None
) -> list[TimePointAlignment]:
    """One alignment per time point of ``cycle``, registering only where frames differ.

    With ``cache``, each registration is looked up by the identity of its two CT series (and
    :data:`REGISTRATION_CACHE_VERSION`) first: re-running a cycle after a new time point
    arrived registers only the new one. The first CT is read only if some registration runs.

    Raises:
        StudyIncompleteError: a time point in another frame of reference without its CT, or no
            CT in the segmentation's frame of reference to register to.
    """
    reference_frame = cycle.segmentation_frame_of_reference
    needs = [
        reference_frame is not None and point.acquisition.frame_of_reference_uid != reference_frame
        for point in cycle.time_points
    ]
    if not any(needs):
        return [TimePointAlignment(None) for _ in cycle.time_points]
    references = [
        point.ct_files
        for point in cycle.time_points
        if point.acquisition.frame_of_reference_uid == reference_frame and point.ct_files
    ]
    if not references:
        raise StudyIncompleteError(
            f"the VOIs ({cycle.segmentation}) lie in frame of reference {reference_frame}, but no "
            "CT of that frame was received; send the CT the VOIs were drawn on"
        )
    fixed_files = references[0]
    fixed: list[sitk.Image] = []  # read once, on the first registration that runs

    def register(moving_files: tuple[Path, ...]) -> RigidRegistration:
        if not fixed:
            fixed.append(read_ct_series(fixed_files))
        return register_rigid(fixed[0], read_ct_series(moving_files))

    alignments = []
    for point, needed in zip(cycle.time_points, needs, strict=True):
        if not needed:
            alignments.append(TimePointAlignment(None))
            continue
        if not point.ct_files:
            raise StudyIncompleteError(
                f"NM file {point.acquisition.path} lies in another frame of reference than the "
                "VOIs and no CT of its own frame was received to register it; send that CT"
            )
        moving_files = point.ct_files
        if cache is None:
            registration = register(moving_files)
        else:
            key = cache.key(
                REGISTRATION_CACHE_VERSION, file_identity(fixed_files), file_identity(moving_files)
            )
            registration = cache.get_or_compute(
                REGISTRATION_CACHE_KIND, key, partial(register, moving_files)
            )
        alignments.append(TimePointAlignment(registration))
    return alignments
