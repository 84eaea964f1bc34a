"""Preparing one treatment cycle for processing: assemble it, read its VOIs, gate it — once.

The outcome is a :class:`PreparedCycle`: either ready (the assembled study, its VOIs read once
for quantification and voxel dosimetry, and the gate's verdict with the calibration record to
use) or *held* with a reason a site can act on and the findings to publish. Nothing here raises
for a cycle's own content: a cycle that cannot be assembled (no SPECT, no SEG, SPECTs that
disagree), whose SEG is unreadable, or that fails the metadata checks or the calibration gate
is held, so it never blocks another cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from concordose.calibration.findings import Finding, Severity, malformed_header_finding
from concordose.calibration.gate import CycleVerdict, gate_cycle
from concordose.calibration.registry import SiteRegistry
from concordose.dicom.ct import check_ct_headers
from concordose.dicom.pseudonym import cycle_key, subject_key
from concordose.dicom.seg import VoiMask
from concordose.dicom.vois import read_voi_masks
from concordose.errors import (
    ConcordoseError,
    MalformedHeaderError,
    StudyIncompleteError,
    UnreadableDicomError,
)
from concordose.pipeline.assembly import (
    CycleStudy,
    assemble_cycle,
    with_interpreted_acquisitions,
)
from concordose.pipeline.catalogue import CataloguedInstance
from concordose.pipeline.working_set import WorkingSet, estimate_working_set
from concordose.results.cycle_tables import CycleIdentity
from concordose.spool.cycles import CycleMembers

UNKNOWN_SITE = "unknown"
"""``site_id`` published for a held cycle whose sender matches no site."""
MEMORY_BUDGET_CHECK = "memory_budget"
"""``check_name`` of the finding holding a cycle too large for the worker's memory budget."""
ASSEMBLY_CHECK = "cycle_assembly"
"""``check_name`` of the finding published for a cycle that cannot be assembled or read."""


@dataclass(frozen=True)
class PreparedCycle:
    """One cycle, assembled and gated (or held, with why).

    Attributes:
        study: the assembled cycle (None when it could not be assembled).
        vois: its VOI masks, read once (empty when held before reading them).
        verdict: the gate's verdict (None when the cycle could not be assembled).
        assembly_findings: the error that stopped assembly or reading, as findings.
        calling_ae_titles: who sent the cycle's instances (identifies the site when held early).
        working_set: the cycle's estimated memory (None when it could not be assembled).
    """

    study: CycleStudy | None
    vois: tuple[VoiMask, ...]
    verdict: CycleVerdict | None
    assembly_findings: tuple[Finding, ...] = ()
    calling_ae_titles: tuple[str, ...] = ()
    working_set: WorkingSet | None = None

    @property
    def held(self) -> bool:
        """True when the cycle must not be processed."""
        return self.study is None or self.verdict is None or self.verdict.held

    @property
    def findings(self) -> tuple[Finding, ...]:
        """Every finding: assembly first, then the gate's in time-point order."""
        gate = self.verdict.findings if self.verdict is not None else ()
        return self.assembly_findings + gate

    @property
    def held_reason(self) -> str | None:
        """The errors that hold the cycle, one line (None when it passes)."""
        if not self.held:
            return None
        errors = [f"{f.rule}: {f.message}" for f in self.findings if f.severity is Severity.ERROR]
        if not errors and self.verdict is not None and self.verdict.calibration is None:
            errors = ["no calibration record passed the gate"]
        return "; ".join(errors) or "held"


def _held_early(
    instances: list[CataloguedInstance], finding: Finding, working_set: WorkingSet | None = None
) -> PreparedCycle:
    return PreparedCycle(
        study=None,
        vois=(),
        verdict=None,
        assembly_findings=(finding,),
        calling_ae_titles=tuple(
            sorted({i.calling_ae_title for i in instances if i.calling_ae_title is not None})
        ),
        working_set=working_set,
    )


def _assembly_held(instances: list[CataloguedInstance], error: Exception) -> PreparedCycle:
    return _held_early(instances, Finding(ASSEMBLY_CHECK, Severity.ERROR, "cycle", str(error)))


def _memory_held(
    instances: list[CataloguedInstance], working_set: WorkingSet, budget_bytes: float
) -> PreparedCycle:
    message = (
        f"{working_set.describe()} exceeds the worker's memory budget "
        f"{budget_bytes / 1e9:.1f} GB (CONCORDOSE_MEMORY_BUDGET_GB); process it on a larger "
        "worker or raise the budget"
    )
    return _held_early(
        instances, Finding(MEMORY_BUDGET_CHECK, Severity.ERROR, "cycle", message), working_set
    )


def prepare_cycle(
    instances: list[CataloguedInstance],
    registry: SiteRegistry,
    *,
    site_id: str | None = None,
    read_vois: bool = True,
    memory_budget_bytes: float | None = None,
) -> PreparedCycle:
    """Assemble, read the VOIs (unless ``read_vois`` is False: a cheap re-check of a held
    cycle), check the CT slices' header values (:func:`~concordose.dicom.ct.check_ct_headers`)
    and gate one cycle.

    Args:
        instances: the cycle's instances only (:meth:`CycleSource.instances`).
        registry: the site registry (sites, calibration records, protocols).
        site_id: the site of the files when they did not come through the receiver.
        memory_budget_bytes: hold the cycle (before reading any pixel) when its estimated
            working set (:func:`~concordose.pipeline.working_set.estimate_working_set`) exceeds
            this; None: no limit.
    """
    try:
        study = assemble_cycle(instances)
        working_set = estimate_working_set(study)
        if memory_budget_bytes is not None and working_set.estimated_bytes > memory_budget_bytes:
            return _memory_held(instances, working_set, memory_budget_bytes)
        vois: tuple[VoiMask, ...] = ()
        if read_vois:
            vois = tuple(read_voi_masks(study.segmentation, study.segmentation_ct_files))
        for point in study.time_points:
            check_ct_headers(point.ct_files)  # issue 18: a malformed value holds, not fails
    except MalformedHeaderError as exc:
        return _held_early(instances, malformed_header_finding(exc))
    except (StudyIncompleteError, UnreadableDicomError) as exc:
        return _assembly_held(instances, exc)
    verdict = gate_cycle(
        [(point.acquisition, point.calling_ae_title) for point in study.time_points],
        registry,
        site_id=site_id,
    )
    if verdict.acquisitions:
        # What is processed is what the gate checked: site time zone, activity in MBq.
        study = with_interpreted_acquisitions(study, verdict.acquisitions)
    return PreparedCycle(
        study=study,
        vois=vois,
        verdict=verdict,
        working_set=working_set,
        calling_ae_titles=tuple(
            sorted({p.calling_ae_title for p in study.time_points if p.calling_ae_title})
        ),
    )


def cycle_identity(
    members: CycleMembers,
    prepared: PreparedCycle,
    registry: SiteRegistry,
    pseudonym_key: SecretStr | None,
    *,
    site_id: str | None = None,
    cycle_number: int | None = None,
) -> CycleIdentity:
    """The pseudonymous keys, site and number of a cycle, also when it is held before the gate
    ran.

    The site is the gate's; else the one ``site_id`` names; else the site of the calling AE
    title of the cycle's instances; else :data:`UNKNOWN_SITE`. ``cycle_number`` is the source's
    (:meth:`~concordose.pipeline.catalogue.CycleSource.cycle_number`), passed through.

    Raises:
        ConfigurationError: no pseudonymisation key (outside the demo it must be set).
    """
    patient_id = members.patient_id or ""
    site = prepared.verdict.site if prepared.verdict is not None else None
    if site is not None:
        site_name = site.site_id
    elif site_id is not None:
        site_name = site_id
    else:
        site_name = UNKNOWN_SITE
        for ae_title in prepared.calling_ae_titles:
            try:
                site_name = registry.site_for_ae_title(ae_title).site_id
            except ConcordoseError:
                continue
            break
    return CycleIdentity(
        subject_key=subject_key(patient_id, pseudonym_key),
        cycle_key=cycle_key(patient_id, members.injection_datetime.isoformat(), pseudonym_key),
        site_id=site_name,
        cycle_number=cycle_number,
    )
