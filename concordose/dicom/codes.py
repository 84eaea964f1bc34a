"""Coded concepts the platform recognises, and their equivalent codes: the one home for them.

DICOM identifies the radionuclide by RadionuclideCodeSequence (0054,0300; NM: BCID 18
"Radiopharmaceutical Isotope", PET: BCID 4020 "PET Radionuclide") and the drug by
RadiopharmaceuticalCodeSequence (0054,0304; BCID 25 "Radiopharmaceutical", BCID 4021 "PET
Radiopharmaceutical"), both PS3.16. Since DICOM moved to SNOMED CT concept ids (SCT), the older
SNOMED RT ids (scheme designator ``SRT``) are retired but still sent by many modalities; PS3.16
Annex O ("SNOMED Concept ID to SNOMED ID Mapping") maps one to the other. That table is not
copied here: :func:`equivalent_code` compares through :class:`pydicom.sr.coding.Code`, whose
equality applies pydicom's copy of Annex O (pydicom 3.0: ``SRT C-101ED`` is ``SCT 447553000``
^177^Lutetium).

Verified against PS3.16 as pydicom ships it (``pydicom.sr.codedict.codes``):

* ^177^Lutetium: SCT 447553000 (CID 18); legacy SRT C-101ED (Annex O).
* Lutetium^177^ DOTATATE: SCT 781259000 (CID 25); Annex O lists no SRT id for it.
* Lu-177 PSMA-617 has no code in CID 25 or CID 4021 (CID 4021 has PSMA-617 Ga^68^ only); the
  drug is then known only by its free-text name (Radiopharmaceutical, 0018,0031).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

__all__ = [
    "LEGACY_SNOMED_SCHEMES",
    "LU177",
    "LU177_DOTATATE",
    "RADIONUCLIDES",
    "RADIOPHARMACEUTICALS",
    "CodeMatch",
    "equivalent_code",
]

LU177: Code = codes.SCT._177Lutetium
"""^177^Lutetium, SCT 447553000 (PS3.16 CID 18)."""

LU177_DOTATATE: Code = codes.SCT.Lutetium177DOTATATE
"""Lutetium^177^ DOTATATE, SCT 781259000 (PS3.16 CID 25)."""

RADIONUCLIDES: tuple[Code, ...] = (LU177,)
"""Radionuclides the platform quantifies."""

RADIOPHARMACEUTICALS: tuple[Code, ...] = (LU177_DOTATATE,)
"""Radiopharmaceuticals with a PS3.16 code among those the consortium gives."""

LEGACY_SNOMED_SCHEMES: tuple[str, ...] = ("SRT", "")
"""Scheme designators read as SNOMED RT: ``SRT``, and none at all (the designator is Type 1 but
some modalities omit it; an SRT id such as ``C-101ED`` cannot be mistaken for an SCT number)."""


@dataclass(frozen=True)
class CodeMatch:
    """A received code recognised as one of ``accepted``.

    Attributes:
        canonical: the accepted SCT code value it stands for.
        legacy: True when it matched only through the SRT ↔ SCT mapping (PS3.16 Annex O).
    """

    canonical: str
    legacy: bool


def equivalent_code(
    value: str | None, scheme: str | None, accepted: list[str] | tuple[str, ...]
) -> CodeMatch | None:
    """Whether a received code (value, scheme designator) means one of the ``accepted`` SCT
    code values: directly, or as its legacy SRT id by PS3.16 Annex O; ``None`` if neither."""
    if value is None:
        return None
    if value in accepted:
        return CodeMatch(canonical=value, legacy=False)
    if (scheme or "").strip().upper() not in LEGACY_SNOMED_SCHEMES:
        return None
    received = Code(value=value, scheme_designator="SRT", meaning="")
    for candidate in accepted:
        if received == Code(value=candidate, scheme_designator="SCT", meaning=""):
            return CodeMatch(canonical=candidate, legacy=True)
    return None
