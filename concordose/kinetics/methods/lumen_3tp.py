"""LUMEN three-time-point schedule: SPECT/CT at 4, 24 and 168 h after injection.

Schedule from Mileva et al., LUMEN study, J Nucl Med 2024;65:236-44 (seed review Table 1; MIM
Encore). The published curve model is not stated in the seed review; here the three points get a
weighted mono-exponential fit integrated to infinity — the usual choice for three points with a
first point after the uptake peak of [177Lu]Lu-DOTATATE.
"""

from __future__ import annotations

from concordose.kinetics.fitting import MONO
from concordose.kinetics.scheduled_fit import ScheduledFit

LUMEN_3TP = ScheduledFit(
    name="lumen_3tp",
    version="2",  # 2: points chosen by kinetics.timepoints (±40 % window)
    model=MONO,
    nominal_h=(4.0, 24.0, 168.0),
    reference="Mileva et al. J Nucl Med 2024;65:236-44",
)
