"""The receiver's side: a ready cycle's instances go to the raw store, then its manifest.

Called on the completion hook's path before a ``process-cycle`` run is started (the hooks in
``flows/triggers.py``), so a worker never sees a manifest whose instances are not all stored: the
instances go first (each skipped when the store already holds its hash), the manifest last. A
failure raises, the hook's event stays pending and the receiver retries its delivery later; the
retry sends only what is still missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from concordose.errors import UnreadableDicomError
from concordose.payloads.manifest import CycleManifest, ManifestInstance, ManifestTimePoint
from concordose.payloads.store import RawStore
from concordose.settings import Settings
from concordose.spool.cycles import CycleRecord
from concordose.spool.store import Spool

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadReport:
    """What one cycle's upload did.

    Attributes:
        manifest_uri: where its manifest is (the ``process-cycle`` parameter).
        uploaded: instances sent.
        present: instances the store already held (nothing sent).
        bytes_uploaded: bytes sent for instances.
        manifest_written: False when the store already held this revision's manifest (a
            re-delivered event: nothing at all was sent).
    """

    manifest_uri: str
    uploaded: int
    present: int
    bytes_uploaded: int
    manifest_written: bool


def upload_cycle(
    spool: Spool, record: CycleRecord, raw: RawStore, now: datetime | None = None
) -> UploadReport:
    """Put the cycle's instances into ``raw`` (content-addressed, idempotent), then its manifest.

    Raises:
        BucketMissingError, StoreAccessDeniedError, StoreUnavailableError: the store (the
            messages name it); nothing is half-visible, the manifest is written last.
        UnreadableDicomError: an indexed file vanished from the spool (no manifest written).
    """
    members = record.members
    rows = spool.cycle_instances(members)
    entries = []
    uploaded = present = sent_bytes = 0
    for row in rows:
        if not row.path.is_file():
            raise UnreadableDicomError(row.path, "listed in the spool index but missing on disk")
        put = raw.put_instance(row.path)
        if put.uploaded:
            uploaded += 1
            sent_bytes += put.size_bytes
        else:
            present += 1
        entries.append(
            ManifestInstance(
                sha256=put.sha256,
                size_bytes=put.size_bytes,
                study_uid=row.identity.study_uid,
                sop_class_uid=row.identity.sop_class_uid,
                calling_ae_title=row.calling_ae_title,
            )
        )
    time_points = [
        ManifestTimePoint(study_uid=uid, revision=spool.timepoint(uid).revision, shared=shared)
        for uids, shared in ((members.study_uids, False), (members.shared_study_uids, True))
        for uid in uids
    ]
    manifest = CycleManifest(
        spool_id=spool.spool_id,
        cycle_id=members.cycle_id,
        content_revision=members.content_revision,
        cycle_number=spool.cycle_number(members),
        created_at=now or datetime.now(UTC),
        time_points=tuple(time_points),
        instances=tuple(entries),
    )
    written = not raw.has_manifest(members.cycle_id, members.content_revision)
    # The same revision has the same studies at the same revisions, so the same instances: a
    # manifest already there is this one (only its created_at would differ).
    uri = (
        raw.write_manifest(manifest)
        if written
        else raw.manifest_uri(members.cycle_id, members.content_revision)
    )
    LOG.info(
        "cycle %s revision %s: %d instance(s) uploaded (%d bytes), %d already in the raw store;"
        " manifest %s",
        members.cycle_id,
        members.content_revision,
        uploaded,
        sent_bytes,
        present,
        uri,
    )
    return UploadReport(uri, uploaded, present, sent_bytes, written)


def upload_if_configured(
    spool: Spool, record: CycleRecord, settings: Settings | None = None
) -> str | None:
    """The hooks' entry: upload the cycle when ``CONCORDOSE_RAW_STORE_URI`` is set and return
    its manifest URI; None (nothing done) when it is not — the worker then reads the spool."""
    settings = settings or Settings()
    if not settings.raw_store_uri:
        return None
    raw = RawStore.open(settings.raw_store_uri, settings)
    return upload_cycle(spool, record, raw).manifest_uri
