"""Checks of a received C-STORE data set before it is acknowledged (PS3.4 Annex B.2.3).

The receiver stores data sets byte for byte; these checks decide whether the bytes may be
acknowledged with success, i.e. whether every tool reading them later (pydicom, dcmtk, our own
readers) can parse them and they are the instance the C-STORE-RQ names:

* :class:`MalformedDataSetError` — answered ``0xC000`` (Error: cannot understand):
  a value shorter than its declared length or an element, item or sequence overrunning what
  contains it (:func:`check_nesting`, at any depth and size, in every uncompressed transfer
  syntax: little- and big-endian, and deflated ones once inflated), a deflated data set that
  does not inflate, is cut short or inflates to more than :data:`MAX_INFLATED_BYTES`
  (:func:`inflate_data_set`: a decompression bomb), a Value Representation PS3.5 does
  not define (e.g. ``ZZ``), a binary value not a whole number of its numbers, a sequence pydicom
  cannot decode, or a data set not in the VR encoding of the presentation context's transfer
  syntax (explicit-VR bytes on an implicit-VR context or the reverse: the file would be
  labelled with a transfer syntax its bytes are not in);
* :class:`DataSetMismatchError` — answered ``0xA900`` (Error: data set does not match SOP
  class): the data set's SOPClassUID or SOPInstanceUID differs from the command's Affected SOP
  Class/Instance UID. Either missing from the data set is a :class:`MalformedDataSetError`
  (as dcmtk's ``storescp`` answers: 0xC000).

Values are not decoded beyond sequences; their *content* (a DS that is not a number, a date
that is not a date) is not judged here: that is the readers' and the gate's job, which turn it
into a finding naming the tag and the value.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Callable, Mapping
from contextlib import suppress
from functools import lru_cache
from typing import BinaryIO, NamedTuple

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pydicom.valuerep import VR

UNDEFINED_LENGTH = 0xFFFFFFFF
KNOWN_VRS = frozenset(str(vr) for vr in VR)
"""Value Representations PS3.5 Table 6.2-1 defines (as pydicom lists them)."""


class MalformedDataSetError(ValueError):
    """The data set cannot be parsed as sent (answer 0xC000, cannot understand)."""


class DataBeyondPrefixError(Exception):
    """The check needs bytes past the prefix of the data set it was given (read it whole)."""


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
    implicit = syntax_encoding(transfer_syntax).implicit_vr
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


FIXED_VALUE_BYTES = {
    "AT": 4, "FD": 8, "FL": 4, "OD": 8, "OF": 4, "OL": 4, "OV": 8, "OW": 2,
    "SL": 4, "SS": 2, "SV": 8, "UL": 4, "US": 2, "UV": 8,
}  # fmt: skip
"""Binary VRs whose value is a whole number of fixed-size numbers (PS3.5 Table 6.2-1)."""


def _vr_of(raw: RawDataElement) -> str:
    """The element's VR: as written (explicit VR), else the dictionary's (``UN`` if none)."""
    if raw.VR is not None:
        return str(raw.VR)
    try:
        return str(dictionary_VR(raw.tag))
    except KeyError:
        return "UN"


def check_structure(dataset: Dataset, *, where: str = "") -> None:
    """Every element of ``dataset`` (and of its sequence items, recursively) is complete and
    decodable: its value as long as declared, its VR one PS3.5 defines, a binary value a whole
    number of its numbers.

    Values are not decoded (pydicom's converters cost ≈ 10 µs per element; a DS or IS whose
    text is not a number is the readers' finding, not a reason to refuse the instance); only
    sequences are, to check their items. Values left unread (deferred, ``value is None``) are
    the caller's to check.

    Raises:
        MalformedDataSetError: naming the first element that fails, with its path.
    """
    for tag in list(dataset.keys()):
        # keep_deferred: a value left unread (pixel data) stays unread
        raw: DataElement | RawDataElement = dataset.get_item(tag, keep_deferred=True)
        path = f"{where}({tag.group:04X},{tag.element:04X})"  # only for messages
        if isinstance(raw, RawDataElement):
            if raw.VR is not None and raw.VR not in KNOWN_VRS:
                raise MalformedDataSetError(
                    f"element {path} has Value Representation {raw.VR!r}, not one PS3.5 defines"
                )
            if raw.value is None:
                continue  # deferred (over the deferral size): checked from the read position
            if raw.length != UNDEFINED_LENGTH and len(raw.value) != raw.length:
                raise MalformedDataSetError(
                    f"element {path} declares {raw.length} bytes but only {len(raw.value)} "
                    "were received (value cut short)"
                )
            vr = _vr_of(raw)
            size = FIXED_VALUE_BYTES.get(vr)
            if size is not None and len(raw.value) % size:
                raise MalformedDataSetError(
                    f"element {path} ({vr}) holds {len(raw.value)} bytes, not a whole number "
                    f"of {size}-byte values"
                )
            if vr not in ("SQ", "UN") and raw.length != UNDEFINED_LENGTH:
                continue
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


def check_identity(
    dataset: Dataset | Mapping[str, object], *, sop_class_uid: str, sop_instance_uid: str
) -> None:
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


ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA_TAG = 0x7FE00010
LONG_HEADER_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
"""Explicit VRs whose element header is 12 bytes (PS3.5 §7.1.2, Table 7.1-1: SV and UV too,
as pydicom reads them)."""


DataBuffer = bytes | bytearray | memoryview
"""A data set's bytes as the walker reads them: in memory, or a memoryview of a mapped file."""


@lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> bytes:
    """The dictionary VR of an implicit-VR element (``b""``: unknown, or one of several such
    as "US or SS")."""
    with suppress(KeyError):
        known = dictionary_VR(tag)
        return known.encode() if known in KNOWN_VRS else b""
    return b""


def _path(where: str, tag: int) -> str:
    return f"{where}({tag >> 16:04X},{tag & 0xFFFF:04X})"


class TopLevelElement(NamedTuple):
    """One element of a data set as :func:`walk_data_set` found it.

    Attributes:
        tag: group << 16 | element.
        vr: as written (explicit VR), else the dictionary's; ``b""`` when neither says
            (implicit VR: a private tag, or a VR the dictionary leaves open, e.g. "US or SS").
        start, end: the element's header start and its end (value included), in the buffer.
        length: its value length as declared (``UNDEFINED_LENGTH`` for undefined).
    """

    tag: int
    vr: bytes
    start: int
    end: int
    length: int


_KNOWN_VR_BYTES = frozenset(vr.encode() for vr in KNOWN_VRS)
_FIXED_VALUE_BYTES_BY_VR = {vr.encode(): size for vr, size in FIXED_VALUE_BYTES.items()}


class _Nesting:
    """Walks element headers (never values: they are skipped) checking that each element, item
    and sequence ends within what contains it (PS3.5 §7.5): pydicom reads an item's elements
    from the file and does not stop at the item's end, dcmtk does. Headers are read in the
    transfer syntax's byte order (PS3.5 §7.3: item and delimiter tags too), from a buffer (a
    mapped file: no read or seek per header, ≈ 1 µs per element)."""

    def __init__(
        self, data: DataBuffer, *, little_endian: bool = True, size: int | None = None
    ) -> None:
        self.data = data
        self.available = len(data)
        self.size = self.available if size is None else size  # ``data`` may be a prefix
        order = "<" if little_endian else ">"
        self.header = struct.Struct(f"{order}HHI")
        self.explicit_short = struct.Struct(f"{order}HH2sH")
        self.long_length = struct.Struct(f"{order}I")

    def _header(self, at: int, implicit: bool) -> tuple[int, bytes, int, int]:
        """(tag, VR or b"", value length, header size) of the element at ``at``."""
        if at + 8 > self.size:
            raise MalformedDataSetError(f"data set ends inside an element header at byte {at}")
        if at + 12 > self.available and self.available < self.size:
            raise DataBeyondPrefixError(f"element header at byte {at}")
        group, element, length = self.header.unpack_from(self.data, at)
        tag = group << 16 | element
        if implicit or group == 0xFFFE:
            return tag, (b"" if group == 0xFFFE else _dictionary_vr(tag)), length, 8
        _, _, vr, short_length = self.explicit_short.unpack_from(self.data, at)
        if vr in LONG_HEADER_VRS:
            if at + 12 > self.size:
                raise MalformedDataSetError(
                    f"data set ends inside an element header at byte {at + 8}"
                )
            (long_length,) = self.long_length.unpack_from(self.data, at + 8)
            return tag, vr, long_length, 12
        return tag, vr, short_length, 8

    @staticmethod
    def _check_value(where: str, tag: int, vr: bytes, length: int) -> None:
        """A VR PS3.5 defines; a binary value a whole number of its numbers (also inside
        sequences left unread by pydicom: over the deferral size, e.g. a SEG's per-frame
        functional groups)."""
        if vr and vr not in _KNOWN_VR_BYTES:
            raise MalformedDataSetError(
                f"element {_path(where, tag)} has Value Representation "
                f"{vr.decode('latin-1')!r}, not one PS3.5 defines"
            )
        size = _FIXED_VALUE_BYTES_BY_VR.get(vr)
        if size is not None and length != UNDEFINED_LENGTH and length % size:
            raise MalformedDataSetError(
                f"element {_path(where, tag)} ({vr.decode()}) holds {length} bytes, not a whole "
                f"number of {size}-byte values"
            )

    def elements(
        self,
        at: int,
        end: int | None,
        implicit: bool,
        where: str,
        found: list[TopLevelElement] | None = None,
    ) -> int:
        """Walk elements from ``at`` to ``end`` (``None``: until an item delimiter, whose end
        is returned); every element must end within ``end``. ``found`` collects each element
        walked at this level."""
        while end is None or at < end:
            element_start = at
            tag, vr, length, header = self._header(at, implicit)
            if tag == ITEM_END and end is None:
                return at + 8
            if tag >> 16 == 0xFFFE:
                raise MalformedDataSetError(
                    f"item tag {_path(where, tag)} where an element was expected"
                )
            self._check_value(where, tag, vr, length)
            at += header
            if length == UNDEFINED_LENGTH:
                nested_implicit = implicit or vr == b"UN"  # PS3.5 §6.2.2: UN of undefined length
                if tag == PIXEL_DATA_TAG:
                    at = self.fragments(at, _path(where, tag))
                elif vr in (b"SQ", b"UN", b""):
                    at = self.items(at, None, nested_implicit, _path(where, tag))
                else:
                    raise MalformedDataSetError(
                        f"element {_path(where, tag)} ({vr!r}) of undefined length"
                    )
            else:
                if end is not None and at + length > end:
                    raise MalformedDataSetError(
                        f"element {_path(where, tag)} declares {length} bytes, {end - at} remain "
                        "in what contains it"
                    )
                if vr == b"SQ":
                    self.items(at, at + length, implicit, _path(where, tag))
                at += length
            if found is not None:
                found.append(TopLevelElement(tag, vr, element_start, at, length))
        if at != end:
            raise MalformedDataSetError(f"elements of {where or 'the data set'} overrun its end")
        return at

    def items(self, at: int, end: int | None, implicit: bool, where: str) -> int:
        """Walk a sequence's items from ``at`` to ``end`` (``None``: until its delimiter)."""
        index = 0
        while end is None or at < end:
            tag, _, length, _ = self._header(at, True)
            at += 8
            if tag == SEQUENCE_END and end is None:
                return at
            if tag != ITEM:
                raise MalformedDataSetError(f"sequence {where}: item expected, found tag {tag:08X}")
            path = f"{where}[{index}]"
            if length == UNDEFINED_LENGTH:
                at = self.elements(at, None, implicit, path)
            else:
                if end is not None and at + length > end:
                    raise MalformedDataSetError(f"item {path} overruns its sequence")
                at = self.elements(at, at + length, implicit, path)
            index += 1
        if at != end:
            raise MalformedDataSetError(f"items of sequence {where} overrun its end")
        return at

    def fragments(self, at: int, where: str) -> int:
        """Skip encapsulated pixel data fragments until the sequence delimiter."""
        while True:
            tag, _, length, _ = self._header(at, True)
            at += 8
            if tag == SEQUENCE_END:
                return at
            if tag != ITEM or length == UNDEFINED_LENGTH:
                raise MalformedDataSetError(f"encapsulated {where}: fragment expected")
            at += length


class SyntaxEncoding(NamedTuple):
    """How a transfer syntax encodes a data set's elements."""

    implicit_vr: bool
    little_endian: bool
    deflated: bool


@lru_cache(maxsize=64)
def syntax_encoding(transfer_syntax: str) -> SyntaxEncoding:
    """The encoding of ``transfer_syntax`` (pydicom's UID properties, looked up once per syntax:
    building a ``UID`` validates it, ≈ 5 µs each time)."""
    syntax = UID(transfer_syntax)
    return SyntaxEncoding(syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)


def _walker(
    transfer_syntax: str, data: DataBuffer, size: int | None = None
) -> tuple[_Nesting, bool]:
    syntax = syntax_encoding(transfer_syntax)
    if syntax.deflated:
        raise MalformedDataSetError(
            f"{transfer_syntax} is deflated: inflate the data set before walking its elements"
        )
    return _Nesting(data, little_endian=syntax.little_endian, size=size), syntax.implicit_vr


def check_nesting(handle: BinaryIO, *, start: int, end: int, transfer_syntax: str) -> None:
    """Every element, item and sequence of the data set in ``handle[start:end]`` ends within
    what contains it, and the last ends exactly at ``end`` (element headers only are read), in
    the byte order of ``transfer_syntax`` (Explicit VR Big Endian, retired but accepted, too).

    A deflated transfer syntax's bytes are a deflate stream, not element headers: inflate them
    first (:func:`inflate_data_set`) and check the inflated data set as Explicit VR Little
    Endian (PS3.5 A.5); passed here, they are refused. (The receiver walks a mapped buffer
    instead: :func:`walk_data_set`; byte offsets in messages count from ``start`` here too.)

    Raises:
        MalformedDataSetError: naming the first element that overruns, with its path.
    """
    handle.seek(start)
    data = handle.read(end - start)
    walker, implicit = _walker(transfer_syntax, data)
    walker.elements(0, len(data), implicit, "")


def check_first_element_encoding(data: DataBuffer, transfer_syntax: str) -> None:
    """The data set's first element is in the VR encoding of ``transfer_syntax``, judged as
    pydicom judges it when it reads a data set (two upper-case letters after the first tag:
    explicit VR; anything else: implicit), so that :func:`check_encoding` on what pydicom
    reads and this agree.

    Raises:
        MalformedDataSetError: the first element is in the other encoding.
    """
    if len(data) < 6:
        return  # pydicom keeps the syntax's encoding: nothing to judge
    syntax = syntax_encoding(transfer_syntax)
    implicit = syntax.implicit_vr
    found_implicit = not (0x40 < data[4] < 0x5B and 0x40 < data[5] < 0x5B)
    if found_implicit != implicit:
        group, element = struct.unpack_from("<HH" if syntax.little_endian else ">HH", data)
        found = "implicit" if found_implicit else "explicit"
        expected = "implicit" if implicit else "explicit"
        raise MalformedDataSetError(
            f"data set encoded in {found} VR on a presentation context whose transfer "
            f"syntax {transfer_syntax} is {expected} VR (first element "
            f"({group:04X},{element:04X}))"
        )


def walk_data_set(
    data: DataBuffer, *, transfer_syntax: str, size: int | None = None
) -> list[TopLevelElement]:
    """Check a whole data set by its element headers, in one pass over ``data`` (the data set
    alone, not deflated): its first element in the VR encoding of ``transfer_syntax``
    (:func:`check_first_element_encoding`), then, at every depth, every element, item and
    sequence ending within what contains it and the last exactly at the end (a value cut short
    at any size), every explicit VR one PS3.5 defines, every binary value a whole number of
    its numbers (:func:`check_nesting`'s walk). Returns the top-level elements.

    ``size``: the data set's length when ``data`` holds only its first bytes (values are
    skipped, not read: a CT slice's headers are in its first kB, its pixel data last).

    Raises:
        MalformedDataSetError: naming the first element that fails, with its path.
        DataBeyondPrefixError: a header lies past ``data`` (the caller passes it whole).
    """
    check_first_element_encoding(data, transfer_syntax)
    walker, implicit = _walker(transfer_syntax, data, size)
    found: list[TopLevelElement] = []
    walker.elements(0, walker.size, implicit, "", found)
    return found


DECODED_GROUPS = frozenset({0x0028})
"""Groups whose elements (within the deferral size) :func:`read_checked_data_set` passes to
pydicom whenever it decodes an element: the image pixel module, which ambiguous VRs (US or SS,
OB or OW) are resolved by."""


def needs_decoding(element: TopLevelElement, defer_size: int) -> bool:
    """Whether :func:`check_structure` decodes ``element`` with pydicom (a sequence, an
    ``UN`` value or an undefined length: pydicom reads the last whole and parses sequences)
    rather than leaving it to the header walk; pixel data and values pydicom defers (over
    ``defer_size``) never."""
    if element.tag == PIXEL_DATA_TAG:
        return False
    if element.length == UNDEFINED_LENGTH:
        return True
    if element.length > defer_size:
        return False
    if element.vr == b"":  # implicit VR: decoded when the dictionary does not know it (UN)
        try:
            dictionary_VR(element.tag)
        except KeyError:
            return True
        return False
    return element.vr in (b"SQ", b"UN")


PLAIN_TEXT_VRS = frozenset({b"UI", b"DA", b"TM", b"DT", b"CS", b"LO", b"SH"})
"""VRs whose single value :func:`plain_values` decodes as pydicom does (text, no charset
escapes); any other kept element sends the data set through pydicom."""
_PLAIN_BYTES = re.compile(rb"[\x00\x20-\x5b\x5d-\x7e]*")
"""NUL and printable ASCII but the backslash (the value delimiter): the same characters in
every character set DICOM defines (no escape sequence, no multi-byte code), so decoding them is
charset-independent."""


@lru_cache(maxsize=256)
def _keyword_and_vr(tag: int) -> tuple[str, bytes]:
    with suppress(KeyError):
        return keyword_for_tag(tag), str(dictionary_VR(tag)).encode()
    return "", b""


def plain_values(
    data: DataBuffer, elements: list[TopLevelElement], keep_tags: frozenset[int]
) -> dict[str, str] | None:
    """The kept elements' values (keyword → value) decoded without pydicom, exactly as pydicom
    decodes them (``.rstrip("\\0 ")``; an empty value ``""``), when every kept element is
    plain: its VR the dictionary's and one of :data:`PLAIN_TEXT_VRS`, one value of NUL or
    printable ASCII but the backslash. ``None`` otherwise (the caller reads them with pydicom).
    pydicom's conversion and validation cost ≈ 12 µs per value (35 µs on the loaded receiver)."""
    values: dict[str, str] = {}
    for element in elements:
        if element.tag not in keep_tags:
            continue
        keyword, vr = _keyword_and_vr(element.tag)
        if vr not in PLAIN_TEXT_VRS or element.vr not in (vr, b""):
            return None
        header = element.end - element.start - element.length
        raw = bytes(data[element.start + header : element.end])
        if _PLAIN_BYTES.fullmatch(raw) is None:
            return None
        values[keyword] = raw.decode("ascii").rstrip("\0 ")
    return values


def read_checked_data_set(
    data: DataBuffer,
    *,
    transfer_syntax: str,
    keep_tags: frozenset[int],
    defer_size: int,
    size: int | None = None,
) -> Dataset | dict[str, str]:
    """Check a data set (not deflated) and read the few elements the caller needs.

    :func:`walk_data_set` checks every element header at every depth. When no element needs
    pydicom to be checked (:func:`needs_decoding`: no sequence, ``UN`` or undefined length
    beside pixel data) and every kept element is plain text, the kept values are decoded here
    (:func:`plain_values`) and returned keyword → value, as ``Dataset.get`` gives them.
    Otherwise pydicom reads only the first element, ``keep_tags`` and every element
    :func:`check_structure` would decode (with them the elements of :data:`DECODED_GROUPS`),
    concatenated in their order (not every element header a second time), and they go through
    :func:`check_encoding` and :func:`check_structure` as a whole data set read by pydicom
    would; the result holds only those elements (``SpecificCharacterSet`` among ``keep_tags``
    for text values to decode as the sender encoded them).

    ``size``: the data set's length when ``data`` holds only its first bytes.

    Raises:
        MalformedDataSetError: see :func:`walk_data_set` and :func:`check_structure`; a kept
            element over ``defer_size`` bytes (a UID, date or code of more than 64 kB).
        DataBeyondPrefixError: a header or an element to read lies past ``data``.
        Exception: anything pydicom raises for bytes it cannot parse.
    """
    elements = walk_data_set(data, transfer_syntax=transfer_syntax, size=size)
    chosen: list[TopLevelElement] = []
    pixel_module: list[TopLevelElement] = []
    decoded = False
    for index, element in enumerate(elements):
        kept = element.tag in keep_tags
        if kept and element.length != UNDEFINED_LENGTH and element.length > defer_size:
            raise MalformedDataSetError(
                f"element {_path('', element.tag)} holds {element.length} bytes, more than "
                f"{defer_size} (not a value the receiver reads)"
            )
        if needs_decoding(element, defer_size):
            decoded = True
            chosen.append(element)
        elif index == 0 or kept:
            chosen.append(element)
        elif element.tag >> 16 in DECODED_GROUPS and element.length <= defer_size:
            pixel_module.append(element)
    if decoded:  # ambiguous VRs in what pydicom decodes are resolved by the pixel module
        chosen = sorted(chosen + pixel_module, key=lambda element: element.start)
    if chosen and chosen[-1].end > len(data):
        raise DataBeyondPrefixError(f"element {_path('', chosen[-1].tag)}")
    if not decoded:
        values = plain_values(data, chosen, keep_tags)
        if values is not None:
            return values
    subset = b"".join(data[element.start : element.end] for element in chosen)
    syntax = syntax_encoding(transfer_syntax)
    dataset = read_dataset(
        io.BytesIO(subset),
        is_implicit_VR=syntax.implicit_vr,
        is_little_endian=syntax.little_endian,
        defer_size=defer_size,
    )
    check_encoding(dataset, transfer_syntax)
    check_structure(dataset)
    return dataset


MAX_INFLATED_BYTES = 1 << 30
"""The most a deflated data set may inflate to (1 GiB): more is refused as a decompression
bomb (0xC000). Deflate reaches ≈ 1,030:1 on uniform bytes, so 1 MB sent can claim 1 GB; a
cap on the ratio would refuse real objects too (a sparse SEG's masks inflate ≈ 50:1 on the test
phantom and far more on a large grid), a cap on the size does not. Above any real instance
sent deflated (deflate is for non-image objects, PS3.5 A.5; an enhanced CT is ≈ 500 MB)."""
INFLATE_CHUNK_BYTES = 1 << 16
"""Bytes read, and at most inflated, per step: memory stays bounded by a few chunks however
large the data set (the inflated bytes go to the caller's file)."""
_PAD_BYTE = b"\0"


def inflate_data_set(
    source: BinaryIO,
    *,
    start: int,
    end: int,
    target: BinaryIO,
    max_bytes: int = MAX_INFLATED_BYTES,
    before_write: Callable[[int, int], None] | None = None,
) -> int:
    """Inflate the raw deflate stream (RFC 1951, no zlib header: ``wbits=-15``, PS3.5 A.5) in
    ``source[start:end]`` into ``target``, chunk by chunk, and return the inflated length.

    The stream must end (its final block) within ``end``, followed by at most one pad byte
    (a deflated data set is padded to an even length with a NUL, PS3.5 A.5).

    ``before_write`` is called before each chunk is written to ``target`` with the bytes
    written so far and the chunk's size; it may raise to stop (e.g. no room left on disk).

    Raises:
        MalformedDataSetError: not a deflate stream, cut short, bytes after its end, or more
            than ``max_bytes`` inflated (a decompression bomb: stopped at the cap, never
            inflated in full).
    """
    inflater = zlib.decompressobj(wbits=-zlib.MAX_WBITS)
    source.seek(start)
    remaining, inflated = end - start, 0

    def inflate(data: bytes) -> bytes:
        """Inflate at most one chunk of ``data``; the rest stays in ``unconsumed_tail``."""
        nonlocal inflated
        out = inflater.decompress(data, INFLATE_CHUNK_BYTES)
        inflated += len(out)
        if inflated > max_bytes:
            raise MalformedDataSetError(
                f"deflated data set of {end - start} bytes inflates to more than "
                f"{max_bytes} bytes (refused as a decompression bomb)"
            )
        if before_write is not None and out:
            before_write(inflated - len(out), len(out))
        target.write(out)
        return out

    try:
        while remaining > 0 and not inflater.eof:
            pending = source.read(min(INFLATE_CHUNK_BYTES, remaining))
            if not pending:
                break
            remaining -= len(pending)
            while pending and not inflater.eof:
                inflate(pending)
                pending = inflater.unconsumed_tail
        while not inflater.eof and inflate(b""):  # output still inside the inflater
            pass
    except zlib.error as exc:
        raise MalformedDataSetError(f"deflated data set does not inflate: {exc}") from exc
    if not inflater.eof:
        raise MalformedDataSetError(
            f"deflated data set cut short: its deflate stream does not end within the "
            f"{end - start} bytes received"
        )
    trailing = inflater.unused_data + source.read(remaining)
    if trailing not in (b"", _PAD_BYTE):
        raise MalformedDataSetError(
            f"{len(trailing)} bytes after the end of the deflated data set's stream "
            "(expected at most one NUL pad byte)"
        )
    return inflated
