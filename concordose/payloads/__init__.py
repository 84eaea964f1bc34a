"""Raw payloads through object storage (issue 19): a ready cycle's DICOM instances go to a raw
store (content-addressed, with a cycle manifest written last), so ``process-cycle`` workers need
no shared filesystem; retention of those payloads. Unset ``CONCORDOSE_RAW_STORE_URI``: nothing
here runs and workers read the spool."""

from concordose.payloads.download import StagedCycle, newer_revision, open_manifest, stage_cycle
from concordose.payloads.manifest import (
    CycleManifest,
    ManifestError,
    ManifestInstance,
    ManifestTimePoint,
    RecordedOutcome,
    instance_key,
    manifest_key,
    outcome_key,
    split_manifest_uri,
)
from concordose.payloads.outcomes import import_outcomes
from concordose.payloads.retention import PruneReport, expired_cycles, prune
from concordose.payloads.store import (
    PayloadHashMismatchError,
    PutResult,
    RawObjectMissingError,
    RawStore,
    sha256_of_file,
)
from concordose.payloads.upload import UploadReport, upload_cycle, upload_if_configured

__all__ = [
    "CycleManifest",
    "ManifestError",
    "ManifestInstance",
    "ManifestTimePoint",
    "PayloadHashMismatchError",
    "PruneReport",
    "PutResult",
    "RawObjectMissingError",
    "RawStore",
    "RecordedOutcome",
    "StagedCycle",
    "UploadReport",
    "expired_cycles",
    "import_outcomes",
    "instance_key",
    "manifest_key",
    "newer_revision",
    "open_manifest",
    "outcome_key",
    "prune",
    "sha256_of_file",
    "split_manifest_uri",
    "stage_cycle",
    "upload_cycle",
    "upload_if_configured",
]
