"""The site protocol's ``partial_volume_correction`` block: defaults, overrides and clear errors;
the v4 → v5 upgrade of ``voi_timepoints``; the reason a record cannot drive a model."""

from __future__ import annotations

import typing
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from concordose.calibration.protocol import PartialVolumeModel, PartialVolumeRules, load_protocol
from concordose.calibration.records import CalibrationRecord
from concordose.errors import ConfigurationError
from concordose.phantoms.camera_model import site_reconstruction
from concordose.phantoms.site_profiles import CONSORTIUM_SITES
from concordose.quant.pvc import (
    BACKGROUND_MODEL,
    DEFAULT_BACKGROUND_GAP_MM,
    DEFAULT_BACKGROUND_WIDTH_MM,
    GTM_MODEL,
    GTM_PLATFORM_MODEL,
    PERTURBATION_GTM_MODEL,
    PHANTOM_CHOICE,
    RECOVERY_ONLY_MODEL,
    partial_volume_unavailable,
)
from concordose.schemas.tables import VOI_TIMEPOINTS, upgrade_table


def _folder(tmp_path: Path, site_yaml: str) -> Path:
    (tmp_path / "default.yaml").write_text("collimators: []\n")
    (tmp_path / "milan.yaml").write_text(site_yaml)
    return tmp_path


def test_default_is_the_gtm_on_platform_vois_and_matches_the_library() -> None:
    # Issue 15: on by default with the GTM on the platform's VOIs: on the full realistic
    # consortium it beats no correction, and the GTM on the sites' own VOIs, at every site
    # (README, "Harmonisation").
    rules = load_protocol("milan").partial_volume_correction
    assert rules == PartialVolumeRules()
    assert rules.enabled is True
    assert rules.model == GTM_PLATFORM_MODEL
    assert rules.shell_gap_mm == DEFAULT_BACKGROUND_GAP_MM
    assert rules.shell_width_mm == DEFAULT_BACKGROUND_WIDTH_MM
    assert set(typing.get_args(PartialVolumeModel)) == {
        BACKGROUND_MODEL,
        RECOVERY_ONLY_MODEL,
        GTM_MODEL,
        GTM_PLATFORM_MODEL,
        PERTURBATION_GTM_MODEL,
        PHANTOM_CHOICE,
    }


def test_a_site_chooses_its_model_or_switches_it_off(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        "partial_volume_correction: {enabled: true, model: rc_curve, shell_gap_mm: 6}\n",
    )
    rules = load_protocol("milan", folder).partial_volume_correction
    assert rules == PartialVolumeRules(enabled=True, model="rc_curve", shell_gap_mm=6.0)
    assert load_protocol("other", folder).partial_volume_correction == PartialVolumeRules()
    (folder / "milan.yaml").write_text("partial_volume_correction: {enabled: false}\n")
    assert load_protocol("milan", folder).partial_volume_correction.enabled is False


@pytest.mark.parametrize(
    ("block", "named"),
    [
        ("{enabled: true, model: rc_magic}", "partial_volume_correction.model"),
        ("{shell_gap_mm: -1}", "partial_volume_correction.shell_gap_mm"),
        ("{shell_width_mm: 0}", "partial_volume_correction.shell_width_mm"),
        ("{enabled: true, shell_mm: 5}", "partial_volume_correction.shell_mm"),
        ("{enabled: maybe}", "partial_volume_correction.enabled"),
    ],
)
def test_invalid_settings_name_the_key_and_the_file(tmp_path: Path, block: str, named: str) -> None:
    folder = _folder(tmp_path, f"partial_volume_correction: {block}\n")
    with pytest.raises(ConfigurationError) as caught:
        load_protocol("milan", folder)
    assert named in str(caught.value)
    assert "milan.yaml" in str(caught.value)


def _record(**curves: object) -> CalibrationRecord:
    return CalibrationRecord.model_validate(
        {
            "record_id": "r-1",
            "camera_model": "Symbia Intevo",
            "collimator": "MEGP",
            "calibration_factor_cps_per_mbq": 9.1,
            "valid_from": date(2026, 1, 1),
            **curves,
        }
    )


def test_unavailable_names_the_record_and_the_missing_curve() -> None:
    bare = _record()
    reason = partial_volume_unavailable(bare, BACKGROUND_MODEL)
    assert reason is not None
    assert "'r-1'" in reason
    assert "contrast_recovery_a_ml" in reason
    assert partial_volume_unavailable(bare, RECOVERY_ONLY_MODEL) is not None
    full = _record(
        contrast_recovery_a_ml=3.0,
        contrast_recovery_b=1.4,
        contrast_recovery_covariance=[[0.01, 0.0], [0.0, 0.001]],
        recovery_a_ml=2.0,
        recovery_b=1.5,
    )
    assert partial_volume_unavailable(full, BACKGROUND_MODEL) is None
    assert partial_volume_unavailable(full, RECOVERY_ONLY_MODEL) is None
    gtm_reason = partial_volume_unavailable(full, GTM_MODEL)
    assert gtm_reason is not None
    assert "psf_fwhm_mm" in gtm_reason
    with_psf = full.model_copy(update={"psf_fwhm_mm": 9.0, "psf_fwhm_sd_mm": 0.2})
    assert partial_volume_unavailable(with_psf, GTM_MODEL) is None
    assert "psf_fwhm_mm" in (partial_volume_unavailable(full, GTM_PLATFORM_MODEL) or "")
    assert partial_volume_unavailable(with_psf, GTM_PLATFORM_MODEL) is None
    # phantom_choice: needs the record's choice, then what the chosen model needs
    unchosen = partial_volume_unavailable(with_psf, PHANTOM_CHOICE)
    assert unchosen is not None
    assert "partial_volume_model_chosen" in unchosen
    chose_gtm = full.model_copy(update={"partial_volume_model_chosen": GTM_MODEL})
    assert "psf_fwhm_mm" in (partial_volume_unavailable(chose_gtm, PHANTOM_CHOICE) or "")
    chose_none = full.model_copy(update={"partial_volume_model_chosen": "none"})
    assert partial_volume_unavailable(chose_none, PHANTOM_CHOICE) is None
    with pytest.raises(ConfigurationError, match="rc_magic"):
        partial_volume_unavailable(full, "rc_magic")


def test_v4_rows_upgrade_with_nulls() -> None:
    v4 = VOI_TIMEPOINTS.schema_of(4)
    empty = pa.Table.from_pylist([], schema=v4)
    upgraded = upgrade_table(VOI_TIMEPOINTS, empty, 4)
    assert upgraded.schema.names == VOI_TIMEPOINTS.schema.names
    assert VOI_TIMEPOINTS.fills_from(4) == {
        "partial_volume_model": None,
        "partial_volume_status": None,
        "local_background_mbq_per_ml": None,
        "local_background_sd_mbq_per_ml": None,
    }
    unit = VOI_TIMEPOINTS.schema.field("local_background_mbq_per_ml").metadata[b"unit"]
    assert unit == b"MBq/mL"


def test_perturbation_gtm_needs_the_sites_reconstruction(tmp_path: Path) -> None:
    """The perturbation GTM reconstructs through the site's OSEM: a protocol choosing it without
    a reconstruction: block is refused at load, naming what is missing; with one it loads."""
    folder = _folder(tmp_path, "partial_volume_correction: {model: perturbation_gtm}\n")
    with pytest.raises(ConfigurationError) as caught:
        load_protocol("milan", folder)
    assert "reconstruction" in str(caught.value)
    assert "milan.yaml" in str(caught.value)
    (folder / "milan.yaml").write_text(
        "partial_volume_correction: {model: perturbation_gtm}\n"
        "reconstruction: {collimator: siemens_me, radius_of_rotation_mm: 210, n_views: 60,\n"
        "                 iterations: 6, subsets: 8, resolution_recovery: true}\n"
    )
    protocol = load_protocol("milan", folder)
    assert protocol.partial_volume_correction.model == PERTURBATION_GTM_MODEL
    assert protocol.reconstruction is not None
    assert protocol.reconstruction.camera().collimator.name.startswith("Siemens ME")
    # calibration fits the window's scatter through it (the model images through it) ...
    assert protocol.modelled_reconstruction() == protocol.reconstruction
    # ... and not for a model that does not, though the block is there (the packaged milan)
    packaged = load_protocol("milan")
    assert packaged.reconstruction is not None
    assert packaged.partial_volume_correction.model != PERTURBATION_GTM_MODEL
    assert packaged.modelled_reconstruction() is None
    (folder / "milan.yaml").write_text(
        "reconstruction: {collimator: lehr, radius_of_rotation_mm: 210, n_views: 60,\n"
        "                 iterations: 6, subsets: 8, resolution_recovery: true}\n"
    )
    with pytest.raises(ConfigurationError, match=r"reconstruction\.collimator"):
        load_protocol("milan", folder)


def test_the_packaged_sites_record_the_reconstruction_the_generator_uses() -> None:
    """Each consortium site's packaged protocol records the camera, views and OSEM settings its
    realistic images are formed with (the perturbation GTM's system model)."""
    for site in CONSORTIUM_SITES:
        assert load_protocol(site.site_id).reconstruction == site_reconstruction(site)


def test_the_site_without_resolution_modelling_chooses_the_perturbation_gtm() -> None:
    """Of the consortium's packaged sites, the one whose OSEM does not model resolution
    (grandrapids) chooses ``perturbation_gtm``: no one Gaussian holds its lesions, organs and
    marrow (README, "A site's own model"); the others keep the default. No packaged site is
    advised otherwise; grandrapids on the default would be."""
    for site in CONSORTIUM_SITES:
        protocol = load_protocol(site.site_id)
        expected = (
            GTM_PLATFORM_MODEL
            if site_reconstruction(site).resolution_recovery
            else PERTURBATION_GTM_MODEL
        )
        assert protocol.partial_volume_correction.model == expected, site.site_id
        assert protocol.partial_volume_advice() is None, site.site_id
    plain = [s.site_id for s in CONSORTIUM_SITES if not site_reconstruction(s).resolution_recovery]
    assert plain == ["grandrapids"]
    on_default = load_protocol("grandrapids").model_copy(
        update={"partial_volume_correction": PartialVolumeRules()}
    )
    assert "perturbation_gtm" in (on_default.partial_volume_advice() or "")


@pytest.mark.parametrize(
    ("model", "enabled", "resolution_recovery", "advised"),
    [
        ("gtm_platform_voi", True, False, True),
        ("gtm", True, False, True),
        ("gtm_platform_voi", True, True, False),  # the large-object fit holds with RR
        ("perturbation_gtm", True, False, False),
        ("rc_curve", True, False, False),  # lesions only, no PSF: not a Gaussian GTM
        ("gtm_platform_voi", False, False, False),  # not correcting at all
    ],
)
def test_a_gaussian_gtm_without_resolution_modelling_is_advised_against(
    tmp_path: Path, model: str, enabled: bool, resolution_recovery: bool, advised: bool
) -> None:
    reconstruction = site_reconstruction(CONSORTIUM_SITES[0]).model_copy(
        update={"resolution_recovery": resolution_recovery}
    )
    folder = _folder(
        tmp_path,
        f"partial_volume_correction: {{enabled: {str(enabled).lower()}, model: {model}}}\n"
        + yaml.safe_dump({"reconstruction": reconstruction.model_dump(mode="json")}),
    )
    advice = load_protocol("milan", folder).partial_volume_advice()
    assert (advice is not None) is advised
    if advised:
        assert f"one Gaussian ({model})" in (advice or "")
        assert "perturbation_gtm" in (advice or "")
    if model != "perturbation_gtm":  # which needs the block: refused without it
        bare = load_protocol(
            "milan", _folder(tmp_path, f"partial_volume_correction: {{model: {model}}}\n")
        )
        assert bare.reconstruction is None
        assert bare.partial_volume_advice() is None  # no reconstruction stated: nothing assumed
