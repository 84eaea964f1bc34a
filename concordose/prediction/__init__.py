"""Pre-therapy PET dose prediction (issue 20, item 3): SUV features per VOI, the learner of VOI
absorbed dose per GBq, its leave-one-site-out validation and the ``dose_prediction`` table.
Pure domain code (arrays and Arrow tables in and out); no orchestration."""

from concordose.prediction.model import (
    INTERVAL_LEVEL,
    MODEL_NAME,
    AgreementMetrics,
    DosePredictor,
    FeatureTable,
    SitePredictions,
    agreement_metrics,
    conformal_quantile,
    fit_predictor,
    leave_one_site_out,
    population_baseline,
)
from concordose.prediction.pet_features import (
    PEAK_SPHERE_ML,
    PetVoiFeatures,
    peak_sphere_kernel,
    pet_to_voi_transform,
    pet_voi_features,
    register_pet_ct,
    voi_suv_features,
)
from concordose.prediction.table import (
    PET_FEATURE_COLUMNS,
    REFERENCE_DOSE_METHOD,
    build_dose_prediction,
    measured_doses_per_gbq,
    pet_feature_rows,
)

__all__ = [
    "INTERVAL_LEVEL",
    "MODEL_NAME",
    "PEAK_SPHERE_ML",
    "PET_FEATURE_COLUMNS",
    "REFERENCE_DOSE_METHOD",
    "AgreementMetrics",
    "DosePredictor",
    "FeatureTable",
    "PetVoiFeatures",
    "SitePredictions",
    "agreement_metrics",
    "build_dose_prediction",
    "conformal_quantile",
    "fit_predictor",
    "leave_one_site_out",
    "measured_doses_per_gbq",
    "peak_sphere_kernel",
    "pet_feature_rows",
    "pet_to_voi_transform",
    "pet_voi_features",
    "population_baseline",
    "register_pet_ct",
    "voi_suv_features",
]
