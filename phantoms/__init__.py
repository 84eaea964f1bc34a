"""Digital phantoms: synthetic Lu-177 SPECT/CT patients with exact ground truth.

``generate_patient`` writes one patient's multi-time-point study at one site as real DICOM (NM,
CT, SEG) plus ``ground_truth.json`` and ``sites.yaml``; see ``phantoms/README.md``.
"""

from phantoms.patient import GeneratedPatient, generate_patient
from phantoms.site_profiles import DEFAULT_SITE, SiteProfile

__all__ = ["DEFAULT_SITE", "GeneratedPatient", "SiteProfile", "generate_patient"]
