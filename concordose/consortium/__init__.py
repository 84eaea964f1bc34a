"""What spans cycles: cohort tables rebuilt from every published cycle (issue 14)."""

from concordose.consortium.agreement import (
    CONSORTIUM_COHORT,
    POOLED_SITE_ID,
    build_dose_agreement,
    build_kinetics_agreement,
)
from concordose.consortium.cohort_tables import (
    build_cohort_tables,
    read_cohort_inputs,
    rebuild_cohort_tables,
)
from concordose.consortium.deming import DemingFit, deming_regression
from concordose.consortium.kappa import cohen_kappa
from concordose.consortium.threshold_concordance import (
    STUDY_METHODOLOGIES,
    build_threshold_concordance,
)
from concordose.consortium.voi_classes import LESION_VOLUME_BINS, voi_classes

__all__ = [
    "CONSORTIUM_COHORT",
    "LESION_VOLUME_BINS",
    "POOLED_SITE_ID",
    "STUDY_METHODOLOGIES",
    "DemingFit",
    "build_cohort_tables",
    "build_dose_agreement",
    "build_kinetics_agreement",
    "build_threshold_concordance",
    "cohen_kappa",
    "deming_regression",
    "read_cohort_inputs",
    "rebuild_cohort_tables",
    "voi_classes",
]
