"""What spans cycles and sites: reference objects and the harmonisation comparison."""

from concordose.consortium.harmonisation import (
    HarmonisationResult,
    VariantTables,
    build_harmonisation_agreement,
)
from concordose.consortium.reference_objects import (
    CompartmentTruth,
    ReferenceMeasurement,
    ReferenceObject,
    ReferenceObjectRegistry,
)
from concordose.consortium.variants import (
    VARIANTS,
    ProcessingVariant,
    VariantConfig,
    write_variant_config,
)

__all__ = [
    "VARIANTS",
    "CompartmentTruth",
    "HarmonisationResult",
    "ProcessingVariant",
    "ReferenceMeasurement",
    "ReferenceObject",
    "ReferenceObjectRegistry",
    "VariantConfig",
    "VariantTables",
    "build_harmonisation_agreement",
    "write_variant_config",
]
