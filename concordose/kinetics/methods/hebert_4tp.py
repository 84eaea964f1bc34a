"""Hebert four-time-point schedule: SPECT/CT at 4, 24, 72 and 192 h after injection.

Schedule from Hebert et al., J Nucl Med 2024;65:923-30 (cycles 1-2; seed review Table 1; PLANET
Dose). The four points get a weighted mono-exponential fit integrated to infinity (the model the
PLANET Dose workflow offers for organs and lesions after the uptake phase; with four points a
bi-exponential has no residual degrees of freedom for model selection).
"""

from __future__ import annotations

from concordose.kinetics.fitting import MONO
from concordose.kinetics.scheduled_fit import ScheduledFit

HEBERT_4TP = ScheduledFit(
    name="hebert_4tp",
    version="2",  # 2: points chosen by kinetics.timepoints (±40 % window)
    model=MONO,
    nominal_h=(4.0, 24.0, 72.0, 192.0),
    reference="Hebert et al. J Nucl Med 2024;65:923-30",
)
