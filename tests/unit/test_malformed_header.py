"""Readers never raise on a malformed header (issue 18, item 1): ``concordose check`` and the
process path (``prepare_cycle``) hold the study with a finding naming the keyword, the tag and
the value, instead of ``ValueError: invalid literal for int()``, ``cannot reshape array`` or
``incompatible dimensions for cross product``."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from typer.testing import CliRunner

from concordose.calibration.findings import HEADER_CHECK, Severity
from concordose.calibration.registry import SiteRegistry
from concordose.cli import app
from concordose.cli.console import EXIT_HELD
from concordose.dicom.ct import read_ct_series
from concordose.dicom.nm import read_nm_counts, read_nm_header
from concordose.dicom.seg import read_segmentation
from concordose.errors import MalformedHeaderError, UnreadableDicomError
from concordose.phantoms import GeneratedPatient
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.preparation import prepare_cycle
from tests.conftest import SIEMENS_NM_FIXTURE
from tests.rtstruct_builder import first_ct_files, on_grid

runner = CliRunner()

Edit = Callable[[Dataset], None]


def _mutant(source: Path, target: Path, edit: Edit, placeholder: str, found: bytes) -> Path:
    """``source`` with ``edit`` applied, then the value ``placeholder`` (which the edit wrote,
    explicit VR little endian) replaced by ``found`` of the same length: a value no encoder
    would write, as a modality or a corrupted transfer leaves it."""
    dataset = pydicom.dcmread(source)
    edit(dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.save_as(target, enforce_file_format=False)
    raw = target.read_bytes()
    value = placeholder.encode()
    # short-form element header (tag, VR, 2-byte length) right before the value
    at, start = [], raw.find(value)
    while start != -1:
        header = raw[start - 4 : start]
        if header[:2].isalpha() and int.from_bytes(header[2:], "little") == len(value):
            at.append(start)
        start = raw.find(value, start + 1)
    assert len(at) == 1, at
    assert len(found) == len(placeholder)
    target.write_bytes(raw[: at[0]] + found + raw[at[0] + len(value) :])
    return target


def _frames(value: str) -> Edit:
    def edit(dataset: Dataset) -> None:
        dataset.NumberOfFrames = value

    return edit


def _orientation(dataset: Dataset) -> None:
    item = (
        dataset.DetectorInformationSequence[0]
        if "DetectorInformationSequence" in dataset
        else dataset
    )
    item.ImageOrientationPatient = [0.6, 0.8, 0.0, -0.8, 0.6, 0.0]


def _spacing(dataset: Dataset) -> None:
    dataset.PixelSpacing = ["4.795199930668", "4.7951999306679"]  # 30 characters: even


CASES = {
    # keyword, placeholder written, bytes found, value shown
    "frames_abc": (_frames("9999"), "9999", b"abc ", "NumberOfFrames (0028,0008) is 'abc'"),
    "frames_zero": (_frames("9999"), "9999", b"0   ", "NumberOfFrames (0028,0008) is '0'"),
    "spacing_mutant": (
        _spacing,
        "4.795199930668\\4.7951999306679",
        "4.795íÅ9930668\\4.7951999306679".encode("latin-1"),
        "PixelSpacing (0028,0030) is '4.795íÅ9930668",
    ),
    "orientation_3_values": (
        _orientation,
        "0.6\\0.8\\0.0\\-0.8\\0.6\\0.0",
        b"1\\0\\0".ljust(len("0.6\\0.8\\0.0\\-0.8\\0.6\\0.0")),
        "ImageOrientationPatient (0020,0037) is '1\\\\0\\\\0'",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_nm_reader_names_keyword_tag_and_value(case: str, tmp_path: Path) -> None:
    edit, placeholder, found, shown = CASES[case]
    path = _mutant(SIEMENS_NM_FIXTURE, tmp_path / "nm.dcm", edit, placeholder, found)
    with pytest.raises(MalformedHeaderError) as raised:
        read_nm_header(path)
    assert shown in str(raised.value)
    assert "expected" in str(raised.value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_holds_a_malformed_header_with_a_finding_not_a_traceback(
    case: str, small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    edit, placeholder, found, shown = CASES[case]
    path = _mutant(SIEMENS_NM_FIXTURE, tmp_path / "nm.dcm", edit, placeholder, found)
    arguments = ["--sites", str(small_patient.sites_path), "--site", "milan", "--json"]
    result = runner.invoke(app, ["check", str(path), *arguments])
    assert result.exit_code == EXIT_HELD, result.output
    (item,) = json.loads(result.stdout)["files"]
    assert item["held"] is True
    (finding,) = item["findings"]
    assert (finding["rule"], finding["severity"]) == (HEADER_CHECK, "error")
    assert shown in finding["message"]


def test_process_holds_a_cycle_whose_spect_has_a_malformed_header(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    folder = tmp_path / "incoming"
    shutil.copytree(small_patient.out_dir / "dicom", folder)
    first = folder / small_patient.nm_files[0].relative_to(small_patient.out_dir / "dicom")
    _mutant(first, first, _frames("9999"), "9999", b"abc ")
    registry = SiteRegistry.load(small_patient.sites_path)
    prepared = prepare_cycle(list(catalogue(folder)), registry, site_id="milan")
    assert prepared.held
    (finding,) = prepared.findings
    assert (finding.rule, finding.severity) == (HEADER_CHECK, Severity.ERROR)
    assert finding.source == str(first)
    assert "NumberOfFrames (0028,0008) is 'abc'" in finding.message


def test_pixel_data_not_matching_number_of_frames_is_unreadable_not_a_reshape_error(
    tmp_path: Path,
) -> None:
    path = _mutant(SIEMENS_NM_FIXTURE, tmp_path / "nm.dcm", _frames("9999"), "9999", b"2   ")
    acquisition = read_nm_header(path)
    with pytest.raises(UnreadableDicomError, match=r"PixelData \(7FE0,0010\) holds 1327104"):
        read_nm_counts(acquisition)


def test_an_identifying_value_is_never_echoed(tmp_path: Path) -> None:
    error = MalformedHeaderError(
        tmp_path / "x.dcm", "PatientBirthDate", "(0010,0030)", "1950", "a date"
    )
    assert "1950" not in str(error)
    assert "withheld" in str(error)


def test_concordose_process_holds_the_cycle_instead_of_crashing(
    small_patient: GeneratedPatient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-secret")
    monkeypatch.setenv("CONCORDOSE_OUTPUT_URI", str(tmp_path / "published"))
    folder = tmp_path / "incoming"
    shutil.copytree(small_patient.out_dir / "dicom", folder)
    first = folder / small_patient.nm_files[0].relative_to(small_patient.out_dir / "dicom")
    _mutant(first, first, _frames("9999"), "9999", b"abc ")
    arguments = ["--spool", str(folder), "--sites", str(small_patient.sites_path)]
    result = runner.invoke(app, ["process", *arguments, "--site", "milan"])
    output = " ".join((result.output + result.stderr).split())
    assert result.exit_code == EXIT_HELD, output
    assert "every cycle is held" in output
    assert "NumberOfFrames (0028,0008) is 'abc'" in output
    assert "Traceback" not in result.stdout


def test_the_ct_reader_names_a_malformed_position(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    slices = sorted(p for p in small_patient.dicom_files if p.parent.name == "ct")[:2]
    first, second = (tmp_path / "0001.dcm", tmp_path / "0002.dcm")
    shutil.copy(slices[1], second)

    def position(dataset: Dataset) -> None:
        dataset.ImagePositionPatient = ["-101.5", "-102.5", "-103.5"]

    _mutant(slices[0], first, position, "-101.5\\-102.5\\-103.5", b"-101.5\\-1Q2.5\\-103.5")
    with pytest.raises(MalformedHeaderError, match=r"ImagePositionPatient \(0020,0032\) is "):
        read_ct_series([first, second])


def test_a_ct_slice_of_0_columns_is_unreadable_not_a_runtime_error(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    source = sorted(p for p in small_patient.dicom_files if p.parent.name == "ct")[0]
    dataset = pydicom.dcmread(source)
    dataset.Columns = 0  # PixelData left as it is (found by fuzzing: ITK raises RuntimeError)
    path = tmp_path / "ct.dcm"
    dataset.save_as(path, enforce_file_format=False)
    with pytest.raises(MalformedHeaderError, match=r"Columns \(0028,0011\) is '0'"):
        read_ct_series([path, path])


def test_a_seg_frame_without_its_plane_position_is_unreadable_not_a_key_error(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    dataset = pydicom.dcmread(small_patient.seg_path)
    del dataset.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence  # found by fuzzing
    path = tmp_path / "seg.dcm"
    dataset.save_as(path, enforce_file_format=False)
    with pytest.raises(MalformedHeaderError, match=r"PlanePositionSequence \(0020,9113\) is 'mis"):
        read_segmentation(path)


def _set(keyword: str, value: object, vr: str | None = None) -> Edit:
    """Set ``keyword`` to ``value``; with ``vr``, written in that VR (text where a number is
    expected, as a flipped VR byte leaves it)."""

    def edit(dataset: Dataset) -> None:
        if vr is None:
            setattr(dataset, keyword, value)
            return
        tag = tag_for_keyword(keyword)
        assert tag is not None
        if tag in dataset:
            del dataset[tag]
        dataset.add_new(tag, vr, value)

    return edit


def _delete(keyword: str) -> Edit:
    def edit(dataset: Dataset) -> None:
        delattr(dataset, keyword)

    return edit


def _in(path: Callable[[Dataset], Dataset], edit: Edit) -> Edit:
    """``edit`` applied to the item ``path`` picks (a functional group's item)."""

    def nested(dataset: Dataset) -> None:
        edit(path(dataset))

    return nested


def _saved(dataset: Dataset, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.save_as(path, enforce_file_format=False)
    return path


def _edited(source: Path, edit: Edit, path: Path) -> Path:
    dataset = pydicom.dcmread(source)
    edit(dataset)
    return _saved(dataset, path)


def _pixel_data_halved(dataset: Dataset) -> None:
    dataset.PixelData = dataset.PixelData[: len(dataset.PixelData) // 2]


CT_CASES: dict[str, tuple[Edit, str]] = {
    "rows_zero": (_set("Rows", 0), r"Rows \(0028,0010\) is '0'"),
    "rows_missing": (_delete("Rows"), r"Rows \(0028,0010\) is 'missing'"),
    "columns_letters": (_set("Columns", "abc", "LO"), r"Columns \(0028,0011\) is 'abc'"),
    "pixel_spacing_zero": (
        _set("PixelSpacing", ["0", "0"]),
        r"PixelSpacing \(0028,0030\) is '0\\\\0'",
    ),
    "pixel_spacing_negative": (
        _set("PixelSpacing", ["-1.5", "1.5"]),
        r"PixelSpacing \(0028,0030\) is '-1.5\\\\1.5'",
    ),
    "pixel_spacing_letters": (
        _set("PixelSpacing", ["1.5", "a"], "LO"),
        r"PixelSpacing \(0028,0030\) is '1.5\\\\a'",
    ),
    "slice_thickness_letters": (
        _set("SliceThickness", "thick", "LO"),
        r"SliceThickness \(0018,0050\) is 'thick'",
    ),
    "slice_thickness_zero": (_set("SliceThickness", "0"), r"SliceThickness \(0018,0050\) is '0'"),
    "slice_thickness_negative": (
        _set("SliceThickness", "-2"),
        r"SliceThickness \(0018,0050\) is '-2'",
    ),
    "position_two_values": (
        _set("ImagePositionPatient", ["1", "2"]),
        r"ImagePositionPatient \(0020,0032\) is '1\\\\2'",
    ),
    "orientation_not_unit": (
        _set("ImageOrientationPatient", ["2", "0", "0", "0", "1", "0"]),
        r"ImageOrientationPatient \(0020,0037\) is '2\\\\0\\\\0\\\\0\\\\1\\\\0'",
    ),
    "pixel_data_short": (
        _pixel_data_halved,
        r"PixelData \(7FE0,0010\) is '9216 bytes', expected NumberOfFrames × Rows × Columns",
    ),
    "bits_allocated_letters": (
        _set("BitsAllocated", "x", "LO"),
        r"BitsAllocated \(0028,0100\) is 'x'",
    ),
}


def _ct_slices(small_patient: GeneratedPatient) -> list[Path]:
    return sorted(p for p in small_patient.dicom_files if p.parent.name == "ct")[:3]


@pytest.mark.parametrize("case", sorted(CT_CASES))
def test_the_ct_reader_names_keyword_tag_and_value(
    case: str, small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    edit, shown = CT_CASES[case]
    first, *others = _ct_slices(small_patient)
    with pytest.raises(MalformedHeaderError, match=shown) as raised:
        read_ct_series([_edited(first, edit, tmp_path / "0001.dcm"), *others])
    assert "expected" in str(raised.value)


def test_two_ct_slices_at_one_position_are_named_not_a_zero_spacing(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    first, second, third = _ct_slices(small_patient)
    position = list(pydicom.dcmread(first).ImagePositionPatient)
    copy = _edited(second, _set("ImagePositionPatient", position), tmp_path / "0002.dcm")
    with pytest.raises(UnreadableDicomError, match=r"ImagePositionPatient \(0020,0032\)"):
        read_ct_series([first, copy, third])


def test_ct_slices_of_different_sizes_are_named_not_a_runtime_error(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    first, second, third = _ct_slices(small_patient)
    dataset = pydicom.dcmread(second)
    dataset.Rows, dataset.Columns = dataset.Columns // 2, dataset.Rows * 2  # same pixel count
    other = _saved(dataset, tmp_path / "0002.dcm")
    with pytest.raises(UnreadableDicomError, match=r"Rows \(0028,0010\) × Columns \(0028,0011\)"):
        read_ct_series([first, other, third])


def _shared(item: str) -> Callable[[Dataset], Dataset]:
    def path(dataset: Dataset) -> Dataset:
        found: Dataset = getattr(dataset.SharedFunctionalGroupsSequence[0], item)[0]
        return found

    return path


def _frame(index: int, item: str) -> Callable[[Dataset], Dataset]:
    def path(dataset: Dataset) -> Dataset:
        found: Dataset = getattr(dataset.PerFrameFunctionalGroupsSequence[index], item)[0]
        return found

    return path


def _frame_group(index: int) -> Callable[[Dataset], Dataset]:
    def path(dataset: Dataset) -> Dataset:
        found: Dataset = dataset.PerFrameFunctionalGroupsSequence[index]
        return found

    return path


def _per_frame_groups_cut(dataset: Dataset) -> None:
    del dataset.PerFrameFunctionalGroupsSequence[-1]


MEASURES, ORIENTATION, POSITION = (
    "PixelMeasuresSequence",
    "PlaneOrientationSequence",
    ("PlanePositionSequence"),
)
SEG_CASES: dict[str, tuple[Edit, str]] = {
    "rows_zero": (_set("Rows", 0), r"Rows \(0028,0010\) is '0'"),
    "columns_letters": (_set("Columns", "abc", "LO"), r"Columns \(0028,0011\) is 'abc'"),
    "frames_letters": (
        _set("NumberOfFrames", "abc", "LO"),
        r"NumberOfFrames \(0028,0008\) is 'abc'",
    ),
    "frames_zero": (_set("NumberOfFrames", "0"), r"NumberOfFrames \(0028,0008\) is '0'"),
    "frames_negative": (_set("NumberOfFrames", "-3"), r"NumberOfFrames \(0028,0008\) is '-3'"),
    "frames_more_than_groups": (
        _set("NumberOfFrames", "193"),
        r"PerFrameFunctionalGroupsSequence \(5200,9230\) is '192 items', expected one item "
        r"per frame: NumberOfFrames \(0028,0008\) 193",
    ),
    "per_frame_groups_missing": (
        _delete("PerFrameFunctionalGroupsSequence"),
        r"PerFrameFunctionalGroupsSequence \(5200,9230\) is 'missing'",
    ),
    "per_frame_groups_cut": (
        _per_frame_groups_cut,
        r"PerFrameFunctionalGroupsSequence \(5200,9230\) is '191 items'",
    ),
    "plane_position_missing": (
        _in(_frame_group(5), _delete(POSITION)),
        r"PlanePositionSequence \(0020,9113\) is 'missing'",
    ),
    "position_letters": (
        _in(_frame(3, POSITION), _set("ImagePositionPatient", ["1", "x", "3"], "LO")),
        r"ImagePositionPatient \(0020,0032\) is '1\\\\x\\\\3'",
    ),
    "pixel_spacing_zero": (
        _in(_shared(MEASURES), _set("PixelSpacing", ["0", "4.42"])),
        r"PixelSpacing \(0028,0030\) is '0\\\\4.42'",
    ),
    "pixel_spacing_negative": (
        _in(_shared(MEASURES), _set("PixelSpacing", ["-4.42", "4.42"])),
        r"PixelSpacing \(0028,0030\) is '-4.42\\\\4.42'",
    ),
    "pixel_spacing_letters": (
        _in(_shared(MEASURES), _set("PixelSpacing", "abc", "LO")),
        r"PixelSpacing \(0028,0030\) is 'abc'",
    ),
    "slice_thickness_zero": (
        _in(_shared(MEASURES), _set("SliceThickness", "0")),
        r"SliceThickness \(0018,0050\) is '0'",
    ),
    "slice_thickness_negative": (
        _in(_shared(MEASURES), _set("SliceThickness", "-8.84")),
        r"SliceThickness \(0018,0050\) is '-8.84'",
    ),
    "slice_thickness_letters": (
        _in(_shared(MEASURES), _set("SliceThickness", "abc", "LO")),
        r"SliceThickness \(0018,0050\) is 'abc'",
    ),
    "pixel_measures_missing": (
        _in(lambda ds: ds.SharedFunctionalGroupsSequence[0], _delete(MEASURES)),
        r"PixelMeasuresSequence \(0028,9110\) is 'missing'",
    ),
    "orientation_not_unit": (
        _in(_shared(ORIENTATION), _set("ImageOrientationPatient", ["2", "0", "0", "0", "1", "0"])),
        r"ImageOrientationPatient \(0020,0037\) is '2\\\\0\\\\0\\\\0\\\\1\\\\0'",
    ),
    "pixel_data_short": (
        _pixel_data_halved,
        r"PixelData \(7FE0,0010\) is '110592 bytes', expected",
    ),
    "segment_number_letters": (
        _in(lambda ds: ds.SegmentSequence[0], _set("SegmentNumber", "x", "LO")),
        r"SegmentNumber \(0062,0004\) is 'x'",
    ),
    "referenced_segment_unknown": (
        _in(_frame(0, "SegmentIdentificationSequence"), _set("ReferencedSegmentNumber", 99)),
        r"ReferencedSegmentNumber \(0062,000B\) is '99', expected the SegmentNumber of a "
        r"segment",
    ),
}


@pytest.mark.parametrize("case", sorted(SEG_CASES))
def test_the_seg_reader_names_keyword_tag_and_value(
    case: str, small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    edit, shown = SEG_CASES[case]
    path = _edited(small_patient.seg_path, edit, tmp_path / "seg.dcm")
    with pytest.raises(MalformedHeaderError, match=shown) as raised:
        read_segmentation(path)
    assert "expected" in str(raised.value)


def test_concordose_process_holds_a_cycle_whose_seg_is_malformed(
    small_patient: GeneratedPatient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-secret")
    monkeypatch.setenv("CONCORDOSE_OUTPUT_URI", str(tmp_path / "published"))
    folder = tmp_path / "incoming"
    shutil.copytree(small_patient.out_dir / "dicom", folder)
    seg = folder / small_patient.seg_path.relative_to(small_patient.out_dir / "dicom")
    _edited(seg, _set("NumberOfFrames", "abc", "LO"), seg)
    arguments = ["--spool", str(folder), "--sites", str(small_patient.sites_path)]
    result = runner.invoke(app, ["process", *arguments, "--site", "milan"])
    output = " ".join((result.output + result.stderr).split())
    assert result.exit_code == EXIT_HELD, output
    assert "every cycle is held" in output
    assert "NumberOfFrames (0028,0008) is 'abc'" in output
    assert "Traceback" not in result.stdout


def test_concordose_process_holds_a_cycle_whose_ct_is_malformed(
    small_patient: GeneratedPatient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONCORDOSE_PSEUDONYM_KEY", "test-secret")
    monkeypatch.setenv("CONCORDOSE_OUTPUT_URI", str(tmp_path / "published"))
    folder = tmp_path / "incoming"
    shutil.copytree(small_patient.out_dir / "dicom", folder)
    ct = sorted((folder / "tp02" / "ct").glob("*.dcm"))[3]
    _edited(ct, _set("Rows", 0), ct)  # found as a failed cycle (quantification), not held
    arguments = ["--spool", str(folder), "--sites", str(small_patient.sites_path)]
    result = runner.invoke(app, ["process", *arguments, "--site", "milan"])
    output = " ".join((result.output + result.stderr).split())
    assert result.exit_code == EXIT_HELD, output
    assert "every cycle is held" in output
    assert "Rows (0028,0010) is '0'" in output
    assert "Traceback" not in result.stdout


def test_a_ct_slice_malformed_is_a_finding_of_prepare_cycle(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    folder = tmp_path / "incoming"
    shutil.copytree(small_patient.out_dir / "dicom", folder)
    ct = sorted((folder / "tp03" / "ct").glob("*.dcm"))[0]
    _edited(ct, _set("PixelSpacing", ["4.42", "x"], "LO"), ct)
    registry = SiteRegistry.load(small_patient.sites_path)
    prepared = prepare_cycle(list(catalogue(folder)), registry, site_id="milan")
    assert prepared.held
    (finding,) = prepared.findings
    assert (finding.rule, finding.severity) == (HEADER_CHECK, Severity.ERROR)
    assert finding.source == str(ct)
    assert "PixelSpacing (0028,0030) is '4.42\\\\x'" in finding.message


def test_a_labelmap_seg_passes_the_header_checks_and_reads_like_the_binary_one(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    # A LABELMAP's frames name no segment and highdicom describes its background as segment 0:
    # neither is a malformed header (the checks must not refuse it), and 0 is no VOI.
    files = first_ct_files(small_patient)
    ct = read_ct_series(files)
    sources = sorted(
        (pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2])
    )
    binary = read_segmentation(small_patient.seg_path)
    labels = np.zeros((len(sources), sources[0].Rows, sources[0].Columns), np.uint8)
    descriptions = []
    for number, voi in enumerate(binary, 1):
        labels[on_grid(voi, ct)] = number
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=voi.label,
                segmented_property_category=hd.sr.CodedConcept(
                    "91723000", "SCT", "Anatomical structure"
                ),
                segmented_property_type=hd.sr.CodedConcept("64033007", "SCT", "Kidney"),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        )
    labelmap = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.LABELMAP,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=5,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    path = tmp_path / "labelmap.dcm"
    labelmap.save_as(path)
    assert 0 in [int(item.SegmentNumber) for item in labelmap.SegmentSequence]
    found = {voi.label: voi.mask.GetSize() for voi in read_segmentation(path)}
    assert found == {voi.label: voi.mask.GetSize() for voi in binary}
