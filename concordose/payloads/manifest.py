"""What a cycle's raw payload is in the raw store: its manifest, and where each object lives.

Layout under the raw store's base (``CONCORDOSE_RAW_STORE_URI``)::

    instances/sha256/<aa>/<sha256>.dcm       one object per distinct instance content
    cycles/<cycle id>/<content revision>.json a cycle manifest (written last)
    outcomes/<cycle id>/<content revision>.json what the worker's run recorded

Keys carry content hashes and the spool's keyed cycle id only: no patient identifier, no date.
The manifest holds what the spool index already keys by (study UIDs, SOP classes, calling AE
titles) and each instance's SHA-256 and size; the patient and the injection stay in the DICOM
payloads themselves, from which the worker reads them as the receiver did.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from concordose.errors import ConcordoseError
from concordose.spool.cycles import CycleState

MANIFEST_FORMAT = "concordose-cycle-manifest"
MANIFEST_VERSION = 1

INSTANCES_FOLDER = "instances/sha256"
CYCLES_FOLDER = "cycles"
OUTCOMES_FOLDER = "outcomes"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MANIFEST_KEY = re.compile(
    r"^(?P<root>.+)/cycles/(?P<cycle>[0-9a-f]+)/(?P<revision>[0-9a-f]+)\.json$"
)


class ManifestError(ConcordoseError):
    """A manifest URI or document that is not what a worker can run from."""


def instance_key(sha256: str) -> str:
    """Key of the instance whose content hashes to ``sha256`` (lowercase hex), relative to the
    raw store's base: ``instances/sha256/<first two hex digits>/<sha256>.dcm``.

    Raises:
        ManifestError: ``sha256`` is not 64 lowercase hex digits.
    """
    if not _SHA256.match(sha256):
        raise ManifestError(f"expected a SHA-256 as 64 lowercase hex digits, found {sha256!r}")
    return f"{INSTANCES_FOLDER}/{sha256[:2]}/{sha256}.dcm"


def manifest_key(cycle_id: str, content_revision: str) -> str:
    """Key of a cycle manifest, relative to the raw store's base."""
    return f"{CYCLES_FOLDER}/{cycle_id}/{content_revision}.json"


def outcome_key(cycle_id: str, content_revision: str) -> str:
    """Key of the outcome a worker recorded for a cycle revision, relative to the base."""
    return f"{OUTCOMES_FOLDER}/{cycle_id}/{content_revision}.json"


def split_manifest_uri(uri: str) -> tuple[str, str, str]:
    """``(raw store URI, cycle id, content revision)`` of a manifest URI
    (``<raw store>/cycles/<cycle id>/<revision>.json``).

    Raises:
        ManifestError: the URI does not end that way.
    """
    match = _MANIFEST_KEY.match(uri.rstrip("/"))
    if match is None:
        raise ManifestError(
            f"manifest URI {uri!r}: expected <raw store>/cycles/<cycle id>/<revision>.json"
        )
    return match["root"], match["cycle"], match["revision"]


class ManifestTimePoint(BaseModel):
    """One time point (study) of the cycle as the spool saw it.

    Attributes:
        study_uid: its StudyInstanceUID.
        revision: its revision in the spool (1, then +1 each time late instances reopened it).
        shared: a visit without injection data, shared by the patient's cycles (CT/SEG only).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    study_uid: str
    revision: int = Field(ge=1)
    shared: bool = False


class ManifestInstance(BaseModel):
    """One instance of the cycle, in the spool's order of arrival.

    Attributes:
        sha256: hash of the file's bytes (its object key).
        size_bytes: the file's size.
        study_uid: the time point it belongs to.
        sop_class_uid: its SOP class.
        calling_ae_title: who sent it (the site is resolved from it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str = Field(pattern=_SHA256.pattern)
    size_bytes: int = Field(ge=0)
    study_uid: str
    sop_class_uid: str
    calling_ae_title: str


class CycleManifest(BaseModel):
    """Everything a worker needs to run ``process-cycle`` without the spool.

    Attributes:
        format, version: what this document is.
        spool_id: the spool's UUID (what the cycle id is keyed by).
        cycle_id: the cycle's keyed id (no identifier).
        content_revision: the cycle content this manifest holds.
        cycle_number: the cycle's number in the spool (rank by injection), or None.
        created_at: when the manifest was written (UTC).
        time_points: the cycle's studies with their revisions.
        instances: every instance of those studies.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = MANIFEST_FORMAT
    version: int = MANIFEST_VERSION
    spool_id: str
    cycle_id: str
    content_revision: str
    cycle_number: int | None
    created_at: datetime
    time_points: tuple[ManifestTimePoint, ...]
    instances: tuple[ManifestInstance, ...]

    @property
    def study_uids(self) -> tuple[str, ...]:
        """The cycle's own time points."""
        return tuple(tp.study_uid for tp in self.time_points if not tp.shared)

    @property
    def shared_study_uids(self) -> tuple[str, ...]:
        """The patient's visits without injection data that the cycle reads."""
        return tuple(tp.study_uid for tp in self.time_points if tp.shared)

    @classmethod
    def parse(cls, data: bytes, where: str) -> CycleManifest:
        """A manifest from its JSON bytes.

        Raises:
            ManifestError: not a cycle manifest of a version this code reads.
        """
        try:
            manifest = cls.model_validate_json(data)
        except ValueError as exc:
            raise ManifestError(
                f"manifest {where}: expected a {MANIFEST_FORMAT} JSON document, found invalid "
                f"content ({str(exc).splitlines()[0]})"
            ) from exc
        if manifest.format != MANIFEST_FORMAT or manifest.version != MANIFEST_VERSION:
            raise ManifestError(
                f"manifest {where}: expected {MANIFEST_FORMAT} version {MANIFEST_VERSION}, "
                f"found {manifest.format} version {manifest.version}"
            )
        return manifest


class RecordedOutcome(BaseModel):
    """What a worker's run recorded for a cycle revision in the raw store (the spool's outcome,
    for a worker that cannot reach the spool).

    Attributes:
        cycle_id, content_revision: the manifest it is for.
        state: ``processed``, ``held`` or ``failed``.
        reason: why held or failed (no patient identifiers).
        run_id: the publication run, if any.
        recorded_at: when (UTC).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cycle_id: str
    content_revision: str
    state: CycleState
    reason: str | None = None
    run_id: str | None = None
    recorded_at: datetime
