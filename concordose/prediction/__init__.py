"""Pre-therapy PET dose prediction (issue 20, item 3): SUV features per VOI, the learner of VOI
absorbed dose per GBq, its leave-one-site-out validation and the ``dose_prediction`` table.
Pure domain code (arrays and Arrow tables in and out); no orchestration."""

from concordose.prediction.pet_features import (
    PEAK_SPHERE_ML,
    PetVoiFeatures,
    peak_sphere_kernel,
    pet_to_voi_transform,
    pet_voi_features,
    register_pet_ct,
    voi_suv_features,
)

__all__ = [
    "PEAK_SPHERE_ML",
    "PetVoiFeatures",
    "peak_sphere_kernel",
    "pet_to_voi_transform",
    "pet_voi_features",
    "register_pet_ct",
    "voi_suv_features",
]
