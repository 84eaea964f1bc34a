"""The digital consortium with anatomy realism on (``Realism(anatomy_realism=True)``), and off.

Fast ``test`` preset: every site, one patient, the LUMEN schedule (3 time points).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from concordose.phantoms.consortium import (
    CONSORTIUM_PRESETS,
    GeneratedConsortium,
    Realism,
    generate_consortium,
)
from concordose.phantoms.presets import ct_grid_for, nm_grid_for
from concordose.phantoms.site_profiles import consortium_site

SEED = 31


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> GeneratedConsortium:
    return generate_consortium(
        tmp_path_factory.mktemp("realistic-anatomy"),
        seed=SEED,
        preset="test",
        protocol="lumen",
        realism=Realism(anatomy_realism=True),
        phantoms=False,
    )


def _segment_volumes_ml(seg_path: Path, voxel_ml: float) -> dict[str, float]:
    seg = pydicom.dcmread(seg_path)
    labels = {s.SegmentNumber: s.SegmentLabel for s in seg.SegmentSequence}
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    volumes = dict.fromkeys(labels.values(), 0.0)
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        number = group.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        volumes[labels[number]] += float(np.count_nonzero(frame)) * voxel_ml
    return volumes


def test_lesions_are_irregular_and_the_truth_agrees_across_sites(
    consortium: GeneratedConsortium,
) -> None:
    truths = [_load(s.ground_truth_paths[0]) for s in consortium.sites]
    for truth in truths:
        assert truth["realism"]["anatomy_realism"] is True
        assert truth["vois"] == truths[0]["vois"]
        lesions = [v for v in truth["vois"] if v["voi_type"] == "lesion"]
        assert lesions
        for lesion in lesions:
            assert lesion["shape"]["kind"] == "irregular"
            assert lesion["shape"]["sphericity"] < 0.95
        amplitudes = truth["respiratory_amplitude_mm"]
        assert amplitudes["liver"] == 16.0
        assert amplitudes["kidney_left"] == pytest.approx(10.4)
    # The reference-object sheet was written, so every site's TIAs agreed to 1e-9.
    assert consortium.reference_objects_path.is_file()


def test_images_keep_every_region_total_under_motion(consortium: GeneratedConsortium) -> None:
    for generated in consortium.sites:
        truth = _load(generated.ground_truth_paths[0])
        (cycle,) = truth["cycles"]
        nm_files = sorted(
            (generated.folder / "patients" / "P001" / "dicom" / "cycle01").glob("tp*/nm.dcm")
        )
        for index, path in enumerate(nm_files):
            total_mbq = sum(
                r["activity_mbq"][index] for r in [*cycle["vois"], cycle["body_remainder"]]
            )
            counts = pydicom.dcmread(path).pixel_array.astype(np.float64)
            assert counts.sum() == pytest.approx(
                total_mbq * truth["site"]["counts_per_mbq"], rel=0.005
            )
        grid = nm_grid_for(generated.site, "test")
        for region in [*cycle["vois"], cycle["body_remainder"]]:
            assert region["volume_ml_nm"] == [
                n * grid.voxel_volume_ml for n in region["n_voxels_nm"]
            ]


def test_each_site_sends_the_vois_of_its_own_rule(consortium: GeneratedConsortium) -> None:
    differences: dict[str, dict[str, float]] = {}
    for generated in consortium.sites:
        truth = _load(generated.ground_truth_paths[0])
        (cycle,) = truth["cycles"]
        ct_voxel_ml = ct_grid_for(nm_grid_for(generated.site, "test"), "test").voxel_volume_ml
        seg_path = generated.folder / "patients" / "P001" / "dicom" / "cycle01" / "seg.dcm"
        sent = _segment_volumes_ml(seg_path, ct_voxel_ml)
        assert pydicom.dcmread(seg_path).SeriesDescription == "VOIs (site)"
        site_id = generated.site.site_id
        assert truth["site"]["segmentation"] == generated.site.segmentation.to_json()
        differences[site_id] = {}
        for voi in cycle["vois"]:
            assert sent[voi["label"]] == pytest.approx(voi["segmented_volume_ml"], rel=1e-12)
            # The drawn VOI split over the true regions it covers adds up to it.
            assert sum(voi["segmented_overlap_ml"].values()) == pytest.approx(
                voi["segmented_volume_ml"], rel=1e-12
            )
            assert voi["segmented_overlap_ml"].get(voi["label"], 0.0) <= voi["true_ct_volume_ml"]
            differences[site_id][voi["label"]] = (
                voi["segmented_volume_ml"] - voi["true_ct_volume_ml"]
            )
        assert cycle["body_remainder"]["true_ct_volume_ml"] > 0
        overlaps = {v["label"]: v["segmented_overlap_ml"] for v in cycle["vois"]}
        if site_id == "montpellier":  # lesions as they are: all of the lesion, nothing else
            assert all(
                overlaps[v["label"]] == {v["label"]: v["true_ct_volume_ml"]}
                for v in cycle["vois"]
                if v["label"].startswith("lesion")
            )
        if site_id == "milan":  # +3 mm: the whole object and some of what surrounds it
            assert all(
                overlaps[v["label"]][v["label"]] == pytest.approx(v["true_ct_volume_ml"])
                and len(overlaps[v["label"]]) > 1
                for v in cycle["vois"]
                if v["label"].startswith("lesion")  # organs yield to neighbours' margins
            )
    lesions = [label for label in differences["milan"] if label.startswith("lesion")]
    organs = [label for label in differences["milan"] if not label.startswith("lesion")]
    assert all(d > 0 for d in differences["milan"].values())  # +3 mm
    assert all(d < 0 for d in differences["grandrapids"].values())  # −2 mm
    assert all(differences["montpellier"][o] < 0 for o in organs)  # CT outline, eroded
    assert all(differences["montpellier"][lesion] == 0 for lesion in lesions)
    hosts_no_lesion = [o for o in organs if o != "liver"]  # the liver yields to its lesions
    assert all(differences["brussels"][o] == 0 for o in hosts_no_lesion)  # organs as drawn
    assert any(differences["brussels"][lesion] != 0 for lesion in lesions)  # 40 % threshold


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_and_the_switch_changes_them(tmp_path: Path) -> None:
    def run(folder: str, realism: Realism) -> dict[str, bytes]:
        generate_consortium(
            tmp_path / folder,
            seed=5,
            preset="test",
            sites=(consortium_site("brussels"),),
            protocol="lutadose",
            realism=realism,
            phantoms=False,
        )
        return _tree(tmp_path / folder)

    first = run("a", Realism(anatomy_realism=True))
    assert first == run("b", Realism(anatomy_realism=True))
    plain = run("c", Realism())
    assert first.keys() == plain.keys()
    seg = "sites/brussels/patients/P001/dicom/cycle01/seg.dcm"
    assert first[seg] != plain[seg]


DEFAULT_OUTPUT_SHA256 = "5febf45083aeb11ba1e10c612b22d82e809568ae75b34ab11633db47ebc466d5"
"""Ground truth and NM/CT/SEG pixel data of the call below. The pixel data are those the
generator made before anatomy realism existed (main at 1fe567f; pixels alone hash to 8fb71cdb…
then and now); the ground truth gained the imaging mode's keys (``realism.imaging``,
``realistic_max_views``) when the realistic mode was added. The default must keep reproducing
it."""


def test_default_off_reproduces_the_output_from_before_anatomy_realism(tmp_path: Path) -> None:
    generate_consortium(
        tmp_path,
        seed=5,
        preset="test",
        sites=(consortium_site("montpellier"),),
        protocol="lutadose",
        phantoms=False,
    )
    digest = hashlib.sha256()
    for path in sorted(tmp_path.rglob("*")):
        if path.name == "ground_truth.json":
            digest.update(path.read_bytes())
        elif path.suffix == ".dcm":
            digest.update(path.relative_to(tmp_path).as_posix().encode())
            digest.update(pydicom.dcmread(path).PixelData)
    assert digest.hexdigest() == DEFAULT_OUTPUT_SHA256


def test_the_harmonisation_preset_spans_0_5_to_200_ml() -> None:
    preset = CONSORTIUM_PRESETS["harmonisation"]
    assert preset.lesion_volume_range_ml == (0.5, 200.0)
    assert preset.n_lesions_range[0] * 4 >= 20
    assert preset.grid_preset == "demo"  # 0.5 mL needs the sites' own ~4.4 mm voxels
