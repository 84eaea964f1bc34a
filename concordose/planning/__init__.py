"""Cumulative multi-cycle dosimetry and kidney-limited planning of the next cycle (issue 20,
item 1): BED, cumulative sums and forecasts, the next activity, and table ``planning``."""

from concordose.planning.bed import (
    KIDNEY_ALPHA_BETA_GY,
    KIDNEY_REPAIR_HALF_TIME_H,
    bed_gy,
    bed_slope,
    relative_repair_factor,
)
from concordose.planning.cumulative import (
    Forecast,
    RegionCycleDose,
    cumulative_dose_gy,
    forecast_dose_per_gbq,
)
from concordose.planning.next_activity import (
    DOBATOC_KIDNEY_DOSE_LIMIT_GY,
    EXCEEDANCE_RISK,
    KIDNEY_BED_LIMIT_GY,
    KIDNEY_DOSE_LIMIT_GY,
    STANDARD_CYCLE_ACTIVITY_GBQ,
    BindingConstraint,
    KidneyHistory,
    NextActivity,
    PlanningLimits,
    cumulative_after,
    cumulative_bed_after,
    plan_next_activity,
    probability_exceeding,
)
from concordose.planning.table import (
    KIDNEYS,
    PLANNING_INPUT_COLUMNS,
    SINGLE_POINT_METHOD,
    PlanningSettings,
    build_planning,
)

__all__ = [
    "DOBATOC_KIDNEY_DOSE_LIMIT_GY",
    "EXCEEDANCE_RISK",
    "KIDNEYS",
    "KIDNEY_ALPHA_BETA_GY",
    "KIDNEY_BED_LIMIT_GY",
    "KIDNEY_DOSE_LIMIT_GY",
    "KIDNEY_REPAIR_HALF_TIME_H",
    "PLANNING_INPUT_COLUMNS",
    "SINGLE_POINT_METHOD",
    "STANDARD_CYCLE_ACTIVITY_GBQ",
    "BindingConstraint",
    "Forecast",
    "KidneyHistory",
    "NextActivity",
    "PlanningLimits",
    "PlanningSettings",
    "RegionCycleDose",
    "bed_gy",
    "bed_slope",
    "build_planning",
    "cumulative_after",
    "cumulative_bed_after",
    "cumulative_dose_gy",
    "forecast_dose_per_gbq",
    "plan_next_activity",
    "probability_exceeding",
    "relative_repair_factor",
]
