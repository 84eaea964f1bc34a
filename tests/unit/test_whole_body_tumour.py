"""Whole-body tumour dose (issue 20, item 4) on generated data with known truth: an abdomen of
organs of physiological uptake (kidneys, liver, spleen) and lesions of known volume and dose,
through the voxel dosimetry (mono-exponential voxel fits, local deposition) and the table."""

from __future__ import annotations

import numpy as np
import pytest

from concordose.calibration.protocol import VoxelDosimetryRules
from concordose.dicom.seg import VoiType
from concordose.dose.methods.local_deposition import ldm_gy_per_mbq_h_per_g
from concordose.dose.voxel_dosimetry import voxel_dose_from_maps
from concordose.dose.whole_body_tumour import dilated, whole_body_tumour_dose
from concordose.results.cycle_tables import CycleIdentity
from concordose.results.voxel_tables import build_whole_body_tumour_dose
from concordose.schemas.tables import WHOLE_BODY_TUMOUR_DOSE

TIME_H = np.array([4.0, 24.0, 72.0, 168.0])
LAMBDA_PER_H = np.log(2.0) / 60.0
SPACING_MM = (4.0, 4.0, 4.0)
VOXEL_ML = 0.064
SHAPE = (40, 64, 64)


def _ball(centre: tuple[int, int, int], radius_voxels: float) -> np.ndarray:
    z, y, x = np.indices(SHAPE)
    distance = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    mask: np.ndarray = distance <= radius_voxels
    return mask


def _dose_per_voxel_gy(a0_mbq: float) -> float:
    """LDM dose of a voxel of initial activity a0 (unit density): A0/λ × k / m."""
    return float(a0_mbq / LAMBDA_PER_H * ldm_gy_per_mbq_h_per_g() / VOXEL_ML)


def _scene() -> tuple[np.ndarray, list[str], list[VoiType], np.ndarray, dict[str, float]]:
    """A0 map (MBq per voxel), labels, types, masks and each region's true voxel dose (Gy)."""
    regions = {
        "kidney_left": (_ball((20, 32, 14), 5), VoiType.ORGAN, 12.0),
        "kidney_right": (_ball((20, 32, 50), 5), VoiType.ORGAN, 12.0),
        "liver": (_ball((20, 14, 32), 7), VoiType.ORGAN, 3.0),
        "spleen": (_ball((20, 52, 32), 4), VoiType.ORGAN, 6.0),
        "lesion_1": (_ball((10, 32, 32), 4), VoiType.LESION, 30.0),  # 268 voxels, hot
        "lesion_2": (_ball((30, 32, 32), 3), VoiType.LESION, 9.0),  # 123 voxels, above 5 Gy
        "lesion_3": (_ball((8, 50, 50), 3), VoiType.LESION, 2.0),  # below the threshold
    }
    background_gy = 0.5
    a0 = np.full(SHAPE, background_gy / _dose_per_voxel_gy(1.0))
    for mask, _, dose_gy in regions.values():
        a0[mask] = dose_gy / _dose_per_voxel_gy(1.0)
    labels = list(regions)
    return (
        a0,
        labels,
        [regions[label][1] for label in labels],
        np.stack([regions[label][0] for label in labels]),
        {label: regions[label][2] for label in labels},
    )


def test_dilation_is_a_euclidean_margin_in_mm() -> None:
    mask = np.zeros((1, 1, 21), dtype=bool)
    mask[0, 0, 10] = True
    grown = dilated(mask, (4.0, 4.0, 2.0), 4.0)  # 2 voxels of 2 mm either side
    assert np.flatnonzero(grown[0, 0]).tolist() == [8, 9, 10, 11, 12]


def test_hot_lesions_are_recovered_and_organs_excluded() -> None:
    a0, labels, types, masks, truth_gy = _scene()
    maps = a0[None] * np.exp(-LAMBDA_PER_H * TIME_H)[:, None, None, None]
    voxel = voxel_dose_from_maps(
        TIME_H,
        maps,
        SPACING_MM,
        masks,
        labels=labels,
        voi_types=types,
        rules=VoxelDosimetryRules(methods=["ldm", "vsv_4.42mm"], output_grid="spect"),
    )
    ldm, vsv = voxel.whole_body_tumour
    hot = [label for label in labels if label.startswith("lesion") and truth_gy[label] >= 5.0]
    true_volume_ml = sum(masks[labels.index(label)].sum() for label in hot) * VOXEL_ML
    true_mean_gy = sum(masks[labels.index(label)].sum() * truth_gy[label] for label in hot) / sum(
        masks[labels.index(label)].sum() for label in hot
    )
    # local deposition: the map is the truth voxel by voxel, so the hot lesions exactly
    assert ldm.volume_ml == pytest.approx(true_volume_ml, rel=0.02)
    assert ldm.mean_dose_gy == pytest.approx(true_mean_gy, rel=0.02)
    assert ldm.lesion_voi_recovered_ml == pytest.approx(true_volume_ml, rel=0.02)
    assert set(ldm.excluded_organs) == {"kidney_left", "kidney_right", "liver", "spleen"}
    # the kidneys (12 Gy) and spleen (6 Gy) are above 5 Gy but excluded
    organs_ml = sum(masks[labels.index(o)].sum() for o in ("kidney_left", "kidney_right", "spleen"))
    assert ldm.excluded_volume_ml >= organs_ml * VOXEL_ML
    # a kernel spreads a lesion's dose over its rim (the 30 Gy lesion puts its first outer
    # shell above 5 Gy): the volume grows, never shrinks, and stays within 1.6× the truth
    assert true_volume_ml <= vsv.volume_ml <= 1.6 * true_volume_ml

    without_margin = whole_body_tumour_dose(
        np.full((5, 5, 5), 10.0), (4.0, 4.0, 4.0), [np.zeros((5, 5, 5), dtype=bool)], margin_mm=0
    )
    assert without_margin.volume_ml == pytest.approx(125 * VOXEL_ML)

    table = build_whole_body_tumour_dose(
        CycleIdentity("s", "c", "milan", cycle_number=2),
        voxel,
        {
            "software_version": "t",
            "run_id": "r",
            "flow_run_id": None,
            "calibration_record_id": "cal",
            "input_uid_hashes": [],
            "created_at": None,
        },
    )
    assert table.schema == WHOLE_BODY_TUMOUR_DOSE.schema
    rows = {row["dose_method"]: row for row in table.to_pylist()}
    assert rows["ldm"]["tumour_volume_ml"] == pytest.approx(ldm.volume_ml)
    assert rows["ldm"]["threshold_gy"] == 5.0
    assert rows["ldm"]["cycle_number"] == 2
    # the lesion VOIs' GTD by the same method includes the cold lesion_3
    assert rows["ldm"]["lesion_voi_gtd_gy"] < rows["ldm"]["mean_dose_gy"]
