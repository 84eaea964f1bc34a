"""Plausible camera calibration factors: the one home of the range a CF typed by hand must lie in.

A calibration factor (CF, cps/MBq: counts per second in the reconstructed image per MBq in the
field of view) entered by hand — ``concordose sites add-calibration --cf …`` or a record written
into ``sites.yaml`` — is checked against the range of its radionuclide and energy window, so a
unit slip (cps/GBq, counts per minute, cps/mCi) is refused with its likely cause instead of
quantifying every study of the site a thousand times off. Records derived from phantom scans
(``concordose calibrate``, the calibration ledger) are computed, not typed, and are not checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from concordose.errors import ConfigurationError

__all__ = [
    "PLAUSIBLE_CALIBRATION_FACTORS",
    "CalibrationFactorRange",
    "check_calibration_factor",
    "plausible_range",
]


@dataclass(frozen=True)
class CalibrationFactorRange:
    """The plausible CF of one radionuclide's photopeak.

    Attributes:
        nuclide: e.g. ``"Lu-177"``.
        photopeak_kev: the photopeak a window must contain for the range to apply.
        min_cps_per_mbq, max_cps_per_mbq: the inclusive plausible range, cps/MBq.
        window_description: how the range's window is written in messages.
    """

    nuclide: str
    photopeak_kev: float
    min_cps_per_mbq: float
    max_cps_per_mbq: float
    window_description: str

    def contains_window(self, energy_window_kev: tuple[float, float]) -> bool:
        """True when the window (lower, upper keV) contains this range's photopeak."""
        lower, upper = energy_window_kev
        return lower <= self.photopeak_kev <= upper

    def __contains__(self, cf_cps_per_mbq: float) -> bool:
        return self.min_cps_per_mbq <= cf_cps_per_mbq <= self.max_cps_per_mbq


# Lu-177, 208.4 keV photopeak (ICRP-107), 20 % window (187.5–229.2 keV), as in the EANM/MIRD
# Lu-177 quantitative SPECT guidance (Ljungberg et al., J Nucl Med 2016;57:151–162, MIRD
# Pamphlet 26) and the MRTDosimetry multicentre protocol (Tran-Gia et al., EJNMMI Phys
# 2021;8:55). Tomographic CFs of dual-head NaI(Tl) cameras with medium-energy collimators are of
# the order of 5–25 cps/MBq (the span the issue-16 review quotes from that literature; the
# digital consortium's sites: 5.8–10.8 cps/MBq, phantoms/site_profiles.py). The band below is
# deliberately wider than any camera (a factor ≈ 2 beyond that span on either side): it is
# there to catch unit slips — a factor 1000 (cps/GBq or cps/kBq), 60 (counts per minute) or 37
# (cps/mCi) — never to judge a real camera's sensitivity.
LU177_208_KEV = CalibrationFactorRange(
    nuclide="Lu-177",
    photopeak_kev=208.37,
    min_cps_per_mbq=2.0,
    max_cps_per_mbq=40.0,
    window_description="208 keV",
)

PLAUSIBLE_CALIBRATION_FACTORS: tuple[CalibrationFactorRange, ...] = (LU177_208_KEV,)
"""Every photopeak the platform quantifies, with its plausible CF (the platform quantifies the
Lu-177 208 keV peak only; see the site protocol's ``photopeak_kev``)."""

_UNIT_SLIPS: tuple[tuple[str, float], ...] = (
    ("cps/GBq (divide by 1000)", 1e-3),
    ("cps/kBq (multiply by 1000)", 1e3),
    ("counts per minute per MBq (divide by 60)", 1 / 60),
    ("cps/mCi (divide by 37)", 1 / 37),
)
"""Likely wrong units of a typed CF and the factor that turns them into cps/MBq."""


def plausible_range(
    energy_window_kev: tuple[float, float] | None = None, nuclide: str = "Lu-177"
) -> CalibrationFactorRange:
    """The plausible CF range of ``nuclide`` for a calibration's energy window (``None``: the
    platform's photopeak window).

    Raises:
        ConfigurationError: no known photopeak of ``nuclide`` lies in the window.
    """
    candidates = [r for r in PLAUSIBLE_CALIBRATION_FACTORS if r.nuclide == nuclide]
    for candidate in candidates:
        if energy_window_kev is None or candidate.contains_window(energy_window_kev):
            return candidate
    known = ", ".join(f"{r.nuclide} {r.photopeak_kev:g} keV" for r in PLAUSIBLE_CALIBRATION_FACTORS)
    found = "no window" if energy_window_kev is None else f"window {energy_window_kev} keV"
    raise ConfigurationError(
        f"no plausible calibration factor is known for {nuclide} with {found}; expected a window "
        f"containing one of: {known}"
    )


def check_calibration_factor(
    cf_cps_per_mbq: float,
    energy_window_kev: tuple[float, float] | None = None,
    *,
    where: str,
    nuclide: str = "Lu-177",
) -> None:
    """Refuse a typed CF outside its plausible range, naming the likely unit slip.

    Args:
        cf_cps_per_mbq: the factor as entered, cps/MBq.
        energy_window_kev: the record's window (lower, upper keV); ``None``: the photopeak's.
        where: the entry at fault, for the message (e.g. ``"--cf"`` or
            ``"sites[0] (site_id 'padua').calibrations[1]"``).

    Raises:
        ConfigurationError: outside the range (or no range for the window), with expected,
            found, where and the likely cause.
    """
    expected = plausible_range(energy_window_kev, nuclide)
    if cf_cps_per_mbq in expected:
        return
    slips = [
        f"{name}: {cf_cps_per_mbq * factor:.3g} cps/MBq"
        for name, factor in _UNIT_SLIPS
        if cf_cps_per_mbq * factor in expected
    ]
    cause = (
        f"did you enter {' or '.join(slips)}?"
        if slips
        else "check the unit (cps/MBq in the reconstructed image) and the phantom analysis"
    )
    raise ConfigurationError(
        f"{where}: calibration factor {cf_cps_per_mbq:g} cps/MBq is outside the plausible "
        f"{expected.min_cps_per_mbq:g}–{expected.max_cps_per_mbq:g} cps/MBq for "
        f"{expected.nuclide} at {expected.window_description}; {cause}"
    )
