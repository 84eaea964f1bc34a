"""Site protocol: what a site's post-therapy Lu-177 SPECT is expected to look like.

Rules live in ``schemas/protocols/*.yaml`` (one file per site, ``default.yaml`` for the
consortium baseline); a site file overrides only the top-level keys it names. Ranges are
inclusive.

Where a site's overrides come from (:func:`protocol_sources`, the one resolution every caller
uses): the folder ``CONCORDOSE_PROTOCOL_DIR`` names, else the site registry's ``protocol_dir:``
(``sites.yaml``, relative to that file), else the packaged folder. The packaged ``default.yaml``
is always the base; a configured folder's ``default.yaml`` (optional) overrides it, then its
``<site_id>.yaml`` (optional). The packaged site files (the digital consortium's sites) apply
only when no folder is configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from concordose.dose.registry import DOSE_METHODS
from concordose.errors import ConfigurationError
from concordose.kinetics.methods.spectacular_6tp import REFERENCE_METHOD_NAME
from concordose.kinetics.registry import KINETICS_METHODS
from concordose.reconstruction.protocol import SiteReconstruction
from concordose.settings import Settings

DEFAULT_KINETICS_METHODS: tuple[str, ...] = (
    REFERENCE_METHOD_NAME,
    "hanscheid_stp",
    "madsen_stp",
    "lutadose_2tp",
    "lumen_3tp",
    "hebert_4tp",
    "mono_exponential",
    "bi_exponential",
    "trapezoid",
)
"""The consortium's kinetics methods (issue 14): the SPECTacular-style set, i.e. the reference
(NCT05823402) and every simplified method it is compared with — Hänscheid and Madsen single
time point, LUTADOSE 2TP, LUMEN 3TP, Hebert 4TP — plus the mono- and bi-exponential fits and the
trapezoid. Each runs on every cycle; one that the cycle's schedule cannot support reports why
per VOI (its TIA is NaN with the reason as status), it never fails the run."""

DEFAULT_DOSE_METHODS: tuple[str, ...] = ("sphere", "organ_s_am", "organ_s_af", "ldm")
"""The consortium's VOI dose methods: the sphere model (lesions; organs too, as a crude
comparison), OpenDose organ S-values of both ICRP-110 phantoms (organs; lesions get NaN with
the reason — the patient's sex does not choose the phantom yet) and local deposition."""


class Range(BaseModel):
    """An inclusive range of a quantity (units in the owning field's name)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min > self.max:
            raise ValueError(f"range min {self.min} > max {self.max}")
        return self

    def __contains__(self, value: float) -> bool:
        return self.min <= value <= self.max


class VoxelDosimetryRules(BaseModel):
    """Voxel dosimetry run by the flow on every passed cycle (``voxel_dosimetry:`` key).

    Attributes:
        enabled: run it at all.
        model: voxel kinetics model fitted to every body voxel, a name of
            :data:`concordose.dose.voxel_dosimetry.VOXEL_KINETICS_MODELS` (published with the
            prefix ``voxel_``, e.g. ``voxel_mono_exponential``).
        methods: names in :data:`concordose.dose.registry.VOXEL_DOSE_METHODS`.
        body_threshold_fraction: voxels fitted are those whose peak activity over the time
            points exceeds this fraction of the map's 99.9th percentile (the body and its
            spill-out); the others are taken as TIA 0.
        output_grid: the grid the dose maps, VOI masks and masses are on: ``ct`` (default) the
            first time point's CT (the frame of the VOIs and registrations; masses from its
            HU → density, :mod:`concordose.quant.density`; the ``_density`` VSV methods
            allowed), or ``spect`` the first SPECT grid (unit density). A cycle whose first
            time point has no CT falls back to ``spect`` (published in ``dose_grid``).
        whole_body_tumour_threshold_gy: a tumour voxel's lowest dose for the whole-body tumour
            dose (issue 20; :mod:`concordose.dose.whole_body_tumour`), Gy.
        whole_body_tumour_margin_mm: the organ VOIs' dilation before their exclusion from it,
            mm.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    model: str = "mono_exponential"
    methods: list[str] = Field(default_factory=lambda: ["ldm", "vsv_4.42mm", "vsv_2.21mm"])
    body_threshold_fraction: float = Field(default=0.01, gt=0, lt=1)
    output_grid: Literal["ct", "spect"] = "ct"
    # issue 20, item 4 (defaults: concordose.dose.whole_body_tumour)
    whole_body_tumour_threshold_gy: float = Field(default=5.0, gt=0)
    whole_body_tumour_margin_mm: float = Field(default=10.0, ge=0)


PartialVolumeModel = Literal[
    "rc0_local_background",
    "rc_curve",
    "gtm",
    "gtm_platform_voi",
    "perturbation_gtm",
    "phantom_choice",
]
"""Names of :mod:`concordose.quant.pvc`'s corrections (``BACKGROUND_MODEL``,
``RECOVERY_ONLY_MODEL``, ``GTM_MODEL``, ``GTM_PLATFORM_MODEL``, ``PERTURBATION_GTM_MODEL``,
``PHANTOM_CHOICE``; kept equal by a unit test)."""
IMAGING_THROUGH_RECONSTRUCTION: tuple[PartialVolumeModel, ...] = ("perturbation_gtm",)
"""The models that image through the site's reconstruction (``reconstruction:``): they need the
block, and calibration fits the window's scatter through it for them."""
GAUSSIAN_GTM: tuple[PartialVolumeModel, ...] = ("gtm", "gtm_platform_voi")
"""The GTM models whose spread is the record's one Gaussian PSF (``quant.pvc.psf_from_record``)."""


class PartialVolumeRules(BaseModel):
    """Partial-volume correction (``partial_volume_correction:`` key).

    On by default with the geometric transfer matrix on VOIs the platform defines
    (``gtm_platform_voi``): on the digital consortium with realistic imaging and each site's
    own delineation (full preset) it beats no correction at every site, and beats the GTM on
    the sites' own VOIs (``gtm``) at every site, by the median error against truth of organ
    TIAs and lesion (≥ 4 mL) doses (README, "Harmonisation"; ``gtm``, the default before, does
    not beat no correction at brussels there). The GTM itself beats no correction on the NEMA
    spheres (leave-one-out, recorded per site as ``partial_volume_evidence``); it does not beat
    the curve models on the spheres at every site: the record's ``partial_volume_model_chosen``
    says which model a site's own phantom favours, and a site file may choose it. A site whose
    OSEM does not model resolution is better served by ``perturbation_gtm``: no one Gaussian
    holds such a chain's lesions, organs and marrow at once; the consortium's grandrapids file
    chooses it (full preset: lesions ≥ 4 mL CoV median 8.1 → 4.9 %, grandrapids' median error
    14.5 → 9.5 %; README, "A site's own model").

    Attributes:
        enabled: correct at all (organs only by the GTM models).
        model: ``rc0_local_background`` (C_L = (C_meas − (1 − RC0)·C_B)/RC0 with the record's
            RC0 curve and a local background shell), ``rc_curve`` (A / RC(V) with the
            record's NEMA RC curve) — lesions only — or ``gtm`` (geometric transfer matrix of
            every VOI, organs and lesions, with the record's fitted PSF, ``quant.gtm``), or
            ``gtm_platform_voi`` (the GTM on VOIs the platform defines by one rule at every
            site: lesions re-delineated by the site-calibrated iterative threshold of
            ``quant.delineation``, organs' activity as the total in their VOI grown by two
            FWHM less the other regions' share; DESIGN.md, "Platform delineation"), or
            ``perturbation_gtm`` (``gtm_platform_voi`` with each region's spread taken through
            the site's own reconstruction, ``quant.perturbation_gtm``: needs the protocol's
            ``reconstruction:`` and costs one OSEM reconstruction per region and time point),
            or ``phantom_choice`` (the model the record chose on the site's NEMA spheres,
            ``partial_volume_model_chosen``, possibly none).
        shell_gap_mm, shell_width_mm: the background shell, from ``shell_gap_mm`` to
            ``shell_gap_mm + shell_width_mm`` outside each lesion VOI (background model only;
            defaults = ``concordose.quant.pvc.DEFAULT_BACKGROUND_GAP_MM`` / ``_WIDTH_MM``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    model: PartialVolumeModel = "gtm_platform_voi"
    shell_gap_mm: float = Field(default=10.0, ge=0)
    shell_width_mm: float = Field(default=10.0, gt=0)


@dataclass(frozen=True)
class RunMethods:
    """The methods one run computes side by side (registry names, in order).

    Attributes:
        kinetics_methods: kinetics methods; always include ``reference_method``.
        dose_methods: VOI dose methods, each applied to every kinetics method's TIA.
        reference_method: the kinetics method every other one is compared with.
    """

    kinetics_methods: tuple[str, ...]
    dose_methods: tuple[str, ...]
    reference_method: str


def _method_names(value: object, info: ValidationInfo) -> tuple[str, ...]:
    """A protocol's method list (``all``, a comma list or a YAML list) checked against its
    registry; pydantic reports the ConfigurationError's message as the field's error."""
    registry = KINETICS_METHODS if info.field_name == "kinetics_methods" else DOSE_METHODS
    if not isinstance(value, str) and not (
        isinstance(value, Sequence) and all(isinstance(name, str) for name in value)
    ):
        raise ValueError(f"expected 'all' or a list of method names, found {value!r}")
    try:
        return registry.select(value, where=f"protocol key {info.field_name}")
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


class SiteProtocol(BaseModel):
    """Expected acquisition and reconstruction of quantitative Lu-177 SPECT at one site.

    Attributes:
        radionuclide_codes: SNOMED CT codes accepted for the radionuclide (447553000
            ^177^Lutetium); their legacy SNOMED RT ids (PS3.16 Annex O, e.g. SRT C-101ED) are
            accepted too, with an info finding (:mod:`concordose.dicom.codes`).
        photopeak_kev: the photopeak a window must contain (Lu-177: 208.37 keV, ICRP-107).
        window_width_fraction: expected full width of the photopeak window relative to the peak
            (0.20 for 208 keV ± 10 %); a window off by more than ``window_width_tolerance``
            (fraction of the peak) gives a warning.
        collimators: accepted collimator names (e.g. MEGP, MELP); empty accepts any.
        required_corrections: CorrectedImage values that must be present (ATTN, SCAT).
        forbidden_corrections: values that must be absent (DECY: the pipeline needs counts at
            acquisition time, not decay-corrected).
        accepted_units: pixel units accepted: ``counts`` (no Units / CNTS) or ``BQML`` (vendor
            quantitative SPECT in Bq/mL: no CF applied; the gate checks the vendor calibration
            against the site's phantom instead, see ``vendor_quantification_tolerance``).
        vendor_quantification_tolerance: largest |bias| (relative) of the vendor's
            quantification measured on the site's phantom
            (``CalibrationRecord.vendor_quantification_bias_relative``) for a BQML image to pass.
        injected_activity_mbq: plausible administered activity.
        injected_activity_unit: the unit the site's modality writes RadionuclideTotalDose in:
            ``MBq`` (DICOM NM; default), ``Bq`` (as many vendors and every PET modality do;
            converted, with an info finding) or ``auto`` (read as MBq when plausible, else as
            Bq or GBq when that is plausible, with a warning finding).
        injection_time_without_date: what a RadiopharmaceuticalStartTime without
            RadiopharmaceuticalStartDateTime means: ``hold`` (default: the date is unknown — a
            scan days later at a later clock time looks like one on the injection day — so the
            time point is held with an error finding) or ``scan_date`` (the site declares its
            modality's start time is on the scan's date, the day before when later than the
            scan: passes with a warning finding).
        time_since_injection_h: the protocol's imaging window after injection.
        patient_weight_kg: plausible patient weight.
        voxel_mm: plausible voxel size (every axis).
        voxel_dosimetry: what voxel dosimetry the flow runs (:class:`VoxelDosimetryRules`).
        partial_volume_correction: whether and how lesion activities are corrected for partial
            volume (:class:`PartialVolumeRules`).
        reconstruction: the site's SPECT acquisition and OSEM settings
            (:class:`concordose.reconstruction.SiteReconstruction`), or None; needed by the
            ``perturbation_gtm`` correction; under ``gtm_platform_voi`` its
            ``resolution_recovery: false`` makes the lesion threshold independent of contrast
            (``pipeline.quantify.record_threshold_surface``).
        kinetics_methods: kinetics methods run on every cycle of the site, names of
            :data:`concordose.kinetics.registry.KINETICS_METHODS` or ``all`` (default
            :data:`DEFAULT_KINETICS_METHODS`); a run may override them (:meth:`run_methods`).
        dose_methods: VOI dose methods, names of :data:`concordose.dose.registry.DOSE_METHODS`
            or ``all`` (default :data:`DEFAULT_DOSE_METHODS`).
        reference_method: the kinetics method the others are compared with (table
            ``method_comparison``); one of ``kinetics_methods``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    radionuclide_codes: list[str] = Field(default_factory=lambda: ["447553000"])
    photopeak_kev: float = 208.37
    window_width_fraction: float = Field(default=0.20, gt=0)
    window_width_tolerance: float = Field(default=0.05, ge=0)
    collimators: list[str] = Field(default_factory=list)
    required_corrections: list[str] = Field(default_factory=lambda: ["ATTN", "SCAT"])
    forbidden_corrections: list[str] = Field(default_factory=lambda: ["DECY"])
    accepted_units: list[str] = Field(default_factory=lambda: ["counts"])
    vendor_quantification_tolerance: float = Field(default=0.10, gt=0, lt=1)
    injected_activity_mbq: Range = Range(min=1000.0, max=10000.0)
    injected_activity_unit: Literal["Bq", "MBq", "auto"] = "MBq"
    injection_time_without_date: Literal["hold", "scan_date"] = "hold"
    time_since_injection_h: Range = Range(min=0.5, max=400.0)
    patient_weight_kg: Range = Range(min=20.0, max=250.0)
    voxel_mm: Range = Range(min=1.0, max=8.0)
    voxel_dosimetry: VoxelDosimetryRules = VoxelDosimetryRules()
    partial_volume_correction: PartialVolumeRules = PartialVolumeRules()
    reconstruction: SiteReconstruction | None = None
    kinetics_methods: tuple[str, ...] = DEFAULT_KINETICS_METHODS
    dose_methods: tuple[str, ...] = DEFAULT_DOSE_METHODS
    reference_method: str = REFERENCE_METHOD_NAME

    _check_method_names = field_validator("kinetics_methods", "dose_methods", mode="before")(
        _method_names
    )

    @model_validator(mode="after")
    def _reference_is_run(self) -> SiteProtocol:
        if self.reference_method not in self.kinetics_methods:
            raise ValueError(
                f"reference_method {self.reference_method!r} must be one of kinetics_methods, "
                f"found {list(self.kinetics_methods)}; add it or choose another reference"
            )
        return self

    @model_validator(mode="after")
    def _perturbation_gtm_knows_the_reconstruction(self) -> SiteProtocol:
        rules = self.partial_volume_correction
        if (
            rules.enabled
            and rules.model in IMAGING_THROUGH_RECONSTRUCTION
            and self.reconstruction is None
        ):
            raise ValueError(
                "partial_volume_correction.model perturbation_gtm reconstructs each region "
                "through the site's OSEM: expected a reconstruction: block (collimator, "
                "radius_of_rotation_mm, n_views, iterations, subsets, resolution_recovery, "
                "post_filter_fwhm_mm), found none"
            )
        return self

    def partial_volume_advice(self) -> str | None:
        """Why the site's partial-volume model is not the one the evidence favours for how it
        reconstructs, or None.

        A Gaussian GTM (:data:`GAUSSIAN_GTM`) where the site's OSEM does not model resolution
        (``reconstruction.resolution_recovery: false``): such a chain's response hardly depends
        on an object's size or contrast and no one Gaussian holds its lesions, organs and
        marrow at once (the consortium's grandrapids: ≈ 16, 14–15 and 18 mm, against its two
        phantom fits of 13.1 and 18.5 mm); the perturbation GTM, which images each region
        through the reconstruction, beat it there (full preset, realistic: its median error
        14.5 → 9.5 %; README, "A site's own model"). With resolution modelling the
        large-object fit is within 0.6 mm of the Gaussian that recovers a lesion exactly, and
        nothing is advised. The choice stays the site's: ``concordose calibrate`` prints this.
        """
        rules = self.partial_volume_correction
        if (
            not rules.enabled
            or rules.model not in GAUSSIAN_GTM
            or self.reconstruction is None
            or self.reconstruction.resolution_recovery
        ):
            return None
        return (
            "the site reconstructs without resolution modelling and corrects partial volume "
            f"with one Gaussian ({rules.model}), which does not hold such a chain's lesions, "
            "organs and marrow at once; partial_volume_correction.model: perturbation_gtm "
            'images each region through its reconstruction (README, "A site\'s own model")'
        )

    def modelled_reconstruction(self) -> SiteReconstruction | None:
        """The site's reconstruction when its partial-volume model images through it (the
        perturbation GTM, enabled or not), else None: what calibration fits the window's
        scatter through (``calibration.scatter``), so the record holds what the model needs."""
        if self.partial_volume_correction.model in IMAGING_THROUGH_RECONSTRUCTION:
            return self.reconstruction
        return None

    def run_methods(
        self,
        kinetics_methods: str | Sequence[str] | None = None,
        dose_methods: str | Sequence[str] | None = None,
    ) -> RunMethods:
        """The methods of one run: the protocol's, or a run's overrides (``--kinetics-methods``,
        ``--dose-methods``: ``all``, a comma list or names).

        The reference is always run: an override without it gets it first, since every other
        method's comparison needs it (the protocol's own list must name it, see the validator).

        Raises:
            ConfigurationError: an unknown method name (with the valid ones).
        """
        kinetics = (
            self.kinetics_methods
            if kinetics_methods is None
            else KINETICS_METHODS.select(kinetics_methods, where="kinetics methods of the run")
        )
        if self.reference_method not in kinetics:
            kinetics = (self.reference_method, *kinetics)
        dose = (
            self.dose_methods
            if dose_methods is None
            else DOSE_METHODS.select(dose_methods, where="dose methods of the run")
        )
        return RunMethods(kinetics, dose, self.reference_method)


def packaged_protocol_dir() -> Path:
    """The packaged protocol files (``schemas/protocols``)."""
    return Path(str(files("concordose.schemas").joinpath("protocols")))


# --- where protocol files come from (issue 16) ---
def protocol_dir(registry_protocol_dir: Path | None = None) -> Path | None:
    """The folder of site protocol overrides in force: ``CONCORDOSE_PROTOCOL_DIR``, else the
    site registry's ``protocol_dir`` (already resolved against the sites file), else ``None``
    (the packaged files only).

    Raises:
        ConfigurationError: the folder in force does not exist.
    """
    configured = Settings().protocol_dir
    if configured is not None:
        folder, origin = configured, "CONCORDOSE_PROTOCOL_DIR"
    elif registry_protocol_dir is not None:
        folder, origin = registry_protocol_dir, "protocol_dir of the sites file"
    else:
        return None
    if not folder.is_dir():
        raise ConfigurationError(
            f"{origin} {folder} is not a folder; expected a folder of site protocol files "
            "(<site_id>.yaml, optionally default.yaml) like schemas/protocols"
        )
    return folder


def protocol_sources(site_id: str | None, registry_protocol_dir: Path | None = None) -> list[Path]:
    """The protocol files of ``site_id`` that exist, in the order they are merged (later ones
    override earlier ones' top-level keys); see the module docstring for the rule.

    Raises:
        ConfigurationError: the configured folder does not exist.
    """
    packaged = packaged_protocol_dir()
    folder = protocol_dir(registry_protocol_dir)
    candidates = [packaged / "default.yaml"]
    overrides = packaged if folder is None else folder
    if folder is not None:
        candidates.append(folder / "default.yaml")
    if site_id is not None:
        candidates.append(overrides / f"{site_id}.yaml")
    return [path for path in candidates if path.is_file()]


# --- end where protocol files come from ---


def _read(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"protocol file {path} is not valid YAML: {exc}") from exc
    if not isinstance(content, dict):
        raise ConfigurationError(f"protocol file {path} must hold a mapping of rule settings")
    return content


def load_protocol(site_id: str | None = None, folder: Path | None = None) -> SiteProtocol:
    """The protocol of ``site_id``: the packaged ``default.yaml`` overridden by the files of
    :func:`protocol_sources`.

    Args:
        site_id: the site (``None``: the default only).
        folder: the site registry's ``protocol_dir`` (:attr:`SiteRegistry.protocol_dir`);
            ``CONCORDOSE_PROTOCOL_DIR`` takes precedence over it.

    Raises:
        ConfigurationError: unreadable or invalid protocol file, or a missing folder.
    """
    sources = protocol_sources(site_id, folder)
    merged: dict[str, Any] = {}
    for path in sources:
        merged.update(_read(path))
    try:
        return SiteProtocol.model_validate(merged)
    except ValidationError as exc:
        names = ", ".join(str(p) for p in sources)
        raise ConfigurationError(f"site protocol from {names} is invalid:\n{exc}") from exc
