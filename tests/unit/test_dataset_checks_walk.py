"""The receiver's one-pass check of a data set (:func:`read_checked_data_set`, issue 18 item 6):
every element header walked from a buffer, pydicom reading only the elements the receiver
needs and those :func:`check_structure` must decode, or none at all when those are plain text
(:func:`plain_values`) — with the same answers as reading the whole data set (a differential
run over 2,115 fuzz mutants gave the same status, identity and summary for every one;
docs/reliability.md). Over real associations: ``tests/integration/test_receiver_malformed.py``
and ``test_receiver_fuzz.py``."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    NuclearMedicineImageStorage,
    generate_uid,
)

from concordose.ingest.dataset_checks import (
    DataBeyondPrefixError,
    MalformedDataSetError,
    read_checked_data_set,
    walk_data_set,
)
from concordose.ingest.receiver import DEFER_VALUES_OVER_BYTES, KEPT_TAGS
from concordose.spool.timepoints import InstanceSummary
from tests.conftest import SIEMENS_NM_FIXTURE
from tests.integration.crafted_peer import encode_data_set

PATIENT_BIRTH_DATE = b"\x10\x00\x30\x00DA"  # (0010,0030) DA, explicit VR little endian


def _ct() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = NuclearMedicineImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientBirthDate, ds.Modality = "P1", "19500101", "NM"
    ds.Manufacturer = "ACME"
    item = Dataset()
    item.RadiopharmaceuticalStartDateTime = "20261124093000"
    ds.RadiopharmaceuticalInformationSequence = Sequence([item])
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.PixelRepresentation = 16, 0
    ds.PixelData = bytes(32)
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_pydicom_reads_only_the_kept_decoded_and_pixel_module_elements(syntax: str) -> None:
    ds = _ct()
    data = encode_data_set(ds, syntax)
    read = read_checked_data_set(
        data, transfer_syntax=syntax, keep_tags=KEPT_TAGS, defer_size=DEFER_VALUES_OVER_BYTES
    )
    assert isinstance(read, Dataset)  # a sequence: pydicom decodes it
    assert "Manufacturer" not in read
    assert "PixelData" not in read
    assert "PatientBirthDate" not in read
    assert read.SOPInstanceUID == ds.SOPInstanceUID
    assert read.Rows == 4  # group 0028: resolves ambiguous VRs as in the whole data set
    assert read.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
    assert InstanceSummary.from_dataset(read) == InstanceSummary.from_dataset(ds)
    assert [element.tag for element in walk_data_set(data, transfer_syntax=syntax)] == [
        int(tag) for tag in sorted(ds.keys())
    ]


def test_the_summary_of_the_kept_elements_is_the_whole_data_sets() -> None:
    """SUMMARY_KEYWORDS lists every element the summary reads (a real Siemens NM file)."""
    full = pydicom.dcmread(SIEMENS_NM_FIXTURE)
    data = encode_data_set(full, ExplicitVRLittleEndian)
    read = read_checked_data_set(
        data,
        transfer_syntax=ExplicitVRLittleEndian,
        keep_tags=KEPT_TAGS,
        defer_size=DEFER_VALUES_OVER_BYTES,
    )
    assert len(read) < len(full)
    summary = InstanceSummary.from_dataset(full)
    assert summary.patient_id
    assert summary.acquisition_datetime is not None
    assert InstanceSummary.from_dataset(read) == summary


@pytest.mark.parametrize("vr", ["SV", "UV"])
def test_sv_and_uv_have_a_12_byte_header_like_ob(vr: str) -> None:
    """PS3.5 Table 7.1-1: SV and UV carry a 4-byte length; walked with a 2-byte one, a DA
    relabelled UV (a fuzz mutant pydicom refused as truncated) passed the walk."""
    ds = _ct()
    ds.add_new(0x00091010, "LO", "CONCORDOSE TEST")  # private creator of block 10
    ds.add_new(0x00091001 | 0x1000, vr, [1, 2])
    data = encode_data_set(ds, ExplicitVRLittleEndian)
    walk_data_set(data, transfer_syntax=ExplicitVRLittleEndian)
    relabelled = data.replace(PATIENT_BIRTH_DATE, PATIENT_BIRTH_DATE[:4] + vr.encode())
    assert relabelled != data
    with pytest.raises(MalformedDataSetError):
        walk_data_set(relabelled, transfer_syntax=ExplicitVRLittleEndian)


def test_an_element_not_read_by_pydicom_is_still_walked() -> None:
    """A value cut short anywhere fails the walk, kept or not (pixel data here)."""
    data = encode_data_set(_ct(), ExplicitVRLittleEndian)
    cut = data[:-2]
    with pytest.raises(MalformedDataSetError, match=r"\(7FE0,0010\) declares 32 bytes, 30"):
        read_checked_data_set(
            cut,
            transfer_syntax=ExplicitVRLittleEndian,
            keep_tags=KEPT_TAGS,
            defer_size=DEFER_VALUES_OVER_BYTES,
        )


def test_the_first_element_in_the_other_vr_encoding_is_refused_as_pydicom_sees_it() -> None:
    data = encode_data_set(_ct(), ExplicitVRLittleEndian)
    with pytest.raises(MalformedDataSetError, match="encoded in explicit VR"):
        walk_data_set(data, transfer_syntax=ImplicitVRLittleEndian)
    data = encode_data_set(_ct(), ImplicitVRLittleEndian)
    with pytest.raises(MalformedDataSetError, match="encoded in implicit VR"):
        walk_data_set(data, transfer_syntax=ExplicitVRLittleEndian)


def _plain_ct() -> Dataset:
    ds = _ct()
    del ds.RadiopharmaceuticalInformationSequence  # no sequence: nothing for pydicom to decode
    return ds


@pytest.mark.parametrize(
    ("keyword", "raw", "plain"),
    [
        ("PatientID", b"P1  ", True),  # trailing spaces stripped
        ("PatientID", b" P 1", True),  # leading ones kept (from_dataset strips them)
        ("PatientID", b"P1\0\0", True),
        ("PatientID", b"", True),
        ("StudyDate", b"20261124", True),
        ("Modality", b"NM", True),
        ("PatientID", b"P1\\P2", False),  # two values: pydicom's MultiValue
        ("PatientID", "Müller".encode("latin-1"), False),  # decoded by the character set
    ],
)
def test_plain_values_are_what_pydicom_decodes(keyword: str, raw: bytes, plain: bool) -> None:
    ds = _plain_ct()
    if raw:
        setattr(ds, keyword, "X")
    data = encode_data_set(ds, ExplicitVRLittleEndian)
    if raw:  # the value's bytes as given, its length field fixed
        element = ds[keyword]
        old = element.value.encode() + (b" " if len(element.value) % 2 else b"")
        head = data.index(int(element.tag.group).to_bytes(2, "little"))
        at = data.index(old, head)
        length = len(raw)
        data = data[: at - 2] + length.to_bytes(2, "little") + raw + data[at + len(old) :]
    read = read_checked_data_set(
        data,
        transfer_syntax=ExplicitVRLittleEndian,
        keep_tags=KEPT_TAGS,
        defer_size=DEFER_VALUES_OVER_BYTES,
    )
    assert isinstance(read, dict) == plain
    whole = pydicom.dcmread(io.BytesIO(b"\0" * 128 + b"DICM" + _meta() + data), force=True)
    for name in ("PatientID", "StudyDate", "Modality", "SOPInstanceUID", "StudyInstanceUID"):
        assert read.get(name) == whole.get(name), name
    assert InstanceSummary.from_dataset(read) == InstanceSummary.from_dataset(whole)


def _meta() -> bytes:
    """An explicit VR little endian file meta group (transfer syntax only)."""
    syntax = ExplicitVRLittleEndian.encode() + b"\0"
    element = b"\x02\x00\x10\x00UI" + len(syntax).to_bytes(2, "little") + syntax
    return b"\x02\x00\x00\x00UL\x04\x00" + len(element).to_bytes(4, "little") + element


def test_a_prefix_is_enough_until_a_header_lies_past_it() -> None:
    """The receiver checks a slice from its first 64 kB, kept as they arrived; a header past
    them (here an element after 70 kB of pixel data) asks for the whole data set instead."""
    ds = _plain_ct()
    ds.PixelData = bytes(70_000)
    data = encode_data_set(ds, ExplicitVRLittleEndian)
    prefix = data[:65536]
    read = read_checked_data_set(
        prefix,
        transfer_syntax=ExplicitVRLittleEndian,
        keep_tags=KEPT_TAGS,
        defer_size=DEFER_VALUES_OVER_BYTES,
        size=len(data),
    )
    assert read == read_checked_data_set(
        data,
        transfer_syntax=ExplicitVRLittleEndian,
        keep_tags=KEPT_TAGS,
        defer_size=DEFER_VALUES_OVER_BYTES,
    )
    with pytest.raises(MalformedDataSetError, match="declares 70000 bytes"):
        walk_data_set(prefix, transfer_syntax=ExplicitVRLittleEndian, size=len(data) - 2)
    ds.add_new(0x7FE10010, "OB", b"\0\0")  # a private element after the pixel data
    data = encode_data_set(ds, ExplicitVRLittleEndian)
    with pytest.raises(DataBeyondPrefixError):
        walk_data_set(data[:65536], transfer_syntax=ExplicitVRLittleEndian, size=len(data))
    assert walk_data_set(data, transfer_syntax=ExplicitVRLittleEndian)[-1].tag == 0x7FE10010
