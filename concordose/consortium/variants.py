"""The three processing variants of the harmonisation comparison, and their configuration.

* ``raw``: the camera vendor's nominal calibration factor
  (:meth:`concordose.calibration.registry.Site.nominal_calibration`), no partial-volume
  correction: what sites get without harmonisation;
* ``harmonised``: the site's phantom-derived factor (``concordose calibrate``), no PVC;
* ``harmonised_pvc``: the phantom-derived factor, recovery curves and PSF, corrected for
  partial volume as the protocol's ``partial_volume_correction`` block says (its model — the GTM
  on platform VOIs, ``gtm_platform_voi``, by default, every VOI; the site's own choice where its
  file makes one, e.g. grandrapids' ``perturbation_gtm``; the RC models correct lesions only —
  and shell), switched on for every site.

A variant is a site registry (which calibration records exist) plus a folder of site protocol
files (whether PVC is on), both written by :func:`write_variant_config`; a run processes the
same spool once per variant into that variant's own published store. Everything else (methods,
registration, VOIs) is the same, so the variants differ by calibration and PVC only.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from concordose.calibration.protocol import (
    IMAGING_THROUGH_RECONSTRUCTION,
    load_protocol,
    packaged_protocol_dir,
)
from concordose.calibration.registry import SiteRegistry
from concordose.quant.pvc import GTM_PLATFORM_MODEL


class ProcessingVariant(StrEnum):
    """A processing variant (module docstring)."""

    RAW = "raw"
    HARMONISED = "harmonised"
    HARMONISED_PVC = "harmonised_pvc"

    @property
    def phantom_calibrated(self) -> bool:
        """Whether the variant applies the phantom-derived calibration records."""
        return self is not ProcessingVariant.RAW

    @property
    def partial_volume_correction(self) -> bool:
        """Whether VOIs are corrected for partial volume (as the protocol's model says)."""
        return self is ProcessingVariant.HARMONISED_PVC


VARIANTS: tuple[ProcessingVariant, ...] = tuple(ProcessingVariant)
"""Every variant, in the order they are run and reported."""

VARIANT_LEDGER_NAME = "calibrations.jsonl"
"""Ledger file name (next to the variant's sites file) that phantom calibrations go into."""


@dataclass(frozen=True)
class VariantConfig:
    """Where a variant's configuration was written.

    Attributes:
        variant: the variant.
        sites_path: its site registry (``sites.yaml``).
        protocol_dir: its site protocol folder (for ``CONCORDOSE_PROTOCOL_DIR``).
        ledger_path: the calibration ledger the phantom calibrations must be appended to
            (``None`` for ``raw``).
    """

    variant: ProcessingVariant
    sites_path: Path
    protocol_dir: Path
    ledger_path: Path | None


def _registry_document(registry: SiteRegistry, variant: ProcessingVariant) -> dict[str, Any]:
    sites = []
    for site in registry.sites:
        entry = site.model_dump(mode="json", exclude_none=True)
        # Phantom-calibrated variants keep no record of their own: only the ledger's, which
        # `concordose calibrate` fills from the site's phantom scans.
        entry["calibrations"] = (
            []
            if variant.phantom_calibrated
            else [site.nominal_calibration().model_dump(mode="json")]
        )
        sites.append(entry)
    document: dict[str, Any] = {"format_version": 1}
    if variant.phantom_calibrated:
        document["calibration_ledger"] = VARIANT_LEDGER_NAME
    document["sites"] = sites
    return document


def _write_protocols(
    folder: Path,
    site_ids: list[str],
    variant: ProcessingVariant,
    partial_volume_model: str | None,
    images_reconstructed: bool,
) -> None:
    """The packaged protocols with ``partial_volume_correction.enabled`` set for every site (and
    its ``model`` replaced by ``partial_volume_model`` in a correcting variant, when given; by
    the Gaussian GTM on platform VOIs where the site's own model images through a
    reconstruction the images did not come from, ``images_reconstructed`` False)."""
    shutil.copytree(packaged_protocol_dir(), folder, dirs_exist_ok=True)
    for site_id in site_ids:
        path = folder / f"{site_id}.yaml"
        own = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        rules = load_protocol(site_id, folder).partial_volume_correction
        overrides = dict(own or {})
        overrides["partial_volume_correction"] = {
            **rules.model_dump(mode="json"),
            "enabled": variant.partial_volume_correction,
        }
        if partial_volume_model is not None and variant.partial_volume_correction:
            overrides["partial_volume_correction"]["model"] = partial_volume_model
        elif not images_reconstructed and rules.model in IMAGING_THROUGH_RECONSTRUCTION:
            overrides["partial_volume_correction"]["model"] = GTM_PLATFORM_MODEL
        path.write_text(yaml.safe_dump(overrides, sort_keys=False), encoding="utf-8")
        load_protocol(site_id, folder)  # the override is valid (e.g. the model's inputs)


def write_variant_config(
    registry: SiteRegistry,
    variant: ProcessingVariant,
    folder: Path,
    *,
    partial_volume_model: str | None = None,
    images_reconstructed: bool = True,
) -> VariantConfig:
    """Write ``variant``'s site registry and protocol folder under ``folder`` (created).

    The registry keeps ``registry``'s sites and AE titles; its calibration records are the
    vendor's nominal factors (``raw``) or none but an empty ledger's (the harmonised ones, to be
    filled by ``concordose calibrate``). ``partial_volume_model`` replaces every site's
    protocol model in the variant that corrects (None: the protocols' own).
    ``images_reconstructed`` False says the images were not formed by the sites' reconstruction
    (the digital consortium's ``blur`` imaging: the truth convolved with a Gaussian): a site
    model that images through the protocol's ``reconstruction:`` (``perturbation_gtm``) would
    model a chain the images never went through, so it becomes ``gtm_platform_voi``, whose
    Gaussian is the one such images follow (a model named by ``partial_volume_model`` is kept:
    the caller asked for it).

    Raises:
        ConfigurationError: ``raw`` and a site without a nominal factor; an invalid protocol.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sites_path = folder / "sites.yaml"
    sites_path.write_text(
        yaml.safe_dump(_registry_document(registry, variant), sort_keys=False), encoding="utf-8"
    )
    ledger_path = None
    if variant.phantom_calibrated:
        ledger_path = folder / VARIANT_LEDGER_NAME
        ledger_path.touch()
    protocol_dir = folder / "protocols"
    _write_protocols(
        protocol_dir,
        [site.site_id for site in registry.sites],
        variant,
        partial_volume_model,
        images_reconstructed,
    )
    return VariantConfig(variant, sites_path, protocol_dir, ledger_path)


__all__ = [
    "VARIANTS",
    "VARIANT_LEDGER_NAME",
    "ProcessingVariant",
    "VariantConfig",
    "write_variant_config",
]
