"""Parsing header values so that a malformed one is an error naming it, never a crash.

The readers (:mod:`.nm`) read every value they compute with through :func:`header_value`: the
value is fetched from the data set (pydicom converts IS/DS text on access and raises for text
that is not a number) and converted by one of the converters below; any failure becomes a
:class:`~concordose.errors.MalformedHeaderError` naming the keyword, the tag and the value as
found, which the gate and ``concordose check`` turn into a finding holding the study.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue

from concordose.errors import MalformedHeaderError

T = TypeVar("T")

PARSE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    ArithmeticError,
    IndexError,
    KeyError,
    AttributeError,
)
"""What converting a header value can raise (pydicom's IS/DS converters, int(), float(), a
multi-valued attribute with too few values…)."""

MAX_SHOWN_CHARS = 64
"""A value longer than this is cut in messages (a mutant can hold kilobytes)."""


def tag_text(keyword: str) -> str:
    """``(gggg,eeee)`` of a dictionary keyword (``(????,????)`` when unknown)."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return "(????,????)"
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def raw_text(dataset: Dataset, keyword: str) -> str:
    """The value of ``keyword`` as found in the file (undecoded text), cut to
    :data:`MAX_SHOWN_CHARS`; ``"missing"`` when absent."""
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in dataset:
        return "missing"
    element: DataElement | RawDataElement = dataset.get_item(tag, keep_deferred=True)
    value = element.value
    if isinstance(value, bytes):
        text = value.decode("latin-1").rstrip("\0 ")
    elif isinstance(value, MultiValue | list | tuple):
        text = "\\".join(str(v) for v in value)  # as the file holds it
    else:
        text = str(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "…"


def header_value(
    dataset: Dataset,
    keyword: str,
    convert: Callable[[object], T],
    *,
    expected: str,
    path: Path,
) -> T:
    """``convert(dataset.get(keyword))``.

    Raises:
        MalformedHeaderError: the value cannot be read or converted (names keyword, tag, value
            and ``expected``).
    """
    try:
        return convert(dataset.get(keyword))
    except PARSE_ERRORS as exc:
        raise MalformedHeaderError(
            path, keyword, tag_text(keyword), raw_text(dataset, keyword), expected
        ) from exc


def _finite(value: object) -> float:
    number = float(value)  # type: ignore[arg-type]  # DS, IS, str or number; else TypeError
    if not math.isfinite(number):
        raise ValueError(f"{number} is not finite")
    return number


def optional_float(value: object) -> float | None:
    """A finite number, or ``None`` when absent or empty."""
    if value is None or value == "":
        return None
    return _finite(value)


def positive_int(value: object) -> int:
    """An integer ≥ 1 (NumberOfFrames, Rows, Columns)."""
    if value is None:
        raise ValueError("missing")
    number: int = int(value)  # type: ignore[call-overload]  # IS, str or int; else TypeError
    if number < 1:
        raise ValueError(f"{number} < 1")
    return number


def finite_floats(count: int, *, positive: bool = False) -> Callable[[object], tuple[float, ...]]:
    """A converter to exactly ``count`` finite numbers (each > 0 with ``positive``)."""

    def convert(value: object) -> tuple[float, ...]:
        if value is None:
            raise ValueError("missing")
        values = [value] if isinstance(value, str | int | float) else list(value)  # type: ignore[call-overload]
        numbers = tuple(_finite(v) for v in values)
        if len(numbers) != count:
            raise ValueError(f"{len(numbers)} values, not {count}")
        if positive and min(numbers) <= 0:
            raise ValueError("not all positive")
        return numbers

    return convert


def integer(value: object) -> int:
    """An integer (an IS such as ROINumber; required)."""
    if value is None or value == "":
        raise ValueError("missing")
    number: int = int(value)  # type: ignore[call-overload]  # IS, str or int; else TypeError
    return number


def coordinate_triplets(value: object) -> tuple[tuple[float, float, float], ...]:
    """x\\y\\z triplets of finite numbers (ContourData, mm; at least one)."""
    if value is None:
        raise ValueError("missing")
    values = [value] if isinstance(value, str | int | float) else list(value)  # type: ignore[call-overload]
    numbers = [_finite(v) for v in values]
    if not numbers or len(numbers) % 3:
        raise ValueError(f"{len(numbers)} values, not a multiple of 3")
    return tuple((numbers[i], numbers[i + 1], numbers[i + 2]) for i in range(0, len(numbers), 3))


def required_text(value: object) -> str:
    """A non-empty text value (a UID such as ReferencedSOPInstanceUID)."""
    text = str(value if value is not None else "").strip("\0 ")
    if not text:
        raise ValueError("missing")
    return text


def positive_float(value: object) -> float:
    """A finite number > 0 after taking its magnitude (a spacing's sign is a direction)."""
    if value is None or value == "":
        raise ValueError("missing")
    number = abs(_finite(value))
    if number == 0:
        raise ValueError("zero")
    return number


def strictly_positive_float(value: object) -> float:
    """A finite number > 0 (a thickness: its sign is no direction)."""
    number = finite_float(value)
    if number <= 0:
        raise ValueError(f"{number} ≤ 0")
    return number


def one_of(*allowed: int) -> Callable[[object], int]:
    """A converter to an integer among ``allowed`` (BitsAllocated 8, 16 or 32…)."""

    def convert(value: object) -> int:
        number = integer(value)
        if number not in allowed:
            raise ValueError(f"{number} not in {allowed}")
        return number

    return convert


def optional(convert: Callable[[object], T]) -> Callable[[object], T | None]:
    """``convert``, except that an absent or empty value is ``None`` (a Type 2 or 3
    attribute)."""

    def optional_convert(value: object) -> T | None:
        if value is None or value == "":
            return None
        return convert(value)

    return optional_convert


def native_pixel_data_bytes(frames: int, rows: int, columns: int, bits_allocated: int) -> int:
    """Bytes of native (uncompressed) PixelData of ``frames`` frames of one sample per pixel,
    bits packed across frames (BitsAllocated 1, PS3.5 §8.1.1), before padding to even."""
    return (frames * rows * columns * bits_allocated + 7) // 8


PIXEL_DATA_TAG = 0x7FE00010


def check_native_pixel_data(
    dataset: Dataset, path: Path, *, frames: int, rows: int, columns: int, bits_allocated: int
) -> None:
    """PixelData (7FE0,0010) of a data set in a native (uncompressed) transfer syntax holds
    :func:`native_pixel_data_bytes` bytes (its own length, or padded to even); a value left
    unread by ``defer_size`` is measured by its declared length. Absent or encapsulated pixel
    data (undefined length) is not checked here.

    Raises:
        MalformedHeaderError: naming PixelData, the bytes it holds and those expected.
    """
    if PIXEL_DATA_TAG not in dataset:
        return
    element: DataElement | RawDataElement = dataset.get_item(PIXEL_DATA_TAG, keep_deferred=True)
    if isinstance(element, RawDataElement) and element.value is None:
        found = int(element.length)
    elif isinstance(element.value, bytes):
        found = len(element.value)
    else:
        return
    if found == 0xFFFFFFFF:
        return  # encapsulated: its frames are the decoder's to count
    expected = native_pixel_data_bytes(frames, rows, columns, bits_allocated)
    if found not in (expected, expected + expected % 2):
        raise MalformedHeaderError(
            path,
            "PixelData",
            "(7FE0,0010)",
            f"{found} bytes",
            f"NumberOfFrames × Rows × Columns × BitsAllocated / 8 = {frames} × {rows} × "
            f"{columns} × {bits_allocated} / 8 = {expected} bytes (+ 1 to pad to even)",
        )


def finite_float(value: object) -> float:
    """A finite number (required)."""
    if value is None or value == "":
        raise ValueError("missing")
    return _finite(value)


DIRECTION_COSINE_TOLERANCE = 0.05
"""How far from unit length and from orthogonal ImageOrientationPatient's two vectors may be
(PS3.3 C.7.6.2.1.1: direction cosines of the row and column; scanners write them to ≈ 1e-6;
beyond 0.05 the value is not an orientation, it is garbage)."""


def direction_cosines(value: object) -> tuple[float, ...]:
    """ImageOrientationPatient: 6 numbers, two unit vectors at right angles (within
    :data:`DIRECTION_COSINE_TOLERANCE`)."""
    numbers = finite_floats(6)(value)
    row, column = numbers[:3], numbers[3:]
    for vector in (row, column):
        if abs(math.hypot(*vector) - 1.0) > DIRECTION_COSINE_TOLERANCE:
            raise ValueError("not a unit vector")
    if abs(sum(r * c for r, c in zip(row, column, strict=True))) > DIRECTION_COSINE_TOLERANCE:
        raise ValueError("row and column not at right angles")
    return numbers


def image_position_mm(dataset: Dataset, path: Path) -> tuple[float, ...]:
    """ImagePositionPatient of ``dataset`` (3 finite numbers, mm), or a
    :class:`~concordose.errors.MalformedHeaderError` naming it (the one home of the check the
    image readers share)."""
    return header_value(
        dataset, "ImagePositionPatient", finite_floats(3), expected="3 numbers (mm)", path=path
    )


def image_orientation(dataset: Dataset, path: Path) -> tuple[float, ...]:
    """ImageOrientationPatient of ``dataset`` (:func:`direction_cosines`), or a
    :class:`~concordose.errors.MalformedHeaderError` naming it."""
    return header_value(
        dataset,
        "ImageOrientationPatient",
        direction_cosines,
        expected="6 direction cosines: two unit vectors at right angles",
        path=path,
    )
