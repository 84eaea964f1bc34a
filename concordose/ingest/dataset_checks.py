"""Checks of a received C-STORE data set before it is acknowledged (PS3.4 Annex B.2.3).

The receiver stores data sets byte for byte; these checks decide whether the bytes may be
acknowledged with success, i.e. whether every tool reading them later (pydicom, dcmtk, our own
readers) can parse them and they are the instance the C-STORE-RQ names:

* :class:`MalformedDataSetError` — answered ``0xC000`` (Error: cannot understand):
  a value shorter than its declared length (at any depth, any size: values over the deferral
  size are checked by the caller from the read position), a Value Representation PS3.5 does not
  define (e.g. ``ZZ``), an element whose value cannot be decoded at all, or a data set not in the
  VR encoding of the presentation context's transfer syntax (explicit-VR bytes on an
  implicit-VR context or the reverse: the file would be labelled with a transfer syntax its
  bytes are not in);
* :class:`DataSetMismatchError` — answered ``0xA900`` (Error: data set does not match SOP
  class): the data set's SOPClassUID or SOPInstanceUID differs from the command's Affected SOP
  Class/Instance UID. Either missing from the data set is a :class:`MalformedDataSetError`
  (as dcmtk's ``storescp`` answers: 0xC000).

Values are decoded with pydicom's own converters (not a second parser); their *content* (a DS
that is not a number, a date that is not a date) is not judged here: that is the readers' and
the gate's job, which turn it into a finding naming the tag and the value.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.uid import UID
from pydicom.valuerep import VR

UNDEFINED_LENGTH = 0xFFFFFFFF
KNOWN_VRS = frozenset(str(vr) for vr in VR)
"""Value Representations PS3.5 Table 6.2-1 defines (as pydicom lists them)."""


class MalformedDataSetError(ValueError):
    """The data set cannot be parsed as sent (answer 0xC000, cannot understand)."""


class DataSetMismatchError(ValueError):
    """The data set is not the instance the C-STORE-RQ names (answer 0xA900)."""


def _tag(raw: RawDataElement) -> str:
    return f"({raw.tag.group:04X},{raw.tag.element:04X})"


def check_encoding(dataset: Dataset, transfer_syntax: str) -> None:
    """The data set's elements are in the VR encoding of ``transfer_syntax``.

    pydicom reads explicit-VR bytes announced as implicit (and the reverse) by guessing from
    the first element; the stored file would keep the wrong label and other readers (dcmtk)
    fail on it.

    Raises:
        MalformedDataSetError: an element was read in the other encoding.
    """
    implicit = UID(transfer_syntax).is_implicit_VR
    for tag in list(dataset.keys()):
        raw: DataElement | RawDataElement = dataset.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement):
            if raw.is_implicit_VR != implicit:
                found = "implicit" if raw.is_implicit_VR else "explicit"
                expected = "implicit" if implicit else "explicit"
                raise MalformedDataSetError(
                    f"data set encoded in {found} VR on a presentation context whose transfer "
                    f"syntax {transfer_syntax} is {expected} VR (first element {_tag(raw)})"
                )
            return


def check_structure(dataset: Dataset, *, where: str = "") -> None:
    """Every element of ``dataset`` (and of its sequence items, recursively) is complete and
    decodable: its value as long as declared, its VR one PS3.5 defines.

    Values left unread (deferred, ``value is None``) are the caller's to check.

    Raises:
        MalformedDataSetError: naming the first element that fails, with its path.
    """
    for tag in list(dataset.keys()):
        # keep_deferred: a value left unread (pixel data) stays unread
        raw: DataElement | RawDataElement = dataset.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement):
            path = f"{where}{_tag(raw)}"
            if raw.VR is not None and raw.VR not in KNOWN_VRS:
                raise MalformedDataSetError(
                    f"element {path} has Value Representation {raw.VR!r}, not one PS3.5 defines"
                )
            if (
                raw.value is not None
                and raw.length != UNDEFINED_LENGTH
                and len(raw.value) != raw.length
            ):
                raise MalformedDataSetError(
                    f"element {path} declares {raw.length} bytes but only {len(raw.value)} "
                    "were received (value cut short)"
                )
            if raw.value is None:
                continue  # deferred (over the deferral size): checked from the read position
        else:
            path = f"{where}({tag.group:04X},{tag.element:04X})"
        try:
            element = dataset[tag]
            items = list(element.value) if element.VR == VR.SQ and element.value else []
        except Exception as exc:  # pydicom's converters raise anything for garbage
            raise MalformedDataSetError(
                f"element {path} cannot be decoded: {type(exc).__name__}: {exc}"
            ) from exc
        for index, item in enumerate(items):
            if isinstance(item, Dataset):
                check_structure(item, where=f"{path}[{index}]")


def check_identity(dataset: Dataset, *, sop_class_uid: str, sop_instance_uid: str) -> None:
    """The data set names the SOP class and instance the C-STORE-RQ does.

    Raises:
        MalformedDataSetError: either UID missing from the data set (as dcmtk, 0xC000: an
            instance without its identification cannot be understood).
        DataSetMismatchError: either UID different from the command's.
    """
    for keyword, expected in (
        ("SOPClassUID", sop_class_uid),
        ("SOPInstanceUID", sop_instance_uid),
    ):
        found = str(dataset.get(keyword) or "").rstrip("\0 ")
        if not found:
            raise MalformedDataSetError(
                f"{keyword} missing from the data set (the C-STORE-RQ names {expected})"
            )
        if found != expected:
            raise DataSetMismatchError(
                f"{keyword} in the data set is {found}, expected {expected} as in the C-STORE-RQ"
            )
