"""LUTADOSE two-time-point schedule: SPECT/CT at ~20 h and ~162 h after injection.

Schedule from Maccauro et al., LUTADOSE trial, EJNMMI 2024;52:291-304 (day 2 ≈ 20 h and day 8
≈ 162 h; seed review Table 1). The TAC through the two points is a mono-exponential, integrated
from injection to infinity (the published workflow used OLINDA/EXM 1.1 on the two scans; a
mono-exponential is the only curve two points determine).
"""

from __future__ import annotations

from concordose.kinetics.fitting import MONO
from concordose.kinetics.scheduled_fit import ScheduledFit

LUTADOSE_2TP = ScheduledFit(
    name="lutadose_2tp",
    version="2",  # 2: points chosen by kinetics.timepoints (±40 % window)
    model=MONO,
    nominal_h=(20.0, 162.0),
    reference="Maccauro et al. EJNMMI 2024;52:291-304",
)
