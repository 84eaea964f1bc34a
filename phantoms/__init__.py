"""Digital phantoms: synthetic Lu-177 SPECT/CT patients with exact ground truth.

``generate_patient`` writes one patient's multi-time-point study at one site as real DICOM (NM,
CT, SEG) plus ``ground_truth.json`` and ``sites.yaml``; ``generate_consortium`` writes every
consortium site's phantom scans and the same virtual patients at every site; both form images in
an ``ImagingMode`` (``blur``, the default, or ``realistic``: projection and OSEM); see
``phantoms/README.md``.
"""

from concordose.phantoms.consortium import GeneratedConsortium, Realism, generate_consortium
from concordose.phantoms.imaging import ImagingMode
from concordose.phantoms.patient import GeneratedPatient, generate_patient
from concordose.phantoms.site_profiles import CONSORTIUM_SITES, DEFAULT_SITE, SiteProfile

__all__ = [
    "CONSORTIUM_SITES",
    "DEFAULT_SITE",
    "GeneratedConsortium",
    "GeneratedPatient",
    "ImagingMode",
    "Realism",
    "SiteProfile",
    "generate_consortium",
    "generate_patient",
]
