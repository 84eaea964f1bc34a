"""The consortium run: the digital consortium through the whole platform, three times.

``run_consortium(out_dir, …)`` (``concordose consortium``):

1. generates the digital consortium under ``out_dir/input`` (phantom scans and the same virtual
   patients at every site; the virtual patients are registered as reference objects,
   ``input/reference_objects.yaml``);
2. writes one configuration per processing variant under ``out_dir/config/<variant>/`` (site
   registry and protocol folder, :mod:`concordose.consortium.variants`) and calibrates every
   site from its phantom scans into the phantom-calibrated variants' ledgers;
3. sends every site's studies by C-STORE, with the site's calling AE title, to the platform's
   receiver on a loopback port, into one spool (``out_dir/spool``);
4. processes every cycle once per variant with the ``process-spool`` flow, into that variant's
   store ``out_dir/output/variants/<variant>``;
5. builds ``harmonisation_agreement`` from the variants' current ``kinetics`` and
   ``absorbed_dose`` rows and the truth sheet, and publishes it with the calibration records
   applied (``site_calibrations``) into ``out_dir/output``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from concordose.calibration.calibrate import calibrate_site
from concordose.calibration.ledger import append_record
from concordose.calibration.phantom_geometry import PhantomKind
from concordose.calibration.protocol import load_protocol
from concordose.calibration.records import CalibrationRecord
from concordose.calibration.registry import SiteRegistry
from concordose.consortium import (
    VARIANTS,
    HarmonisationResult,
    ProcessingVariant,
    ReferenceObjectRegistry,
    VariantConfig,
    VariantTables,
    build_harmonisation_agreement,
    write_variant_config,
)
from concordose.errors import ConcordoseError
from concordose.flows.demo import demo_pseudonym_key
from concordose.flows.sweep import SweepResult, process_spool
from concordose.ingest.receiver import StorageReceiver
from concordose.ingest.sender import send_files
from concordose.phantoms.consortium import (
    GeneratedConsortium,
    ProgressReporter,
    Realism,
    generate_consortium,
)
from concordose.phantoms.imaging import ImagingMode
from concordose.phantoms.site_profiles import SiteProfile
from concordose.reconstruction.protocol import SiteReconstruction
from concordose.results.calibration_table import build_site_calibrations
from concordose.results.catalogue import read_current
from concordose.results.object_store import open_object_store
from concordose.results.provenance import Provenance, new_run_id
from concordose.results.publish import PublishedRun, publish_tables
from concordose.run_folder import fresh_run_folder
from concordose.settings import Settings
from concordose.spool.store import Spool

CONSORTIUM_MARKER = ".concordose-consortium"
RECEIVER_AE_TITLE = "CONCORDOSE"
PROTOCOL_DIR_ENV = "CONCORDOSE_PROTOCOL_DIR"


class ConsortiumProgress(ProgressReporter, Protocol):
    """The run's progress. Each stage announces its units with ``start`` as soon as they are
    known (generated scans and time points, calibrated sites, sent files, cycles × variants,
    the publication), so ``start`` *adds* to the total; one ``advance`` per unit done."""

    def advance_by(self, units: int, description: str) -> None:
        """``units`` units done at once (e.g. a variant's cycles after its sweep)."""


@dataclass(frozen=True)
class ConsortiumResult:
    """What the run did.

    Attributes:
        generated: the digital consortium written.
        calibrations: the phantom-derived record of each site.
        sweeps: per variant, what processing did.
        harmonisation: the comparison built.
        published: the publication of ``harmonisation_agreement`` and ``site_calibrations``.
        output_dir: ``out_dir/output``.
        sent: instances sent by C-STORE.
        outcomes: per variant, per site, cycles ``processed``, ``held`` and ``failed``.
    """

    generated: GeneratedConsortium
    calibrations: dict[str, CalibrationRecord]
    sweeps: dict[ProcessingVariant, SweepResult]
    harmonisation: HarmonisationResult
    published: PublishedRun
    output_dir: Path
    sent: int
    outcomes: dict[ProcessingVariant, dict[str, dict[str, int]]]


def outcomes_by_site(sweep: SweepResult) -> dict[str, dict[str, int]]:
    """Site → outcome (``processed``, ``held``, …, ``failed``) → cycles, from a sweep's runs
    (the site is the one their published rows carry; a failed run published none:
    ``unknown``)."""
    counts: dict[str, dict[str, int]] = {}
    for run in sweep.runs:
        sites = {
            str(value)
            for table in run.tables.values()
            if "site_id" in table.column_names
            for value in table.column("site_id").unique().to_pylist()
        }
        site = min(sites) if sites else "unknown"
        counts.setdefault(site, {}).setdefault(run.outcome, 0)
        counts[site][run.outcome] += 1
    if sweep.failed:
        counts.setdefault("unknown", {})["failed"] = len(sweep.failed)
    return counts


def prepare_run_folder(out_dir: Path) -> None:
    """Empty ``out_dir`` for a fresh run, refusing a folder the command did not make.

    Raises:
        ConcordoseError: ``out_dir`` is a file, or a non-empty folder without the run's marker.
    """
    fresh_run_folder(
        out_dir,
        marker=CONSORTIUM_MARKER,
        command="concordose consortium",
        name="--out",
        not_ours="made by `concordose consortium`; choose an empty or new folder",
    )


@contextmanager
def protocol_folder(folder: Path) -> Iterator[None]:
    """``CONCORDOSE_PROTOCOL_DIR`` set to ``folder`` for the block (read by every cycle run in
    this process), restored afterwards."""
    previous = os.environ.get(PROTOCOL_DIR_ENV)
    os.environ[PROTOCOL_DIR_ENV] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PROTOCOL_DIR_ENV, None)
        else:
            os.environ[PROTOCOL_DIR_ENV] = previous


def _modelled_reconstruction(
    site_id: str, protocol_dirs: Sequence[Path]
) -> SiteReconstruction | None:
    """The site's reconstruction in the first of ``protocol_dirs`` whose protocol images
    through it (None: none does), each folder read as its variant's cycles will be."""
    for folder in protocol_dirs:
        with protocol_folder(folder):
            reconstruction = load_protocol(site_id).modelled_reconstruction()
        if reconstruction is not None:
            return reconstruction
    return None


def _calibrate(
    generated: GeneratedConsortium, configs: Sequence[VariantConfig], progress: ConsortiumProgress
) -> dict[str, CalibrationRecord]:
    """Every site's record from its phantom scans, appended to each phantom-calibrated ledger.

    The window's scatter is fitted too where the correcting variant's protocol images through
    the site's reconstruction (``SiteProtocol.modelled_reconstruction``)."""
    records = {}
    ledgers = [c.ledger_path for c in configs if c.ledger_path is not None]
    correcting = [c.protocol_dir for c in configs if c.variant.partial_volume_correction]
    for site in generated.sites:
        sheets = {scan.kind: scan.sheet_path for scan in reversed(site.phantom_scans)}
        # The first NEMA scan calibrates; further ones (realistic imaging's second contrast)
        # give the contrast-dependent lesion threshold.
        further = [
            scan.sheet_path for scan in site.phantom_scans if scan.kind is PhantomKind.NEMA_IEC_BODY
        ][1:]
        profile = site.site
        calibration = calibrate_site(
            site_id=profile.site_id,
            cylinder_sheet=sheets[PhantomKind.UNIFORM_CYLINDER],
            nema_sheet=sheets[PhantomKind.NEMA_IEC_BODY],
            record_id=f"{profile.site_id}-phantom-consortium",
            valid_from=profile.calibration_valid_from,
            ledger=None,
            created_by="concordose consortium",
            further_nema_sheets=further,
            reconstruction=_modelled_reconstruction(profile.site_id, correcting),
        )
        uids = (
            calibration.cylinder.acquisition.study_uid,
            calibration.nema.acquisition.study_uid,
            *(a.study_uid for a in calibration.further_nema),
        )
        for ledger in ledgers:
            append_record(
                ledger,
                profile.site_id,
                calibration.record,
                source_study_uids=uids,
                created_by="concordose consortium",
            )
        records[profile.site_id] = calibration.record
        progress.advance(f"calibrated {profile.site_id}")
    return records


def _send(
    generated: GeneratedConsortium,
    spool_dir: Path,
    registry: SiteRegistry,
    progress: ConsortiumProgress,
) -> int:
    """Every site's patient studies by C-STORE to a receiver on a loopback port."""
    receiver = StorageReceiver(
        Spool(spool_dir),
        ae_title=RECEIVER_AE_TITLE,
        port=0,
        allowed_calling_ae_titles=registry.ae_titles,
    )
    sent = 0
    with receiver:
        for site in generated.sites:
            title = site.site.calling_ae_title
            site_id = site.site.site_id

            def on_sent(_path: Path, site_id: str = site_id) -> None:
                progress.advance(f"C-STORE {site_id}")

            report = send_files(
                site.dicom_files,
                host="127.0.0.1",
                port=receiver.port,
                called_ae_title=RECEIVER_AE_TITLE,
                calling_ae_title=title,
                on_sent=on_sent,
            )
            if report.refused:
                path, status = report.refused[0]
                raise ConcordoseError(
                    f"the receiver refused {len(report.refused)} file(s) from {title}, "
                    f"e.g. {path} with status 0x{status:04X}"
                )
            sent += report.sent
        # Every file is sent: complete the time points now rather than after the quiet period.
        for record in receiver.spool.timepoints():
            receiver.completion.trigger(record.study_uid, "consortium: every file sent")
    return sent


def run_consortium(
    out_dir: Path,
    *,
    sites: Sequence[SiteProfile],
    n_patients: int,
    preset: str,
    seed: int = 20261124,
    progress: ConsortiumProgress,
    on_step: Callable[[str], None] = lambda _message: None,
    imaging: ImagingMode = ImagingMode.BLUR,
    realism: Realism | None = None,
    partial_volume_model: str | None = None,
    noise_seed: int | None = None,
    variants: Sequence[ProcessingVariant] = VARIANTS,
) -> ConsortiumResult:
    """Generate, calibrate, receive, process per variant, compare, publish (module docstring).

    ``imaging`` is the generator's image formation (``blur`` or ``realistic``), for the patients
    and the phantom scans the sites are calibrated from alike; ``realistic`` also draws
    irregular lesions, breathing and each site's segmentation
    (:meth:`phantoms.consortium.Realism.of_imaging`). ``realism``, when given, replaces those
    switches altogether (e.g. realistic imaging of today's anatomy, to apportion the effects).
    ``partial_volume_model`` replaces the protocols' partial-volume model in the correcting
    variant (e.g. ``perturbation_gtm``, to measure it against the default); None keeps theirs,
    except that ``blur`` imaging forms no reconstruction for a site's ``perturbation_gtm`` to
    image through: such a site gets ``gtm_platform_voi`` there (``write_variant_config``).
    ``noise_seed``: the patients' images draw their noise from it (``generate_consortium``): a
    repeat scan of the same consortium. ``variants``: the processing variants run (default
    all three; a repeat scan measured in one needs only that one).

    Raises:
        ConcordoseError: bad arguments (unknown preset, no site, no variant), a refused file,
            or nothing to compare (every cycle held or failed in a variant; the message says
            which).
    """
    if not variants:
        raise ConcordoseError("no processing variant to run: expected at least one")
    prepare_run_folder(out_dir)
    if not os.environ.get("CONCORDOSE_PSEUDONYM_KEY"):
        # As the demo: the flows read the secret from the environment only.
        os.environ["CONCORDOSE_PSEUDONYM_KEY"] = demo_pseudonym_key(out_dir).get_secret_value()
    on_step(
        f"generating the digital consortium: {', '.join(s.site_id for s in sites)}, "
        f"{n_patients} patient(s), preset {preset!r}, imaging {imaging.value!r}"
    )
    switches = realism or Realism.of_imaging(imaging)
    try:
        generated = generate_consortium(
            out_dir / "input",
            seed=seed,
            preset=preset,
            sites=sites,
            n_patients=n_patients,
            realism=switches,
            progress=progress,
            noise_seed=noise_seed,
        )
    except ValueError as exc:
        raise ConcordoseError(str(exc)) from exc
    registry = SiteRegistry.load(generated.sites_path)
    configs = {
        variant: write_variant_config(
            registry,
            variant,
            out_dir / "config" / variant.value,
            partial_volume_model=partial_volume_model,
            images_reconstructed=switches.imaging is ImagingMode.REALISTIC,
        )
        for variant in variants
    }
    progress.start(len(generated.sites))
    on_step("calibrating every site from its phantom scans (uniform cylinder, NEMA IEC body)")
    calibrations = _calibrate(generated, list(configs.values()), progress)

    files = sum(len(site.dicom_files) for site in generated.sites)
    spool_dir = out_dir / "spool"
    progress.start(files)
    on_step(f"sending {files} DICOM files by C-STORE to the receiver on 127.0.0.1")
    sent = _send(generated, spool_dir, registry, progress)

    references = ReferenceObjectRegistry.load(generated.reference_objects_path)
    n_cycles = sum(len(ref.measurements) for ref in references.reference_objects)
    progress.start(n_cycles * len(configs) + 1)
    output_dir = out_dir / "output"
    sweeps: dict[ProcessingVariant, SweepResult] = {}
    published_tables: dict[ProcessingVariant, VariantTables] = {}
    settings = Settings()
    for variant, config in configs.items():
        target = output_dir / "variants" / variant.value
        on_step(f"processing every cycle, variant {variant.value} → {target}")
        with protocol_folder(config.protocol_dir):
            sweep = process_spool(spool_dir, config.sites_path, output_uri=target.as_posix())
        sweeps[variant] = sweep
        progress.advance_by(sweep.considered, f"processed variant {variant.value}")
        store = open_object_store(target.as_posix(), settings)
        if not sweep.processed:
            reasons = "; ".join(
                [f"{run.cycle_id} held: {run.reason}" for run in sweep.held]
                + [f"{cycle} failed: {reason}" for cycle, reason in sweep.failed.items()]
            )
            raise ConcordoseError(f"variant {variant.value}: no cycle was processed ({reasons})")
        published_tables[variant] = VariantTables(
            kinetics=read_current(store, "kinetics"),
            absorbed_dose=read_current(store, "absorbed_dose"),
        )

    provenance = Provenance(run_id=new_run_id())
    harmonisation = build_harmonisation_agreement(
        references.reference_objects, published_tables, Settings().pseudonym_key, provenance
    )
    records = [(site_id, record) for site_id, record in calibrations.items()]
    records += [(site.site_id, site.nominal_calibration()) for site in registry.sites]
    published = publish_tables(
        open_object_store(output_dir.as_posix(), settings),
        {
            "harmonisation_agreement": [harmonisation.table],
            "site_calibrations": [build_site_calibrations(records, provenance)],
        },
        provenance,
    )
    progress.advance("published harmonisation_agreement")
    return ConsortiumResult(
        generated=generated,
        calibrations=calibrations,
        sweeps=sweeps,
        harmonisation=harmonisation,
        published=published,
        output_dir=output_dir,
        sent=sent,
        outcomes={variant: outcomes_by_site(sweep) for variant, sweep in sweeps.items()},
    )


__all__ = [
    "CONSORTIUM_MARKER",
    "ConsortiumProgress",
    "ConsortiumResult",
    "outcomes_by_site",
    "prepare_run_folder",
    "protocol_folder",
    "run_consortium",
]
