"""GTM partial-volume correction on the digital consortium, all four sites ("test" preset).

Each site is calibrated from its own phantom scans (``calibrate_site``: CF, RC curves, the PSF
fitted to the NEMA spheres and the leave-one-out evidence on the PVC models), and its patient
(blur at the site's effective FWHM, Poisson noise, no repositioning; lesions on whole voxels,
the default) quantified uncorrected and with ``gtm``; TIAs by the mono-exponential fit. The
record's CF is replaced by the site's true one: the phantom-derived CF carries the site's
dose-calibrator bias (up to ±5 %, a separate issue), which would hide what the PVC does.

Measured (default seed; TIA error vs truth, uncorrected → gtm): kidneys, spleen and marrow
−3.6 to −23.5 % → −0.2 to +2.6 %; liver +2.1 to +4.8 % → +0.9 to +1.4 %; lesions (23-47 mL)
−6.3 to −36.6 % → −0.4 to +3.9 %. Not asserted here, because it does not hold: lesions rendered
as continuous spheres (``Realism.lesion_partial_voxels``) keep −12 to −17 % after GTM at the
8.8 mm voxels of this preset (Milan, Montpellier), their partial voxels credited to the host
organ (the GTM takes the VOI masks as the objects; the liver then stays +4 to +9 %).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from concordose.calibration.calibrate import SiteCalibration, calibrate_site
from concordose.calibration.ledger import read_ledger
from concordose.calibration.records import CalibrationRecord, DelineationThresholdScan
from concordose.calibration.registry import SiteRegistry
from concordose.errors import ConfigurationError
from concordose.kinetics.registry import fit_methods
from concordose.kinetics.uncertainty import correlated_relative_sd
from concordose.phantoms.camera_model import site_reconstruction
from concordose.phantoms.consortium import Realism, generate_consortium
from concordose.phantoms.site_profiles import CONSORTIUM_SITES, consortium_site
from concordose.pipeline import quantify as quantify_module
from concordose.pipeline.assembly import CycleStudy, assemble_cycles
from concordose.pipeline.catalogue import catalogue
from concordose.pipeline.quantify import (
    CycleTimeActivity,
    quantify_cycle,
    quantify_cycle_per_protocol,
    reconstruction_model_for,
    uncorrected_loss_relative_sd,
)
from concordose.quant import perturbation_gtm as perturbation_module
from concordose.quant.delineation import DELINEATED, delineate_lesions, threshold_fraction
from concordose.quant.gtm import GtmCorrection, gtm_correct, gtm_fwhm_sensitivity
from concordose.quant.organ_outline import FAINT, FITTED
from concordose.quant.perturbation_gtm import PerturbationGtm
from concordose.quant.pvc import (
    GTM_MODEL,
    GTM_PLATFORM_MODEL,
    NO_CORRECTION,
    PERTURBATION_GTM_MODEL,
    PHANTOM_CHOICE,
    STATUS_OK,
    chosen_psf_fwhm,
    psf_from_record,
)
from concordose.reconstruction.protocol import ReconstructionModel
from concordose.reconstruction.scatter import ScatterCorrection
from concordose.results.calibration_table import build_site_calibrations
from concordose.results.cycle_tables import CycleIdentity, build_cycle_tables
from concordose.results.provenance import Provenance
from concordose.schemas.tables import SITE_CALIBRATIONS, upgrade_table


@dataclass(frozen=True)
class SiteRun:
    calibration: SiteCalibration
    true_fwhm_mm: float
    plain: CycleTimeActivity
    gtm: CycleTimeActivity
    true_tia_mbq_h: dict[str, float]
    ledger: Path
    cycle: CycleStudy
    record: CalibrationRecord


def _tia(tac: CycleTimeActivity) -> np.ndarray:
    (batch,) = fit_methods(
        ["mono_exponential"],
        tac.time_h,
        tac.activity_mbq,
        voi_types=[str(kind) for kind in tac.voi_types],
    )
    return np.asarray(batch.tia_mbq_h)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SiteRun]:
    out = tmp_path_factory.mktemp("gtm-consortium")
    generate_consortium(
        out, preset="test", realism=Realism(blur=True, noise=True, ct_shift_max_mm=0.0)
    )
    result = {}
    for site in CONSORTIUM_SITES:
        site_dir = out / "sites" / site.site_id
        phantoms = site_dir / "phantoms"
        calibration = calibrate_site(
            site_id=site.site_id,
            cylinder_sheet=phantoms / "uniform_cylinder" / "calibration_sheet.yaml",
            nema_sheet=phantoms / "nema_iec_body" / "calibration_sheet.yaml",
            record_id=f"{site.site_id}-gtm",
            valid_from=date(2026, 1, 1),
            ledger=out / "calibrations.jsonl",
        )
        record = calibration.record.model_copy(
            update={"calibration_factor_cps_per_mbq": site.calibration_factor_cps_per_mbq}
        )
        nema_truth = json.loads((phantoms / "nema_iec_body" / "truth.json").read_text())
        (subject,) = sorted((site_dir / "patients").iterdir())
        (cycle,) = assemble_cycles(catalogue(subject / "dicom"))
        truth = json.loads((subject / "ground_truth.json").read_text())
        result[site.site_id] = SiteRun(
            calibration=calibration,
            true_fwhm_mm=float(nema_truth["effective_fwhm_mm"]),
            plain=quantify_cycle(cycle, record),
            gtm=quantify_cycle(
                cycle, record, partial_volume_correction=True, partial_volume_model=GTM_MODEL
            ),
            true_tia_mbq_h={v["label"]: v["tia_mbq_h"] for v in truth["cycles"][0]["vois"]},
            ledger=out / "calibrations.jsonl",
            cycle=cycle,
            record=record,
        )
    return result


SITES = [site.site_id for site in CONSORTIUM_SITES]


@pytest.mark.parametrize("site_id", SITES)
def test_psf_fit_recovers_the_fwhm_the_phantom_was_blurred_with(
    runs: dict[str, SiteRun], site_id: str
) -> None:
    run = runs[site_id]
    psf = run.calibration.nema.psf
    assert psf is not None
    assert run.true_fwhm_mm == pytest.approx(consortium_site(site_id).effective_fwhm_mm)
    # Measured: within 1.1 SD and 2.5 % of the truth (SD 0.08-0.33 mm).
    assert 0 < psf.fwhm_sd_mm < 0.05 * psf.fwhm_mm
    assert abs(psf.fwhm_mm - run.true_fwhm_mm) <= max(3.0 * psf.fwhm_sd_mm, 0.03 * psf.fwhm_mm)


@pytest.mark.parametrize("site_id", SITES)
def test_large_object_fit_is_near_the_true_gaussian_and_the_gtm_keeps_the_spheres_fit(
    runs: dict[str, SiteRun], site_id: str
) -> None:
    run = runs[site_id]
    spheres, edge = run.calibration.nema.psf, run.calibration.nema.large_object_psf
    assert spheres is not None
    assert edge is not None
    # Measured (blur, 7.8-17.7 mm voxels of this preset): +0.0 to +0.4 mm over the true FWHM,
    # from the voxel-centre body outline placed at the located (not the true) offset.
    assert -0.03 * run.true_fwhm_mm <= edge.fwhm_mm - run.true_fwhm_mm <= 0.06 * run.true_fwhm_mm
    assert 0 < edge.fwhm_sd_mm < 0.05 * edge.fwhm_mm
    assert run.record.psf_large_object_fwhm_mm == edge.fwhm_mm
    assert psf_from_record(run.record) == chosen_psf_fwhm(
        spheres.fwhm_mm, spheres.fwhm_sd_mm, edge.fwhm_mm, edge.fwhm_sd_mm
    )


@pytest.mark.parametrize("site_id", SITES)
def test_gtm_beats_no_correction_on_the_phantom_spheres(
    runs: dict[str, SiteRun], site_id: str
) -> None:
    record = runs[site_id].calibration.record
    evidence = record.partial_volume_evidence
    assert evidence is not None
    assert set(evidence) == {"none", "rc_curve", "rc0_local_background", GTM_MODEL}
    assert evidence[GTM_MODEL] < evidence["none"]
    assert record.partial_volume_model_chosen == min(evidence, key=evidence.__getitem__)


@pytest.mark.parametrize("site_id", SITES)
def test_gtm_brings_every_voi_tia_closer_to_the_truth(
    runs: dict[str, SiteRun], site_id: str
) -> None:
    run = runs[site_id]
    assert run.gtm.partial_volume_status == (STATUS_OK,) * len(run.gtm.labels)
    plain, gtm = _tia(run.plain), _tia(run.gtm)
    for index, label in enumerate(run.gtm.labels):
        truth = run.true_tia_mbq_h[label]
        error_plain, error_gtm = plain[index] / truth - 1.0, gtm[index] / truth - 1.0
        if run.gtm.voi_types[index] == "organ":
            assert abs(error_gtm) < 0.03, (label, error_plain, error_gtm)
            assert abs(error_gtm) < abs(error_plain), (label, error_plain, error_gtm)
        else:
            assert abs(error_gtm) < 0.5 * abs(error_plain), (label, error_plain, error_gtm)


@pytest.mark.parametrize("site_id", SITES)
def test_calibration_measures_the_lesion_threshold_curve_on_the_spheres(
    runs: dict[str, SiteRun], site_id: str
) -> None:
    """Jentzen's T(V) from the site's own NEMA spheres is in the record; with Gaussian image
    formation it follows the Gaussian model of the true FWHM (noise and voxels aside)."""
    record = runs[site_id].calibration.record
    volumes = record.delineation_threshold_volumes_ml
    fractions = record.delineation_threshold_fractions
    assert volumes is not None
    assert fractions is not None
    assert len(volumes) == len(fractions) >= 2
    assert volumes == sorted(volumes)
    for volume, fraction in zip(volumes, fractions, strict=True):
        model = threshold_fraction(volume, runs[site_id].true_fwhm_mm)
        assert 0.0 < fraction <= 1.0
        if volume >= 5.0:  # smaller spheres are a few voxels of this preset's 4.4-17.7 mm
            assert abs(fraction - model) < 0.1, (volume, fraction, model)


@pytest.mark.parametrize("site_id", SITES)
def test_platform_vois_keep_the_true_objects_when_the_site_drew_them_true(
    runs: dict[str, SiteRun], site_id: str
) -> None:
    """gtm_platform_voi on a site that drew the true outlines (blur imaging): the platform's
    lesions come out near the drawn (true) volumes, organs and lesions as close to the truth
    as the GTM on the site's VOIs, the organs' platform volumes near the drawn (true) ones,
    the site's volumes kept beside the platform's, and each lesion's delineation term in its
    published relative SD."""
    run = runs[site_id]
    platform = quantify_cycle(
        run.cycle,
        run.record,
        partial_volume_correction=True,
        partial_volume_model=GTM_PLATFORM_MODEL,
    )
    assert platform.partial_volume_model == GTM_PLATFORM_MODEL
    assert platform.partial_volume_status == (STATUS_OK,) * len(platform.labels)
    assert platform.site_volume_ml is not None
    np.testing.assert_allclose(platform.site_volume_ml, run.gtm.volume_ml)
    tia, plain = _tia(platform), _tia(run.plain)
    for index, label in enumerate(platform.labels):
        truth = run.true_tia_mbq_h[label]
        error, error_plain = tia[index] / truth - 1.0, plain[index] / truth - 1.0
        if platform.voi_types[index] == "organ":
            assert platform.delineations[index] is None
            outline = platform.organ_outlines[index]
            assert outline is not None
            # The site drew the true outline: the platform's offset of it stays near it.
            # Measured: offsets −0.2…+0.1 mm, volumes within 1.9 % (the marrow at one site,
            # under 2× its surroundings, keeps the site's).
            assert outline.status in (FITTED, FAINT), (label, outline.status)
            assert platform.volume_ml[index] == pytest.approx(run.gtm.volume_ml[index], rel=0.03)
            # Measured: within 3 % but the faint marrow's 3.4 % at montpellier (the background
            # it displaces is known only through the drawn volume, quant.gtm.extent_activity).
            assert abs(error) < 0.05, (label, error)
        else:
            delineation = platform.delineations[index]
            assert delineation is not None
            ratio = platform.volume_ml[index] / run.gtm.volume_ml[index]
            assert 0.7 < ratio < 1.3, (label, ratio)
            # the delineation term is in the published relative SD at every time point
            assert platform.delineation_concentration_relative_sd is not None
            assert platform.partial_volume_relative_sd is not None
            term = platform.delineation_concentration_relative_sd[index]
            assert np.all(platform.partial_volume_relative_sd[index] >= term)
            # on this preset's 8.8 mm voxels g ± SD often gives the same region (no term)
            if delineation.volume_sd_ml > 0:
                assert term > 0.0, label
            assert abs(error) < 0.5 * abs(error_plain), (label, error_plain, error)


def test_published_rows_carry_the_psf_and_its_uncertainty(runs: dict[str, SiteRun]) -> None:
    run = runs[SITES[0]]
    relative_sd = run.gtm.partial_volume_relative_sd
    term = run.gtm.recovery_model_relative_sd
    assert relative_sd is not None
    assert term is not None
    assert np.all(relative_sd > 0)
    # the PSF's part is small with Gaussian image formation; lesions add the recovery-model
    # term of the site's spheres (their voxelised VOIs at this preset's 4.4-17.7 mm voxels)
    assert np.all(relative_sd < np.hypot(0.05, np.nan_to_num(term)))
    identity = CycleIdentity("sub-1", "cyc-1", SITES[0])
    rows = {
        name: build_cycle_tables(identity, tac, [], [], Provenance(run_id="r1"))[
            "voi_timepoints"
        ].to_pylist()
        for name, tac in (("plain", run.plain), ("gtm", run.gtm))
    }
    for before, after in zip(rows["plain"], rows["gtm"], strict=True):
        index = run.gtm.labels.index(after["voi_label"])
        assert after["partial_volume_model"] == GTM_MODEL
        assert after["partial_volume_status"] == STATUS_OK
        relative = relative_sd[index, after["time_point_index"]]
        expected = after["activity_mbq"] * np.sqrt(
            (before["activity_sd_mbq"] / before["activity_mbq"]) ** 2 + relative**2
        )
        assert after["activity_sd_mbq"] == pytest.approx(expected, rel=1e-9)
    assert rows["plain"][0]["method_parameters_hash"] != rows["gtm"][0]["method_parameters_hash"]


def test_tia_uncertainty_carries_the_partial_volume_part(runs: dict[str, SiteRun]) -> None:
    """The PSF's error scales every time point of a VOI alike: it enters the published TIA SD
    (and the dose SD computed from it) as a correlated part, beside the fit and the CF."""
    run = runs[SITES[0]]
    relative = run.gtm.partial_volume_tia_relative_sd
    assert relative.shape == (len(run.gtm.labels),)
    assert np.all(relative > 0)
    assert np.all(run.plain.partial_volume_tia_relative_sd == 0)
    (batch,) = fit_methods(
        ["mono_exponential"],
        run.gtm.time_h,
        run.gtm.activity_mbq,
        voi_types=[str(kind) for kind in run.gtm.voi_types],
    )
    identity = CycleIdentity("sub-1", "cyc-1", SITES[0])
    rows = build_cycle_tables(identity, run.gtm, [batch], [], Provenance(run_id="r1"))[
        "kinetics"
    ].to_pylist()
    cf = run.gtm.calibration_relative_sd
    assert cf is not None
    for row in rows:
        index = run.gtm.labels.index(row["voi_label"])
        tia = row["tia_mbq_h"]
        expected = np.sqrt(
            row["tia_sd_mbq_h"] ** 2 + (tia * cf) ** 2 + (tia * relative[index]) ** 2
        )
        assert row["tia_total_sd_mbq_h"] == pytest.approx(expected, rel=1e-9)
        assert row["tia_total_sd_mbq_h"] > np.hypot(row["tia_sd_mbq_h"], tia * cf)


@pytest.mark.parametrize("site_id", SITES)
def test_calibration_stores_the_spheres_recovery_model_residuals(
    runs: dict[str, SiteRun], site_id: str
) -> None:
    """Each GTM-corrected NEMA sphere's residual in recovery units, e_i · ω_ii from the
    leave-one-out evidence, is in the record (rounded to 1e-6)."""
    calibration = runs[site_id].calibration
    evidence = calibration.nema.partial_volume_evidence
    assert evidence is not None
    errors = evidence.sphere_errors[GTM_MODEL]
    corrected = np.isfinite(errors)
    record = calibration.record
    # the phantom geometry's sphere volumes (the sheet's are rounded)
    assert record.recovery_model_volumes_ml == pytest.approx(
        list(calibration.nema.volumes_ml[corrected]), rel=2e-3
    )
    assert record.recovery_model_residuals == pytest.approx(
        list((errors * evidence.gtm_self_recovery)[corrected]), abs=1e-6
    )
    assert record.recovery_model_residuals is not None
    assert len(record.recovery_model_residuals) >= 2


def test_recovery_model_term_enters_lesions_sd_and_leaves_organs_alone(
    runs: dict[str, SiteRun],
) -> None:
    """The record's residuals add s(V)/ω_ii in quadrature to each GTM-corrected lesion's
    relative SD at every time point (so to its TIA SD); organs and a record without residuals
    keep the SD they had."""
    run = runs[SITES[0]]
    bare = run.record.model_copy(
        update={"recovery_model_volumes_ml": None, "recovery_model_residuals": None}
    )
    without = quantify_cycle(
        run.cycle, bare, partial_volume_correction=True, partial_volume_model=GTM_MODEL
    )
    assert without.recovery_model_relative_sd is None
    term = run.gtm.recovery_model_relative_sd
    with_sd, without_sd = run.gtm.partial_volume_relative_sd, without.partial_volume_relative_sd
    assert term is not None
    assert with_sd is not None
    assert without_sd is not None
    lesion = np.array([kind == "lesion" for kind in run.gtm.voi_types])
    assert lesion.any()
    assert (~lesion).any()
    assert np.all(term[lesion] > 0)
    assert np.all(np.isnan(term[~lesion]))
    np.testing.assert_allclose(
        with_sd[lesion], np.hypot(without_sd[lesion], term[lesion]), rtol=1e-9
    )
    np.testing.assert_allclose(with_sd[~lesion], without_sd[~lesion], rtol=1e-12)
    assert np.all(
        run.gtm.partial_volume_tia_relative_sd[lesion]
        > without.partial_volume_tia_relative_sd[lesion]
    )


def test_a_lesion_the_gtm_left_as_measured_carries_its_partial_volume_loss(
    runs: dict[str, SiteRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lesion the GTM refuses at one time point is published as measured: its SD is then the
    loss its value still holds by the record's RC curve, 1/RC(V) − 1 (not 0, which said the
    value was exact), at every time point; the other VOIs keep theirs."""
    run = runs[SITES[0]]
    lesion = next(k for k, kind in enumerate(run.gtm.voi_types) if kind == "lesion")
    real = gtm_fwhm_sensitivity

    def refusing(*args: Any, **kwargs: Any) -> tuple[GtmCorrection, np.ndarray]:
        corrected, sd = real(*args, **kwargs)
        activity = corrected.activity_mbq.copy()
        activity[lesion] = np.nan
        status = list(corrected.status)
        status[lesion] = "refused for the test"
        return replace(corrected, activity_mbq=activity, status=tuple(status)), sd

    monkeypatch.setattr("concordose.pipeline.quantify.gtm_fwhm_sensitivity", refusing)
    refused = quantify_cycle(
        run.cycle, run.record, partial_volume_correction=True, partial_volume_model=GTM_MODEL
    )
    relative = refused.partial_volume_relative_sd
    assert relative is not None
    assert run.record.recovery_a_ml is not None
    assert run.record.recovery_b is not None
    rc = 1.0 / (
        1.0 + (run.record.recovery_a_ml / refused.volume_ml[lesion]) ** run.record.recovery_b
    )
    np.testing.assert_allclose(relative[lesion], 1.0 / rc - 1.0, rtol=1e-12)
    assert np.all(relative[lesion] > 0)
    np.testing.assert_allclose(refused.activity_mbq[lesion], run.plain.activity_mbq[lesion])
    others = np.arange(len(refused.labels)) != lesion
    assert run.gtm.partial_volume_relative_sd is not None
    np.testing.assert_allclose(relative[others], run.gtm.partial_volume_relative_sd[others])


def test_uncorrected_loss_follows_the_records_rc_curve() -> None:
    """1/RC(V) − 1 by the record's fitted form, inside the spheres' range and beyond it; none
    without an RC curve."""
    record = CalibrationRecord(
        record_id="r",
        calibration_factor_cps_per_mbq=10.0,
        valid_from=date(2026, 1, 1),
        recovery_a_ml=2.0,
        recovery_b=1.0,
    )
    loss = uncorrected_loss_relative_sd(record, np.array([0.1, 2.0, 200.0]))
    assert loss is not None
    np.testing.assert_allclose(loss, [20.0, 1.0, 0.01], rtol=1e-12)
    bare = record.model_copy(update={"recovery_a_ml": None, "recovery_b": None})
    assert uncorrected_loss_relative_sd(bare, np.array([1.0])) is None


def test_correlated_relative_sd_is_the_activity_weighted_mean() -> None:
    activity = np.array([[10.0, 30.0], [0.0, 0.0], [5.0, 5.0]])
    relative = np.array([[0.02, 0.06], [0.1, 0.1], [np.nan, 0.04]])
    np.testing.assert_allclose(
        correlated_relative_sd(activity, relative), [0.05, 0.0, 0.02], rtol=1e-12
    )


def test_record_round_trips_through_the_ledger_and_site_calibrations(
    runs: dict[str, SiteRun], tmp_path: Path
) -> None:
    run = runs[SITES[0]]
    record = run.calibration.record
    sites_yaml = tmp_path / "sites.yaml"
    sites_yaml.write_text(
        yaml.safe_dump(
            {
                "format_version": 1,
                "sites": [
                    {
                        "site_id": SITES[0],
                        "ae_titles": ["A"],
                        "calibrations": [record.model_dump(mode="json")],
                    }
                ],
            }
        )
    )
    assert SiteRegistry.load(sites_yaml).site(SITES[0]).calibrations == [record]
    assert run.calibration.entry is not None
    stored = [e.record for e in read_ledger(run.ledger) if e.record.record_id == record.record_id]
    assert stored == [record]
    assert record.psf_fwhm_mm is not None
    assert record.psf_fwhm_sd_mm is not None
    old = CalibrationRecord.model_validate(
        record.model_dump(
            mode="json",
            exclude={
                "psf_fwhm_mm",
                "psf_fwhm_sd_mm",
                "psf_large_object_fwhm_mm",
                "psf_large_object_fwhm_sd_mm",
                "partial_volume_model_chosen",
                "partial_volume_evidence",
            },
        )
    )
    assert old.psf_fwhm_mm is None  # records from before the PSF still load
    table = build_site_calibrations(
        [(SITES[0], record), (SITES[0], old.model_copy(update={"record_id": "old"}))],
        Provenance(run_id="r1"),
    )
    assert table.schema == SITE_CALIBRATIONS.schema
    assert SITE_CALIBRATIONS.version == 6  # v5: the PSF and evidence; v6: large-object PSF
    rows = {row["calibration_record_id"]: row for row in table.to_pylist()}
    new_row = rows[record.record_id]
    assert new_row["psf_fwhm_mm"] == record.psf_fwhm_mm
    assert new_row["psf_fwhm_sd_mm"] == record.psf_fwhm_sd_mm
    assert record.psf_large_object_fwhm_mm is not None
    assert new_row["psf_large_object_fwhm_mm"] == record.psf_large_object_fwhm_mm
    assert new_row["psf_large_object_fwhm_sd_mm"] == record.psf_large_object_fwhm_sd_mm
    assert new_row["partial_volume_model_chosen"] == record.partial_volume_model_chosen
    assert new_row["phantom_rms_error_gtm"] == (record.partial_volume_evidence or {})[GTM_MODEL]
    assert rows["old"]["psf_fwhm_mm"] is None
    v3 = table.select(SITE_CALIBRATIONS.schema_of(3).names).cast(SITE_CALIBRATIONS.schema_of(3))
    upgraded = upgrade_table(SITE_CALIBRATIONS, v3, 3)
    assert upgraded.column("psf_fwhm_mm").null_count == upgraded.num_rows
    v5 = table.select(SITE_CALIBRATIONS.schema_of(5).names).cast(SITE_CALIBRATIONS.schema_of(5))
    from_v5 = upgrade_table(SITE_CALIBRATIONS, v5, 5)
    assert from_v5.column("psf_large_object_fwhm_mm").null_count == from_v5.num_rows


def test_phantom_choice_applies_the_model_the_record_chose(runs: dict[str, SiteRun]) -> None:
    run = runs["grandrapids"]  # its spheres favour the GTM (README, PVC section)
    assert run.record.partial_volume_model_chosen == GTM_MODEL
    chosen = quantify_cycle_per_protocol(
        run.cycle,
        run.record,
        partial_volume_correction=True,
        partial_volume_model=PHANTOM_CHOICE,
    )
    assert chosen.partial_volume_model == GTM_MODEL
    np.testing.assert_array_equal(chosen.activity_mbq, run.gtm.activity_mbq)
    declined = quantify_cycle_per_protocol(
        run.cycle,
        run.record.model_copy(update={"partial_volume_model_chosen": NO_CORRECTION}),
        partial_volume_correction=True,
        partial_volume_model=PHANTOM_CHOICE,
    )
    assert declined.partial_volume_model == NO_CORRECTION
    np.testing.assert_array_equal(declined.activity_mbq, run.plain.activity_mbq)
    assert all("found no model better than none" in s for s in declined.partial_volume_status)


def test_the_cycles_lesions_are_bracketed_by_the_threshold_held_at_the_phantoms_contrasts(
    runs: dict[str, SiteRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a record carrying two contrasts' threshold scans, the cycle's lesions are drawn
    with the surface followed beyond the phantoms' contrasts and bracketed by the one held at
    them (``quant.delineation``, "Beyond the phantoms' contrasts"; the rule itself:
    ``tests/unit/test_quant_delineation_contrast.py``): the delineation is handed both, and
    every re-delineated lesion carries the bracket's volume; where the site protocol's
    reconstruction does not model resolution, one level independent of contrast and no
    bracket. (This preset's 8.8 mm
    voxels make the regions of the two thresholds alike: the wiring is what is checked.)"""
    run = runs[SITES[0]]
    volumes = run.record.delineation_threshold_volumes_ml
    fractions = run.record.delineation_threshold_fractions
    assert volumes is not None
    assert fractions is not None
    scans = [
        DelineationThresholdScan(
            sphere_to_background_ratio=ratio,
            volumes_ml=list(volumes),
            fractions=[f - shift for f in fractions],
            contrasts=[contrast] * len(volumes),
        )
        for ratio, shift, contrast in ((4.0, 0.0, 2.0), (10.0, 0.1, 4.0))
    ]
    record = run.record.model_copy(update={"delineation_threshold_scans": scans})
    handed: list[dict[str, Any]] = []
    real = delineate_lesions

    def seen(*args: Any, **kwargs: Any) -> Any:
        handed.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(quantify_module, "delineate_lesions", seen)
    platform = quantify_cycle(
        run.cycle, record, partial_volume_correction=True, partial_volume_model=GTM_PLATFORM_MODEL
    )
    (kwargs,) = handed
    beyond, held = kwargs["contrast_threshold"], kwargs["bracket_threshold"]
    volume = volumes[-1]
    assert held(volume, 40.0) == pytest.approx(held(volume, 4.0))
    assert beyond(volume, 4.0) == pytest.approx(held(volume, 4.0))
    assert beyond(volume, 8.0) == pytest.approx(held(volume, 4.0) - 0.1)
    delineated = [d for d in platform.delineations if d is not None and d.status == DELINEATED]
    assert delineated
    for delineation in delineated:
        assert np.isfinite(delineation.bracket_volume_ml)
    # the protocol's reconstruction without resolution modelling: g the mean of the two scans
    # at any contrast, no bracket (quant.delineation, "Contrast dependence follows resolution
    # modelling")
    without = site_reconstruction(consortium_site("grandrapids"))
    assert not without.resolution_recovery
    flat = quantify_cycle(
        run.cycle,
        record,
        partial_volume_correction=True,
        partial_volume_model=GTM_PLATFORM_MODEL,
        reconstruction=without,
    )
    kwargs = handed[-1]
    assert kwargs["bracket_threshold"] is None
    level = kwargs["contrast_threshold"]
    for contrast in (2.0, 4.0, 8.0, 40.0):
        assert level(volume, contrast) == pytest.approx(held(volume, 4.0) + 0.05)
    drawn = [d for d in flat.delineations if d is not None and d.status == DELINEATED]
    assert drawn
    assert all(np.isnan(d.bracket_volume_ml) for d in drawn)


def test_perturbation_gtm_reconstructs_every_region_through_the_sites_protocol(
    runs: dict[str, SiteRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    """perturbation_gtm in the cycle's quantification: refused without the site's
    reconstruction; with it, one OSEM of the baseline and one per region (every VOI and the
    background) at every time point, on the platform's VOIs, published under its own name
    with values of its own (not the Gaussian's) and the two models' disagreement as PSF term;
    a cycle without CT falls back to the Gaussian GTM at every time point, saying so per VOI.
    (Accuracy against truth: tests/unit/test_quant_perturbation_gtm.py; this consortium's
    images are Gaussian blurs, not OSEM, so it is not asserted here.)"""
    site = consortium_site(SITES[-1])  # grandrapids: no resolution recovery, the fastest OSEM
    run = runs[site.site_id]
    with pytest.raises(ConfigurationError, match="reconstruction"):
        quantify_cycle(
            run.cycle,
            run.record,
            partial_volume_correction=True,
            partial_volume_model=PERTURBATION_GTM_MODEL,
        )
    images = 0
    real_image = ReconstructionModel.image
    scatter_seen = set()

    def counted(self: ReconstructionModel, concentration: np.ndarray) -> np.ndarray:
        nonlocal images
        images += 1
        scatter_seen.add(self.scatter)
        return real_image(self, concentration)

    monkeypatch.setattr(ReconstructionModel, "image", counted)
    settings_site = site_reconstruction(site)
    settings = {
        "partial_volume_correction": True,
        "partial_volume_model": PERTURBATION_GTM_MODEL,
        "reconstruction": settings_site,
    }
    # the window's scatter the record's calibration fitted is in every reconstruction
    scatter = ScatterCorrection(0.3, residual_fraction=0.0, kernel_fwhm_mm=60.0)
    with_scatter = run.record.model_copy(
        update={
            "scatter_to_primary": scatter.scatter_to_primary,
            "scatter_to_primary_sd": 0.05,
            "scatter_residual_fraction": scatter.residual_fraction,
            "scatter_kernel_fwhm_mm": scatter.kernel_fwhm_mm,
        }
    )
    real_scatter_sd = perturbation_module.scatter_activity_sd
    scatter_sd_calls = 0

    def counted_sd(*args: Any, **kwargs: Any) -> np.ndarray:
        nonlocal scatter_sd_calls
        scatter_sd_calls += 1
        return real_scatter_sd(*args, **kwargs)

    monkeypatch.setattr(perturbation_module, "scatter_activity_sd", counted_sd)
    perturbed = quantify_cycle(run.cycle, with_scatter, **settings)  # type: ignore[arg-type]
    # and its SD reaches the activity SD: one more image, at k + σ_k, at each time point whose
    # step is taken
    assert scatter_sd_calls >= 1
    assert scatter_seen == {scatter, dataclasses.replace(scatter, scatter_to_primary=0.35)}
    gaussian = quantify_cycle(
        run.cycle,
        run.record,
        partial_volume_correction=True,
        partial_volume_model=GTM_PLATFORM_MODEL,
    )
    n_points, n_vois = len(run.cycle.time_points), len(perturbed.labels)
    # baseline, each region, the check (and the scatter ratio's SD where the step is taken)
    assert images == n_points * (n_vois + 3) + scatter_sd_calls
    assert perturbed.partial_volume_model == PERTURBATION_GTM_MODEL
    assert perturbed.partial_volume_status == (STATUS_OK,) * n_vois
    assert np.isfinite(perturbed.activity_mbq).all()
    assert not np.allclose(perturbed.activity_mbq, gaussian.activity_mbq, rtol=1e-3)
    np.testing.assert_allclose(perturbed.volume_ml, gaussian.volume_ml)  # the platform's VOIs
    assert perturbed.partial_volume_relative_sd is not None
    assert np.isfinite(perturbed.partial_volume_relative_sd).all()
    # Where a time point's CT is missing (or its grid not isotropic) the Gaussian GTM stands in
    assert reconstruction_model_for((), run.cycle.time_points[0].acquisition, settings_site)[
        1
    ].startswith("no CT")
    monkeypatch.setattr(
        quantify_module, "reconstruction_model_for", lambda *_, **__: (None, "no CT (test)")
    )
    images = 0
    fallen_back = quantify_cycle(run.cycle, run.record, **settings)  # type: ignore[arg-type]
    assert images == 0
    np.testing.assert_allclose(fallen_back.activity_mbq, gaussian.activity_mbq)
    assert all(
        note.count("no CT (test)") == n_points for note in fallen_back.partial_volume_fallback
    ), fallen_back.partial_volume_fallback
    # A rejected step publishes the Gaussian GTM with the Gaussian's own SD terms (not a zero
    # model term), and says so per VOI
    monkeypatch.setattr(quantify_module, "reconstruction_model_for", reconstruction_model_for)

    def rejecting(
        image: np.ndarray,
        vois: Any,
        *,
        model: ReconstructionModel,
        scatter_to_primary_sd: float = 0.0,
        **kwargs: Any,
    ) -> PerturbationGtm:
        start = gtm_correct(image, vois, **kwargs)
        return PerturbationGtm(start, start, "step rejected (test)", 0.1, 0.2)

    monkeypatch.setattr(quantify_module, "perturbation_gtm_correct", rejecting)
    rejected = quantify_cycle(run.cycle, run.record, **settings)  # type: ignore[arg-type]
    np.testing.assert_allclose(rejected.activity_mbq, gaussian.activity_mbq)
    assert gaussian.partial_volume_relative_sd is not None
    assert rejected.partial_volume_relative_sd is not None
    np.testing.assert_allclose(
        rejected.partial_volume_relative_sd, gaussian.partial_volume_relative_sd
    )
    assert all(
        note.count("step rejected (test)") == n_points for note in rejected.partial_volume_fallback
    )
