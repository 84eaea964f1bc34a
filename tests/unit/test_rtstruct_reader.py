"""VOIs from an RTSTRUCT (rt-utils) match the SEG's: an RTSTRUCT drawn on a generated patient's
first CT from its SEG's masks reads back within one voxel layer, with the same names and types,
and a cycle whose VOIs come as an RTSTRUCT assembles and quantifies like the SEG's."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from concordose.calibration.registry import SiteRegistry
from concordose.dicom.ct import read_ct_series
from concordose.dicom.rtstruct import read_rtstruct
from concordose.dicom.seg import VoiType, read_segmentation
from concordose.dicom.vois import read_voi_masks
from concordose.errors import StudyIncompleteError, UnreadableDicomError
from concordose.phantoms import GeneratedPatient
from concordose.pipeline.assembly import assemble_cycles
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.quantify import quantify_cycle
from tests.rtstruct_builder import (
    first_ct_files,
    folder_with_rtstruct,
    on_grid,
    write_rtstruct_from_seg,
)


def test_rtstruct_masks_match_the_seg_within_one_voxel_layer(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    path = write_rtstruct_from_seg(small_patient, tmp_path / "rtstruct.dcm")
    ct_files = first_ct_files(small_patient)
    ct = read_ct_series(ct_files)
    from_seg = {voi.label: voi for voi in read_segmentation(small_patient.seg_path)}
    from_rtstruct = {voi.label: voi for voi in read_rtstruct(path, ct_files)}
    assert set(from_rtstruct) == set(from_seg)
    for label, seg_voi in from_seg.items():
        voi = from_rtstruct[label]
        assert voi.voi_type is seg_voi.voi_type, label
        # kept as a crop, not a CT-sized volume
        assert np.prod(voi.mask.GetSize()) < np.prod(ct.GetSize()) / 4, label
        expected, found = on_grid(seg_voi, ct), on_grid(voi, ct)
        boundary_shell = ndimage.binary_dilation(expected) & ~ndimage.binary_erosion(expected)
        differing = expected ^ found
        assert not np.any(differing & ~boundary_shell), f"{label}: differs beyond one layer"
        dice = 2 * np.count_nonzero(expected & found) / (expected.sum() + found.sum())
        assert dice > 0.9, (label, dice)


def test_interpreted_type_decides_the_voi_type_before_the_name(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    path = write_rtstruct_from_seg(
        small_patient,
        tmp_path / "rtstruct.dcm",
        interpreted_types={"kidney_left": "GTV", "lesion_1": "ORGAN"},
    )
    types = {voi.label: voi.voi_type for voi in read_voi_masks(path, first_ct_files(small_patient))}
    assert types["kidney_left"] is VoiType.LESION  # GTV
    assert types["lesion_1"] is VoiType.ORGAN  # ORGAN
    assert types["lesion_2"] is VoiType.LESION  # no interpreted type: by name, as the SEG
    assert types["liver"] is VoiType.ORGAN


def test_rtstruct_without_its_ct_is_a_clear_error(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    path = write_rtstruct_from_seg(small_patient, tmp_path / "rtstruct.dcm")
    with pytest.raises(StudyIncompleteError, match="send the CT the contours were drawn on"):
        read_voi_masks(path, [])
    with pytest.raises(UnreadableDicomError, match="expected a DICOM SEG or RTSTRUCT"):
        read_voi_masks(small_patient.nm_files[0])


def test_a_cycle_with_an_rtstruct_assembles_and_quantifies_like_the_seg(
    small_patient: GeneratedPatient, tmp_path: Path
) -> None:
    folder = folder_with_rtstruct(small_patient, tmp_path / "incoming")
    (with_seg,) = assemble_cycles(catalogue(small_patient.out_dir / "dicom"))
    (with_rtstruct,) = assemble_cycles(catalogue(folder))
    assert with_rtstruct.segmentation == folder / "rtstruct.dcm"
    assert with_rtstruct.segmentation_frame_of_reference == (
        with_seg.segmentation_frame_of_reference
    )
    assert len(with_rtstruct.segmentation_ct_files) == len(first_ct_files(small_patient))
    calibration = (
        SiteRegistry.load(small_patient.sites_path).site("milan").calibration_on(date(2026, 12, 31))
    )
    seg_tac = quantify_cycle(with_seg, calibration)
    rtstruct_tac = quantify_cycle(with_rtstruct, calibration)
    assert sorted(rtstruct_tac.labels) == sorted(seg_tac.labels)
    order = [rtstruct_tac.labels.index(label) for label in seg_tac.labels]
    np.testing.assert_allclose(rtstruct_tac.activity_mbq[order], seg_tac.activity_mbq, rtol=0.03)
