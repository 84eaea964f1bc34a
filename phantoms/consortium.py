"""The digital consortium: every site's phantom scans and the same virtual patients at every site.

``generate_consortium(out_dir, seed=…, preset=…, sites=…, n_patients=…, protocol=…)`` writes::

    out_dir/consortium.json                          index (format concordose.consortium v1)
    out_dir/sites.yaml                               site registry, every site's true CF
    out_dir/reference_objects.yaml                   every virtual patient's imaged cycle as a
                                                     reference object (truth sheet)
    out_dir/sites/<site>/phantoms/uniform_cylinder/  dicom/nm.dcm, dicom/ct/NNNN.dcm,
                                                     calibration_sheet.yaml, truth.json
    out_dir/sites/<site>/phantoms/nema_iec_body/     same
    out_dir/sites/<site>/patients/<subject>/dicom/cycleNN/tpMM/nm.dcm, …/ct/NNNN.dcm
    out_dir/sites/<site>/patients/<subject>/dicom/cycleNN/seg.dcm  VOIs on the cycle's first CT
    out_dir/sites/<site>/patients/<subject>/ground_truth.json      concordose.ground_truth v2

DICOM sits in ``dicom/`` folders apart from the sidecars, so that any ``dicom/`` folder can be
catalogued or sent as it is.

Formats are documented in ``phantoms/README.md``. Same arguments → byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml
from numpy.typing import NDArray

from concordose.calibration.phantom_geometry import PhantomSphere
from concordose.consortium.reference_objects import (
    CompartmentTruth,
    ReferenceMeasurement,
    ReferenceObject,
    ReferenceObjectRegistry,
)
from concordose.phantoms.acquisition import RealisticSettings
from concordose.phantoms.anatomy import (
    BODY_VALUE,
    OUTSIDE_VALUE,
    RIB_HU,
    TRABECULAR_BONE_HU,
    Anatomy,
    Ellipsoid,
    EllipticCylinder,
    LesionVolumeSampling,
    Voi,
    VoiType,
    rib_mask,
    sample_label_map,
)
from concordose.phantoms.anatomy_realism import realistic_activity_map
from concordose.phantoms.attenuation import ct_hu_on_grid
from concordose.phantoms.dicom_ct import anatomical_hu_slices, hu_map, write_ct_series
from concordose.phantoms.dicom_nm import RADIOPHARMACEUTICAL, write_nm
from concordose.phantoms.dicom_seg import write_seg
from concordose.phantoms.dicom_study import PatientInfo, TimePointStudy
from concordose.phantoms.grid import VoxelGrid
from concordose.phantoms.imaging import ImagingMode, image_counts, region_activity_map
from concordose.phantoms.phantom_geometry import sphere_occupancy
from concordose.phantoms.phantom_scans import (
    PhantomScan,
    scan_nema_second_contrast,
    scan_site_phantoms,
)
from concordose.phantoms.presets import ct_grid_for, nm_grid_for, preset_named
from concordose.phantoms.pretherapy_pet import generate_pretherapy_pet
from concordose.phantoms.protocols import DEFAULT_PROTOCOL
from concordose.phantoms.protocols import protocol as protocol_named
from concordose.phantoms.respiratory_motion import respiratory_amplitudes_mm
from concordose.phantoms.segmentation_rules import site_voi_labels
from concordose.phantoms.site_profiles import CONSORTIUM_SITES, SiteProfile, sites_registry_document
from concordose.phantoms.uids import reproducible_uid
from concordose.phantoms.virtual_patient import (
    INJECTED_ACTIVITY_MBQ,
    TISSUE_DENSITY_G_PER_ML,
    VirtualPatient,
    cycle_truth,
    draw_virtual_patient,
    region_truth,
)

CONSORTIUM_FORMAT = "concordose.consortium"
CONSORTIUM_FORMAT_VERSION = 1
GROUND_TRUTH_FORMAT = "concordose.ground_truth"
GROUND_TRUTH_FORMAT_VERSION = 2
CT_NOISE_SD_HU = 5.0
_HU_BY_KIND: dict[str, float] = {
    "outside": -1000.0,
    "body": 40.0,
    "liver": 60.0,
    "kidney": 35.0,
    "spleen": 45.0,
    "bone": TRABECULAR_BONE_HU,
    "lesion": 50.0,
}
"""Mean HU per region kind (non-contrast low-dose CT; vertebral cancellous bone ≈ 250 HU)."""


@dataclass(frozen=True)
class Realism:
    """Which effects are simulated in patient images (each can be switched off, e.g. to isolate
    one in a test). Phantom scans always carry the site's resolution (they exist to measure it);
    ``noise`` applies to them too.

    Attributes:
        blur: Gaussian blur with the site's effective FWHM (partial-volume effect).
        noise: Poisson noise on the reconstructed counts.
        ct_shift_max_mm: per-axis bound of the patient's random translation at each time point
            (0: every time point in the same position, no registration needed).
        lesion_partial_voxels: render spherical lesions as continuous spheres, each SPECT voxel
            holding the lesion in proportion to the fraction of its volume inside the sphere
            (supersampled, as the NEMA phantom's spheres are) and its host region (liver or
            body) in the rest. Off (the default): a lesion fills exactly the voxels whose
            centres lie in it, an object that follows the voxel grid, which no real lesion does
            and which a VOI of the same voxels recovers better than a real sphere (e.g. +5 % at
            12 mL, 3.9 mm voxels, 7.8 mm FWHM). Lesion truth is exact either way; the host
            region's total moves by (lesion voxels − lesion volume) × host concentration.
            Spherical lesions only: irregular lesions (``anatomy_realism``) stay voxel-centre
            sampled.
        anatomy_realism: irregular heterogeneous lesions, respiratory blur of the abdominal
            organs' activity and each site's own segmentation rule in its SEG
            (:mod:`phantoms.anatomy_realism`). Off (the default): uniform spheres, no motion,
            every SEG the true outlines, files byte for byte as before. The ``realistic``
            imaging mode turns it on.
        imaging: how images are formed (:class:`phantoms.imaging.ImagingMode`): ``blur`` (the
            default: Gaussian of the site's effective FWHM, Poisson per voxel) or ``realistic``
            (projection with attenuation, CDR, scatter, dead time, Poisson per bin, then the
            site's OSEM, :mod:`phantoms.acquisition`), for patients and phantom scans alike;
            ``blur`` (the flag above) applies to the ``blur`` mode only.
        realistic_max_views: ``realistic`` only: at most this many views (the fast setting for
            clinical-size grids; the acquisition time is kept); ``None``: the site's own.
        sink_effect: the tumour-sink effect in every patient's kinetics (issue 20, item 2:
            ``draw_virtual_patient(sink_effect=True)``). Off (the default): truths and files
            as before.
    """

    blur: bool = True
    noise: bool = True
    ct_shift_max_mm: float = 5.0
    # Not in the repr: the repr keys the generated UIDs, which must not change for the default.
    lesion_partial_voxels: bool = dataclass_field(default=False, repr=False)
    anatomy_realism: bool = dataclass_field(default=False, repr=False)
    imaging: ImagingMode = dataclass_field(default=ImagingMode.BLUR, repr=False)
    realistic_max_views: int | None = dataclass_field(default=None, repr=False)
    sink_effect: bool = dataclass_field(default=False, repr=False)  # issue 20, item 2

    @classmethod
    def of_imaging(
        cls,
        imaging: ImagingMode,
        *,
        blur: bool = True,
        noise: bool = True,
        ct_shift_max_mm: float = 5.0,
        realistic_max_views: int | None = None,
    ) -> Realism:
        """The switches of an imaging mode: ``realistic`` also turns ``anatomy_realism`` on
        (the physically realistic consortium: projection and OSEM *and* irregular lesions,
        breathing and each site's segmentation); ``blur`` keeps today's anatomy."""
        return cls(
            blur=blur,
            noise=noise,
            ct_shift_max_mm=ct_shift_max_mm,
            imaging=imaging,
            realistic_max_views=realistic_max_views,
            anatomy_realism=imaging is ImagingMode.REALISTIC,
        )

    @property
    def realistic_settings(self) -> RealisticSettings:
        """The realistic mode's settings."""
        return RealisticSettings(max_views=self.realistic_max_views)

    def document(self) -> dict[str, Any]:
        """The ``realism`` block of the ground truth and of ``consortium.json``."""
        return {
            "blur": self.blur,
            "noise": self.noise,
            "ct_shift_max_mm": self.ct_shift_max_mm,
            "lesion_partial_voxels": self.lesion_partial_voxels,
            "imaging": self.imaging.value,
            "realistic_max_views": self.realistic_max_views,
            # only when on, so that files made without it are unchanged
            **({"anatomy_realism": True} if self.anatomy_realism else {}),
            **({"sink_effect": True} if self.sink_effect else {}),  # issue 20, item 2
        }


@dataclass(frozen=True)
class ConsortiumPreset:
    """Size of a consortium run.

    Attributes:
        name: preset key.
        grid_preset: SPECT grid preset (:data:`phantoms.presets.PRESETS`).
        max_cycles: treated cycles kept (``None``: all of the protocol's).
        n_lesions_range: lesion count range per patient.
        lesion_volume_range_ml: lesion volume range (mL); the ``test`` grid's 8.8 mm voxels need
            lesions ≥ 2 mL to be sure to hold a voxel centre.
        lesion_volume_sampling: how volumes are drawn from the range
            (:class:`phantoms.anatomy.LesionVolumeSampling`; ``log_spaced`` spans it in every
            patient).
    """

    name: str
    grid_preset: str
    max_cycles: int | None
    n_lesions_range: tuple[int, int]
    lesion_volume_range_ml: tuple[float, float]
    lesion_volume_sampling: LesionVolumeSampling = LesionVolumeSampling.LOG_UNIFORM


CONSORTIUM_PRESETS: dict[str, ConsortiumPreset] = {
    "test": ConsortiumPreset("test", "test", 1, (3, 4), (4.0, 60.0)),
    "demo": ConsortiumPreset("demo", "demo", 1, (3, 10), (0.5, 200.0)),
    "full": ConsortiumPreset("full", "demo", None, (3, 10), (0.5, 200.0)),
    "pvc": ConsortiumPreset("pvc", "demo", 1, (3, 4), (4.0, 26.0)),
    "clinical": ConsortiumPreset("clinical", "clinical", 1, (3, 10), (0.5, 200.0)),
    "harmonisation": ConsortiumPreset(
        "harmonisation", "demo", 1, (5, 6), (0.5, 200.0), LesionVolumeSampling.LOG_SPACED
    ),
}
"""``test``: coarse grid, cycle 1, 3-4 lesions (seconds). ``demo``: each site's own grid, cycle
1, 3-10 lesions of 0.5-200 mL. ``full``: as demo with every cycle of the protocol. ``pvc``: as
demo with 3-4 lesions of 4-26 mL, inside the NEMA spheres' volume range where a site's recovery
curve is measured (partial-volume correction studies). ``clinical``: as demo on clinical-size
grids (:data:`phantoms.presets.PRESETS`: 128×128×96 SPECT at the site's voxel, 512×512 CT with
≤ 3 mm slices showing ribs, spine, lungs and fat), for memory and run-time studies.
``harmonisation``: as demo with 5-6 lesions per patient whose volumes are log-spaced from 0.5 to
200 mL (both ends in every patient): 4 patients give ≥ 20 lesions spanning 0.5-200 mL at every
site, what the harmonisation benchmark needs."""


class ProgressReporter(Protocol):
    """Receives the generator's progress: ``start`` once with the number of units, then one
    ``advance`` per unit written (a phantom scan or a patient time point)."""

    def start(self, total: int) -> None:
        """Announce ``total`` units."""

    def advance(self, description: str) -> None:
        """One unit is written; ``description`` says which."""


@dataclass(frozen=True)
class GeneratedSite:
    """What was written for one site."""

    site: SiteProfile
    folder: Path
    phantom_scans: tuple[PhantomScan, ...]
    ground_truth_paths: tuple[Path, ...]
    dicom_files: tuple[Path, ...]
    # --- issue 20 item 3: pre-therapy PET/CT files (empty unless asked for) ---
    pet_files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class GeneratedConsortium:
    """What :func:`generate_consortium` wrote."""

    out_dir: Path
    index_path: Path
    sites_path: Path
    sites: tuple[GeneratedSite, ...]
    subjects: tuple[str, ...]
    reference_objects_path: Path


TRUTH_AGREEMENT_RELATIVE = 1e-9
"""Sites' ground truths of one virtual patient's cycle must agree to this (they are the same
curves and masses; only the schedule and the camera differ)."""


def reference_object_registry(sites: Sequence[GeneratedSite]) -> ReferenceObjectRegistry:
    """Every imaged cycle of every virtual patient as a reference object
    (``digital-<subject>-cycle<N>``), measured at each site that imaged it, with the truth of its
    VOIs from the sites' ground truths.

    Raises:
        ValueError: two sites' truths of the same cycle disagree (a generator bug).
    """
    truths: dict[tuple[str, int], dict[str, CompartmentTruth]] = {}
    measurements: dict[tuple[str, int], list[ReferenceMeasurement]] = {}
    for generated in sites:
        for path in generated.ground_truth_paths:
            truth = json.loads(path.read_text(encoding="utf-8"))
            for cycle in truth["cycles"]:
                if not cycle["imaged"]:
                    continue
                key = (truth["patient"]["subject"], int(cycle["cycle"]))
                compartments = {
                    voi["label"]: CompartmentTruth(
                        tia_mbq_h=voi["tia_mbq_h"], mean_dose_gy=voi["mean_dose_gy"]
                    )
                    for voi in cycle["vois"]
                }
                known = truths.setdefault(key, compartments)
                for label, value in compartments.items():
                    if not np.isclose(
                        known[label].tia_mbq_h or 0.0,
                        value.tia_mbq_h or 0.0,
                        rtol=TRUTH_AGREEMENT_RELATIVE,
                        atol=0.0,
                    ):
                        raise ValueError(
                            f"{path}: truth TIA of {label} in cycle {key[1]} is "
                            f"{value.tia_mbq_h} MBq·h, another site's is {known[label].tia_mbq_h}"
                        )
                measurements.setdefault(key, []).append(
                    ReferenceMeasurement(
                        site_id=generated.site.site_id,
                        patient_id=truth["patient"]["patient_id"],
                        injection_datetime=dt.datetime.fromisoformat(cycle["injection_datetime"]),
                    )
                )
    return ReferenceObjectRegistry(
        reference_objects=[
            ReferenceObject(
                reference_object_id=f"digital-{subject}-cycle{cycle}",
                kind="digital_patient",
                description=f"digital consortium virtual patient {subject}, cycle {cycle}",
                truth=truths[subject, cycle],
                measurements=measurements[subject, cycle],
            )
            for subject, cycle in sorted(truths)
        ]
    )


def _hu_kind(label: str) -> str:
    return "lesion" if label.startswith("lesion") else label.split("_", 1)[0]


def _negated(shift_mm: tuple[float, float, float]) -> tuple[float, float, float]:
    return (-shift_mm[0], -shift_mm[1], -shift_mm[2])


def _lesions_as_continuous_spheres(
    activity_mbq: NDArray[np.float64],
    labels: NDArray[np.uint8],
    vois: Sequence[Voi],
    grid: VoxelGrid,
    activity_by_value: dict[int, float],
) -> NDArray[np.float64]:
    """Re-render each spherical lesion with its exact voxel occupancy (see ``Realism``).

    Each voxel a lesion touches holds occupancy × C_lesion plus (1 − occupancy) × the host's
    concentration, the host being the region most voxels around the lesion belong to; the
    lesion's total stays its truth activity (C_lesion = activity / Σ occupancy × voxel volume).
    """
    result = activity_mbq.copy()
    voxel_ml = grid.voxel_volume_ml
    for voi in vois:
        shape = voi.shape
        if voi.voi_type is not VoiType.LESION or not isinstance(shape, Ellipsoid):
            continue
        radii = shape.semi_axes_mm
        if max(radii) - min(radii) > 1e-9:
            continue  # not a sphere: left as voxel-centre sampled
        occupancy = sphere_occupancy(
            PhantomSphere(voi.label, 2.0 * radii[0], shape.centre_mm), grid
        )
        touched = occupancy > 0
        if not touched.any():
            continue
        around = labels[touched & (labels != voi.value)]
        host_values, host_counts = np.unique(around, return_counts=True)
        if host_values.size == 0:
            continue
        host = int(host_values[np.argmax(host_counts)])
        host_conc = float(np.mean(activity_mbq[labels == host])) / voxel_ml
        lesion_conc = activity_by_value[voi.value] / (float(occupancy.sum()) * voxel_ml)
        result[touched] = (
            occupancy[touched] * lesion_conc + (1.0 - occupancy[touched]) * host_conc
        ) * voxel_ml
    return result


@dataclass(frozen=True)
class PatientScene:
    """What one site's camera sees of a patient at one time point, before image formation.

    Attributes:
        grid: the SPECT grid in the patient frame (the time point's shift applied).
        labels: true label map on ``grid`` (voxel centres, :func:`sample_label_map`).
        activity_mbq: activity per voxel at acquisition start, MBq, with the realism switches
            (continuous spheres, anatomy realism) applied: the map :func:`image_counts` forms.
        n_voxels_by_value: voxels per region value on ``grid``.
        region_activity_mbq: each region's true activity at acquisition start (label → MBq).
        hu_on_grid: the CT's HU on ``grid`` (noise-free), the μ map's input (call to compute).
    """

    grid: VoxelGrid
    labels: NDArray[np.uint8]
    activity_mbq: NDArray[np.float64]
    n_voxels_by_value: dict[int, int]
    region_activity_mbq: dict[str, float]
    hu_on_grid: Callable[[], NDArray[np.float64]]


def patient_scene(
    patient: VirtualPatient,
    site: SiteProfile,
    *,
    preset: ConsortiumPreset,
    realism: Realism,
    cycle: int,
    index: int,
) -> PatientScene:
    """The activity map, labels and HU source of ``patient`` at ``site``, time point ``index``
    (1-based) of ``cycle``: exactly what the generator images (diagnostics re-image it, e.g.
    ``benchmarks/diagnose_realistic_organs.py``)."""
    anatomy = patient.anatomy
    nm_grid = nm_grid_for(site, preset.grid_preset)
    anatomical_ct = preset_named(preset.grid_preset).anatomical_ct
    regions = (*anatomy.vois, anatomy.body)
    hu_by_value = {r.value: _HU_BY_KIND[_hu_kind(r.label)] for r in regions}
    hu_by_value[OUTSIDE_VALUE] = _HU_BY_KIND["outside"]
    paint_over = [r.value for r in regions if _hu_kind(r.label) in ("body", "bone")]
    body_outline = anatomy.body.shape if isinstance(anatomy.body.shape, EllipticCylinder) else None
    time_h = patient.time_points_h[cycle][index - 1]
    grid = nm_grid.translated(_negated(patient.shifts_mm[cycle][index - 1]))
    labels = sample_label_map(anatomy, grid)
    curves = patient.curves[cycle]
    by_value = {r.value: float(curves[r.label].activity_mbq(time_h)) for r in regions}
    activity, n_by_value = region_activity_map(labels, by_value)
    if realism.lesion_partial_voxels:
        activity = _lesions_as_continuous_spheres(activity, labels, anatomy.vois, grid, by_value)
    # Anatomy realism (issue 15 item 3): heterogeneous lesions, respiratory blur.
    if realism.anatomy_realism:
        activity = realistic_activity_map(activity, labels, anatomy, grid)
    return PatientScene(
        grid=grid,
        labels=labels,
        activity_mbq=activity,
        n_voxels_by_value=n_by_value,
        region_activity_mbq={r.label: by_value[r.value] for r in regions},
        hu_on_grid=partial(
            ct_hu_on_grid,
            labels,
            grid,
            hu_by_value,
            body=body_outline,
            paint_over=paint_over if anatomical_ct else (BODY_VALUE,),
            anatomical=anatomical_ct,
            ribs=not anatomical_ct,
        ),
    )


def drawn_voi_truth(
    anatomy: Anatomy,
    ct_labels: NDArray[np.uint8],
    drawn_labels: NDArray[np.uint8],
    ct_voxel_ml: float,
) -> dict[str, dict[str, Any]]:
    """What a site drew against what is there, on the first CT of a cycle (anatomy realism).

    Per VOI: ``true_ct_volume_ml`` (the object on the CT grid), ``segmented_volume_ml`` (the
    site's VOI) and ``segmented_overlap_ml``, the site's VOI split over the true regions it
    covers ({region label: mL}, the body remainder as ``body``, air as ``outside``): with each
    region's true TIA over its true CT volume, the mean a perfect camera would report over the
    site's VOI (``benchmarks/harmonisation.py``'s delineation floor). The body remainder gets
    its ``true_ct_volume_ml``. Volumes are voxel counts × ``ct_voxel_ml``.
    """
    label_of_value = {r.value: r.label for r in (*anatomy.vois, anatomy.body)}
    label_of_value[OUTSIDE_VALUE] = "outside"
    drawn: dict[str, dict[str, Any]] = {}
    for voi in anatomy.vois:
        covered, n_covered = np.unique(ct_labels[drawn_labels == voi.value], return_counts=True)
        drawn[voi.label] = {
            "true_ct_volume_ml": int(np.count_nonzero(ct_labels == voi.value)) * ct_voxel_ml,
            "segmented_volume_ml": int(n_covered.sum()) * ct_voxel_ml,
            "segmented_overlap_ml": {
                label_of_value[int(value)]: int(n) * ct_voxel_ml
                for value, n in zip(covered, n_covered, strict=True)
            },
        }
    drawn[anatomy.body.label] = {
        "true_ct_volume_ml": int(np.count_nonzero(ct_labels == anatomy.body.value)) * ct_voxel_ml
    }
    return drawn


def consortium_patient_info(patient: VirtualPatient, site: SiteProfile) -> PatientInfo:
    """The DICOM patient attributes of ``patient`` at ``site`` (every study of it there)."""
    return PatientInfo(
        patient_id=f"{site.site_id.upper()}-{patient.subject}",
        patient_name=f"CONSORTIUM^{patient.subject}^{site.site_id.upper()}",
        birth_date=patient.birth_date,
        sex=patient.sex,
        weight_kg=patient.weight_kg,
        height_m=patient.height_m,
    )


def _write_patient_at_site(
    patient: VirtualPatient,
    site: SiteProfile,
    folder: Path,
    *,
    seed: int,
    preset: ConsortiumPreset,
    protocol_name: str,
    realism: Realism,
    progress: ProgressReporter | None,
    noise_seed: int | None = None,
) -> tuple[Path, list[Path]]:
    anatomy = patient.anatomy
    nm_grid = nm_grid_for(site, preset.grid_preset)
    ct_grid = ct_grid_for(nm_grid, preset.grid_preset)
    anatomical_ct = preset_named(preset.grid_preset).anatomical_ct
    regions = (*anatomy.vois, anatomy.body)
    hu_by_value = {r.value: _HU_BY_KIND[_hu_kind(r.label)] for r in regions}
    hu_by_value[OUTSIDE_VALUE] = _HU_BY_KIND["outside"]
    # The CT-only anatomy replaces body remainder and the marrow proxy (it lies in the spine).
    paint_over = [r.value for r in regions if _hu_kind(r.label) in ("body", "bone")]
    info = consortium_patient_info(patient, site)
    patient_id = info.patient_id
    key = (
        f"concordose-consortium|{site.site_id}|{seed}|{preset.name}|{protocol_name}|"
        f"{patient.subject}|{realism}"
        + ("|lesion-partial-voxels" if realism.lesion_partial_voxels else "")
        + ("|anatomy-realism" if realism.anatomy_realism else "")
        + ("|sink-effect" if realism.sink_effect else "")
        + (
            f"|imaging={realism.imaging.value}|views={realism.realistic_max_views}"
            if realism.imaging is ImagingMode.REALISTIC
            else ""
        )
        + ("" if noise_seed is None else f"|noise-seed={noise_seed}")
    )
    # The images' random stream (the SPECT's count noise, the CT's HU noise): from the
    # consortium seed, or from noise_seed for a repeat scan of the same patient.
    rng = np.random.default_rng(
        [
            seed if noise_seed is None else noise_seed,
            zlib.crc32(site.site_id.encode()),
            int(patient.subject[1:]),
            3,
        ]
    )
    counts_per_mbq = site.calibration_factor_cps_per_mbq * site.acquisition_duration_s
    recorded_ia_mbq = round(INJECTED_ACTIVITY_MBQ * (1.0 + site.dose_calibrator_bias), 1)
    files: list[Path] = []
    cycles_json = []
    segmented: dict[int, dict[str, dict[str, Any]]] = {}
    for cycle in sorted(patient.curves):
        truth = cycle_truth(patient, cycle)
        cycle_dir = folder / "dicom" / f"cycle{cycle:02d}"
        injection = patient.injection_datetimes[cycle]
        n_voxels: dict[str, list[int]] = {r.label: [] for r in regions}
        live_fractions: list[float | None] = []
        acquisitions = []
        first_ct: list[Any] = []
        first_ct_labels: NDArray[np.uint8] | None = None
        first_nm: tuple[NDArray[np.uint8], NDArray[np.uint16], VoxelGrid, VoxelGrid] | None = None
        times_h = patient.time_points_h.get(cycle, ())
        for index, time_h in enumerate(times_h, start=1):
            shift = patient.shifts_mm[cycle][index - 1]
            scene = patient_scene(
                patient, site, preset=preset, realism=realism, cycle=cycle, index=index
            )
            nm_labels, activity = scene.labels, scene.activity_mbq
            ct_labels = sample_label_map(anatomy, ct_grid.translated(_negated(shift)))
            for r in regions:
                n_voxels[r.label].append(scene.n_voxels_by_value[r.value])
            # --- image formation (activity map → stored counts; realism.imaging) ---
            formed = image_counts(
                activity,
                mode=realism.imaging,
                site=site,
                voxel_mm_zyx=nm_grid.spacing_mm_zyx,
                blur_fwhm_mm=site.effective_fwhm_mm if realism.blur else 0.0,
                hu_on_grid=scene.hu_on_grid,
                rng=rng,
                noise=realism.noise,
                where=f"{site.site_id} {patient.subject} cycle {cycle} {time_h:g} h",
                realistic=realism.realistic_settings,
            )
            counts = formed.counts
            live_fractions.append(formed.dead_time_live_fraction)
            # --- end of image formation ---
            acquired = (injection + dt.timedelta(hours=time_h)).replace(microsecond=0)
            acquisitions.append(acquired)
            study = TimePointStudy(
                index=index,
                time_h=time_h,
                acquisition_datetime=acquired,
                study_instance_uid=reproducible_uid(key, "study", cycle, index),
                frame_of_reference_uid=reproducible_uid(key, "frame-of-reference", cycle, index),
                accession_number=f"A{zlib.crc32(key.encode()) % 10**6:06d}{cycle:02d}{index:02d}",
            )
            tp_dir = cycle_dir / f"tp{index:02d}"
            tp_dir.mkdir(parents=True, exist_ok=True)
            nm_path = tp_dir / "nm.dcm"
            write_nm(
                nm_path,
                counts=counts,
                grid=nm_grid,
                site=site,
                patient=info,
                study=study,
                injection_datetime=injection,
                injected_activity_mbq=recorded_ia_mbq,
                series_instance_uid=reproducible_uid(key, "nm-series", cycle, index),
                sop_instance_uid=reproducible_uid(key, "nm-instance", cycle, index),
                series_description=(
                    f"Lu177 SPECT C{cycle} TP{index} {time_h:g}h p.i. "
                    f"[{site.recon.description} AC SC]"
                ),
            )
            files.append(nm_path)
            ct_hu: Iterable[NDArray[np.int16]]
            if anatomical_ct and isinstance(anatomy.body.shape, EllipticCylinder):
                ct_hu = anatomical_hu_slices(
                    ct_labels,
                    ct_grid.translated(_negated(shift)),
                    hu_by_value,
                    body=anatomy.body.shape,
                    paint_over=paint_over,
                    noise_sd_hu=CT_NOISE_SD_HU,
                    rng=rng,
                )
            else:
                ct_volume = hu_map(ct_labels, hu_by_value, noise_sd_hu=CT_NOISE_SD_HU, rng=rng)
                if isinstance(anatomy.body.shape, EllipticCylinder):
                    ribs = rib_mask(anatomy.body.shape, ct_grid.translated(_negated(shift)))
                    ct_volume[ribs & (ct_labels == BODY_VALUE)] = np.int16(RIB_HU)
                ct_hu = ct_volume
            ct_written = write_ct_series(
                tp_dir / "ct",
                hu=ct_hu,
                grid=ct_grid,
                site=site,
                patient=info,
                study=study,
                series_instance_uid=reproducible_uid(key, "ct-series", cycle, index),
                sop_instance_uids=[
                    reproducible_uid(key, "ct-instance", cycle, index, k)
                    for k in range(ct_grid.n_slices)
                ],
            )
            files.extend(path for path, _ in ct_written)
            if index == 1:
                first_ct = [ds for _, ds in ct_written]
                first_ct_labels = ct_labels
                first_nm = (
                    nm_labels,
                    counts,
                    nm_grid.translated(_negated(shift)),
                    ct_grid.translated(_negated(shift)),
                )
            if progress is not None:
                progress.advance(f"{site.site_id} {patient.subject} C{cycle} TP{index}")
        if first_ct_labels is not None:
            seg_labels = first_ct_labels
            if realism.anatomy_realism and first_nm is not None:
                first_nm_labels, first_counts, first_nm_grid, first_ct_grid = first_nm
                seg_labels = site_voi_labels(
                    site.segmentation,
                    vois=anatomy.vois,
                    ct_labels=first_ct_labels,
                    ct_grid=first_ct_grid,
                    nm_labels=first_nm_labels,
                    nm_counts=first_counts,
                    nm_grid=first_nm_grid,
                )
                segmented[cycle] = drawn_voi_truth(
                    anatomy, first_ct_labels, seg_labels, ct_grid.voxel_volume_ml
                )
            seg_path = cycle_dir / "seg.dcm"
            write_seg(
                seg_path,
                ct_slices=first_ct,
                ct_labels=seg_labels,
                vois=anatomy.vois,
                series_instance_uid=reproducible_uid(key, "seg-series", cycle),
                sop_instance_uid=reproducible_uid(key, "seg-instance", cycle),
                content_datetime=acquisitions[0],
                uid_for_tracking=[reproducible_uid(key, "tracking", v.label) for v in anatomy.vois],
                dimension_organization_uid=reproducible_uid(key, "seg-dimension-org", cycle),
                omit_empty_frames=anatomical_ct,
                drawn_by=str(site.segmentation.to_json()["method"])
                if realism.anatomy_realism
                else None,
            )
            files.append(seg_path)
        truth["acquisition_datetimes"] = [a.isoformat() for a in acquisitions]
        truth["folder"] = str(cycle_dir.relative_to(folder)) if times_h else None
        for region in [*truth["vois"], truth["body_remainder"]]:
            region["n_voxels_nm"] = n_voxels[region["label"]]
            if realism.anatomy_realism:
                region["volume_ml_nm"] = [
                    n * nm_grid.voxel_volume_ml for n in region["n_voxels_nm"]
                ]
                region.update(segmented.get(cycle, {}).get(region["label"], {}))
        if realism.imaging is ImagingMode.REALISTIC:
            truth["dead_time_live_fraction"] = live_fractions
        cycles_json.append(truth)

    vois = region_truth(patient)
    cumulative = []
    for voi in vois:
        per_cycle = [next(r for r in c["vois"] if r["label"] == voi["label"]) for c in cycles_json]
        doses = [r["mean_dose_gy"] for r in per_cycle]
        cumulative.append(
            {
                "label": voi["label"],
                "tia_mbq_h": sum(r["tia_mbq_h"] for r in per_cycle),
                "mean_dose_gy": None if any(d is None for d in doses) else sum(doses),
            }
        )
    ground_truth = {
        "format": GROUND_TRUTH_FORMAT,
        "format_version": GROUND_TRUTH_FORMAT_VERSION,
        "seed": seed,
        **({} if noise_seed is None else {"noise_seed": noise_seed}),  # a repeat scan
        "preset": preset.name,
        "protocol": protocol_name,
        "realism": realism.document(),
        "site": {
            "site_id": site.site_id,
            "calling_ae_title": site.calling_ae_title,
            "calibration_factor_cps_per_mbq": site.calibration_factor_cps_per_mbq,
            "acquisition_duration_s": site.acquisition_duration_s,
            "counts_per_mbq": counts_per_mbq,
            "effective_fwhm_mm": (
                None
                if realism.imaging is ImagingMode.REALISTIC
                else site.effective_fwhm_mm
                if realism.blur
                else 0.0
            ),
            "dose_calibrator_bias": site.dose_calibrator_bias,
            "nm_voxel_mm": nm_grid.spacing_mm_xyz[0],
            "nm_matrix": [nm_grid.n_columns, nm_grid.n_rows, nm_grid.n_slices],
            "reconstruction": site.recon.description,
            **({"segmentation": site.segmentation.to_json()} if realism.anatomy_realism else {}),
        },
        "patient": {
            "subject": patient.subject,
            "patient_id": patient_id,
            "patient_name": info.patient_name,
            "weight_kg": patient.weight_kg,
        },
        "radiopharmaceutical": RADIOPHARMACEUTICAL,
        "injected_activity_mbq": INJECTED_ACTIVITY_MBQ,
        "recorded_injected_activity_mbq": recorded_ia_mbq,
        "mass_density_g_per_ml": TISSUE_DENSITY_G_PER_ML,
        "tumour_decline_per_cycle": patient.tumour_decline_per_cycle,
        **(
            {"respiratory_amplitude_mm": respiratory_amplitudes_mm(anatomy)}
            if realism.anatomy_realism
            else {}
        ),
        "vois": vois,
        "cycles": cycles_json,
        "cumulative": cumulative,
        "reference_method": (
            "activity_mbq: the true multi-phase curve at each acquisition start (not decay "
            "corrected); tia_mbq_h: its analytic integral from injection to infinity, "
            "sum(c_i/lambda_i) - sum(c_i)/lambda_uptake; mean_dose_gy: sphere-model self-dose "
            "TIA x S(m) with the packaged Lu-177 unit-density sphere S-values at the true mass "
            "(analytic volume x 1.0 g/mL), no cross-dose; null outside the S-value table."
        ),
    }
    truth_path = folder / "ground_truth.json"
    folder.mkdir(parents=True, exist_ok=True)
    truth_path.write_text(json.dumps(ground_truth, indent=2) + "\n", encoding="utf-8")
    return truth_path, files


# --- issue 20 item 3: the pre-therapy PET/CT of a consortium patient ---------------------------


def _write_pretherapy_pet(
    patient: VirtualPatient,
    site: SiteProfile,
    folder: Path,
    *,
    seed: int,
    preset: ConsortiumPreset,
    pet_only: bool,
) -> list[Path]:
    """Write ``patient``'s pre-therapy PET/CT at ``site`` (:mod:`phantoms.pretherapy_pet`); a
    ``pet_only`` patient (no therapy yet) also gets a SEG on the PET's CT and its (future)
    therapy truth as ``therapy_truth.json``: what a prediction for it will be checked against."""
    regions = (*patient.anatomy.vois, patient.anatomy.body)
    hu_by_value = {r.value: _HU_BY_KIND[_hu_kind(r.label)] for r in regions}
    hu_by_value[OUTSIDE_VALUE] = _HU_BY_KIND["outside"]
    generated = generate_pretherapy_pet(
        patient,
        site,
        folder,
        seed=seed,
        grid_preset=preset.grid_preset,
        patient_info=consortium_patient_info(patient, site),
        hu_by_value=hu_by_value,
        ct_noise_sd_hu=CT_NOISE_SD_HU,
        with_seg=pet_only,
    )
    if pet_only:
        truth = {"vois": region_truth(patient), "cycle": cycle_truth(patient, min(patient.curves))}
        (folder / "therapy_truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    files = [*generated.pt_files, *generated.ct_files]
    if generated.seg_path is not None:
        files.append(generated.seg_path)
    return files


PER_SITE_PROTOCOL = "per-site"
"""Protocol name meaning "each site images on its own schedule" (:attr:`SiteProfile.protocol`)."""


def site_protocol(site: SiteProfile, protocol: str) -> str:
    """The protocol ``site`` images on: ``protocol``, or the site's own under ``"per-site"``."""
    return site.protocol if protocol == PER_SITE_PROTOCOL else protocol


def consortium_units(
    *,
    sites: Sequence[SiteProfile],
    n_patients: int,
    protocol: str,
    preset: str,
    phantoms: bool = True,
    imaging: ImagingMode = ImagingMode.BLUR,
) -> int:
    """Number of progress units :func:`generate_consortium` will report (one per phantom scan:
    two, three with ``realistic`` imaging's second NEMA contrast)."""
    chosen = CONSORTIUM_PRESETS[preset]
    total = 0
    for site in sites:
        schedule = protocol_named(site_protocol(site, protocol))
        points = sum(
            len(schedule.time_points_h_by_cycle[c])
            for c in schedule.imaged_cycles(chosen.max_cycles)
        )
        scans = 3 if imaging is ImagingMode.REALISTIC else 2
        total += (scans if phantoms else 0) + n_patients * points
    return total


def generate_consortium(
    out_dir: Path,
    *,
    seed: int = 20261124,
    preset: str = "test",
    sites: Sequence[SiteProfile] = CONSORTIUM_SITES,
    n_patients: int = 1,
    protocol: str = DEFAULT_PROTOCOL,
    realism: Realism = Realism(),
    phantoms: bool = True,
    progress: ProgressReporter | None = None,
    pretherapy_pet: bool = False,
    pet_only_patients: int = 0,
    noise_seed: int | None = None,
) -> GeneratedConsortium:
    """Write the digital consortium under ``out_dir`` (layout in the module docstring).

    Args:
        out_dir: output folder (created).
        seed: consortium seed; patients and phantom fills are drawn from it.
        preset: a key of :data:`CONSORTIUM_PRESETS`.
        sites: the sites to simulate (default: the four of :data:`CONSORTIUM_SITES`).
        n_patients: virtual patients, each imaged at every site.
        protocol: imaging protocol name (:data:`phantoms.protocols.PROTOCOLS`), or
            ``"per-site"``: each site images on its own schedule (the heterogeneity the
            harmonisation must absorb); patients' anatomy and kinetics are the same either way.
        realism: which effects to simulate.
        phantoms: whether to write each site's phantom scans.
        progress: receives one unit per phantom scan and per patient time point.
        pretherapy_pet: also write each patient's pre-therapy [68Ga]Ga-DOTATATE PET/CT
            (:mod:`phantoms.pretherapy_pet`) in ``patients/<subject>/dicom/pet/`` with its truth
            ``patients/<subject>/pretherapy_pet.json``.
        pet_only_patients: this many further patients (numbered after the ``n_patients``) with
            a pre-therapy PET/CT and a SEG on its CT only, no therapy yet (the truth of their
            future first cycle in ``patients/<subject>/therapy_truth.json``, no images).
        noise_seed: the patients' images draw their noise from this seed instead of ``seed``
            (None: from ``seed``): the same patients, fills, phantom scans and site outlines,
            scanned again — a repeat scan, whose difference from the ``seed`` run is count
            noise alone (``benchmarks/harmonisation.py --noise-floor``). Their UIDs differ.

    Raises:
        ValueError: unknown preset or protocol, no site, fewer than one patient, duplicate site
            ids, or counts that overflow uint16.
    """
    if preset not in CONSORTIUM_PRESETS:
        raise ValueError(
            f"unknown consortium preset {preset!r}; expected one of {sorted(CONSORTIUM_PRESETS)}"
        )
    try:
        for site in sites:
            protocol_named(site_protocol(site, protocol))
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from exc
    if not sites or n_patients < 1:
        raise ValueError(
            f"need at least one site and one patient; got {len(sites)} and {n_patients}"
        )
    site_ids = [s.site_id for s in sites]
    if len(set(site_ids)) != len(site_ids):
        raise ValueError(f"duplicate site ids in {site_ids}")
    chosen = CONSORTIUM_PRESETS[preset]
    if progress is not None:
        progress.start(
            consortium_units(
                sites=sites,
                n_patients=n_patients,
                protocol=protocol,
                preset=preset,
                phantoms=phantoms,
                imaging=realism.imaging,
            )
        )
    drawn: dict[tuple[str, int], VirtualPatient] = {}

    def patient(schedule_name: str, number: int) -> VirtualPatient:
        # Anatomy and kinetics depend on (seed, number) only; the schedule sets time points.
        if (schedule_name, number) not in drawn:
            drawn[schedule_name, number] = draw_virtual_patient(
                seed,
                number,
                protocol=protocol_named(schedule_name),
                max_cycles=chosen.max_cycles,
                n_lesions_range=chosen.n_lesions_range,
                lesion_volume_range_ml=chosen.lesion_volume_range_ml,
                ct_shift_max_mm=realism.ct_shift_max_mm,
                lesion_volume_sampling=chosen.lesion_volume_sampling,
                anatomy_realism=realism.anatomy_realism,
                sink_effect=realism.sink_effect,
            )
        return drawn[schedule_name, number]

    subjects = tuple(f"P{number:03d}" for number in range(1, n_patients + 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    generated_sites = []
    for site in sites:
        site_dir = out_dir / "sites" / site.site_id
        scans: tuple[PhantomScan, ...] = ()
        if phantoms:
            scans = scan_site_phantoms(
                site,
                site_dir,
                seed=seed,
                preset=chosen.grid_preset,
                noise=realism.noise,
                imaging=realism.imaging,
                realistic=realism.realistic_settings,
            )
            if realism.imaging is ImagingMode.REALISTIC:
                # The NEMA phantom at the second EARL contrast: OSEM's threshold depends on
                # contrast (quant.delineation.ThresholdSurface); the blur mode is linear and
                # keeps its two scans (and its files) as before.
                scans += (
                    scan_nema_second_contrast(
                        site,
                        site_dir,
                        scans[1],
                        seed=seed,
                        preset=chosen.grid_preset,
                        noise=realism.noise,
                        imaging=realism.imaging,
                        realistic=realism.realistic_settings,
                    ),
                )
            if progress is not None:
                for scan in scans:
                    progress.advance(f"{site.site_id} phantom {scan.kind.value}")
        truths: list[Path] = []
        files: list[Path] = []
        schedule_name = site_protocol(site, protocol)
        for number in range(1, n_patients + 1):
            virtual = patient(schedule_name, number)
            truth_path, written = _write_patient_at_site(
                virtual,
                site,
                site_dir / "patients" / virtual.subject,
                seed=seed,
                preset=chosen,
                protocol_name=schedule_name,
                realism=realism,
                progress=progress,
                noise_seed=noise_seed,
            )
            truths.append(truth_path)
            files.extend(written)
        # --- issue 20 item 3: pre-therapy PET/CT (after the therapy images; opt-in) ---
        pet_files: list[Path] = []
        if pretherapy_pet or pet_only_patients:
            for number in range(1, n_patients + pet_only_patients + 1):
                pet_files.extend(
                    _write_pretherapy_pet(
                        patient(schedule_name, number),
                        site,
                        site_dir / "patients" / f"P{number:03d}",
                        seed=seed,
                        preset=chosen,
                        pet_only=number > n_patients,
                    )
                )
        generated_sites.append(
            GeneratedSite(
                site=site,
                folder=site_dir,
                phantom_scans=scans,
                ground_truth_paths=tuple(truths),
                dicom_files=tuple(files),
                pet_files=tuple(pet_files),
            )
        )
    sites_path = out_dir / "sites.yaml"
    sites_path.write_text(
        yaml.safe_dump(sites_registry_document(sites), sort_keys=False), encoding="utf-8"
    )
    index = {
        "format": CONSORTIUM_FORMAT,
        "format_version": CONSORTIUM_FORMAT_VERSION,
        "seed": seed,
        **({} if noise_seed is None else {"noise_seed": noise_seed}),  # a repeat scan
        "preset": preset,
        "protocol": protocol,
        "realism": realism.document(),
        "subjects": list(subjects),
        # issue 20 item 3: only when asked for, so that files made without it are unchanged
        **(
            {
                "pretherapy_pet": {
                    "pet_only_subjects": [
                        f"P{n:03d}"
                        for n in range(n_patients + 1, n_patients + pet_only_patients + 1)
                    ]
                }
            }
            if pretherapy_pet or pet_only_patients
            else {}
        ),
        "sites": [
            {
                "site_id": g.site.site_id,
                "calling_ae_title": g.site.calling_ae_title,
                "protocol": site_protocol(g.site, protocol),
                "folder": str(g.folder.relative_to(out_dir)),
                "phantom_scans": [str(s.folder.relative_to(out_dir)) for s in g.phantom_scans],
                "ground_truth": [str(p.relative_to(out_dir)) for p in g.ground_truth_paths],
                "effective_fwhm_mm": g.site.effective_fwhm_mm,
                "calibration_factor_cps_per_mbq": g.site.calibration_factor_cps_per_mbq,
                "dose_calibrator_bias": g.site.dose_calibrator_bias,
                "nm_voxel_mm": g.site.nm_voxel_mm,
                "collimator": g.site.collimator,
                "radius_of_rotation_mm": g.site.radius_of_rotation_mm,
                "reconstruction": g.site.recon.description,
            }
            for g in generated_sites
        ],
    }
    index_path = out_dir / "consortium.json"
    index_path.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    reference_objects_path = out_dir / "reference_objects.yaml"
    reference_object_registry(generated_sites).write(reference_objects_path)
    return GeneratedConsortium(
        out_dir=out_dir,
        index_path=index_path,
        sites_path=sites_path,
        sites=tuple(generated_sites),
        subjects=subjects,
        reference_objects_path=reference_objects_path,
    )


__all__ = [
    "CONSORTIUM_PRESETS",
    "PER_SITE_PROTOCOL",
    "ConsortiumPreset",
    "GeneratedConsortium",
    "GeneratedSite",
    "PatientScene",
    "ProgressReporter",
    "Realism",
    "consortium_patient_info",
    "consortium_units",
    "generate_consortium",
    "patient_scene",
    "reference_object_registry",
    "site_protocol",
]
