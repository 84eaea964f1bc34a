"""The worker's side: a cycle manifest becomes a local folder ``process-cycle`` runs on as today.

:func:`open_manifest` reads a manifest; :func:`stage_cycle` streams its instances into a folder
(each checked against its SHA-256) and gives back what the flow otherwise reads from the spool's
index: the cycle's members, its catalogued instances (with the calling AE titles the receiver
saw) and its number.
The patient and the injection, which the manifest does not carry, are read from the instances'
own headers, and checked to give the manifest's cycle id (the spool's keyed hash), so a manifest
whose payloads belong to another cycle is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from concordose.payloads.manifest import CycleManifest, ManifestError, split_manifest_uri
from concordose.payloads.store import RawStore
from concordose.pipeline.catalogue import CataloguedInstance
from concordose.settings import Settings
from concordose.spool.cycles import CycleMembers, cycle_id_for
from concordose.spool.timepoints import InstanceSummary


@dataclass(frozen=True)
class StagedCycle:
    """A cycle downloaded from the raw store.

    Attributes:
        manifest: its manifest.
        members: its time points, patient and injection (as the spool grouped them).
        instances: its instances in the folder, in the spool's order of arrival.
        raw: the raw store it came from (the worker records its outcome there).
    """

    manifest: CycleManifest
    members: CycleMembers
    instances: list[CataloguedInstance]
    raw: RawStore

    @property
    def cycle_number(self) -> int | None:
        """The cycle's number in its spool (computed when it was uploaded)."""
        return self.manifest.cycle_number


def open_manifest(manifest_uri: str, settings: Settings) -> tuple[RawStore, CycleManifest]:
    """The raw store a manifest URI points into, and the manifest.

    Raises:
        ManifestError: not a manifest URI or document.
        RawObjectMissingError: no manifest there.
        BucketMissingError, StoreAccessDeniedError, StoreUnavailableError: the store.
    """
    root, cycle_id, revision = split_manifest_uri(manifest_uri)
    raw = RawStore.open(root, settings)
    return raw, raw.read_manifest(cycle_id, revision)


def _members(manifest: CycleManifest, instances: list[CataloguedInstance]) -> CycleMembers:
    """The cycle's members: patient and injection from the first own-study header whose keyed
    hash is the manifest's cycle id."""
    own = set(manifest.study_uids)
    for instance in instances:
        if instance.study_uid not in own:
            continue
        summary = InstanceSummary.from_dataset(dcmread(instance.path, stop_before_pixels=True))
        if summary.injection_datetime is None:
            continue
        if cycle_id_for(manifest.spool_id, summary.patient_id, summary.injection_datetime) == (
            manifest.cycle_id
        ):
            return CycleMembers(
                cycle_id=manifest.cycle_id,
                patient_id=summary.patient_id,
                injection_datetime=summary.injection_datetime,
                study_uids=manifest.study_uids,
                shared_study_uids=manifest.shared_study_uids,
                content_revision=manifest.content_revision,
                receiving=False,
            )
    raise ManifestError(
        f"manifest of cycle {manifest.cycle_id} revision {manifest.content_revision}: expected "
        "an NM/PT instance of its own time points whose patient and injection key to that "
        "cycle id, found none; the manifest does not describe its instances"
    )


def newer_revision(raw: RawStore, manifest: CycleManifest) -> str | None:
    """The content revision of a manifest of the same cycle written after ``manifest``, if any
    (the run for ``manifest`` is then superseded: the newer one's run covers it)."""
    newest = raw.manifests(manifest.cycle_id)[-1:]
    if newest and newest[0].created_at > manifest.created_at:
        return newest[0].content_revision
    return None


def stage_cycle(raw: RawStore, manifest: CycleManifest, folder: Path) -> StagedCycle:
    """Download the cycle ``manifest`` names into ``folder`` (``<sha256>.dcm`` each).

    Raises:
        ManifestError, RawObjectMissingError, PayloadHashMismatchError: see
            :mod:`concordose.payloads.store`; nothing is processed from a bad download.
    """
    folder.mkdir(parents=True, exist_ok=True)
    instances = []
    for entry in manifest.instances:
        target = folder / f"{entry.sha256}.dcm"
        if not target.is_file():  # the same content twice in one cycle is fetched once
            raw.fetch_instance(entry, target)
        instances.append(
            CataloguedInstance(target, entry.sop_class_uid, entry.calling_ae_title, entry.study_uid)
        )
    return StagedCycle(manifest, _members(manifest, instances), instances, raw)
