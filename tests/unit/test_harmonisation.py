"""harmonisation_agreement: reference objects, processing variants and the cross-site table."""

from __future__ import annotations

import math
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from pydantic import SecretStr
from typer.testing import CliRunner

from concordose.calibration.protocol import load_protocol
from concordose.calibration.registry import SiteRegistry
from concordose.cli import app
from concordose.consortium import (
    ProcessingVariant,
    ReferenceObject,
    ReferenceObjectRegistry,
    VariantTables,
    build_harmonisation_agreement,
    cross_site_cov,
    write_variant_config,
)
from concordose.errors import ConcordoseError, ConfigurationError
from concordose.results.provenance import Provenance
from concordose.results.validation import validate_tables
from concordose.schemas.tables import HARMONISATION_AGREEMENT

KEY = SecretStr("unit-test-key")
INJECTION = datetime(2026, 3, 2, 9, 30)
TRUTH = {
    "kidney_left": {"tia_mbq_h": 1000.0, "mean_dose_gy": 4.0},
    "lesion_1": {"tia_mbq_h": 500.0},
}
SITES = ("alpha", "beta", "gamma")


def reference(sites: tuple[str, ...] = SITES, object_id: str = "phantom-1") -> ReferenceObject:
    return ReferenceObject.model_validate(
        {
            "reference_object_id": object_id,
            "kind": "travelling_phantom",
            "truth": TRUTH,
            "measurements": [
                {"site_id": s, "patient_id": f"{object_id}-{s}", "injection_datetime": INJECTION}
                for s in sites
            ],
        }
    )


def published(
    values: dict[str, dict[str, float | None]], object_id: str = "phantom-1"
) -> VariantTables:
    """Rows as the flow publishes them: per site, TIA (kinetics) and dose (absorbed_dose) of
    ``kidney_left`` and the TIA of ``lesion_1``; ``values[site]`` holds the three numbers."""
    ref = reference(tuple(values), object_id)
    keys = {m.site_id: m.cycle_key(KEY) for m in ref.measurements}
    kinetics, dose = [], []
    for site, numbers in values.items():
        common = {"site_id": site, "cycle_key": keys[site], "kinetics_method": "mono_exponential"}
        provenance = {
            "method_parameters_hash": "0123456789abcdef",
            "calibration_record_id": f"{site}-rec",
            "run_id": f"run-{site}",
        }
        for label, kind, tia in (
            ("kidney_left", "organ", numbers["kidney_tia"]),
            ("lesion_1", "lesion", numbers["lesion_tia"]),
        ):
            kinetics.append(
                {**common, "voi_label": label, "voi_type": kind, "tia_mbq_h": tia, **provenance}
            )
        dose.append(
            {
                **common,
                "voi_label": "kidney_left",
                "voi_type": "organ",
                "dose_method": "sphere",
                "mean_dose_gy": numbers["kidney_dose"],
                **provenance,
            }
        )
    # An unrelated cycle at the same site must not enter the comparison.
    kinetics.append({**kinetics[0], "cycle_key": "cyc-someone-else", "tia_mbq_h": 1e5})
    return VariantTables(
        kinetics=pa.Table.from_pylist(kinetics), absorbed_dose=pa.Table.from_pylist(dose)
    )


Values = dict[str, dict[str, float | None]]

RAW: Values = {
    "alpha": {"kidney_tia": 1100.0, "lesion_tia": 300.0, "kidney_dose": 4.6},
    "beta": {"kidney_tia": 860.0, "lesion_tia": 350.0, "kidney_dose": 3.3},
    "gamma": {"kidney_tia": 1250.0, "lesion_tia": None, "kidney_dose": 5.1},
}
HARMONISED: Values = {
    "alpha": {"kidney_tia": 990.0, "lesion_tia": 310.0, "kidney_dose": 3.95},
    "beta": {"kidney_tia": 1010.0, "lesion_tia": 330.0, "kidney_dose": 4.1},
    "gamma": {"kidney_tia": 1005.0, "lesion_tia": 320.0, "kidney_dose": 4.0},
}


def build() -> pa.Table:
    result = build_harmonisation_agreement(
        [reference()],
        {
            ProcessingVariant.RAW: published(RAW),
            ProcessingVariant.HARMONISED: published(HARMONISED),
        },
        KEY,
        Provenance(run_id="run-h"),
    )
    assert result.missing == ()
    return result.table


def test_the_table_reproduces_hand_computed_cov_and_errors() -> None:
    rows = build().to_pylist()
    # 2 variants × 3 sites × (kidney TIA, kidney dose, lesion TIA)
    assert len(rows) == 18
    cases: tuple[tuple[str, Values], ...] = (("raw", RAW), ("harmonised", HARMONISED))
    for variant, values in cases:
        for metric, label, name, truth in (
            ("tia_mbq_h", "kidney_left", "kidney_tia", 1000.0),
            ("mean_dose_gy", "kidney_left", "kidney_dose", 4.0),
            ("tia_mbq_h", "lesion_1", "lesion_tia", 500.0),
        ):
            measured = [values[s][name] for s in SITES]
            present = [v for v in measured if v is not None]
            expected_cov = statistics.stdev(present) / statistics.mean(present)
            group = [
                r
                for r in rows
                if (r["variant"], r["metric"], r["voi_label"]) == (variant, metric, label)
            ]
            assert [r["site_id"] for r in group] == list(SITES)
            for row, value in zip(group, measured, strict=True):
                assert row["cross_site_cov"] == pytest.approx(expected_cov, rel=1e-12)
                assert row["n_sites"] == len(present)
                assert row["truth"] == truth
                assert row["measured"] == value
                if value is None:
                    assert row["relative_error"] is None
                else:
                    assert row["relative_error"] == pytest.approx((value - truth) / truth)
                assert row["dose_method"] == ("sphere" if metric == "mean_dose_gy" else "none")
                assert row["source_run_id"] == f"run-{row['site_id']}"
    raw_cov = next(r for r in rows if r["variant"] == "raw")["cross_site_cov"]
    harmonised_cov = next(r for r in rows if r["variant"] == "harmonised")["cross_site_cov"]
    assert harmonised_cov < raw_cov


def test_the_table_passes_its_schema_and_validation_rules() -> None:
    table = build()
    assert table.schema.equals(HARMONISATION_AGREEMENT.schema)
    validate_tables({"harmonisation_agreement": table})


def test_an_object_seen_at_one_site_is_left_out_and_a_missing_site_reported() -> None:
    only_alpha: Values = {"alpha": HARMONISED["alpha"]}
    result = build_harmonisation_agreement(
        [reference(), reference(("alpha", "beta"), "phantom-2")],
        {ProcessingVariant.HARMONISED: published(HARMONISED)},
        KEY,
        Provenance(run_id="run-h"),
    )
    assert result.too_few_sites == ("phantom-2",)
    assert ("phantom-2", "alpha", "harmonised") in result.missing
    assert set(result.table.column("reference_object_id").to_pylist()) == {"phantom-1"}
    with pytest.raises(ConcordoseError, match="no reference object was measured at ≥ 2 sites"):
        build_harmonisation_agreement(
            [reference()],
            {ProcessingVariant.HARMONISED: published(only_alpha)},
            KEY,
            Provenance(run_id="run-h"),
        )


def test_truth_sheet_round_trip_and_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "reference_objects.yaml"
    ReferenceObjectRegistry(reference_objects=[reference()]).write(path)
    loaded = ReferenceObjectRegistry.load(path)
    assert loaded.reference_objects[0].measurements[0].cycle_key(KEY) == reference().measurements[
        0
    ].cycle_key(KEY)
    document = yaml.safe_load(path.read_text())
    document["reference_objects"][0]["measurements"].append(
        document["reference_objects"][0]["measurements"][0]
    )
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(
        ConfigurationError, match=r"(?s)reference_objects.yaml is invalid.*site\(s\) alpha"
    ):
        ReferenceObjectRegistry.load(path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        ReferenceObjectRegistry.load(tmp_path / "nope.yaml")


def registry(tmp_path: Path, nominal: float | None = 9.6) -> SiteRegistry:
    site: dict[str, Any] = {
        "site_id": "milan",
        "ae_titles": ["MILAN_SPECT"],
        "calibrations": [
            {"record_id": "true", "calibration_factor_cps_per_mbq": 9.1, "valid_from": "2026-01-01"}
        ],
    }
    if nominal is not None:
        site["nominal_calibration_factor_cps_per_mbq"] = nominal
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump({"format_version": 1, "sites": [site]}))
    return SiteRegistry.load(path)


def test_variant_configs_apply_the_nominal_or_phantom_factor_and_switch_pvc(tmp_path: Path) -> None:
    sites = registry(tmp_path)
    raw = write_variant_config(sites, ProcessingVariant.RAW, tmp_path / "raw")
    (record,) = SiteRegistry.load(raw.sites_path).site("milan").calibrations
    assert (record.record_id, record.calibration_factor_cps_per_mbq) == (
        "milan-vendor-nominal",
        9.6,
    )
    assert raw.ledger_path is None
    harmonised = write_variant_config(sites, ProcessingVariant.HARMONISED, tmp_path / "h")
    assert SiteRegistry.load(harmonised.sites_path).site("milan").calibrations == []
    assert harmonised.ledger_path is not None
    assert harmonised.ledger_path.is_file()
    pvc = write_variant_config(sites, ProcessingVariant.HARMONISED_PVC, tmp_path / "pvc")
    for config, enabled in ((raw, False), (harmonised, False), (pvc, True)):
        rules = load_protocol("milan", config.protocol_dir)
        assert rules.partial_volume_correction.enabled is enabled
        # the site's own packaged rules are kept
        assert rules.collimators == load_protocol("milan").collimators


def test_a_variant_config_may_replace_the_partial_volume_model(tmp_path: Path) -> None:
    """The correcting variant takes the model asked for (the others stay uncorrected), with the
    site's reconstruction the perturbation GTM needs; a model whose inputs the protocol lacks is
    refused naming them."""
    sites = registry(tmp_path)
    for variant, enabled in (
        (ProcessingVariant.HARMONISED, False),
        (ProcessingVariant.HARMONISED_PVC, True),
    ):
        config = write_variant_config(
            sites, variant, tmp_path / variant.value, partial_volume_model="perturbation_gtm"
        )
        protocol = load_protocol("milan", config.protocol_dir)
        rules = protocol.partial_volume_correction
        assert rules.enabled is enabled
        assert rules.model == ("perturbation_gtm" if enabled else "gtm_platform_voi")
        assert protocol.reconstruction == load_protocol("milan").reconstruction
    bare = SiteRegistry.load(tmp_path / "sites.yaml")
    bare_site = bare.sites[0].model_copy(update={"site_id": "nowhere"})
    with pytest.raises(ConfigurationError, match="reconstruction"):
        write_variant_config(
            bare.model_copy(update={"sites": [bare_site]}),
            ProcessingVariant.HARMONISED_PVC,
            tmp_path / "refused",
            partial_volume_model="perturbation_gtm",
        )


def test_blur_images_give_a_site_s_reconstruction_model_the_gaussian_gtm(tmp_path: Path) -> None:
    """grandrapids' packaged protocol chooses the perturbation GTM (its chain has no resolution
    modelling); images that never went through that chain (blur imaging) get the Gaussian GTM on
    platform VOIs in every variant, so calibration fits no scatter through it either; a model
    the caller names is kept."""
    path = tmp_path / "sites.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "format_version": 1,
                "sites": [
                    {
                        "site_id": "grandrapids",
                        "ae_titles": ["GR_OPTIMA640"],
                        "nominal_calibration_factor_cps_per_mbq": 6.6,
                    }
                ],
            }
        )
    )
    sites = SiteRegistry.load(path)
    assert load_protocol("grandrapids").partial_volume_correction.model == "perturbation_gtm"
    for images_reconstructed, expected in ((True, "perturbation_gtm"), (False, "gtm_platform_voi")):
        for variant in ProcessingVariant:
            config = write_variant_config(
                sites,
                variant,
                tmp_path / f"{variant.value}-{images_reconstructed}",
                images_reconstructed=images_reconstructed,
            )
            protocol = load_protocol("grandrapids", config.protocol_dir)
            assert protocol.partial_volume_correction.model == expected
            assert (protocol.modelled_reconstruction() is not None) is images_reconstructed
    named = write_variant_config(
        sites,
        ProcessingVariant.HARMONISED_PVC,
        tmp_path / "named",
        partial_volume_model="perturbation_gtm",
        images_reconstructed=False,
    )
    model = load_protocol("grandrapids", named.protocol_dir).partial_volume_correction.model
    assert model == "perturbation_gtm"


def test_raw_variant_needs_every_site_s_nominal_factor(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no nominal_calibration_factor_cps_per_mbq"):
        write_variant_config(registry(tmp_path, None), ProcessingVariant.RAW, tmp_path / "raw")


def test_protocol_dir_setting_is_honoured_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_variant_config(
        registry(tmp_path), ProcessingVariant.HARMONISED_PVC, tmp_path / "p"
    )
    monkeypatch.setenv("CONCORDOSE_PROTOCOL_DIR", str(config.protocol_dir))
    assert load_protocol("milan").partial_volume_correction.enabled is True
    monkeypatch.setenv("CONCORDOSE_PROTOCOL_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match=r"CONCORDOSE_PROTOCOL_DIR .*missing is not a"):
        load_protocol("milan")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--site-ids", "milan"], "names 1 distinct site(s); comparing sites needs ≥ 2"),
        (["--site-ids", "milan,atlantis"], "unknown consortium site 'atlantis'"),
        (["--preset", "clinical"], "unknown --preset 'clinical'; expected one of test, demo, full"),
        (["--patients", "0"], "--patients must be ≥ 1, got 0"),
    ],
)
def test_consortium_command_refuses_bad_arguments(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["consortium", "--out", str(tmp_path / "run"), *arguments])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_consortium_command_never_empties_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(
        app, ["consortium", "--out", str(tmp_path), "--sites", "milan,brussels"]
    )
    assert result.exit_code == 2, result.output
    assert "is not empty and was not made by `concordose consortium`" in " ".join(
        result.output.split()
    )
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_cross_site_cov_is_the_sample_sd_over_the_mean_of_the_values_present() -> None:
    assert cross_site_cov([1.0, 2.0, 4.0]) == pytest.approx(
        statistics.stdev([1.0, 2.0, 4.0]) / statistics.mean([1.0, 2.0, 4.0]), rel=1e-12
    )
    assert cross_site_cov([1.0, math.nan, 3.0]) == pytest.approx(statistics.stdev([1.0, 3.0]) / 2)
    assert math.isnan(cross_site_cov([5.0, math.nan]))  # one site: no spread to speak of
    assert math.isnan(cross_site_cov([-1.0, 1.0]))  # zero mean
