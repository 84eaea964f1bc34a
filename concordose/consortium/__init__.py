"""What spans cycles and sites: cohort tables rebuilt from every published cycle, reference
objects and the harmonisation comparison (issue 14)."""

from concordose.consortium.agreement import (
    POOLED_SITE_ID,
    build_dose_agreement,
    build_kinetics_agreement,
    kinetics_tia_pairs,
    with_voi_classes,
)
from concordose.consortium.cohort_tables import (
    build_cohort_tables,
    read_cohort_inputs,
    rebuild_cohort_tables,
)
from concordose.consortium.deming import DemingFit, deming_regression
from concordose.consortium.harmonisation import (
    HarmonisationResult,
    VariantTables,
    build_harmonisation_agreement,
    cross_site_cov,
)
from concordose.consortium.kappa import cohen_kappa
from concordose.consortium.reference_objects import (
    CompartmentTruth,
    ReferenceMeasurement,
    ReferenceObject,
    ReferenceObjectRegistry,
)
from concordose.consortium.sink_effect import (
    SINK_EFFECT_OARS,
    SinkFit,
    build_sink_effect,
    fit_sink_slope,
    sink_effect_points,
)
from concordose.consortium.threshold_concordance import (
    STUDY_METHODOLOGIES,
    build_threshold_concordance,
)
from concordose.consortium.variants import (
    VARIANTS,
    ProcessingVariant,
    VariantConfig,
    write_variant_config,
)
from concordose.consortium.voi_classes import LESION_VOLUME_BINS, voi_classes
from concordose.schemas.tables import CONSORTIUM_COHORT

__all__ = [
    "CONSORTIUM_COHORT",
    "LESION_VOLUME_BINS",
    "POOLED_SITE_ID",
    "SINK_EFFECT_OARS",
    "STUDY_METHODOLOGIES",
    "VARIANTS",
    "CompartmentTruth",
    "DemingFit",
    "HarmonisationResult",
    "ProcessingVariant",
    "ReferenceMeasurement",
    "ReferenceObject",
    "ReferenceObjectRegistry",
    "SinkFit",
    "VariantConfig",
    "VariantTables",
    "build_cohort_tables",
    "build_dose_agreement",
    "build_harmonisation_agreement",
    "build_kinetics_agreement",
    "build_sink_effect",
    "build_threshold_concordance",
    "cohen_kappa",
    "cross_site_cov",
    "deming_regression",
    "fit_sink_slope",
    "kinetics_tia_pairs",
    "read_cohort_inputs",
    "rebuild_cohort_tables",
    "sink_effect_points",
    "voi_classes",
    "with_voi_classes",
    "write_variant_config",
]
