"""The RTSTRUCT reader never raises on a malformed header (issue 18, items 1 and 5): each case
below was found by the fuzzing test (``tests/integration/test_receiver_fuzz.py``, RTSTRUCT
seeds) or is a value rt-utils would compute with unchecked; each is an
:class:`~concordose.errors.UnreadableDicomError` (a :class:`~concordose.errors.
MalformedHeaderError` naming keyword, tag and value where one value is at fault), which the
process path turns into a finding holding the cycle."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset

from concordose.calibration.findings import HEADER_CHECK
from concordose.calibration.registry import SiteRegistry
from concordose.dicom.rtstruct import read_rtstruct
from concordose.errors import MalformedHeaderError, UnreadableDicomError
from concordose.phantoms import GeneratedPatient
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.preparation import prepare_cycle
from tests.rtstruct_builder import first_ct_files, folder_with_rtstruct, write_rtstruct_from_seg

Edit = Callable[[Dataset], None]


@pytest.fixture(scope="module")
def rtstruct(small_patient: GeneratedPatient, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rtstruct_from_seg(small_patient, tmp_path_factory.mktemp("rt") / "rt.dcm")


def _saved(dataset: Dataset, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.save_as(path, enforce_file_format=False)
    return path


def _edited(source: Path, edit: Edit, path: Path) -> Path:
    dataset = pydicom.dcmread(source)
    edit(dataset)
    return _saved(dataset, path)


def _first_contour(dataset: Dataset) -> Dataset:
    contour: Dataset = dataset.ROIContourSequence[0].ContourSequence[0]
    return contour


def _contour_data_as_text(dataset: Dataset) -> None:
    # found by fuzzing (a byte flip turned VR DS into LO): rt-utils' np.reshape of the strings
    # raised "ValueError: data type must provide an itemsize"
    contour = _first_contour(dataset)
    values = [str(v) for v in contour.ContourData]
    del contour.ContourData
    contour.add_new(0x30060050, "LO", values)


def test_contour_data_read_as_text_numbers_is_read_as_numbers(
    rtstruct: Path, small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    path = _edited(rtstruct, _contour_data_as_text, tmp_path / "rt.dcm")
    expected = {
        v.label: v.mask.GetSize() for v in read_rtstruct(rtstruct, first_ct_files(small_patient))
    }
    found = {v.label: v.mask.GetSize() for v in read_rtstruct(path, first_ct_files(small_patient))}
    assert found == expected


def _contour_value(value: list[str]) -> Edit:
    def edit(dataset: Dataset) -> None:
        contour = _first_contour(dataset)
        del contour.ContourData
        contour.add_new(0x30060050, "LO", value)

    return edit


def _roi_number(value: str) -> Edit:
    def edit(dataset: Dataset) -> None:
        roi = dataset.StructureSetROISequence[0]
        del roi.ROINumber
        roi.add_new(0x30060022, "LO", value)

    return edit


def _observation_roi_number(value: str) -> Edit:
    def edit(dataset: Dataset) -> None:
        item = dataset.RTROIObservationsSequence[0]
        del item.ReferencedROINumber
        item.add_new(0x30060084, "LO", value)

    return edit


def _no_referenced_sop_instance(dataset: Dataset) -> None:
    del _first_contour(dataset).ContourImageSequence[0].ReferencedSOPInstanceUID


def _no_roi_contour_number(dataset: Dataset) -> None:
    del dataset.ROIContourSequence[0].ReferencedROINumber


RTSTRUCT_CASES: dict[str, tuple[Edit, str]] = {
    "contour_data_not_numbers": (
        _contour_value(["1.5", "x2", "3"]),
        r"ContourData \(3006,0050\) is '1.5\\\\x2\\\\3'",
    ),
    "contour_data_not_triplets": (
        _contour_value(["1", "2", "3", "4"]),
        r"ContourData \(3006,0050\) is '1\\\\2\\\\3\\\\4', expected x\\y\\z triplets",
    ),
    "contour_data_infinite": (
        _contour_value(["1", "2", "inf"] * 3),
        r"ContourData \(3006,0050\) is '1\\\\2\\\\inf",
    ),
    "roi_number_letters": (_roi_number("abc"), r"ROINumber \(3006,0022\) is 'abc'"),
    "observation_roi_number_letters": (
        _observation_roi_number("x1"),
        r"ReferencedROINumber \(3006,0084\) is 'x1'",
    ),
    "contour_names_no_slice_uid": (
        _no_referenced_sop_instance,
        r"ReferencedSOPInstanceUID \(0008,1155\) is 'missing'",
    ),
    "roi_contour_without_its_roi_number": (
        _no_roi_contour_number,
        r"ReferencedROINumber \(3006,0084\) is 'missing'",
    ),
}


@pytest.mark.parametrize("case", sorted(RTSTRUCT_CASES))
def test_a_malformed_rtstruct_value_is_named(
    case: str, rtstruct: Path, small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    edit, shown = RTSTRUCT_CASES[case]
    path = _edited(rtstruct, edit, tmp_path / "rt.dcm")
    with pytest.raises(MalformedHeaderError, match=shown):
        read_rtstruct(path, first_ct_files(small_patient))


def _ct_copy(
    small_patient: GeneratedPatient, folder: Path, edit: Edit, index: int = 0
) -> list[Path]:
    """The RTSTRUCT's CT slices copied to ``folder``, slice ``index`` edited."""
    folder.mkdir()
    files = []
    for number, source in enumerate(first_ct_files(small_patient)):
        target = folder / source.name
        if number == index:
            _edited(source, edit, target)
        else:
            shutil.copy(source, target)
        files.append(target)
    return files


def _set(keyword: str, value: object, vr: str | None = None) -> Edit:
    def edit(dataset: Dataset) -> None:
        if vr is None:
            setattr(dataset, keyword, value)
        else:
            tag = pydicom.datadict.tag_for_keyword(keyword)
            assert tag is not None
            del dataset[tag]
            dataset.add_new(tag, vr, value)

    return edit


CT_CASES: dict[str, tuple[Edit, str]] = {
    "rows_zero": (_set("Rows", 0), r"Rows \(0028,0010\) is '0'"),
    "columns_missing": (lambda ds: delattr(ds, "Columns"), r"Columns \(0028,0011\) is 'missing'"),
    "pixel_spacing_zero": (
        _set("PixelSpacing", ["0", "0"]),
        r"PixelSpacing \(0028,0030\) is '0\\\\0'",
    ),
    "pixel_spacing_letters": (
        _set("PixelSpacing", ["1.5", "a"], "LO"),
        r"PixelSpacing \(0028,0030\) is '1.5\\\\a'",
    ),
    "position_two_values": (
        _set("ImagePositionPatient", ["1", "2"]),
        r"ImagePositionPatient \(0020,0032\) is '1\\\\2'",
    ),
    "orientation_not_unit": (
        _set("ImageOrientationPatient", ["2", "0", "0", "0", "1", "0"]),
        r"ImageOrientationPatient \(0020,0037\) is '2\\\\0\\\\0\\\\0\\\\1\\\\0'",
    ),
}


@pytest.mark.parametrize("case", sorted(CT_CASES))
def test_a_malformed_value_of_the_rtstructs_ct_is_named(
    case: str, rtstruct: Path, small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    edit, shown = CT_CASES[case]
    files = _ct_copy(small_patient, tmp_path / "ct", edit)
    with pytest.raises(MalformedHeaderError, match=shown):
        read_rtstruct(rtstruct, files)


def test_ct_slices_all_at_one_position_are_unreadable_not_a_singular_matrix(
    rtstruct: Path, small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    first = pydicom.dcmread(first_ct_files(small_patient)[0]).ImagePositionPatient
    folder = tmp_path / "ct"
    folder.mkdir()
    files = []
    for source in first_ct_files(small_patient):
        files.append(
            _edited(source, _set("ImagePositionPatient", list(first)), folder / source.name)
        )
    with pytest.raises(UnreadableDicomError, match=r"ImagePositionPatient \(0020,0032\)"):
        read_rtstruct(rtstruct, files)


def test_process_holds_a_cycle_whose_rtstruct_is_malformed(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    folder = folder_with_rtstruct(small_patient, tmp_path / "incoming")
    path = folder / "rtstruct.dcm"
    _edited(path, _contour_value(["1.5", "x2", "3"]), path)
    registry = SiteRegistry.load(small_patient.sites_path)
    prepared = prepare_cycle(list(catalogue(folder)), registry, site_id="milan")
    assert prepared.held
    (finding,) = prepared.findings
    assert finding.rule == HEADER_CHECK
    assert "ContourData (3006,0050) is " in finding.message
