"""The one settings object: every behaviour switch of the platform, read once and passed down.

Values come from environment variables prefixed ``CONCORDOSE_`` (and an optional ``.env`` file),
then from explicit keyword arguments (the CLI passes its options that way). Secrets are
:class:`pydantic.SecretStr` so they never appear in logs or reprs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from concordose.errors import ConfigurationError
from concordose.ingest.admission import DEFAULT_ADMISSION, AdmissionLimits
from concordose.spool.free_space import DEFAULT_FREE_RESERVE_MB
from concordose.spool.journal import DEFAULT_JOURNAL_MB

# A run's Data Docs pages are small (their assets are shared by all runs): 30 runs of history
# cost a few MB of the store.
DEFAULT_DATA_DOCS_KEEP_RUNS = 30

# --- task runner (issue 19: Dask scale-out) ----------------------------------------------------
TASK_RUNNER_DEFAULT = "default"
"""Cycles in this process's threads (at most ``max_concurrent_cycles``), voxel chunks here."""
TASK_RUNNER_DASK = "dask"
"""A Dask ``LocalCluster`` started for the run (one single-threaded worker process per core);
``dask:ADDRESS`` connects to an existing scheduler instead."""
_DASK_ADDRESS = re.compile(
    r"^(?:(?:tcp|tls|ws|wss|ucx)://)?(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:]+\]):\d+$"
)


def check_task_runner(value: str) -> str:
    """``value`` if it names a task runner: ``default``, ``dask`` or ``dask:ADDRESS`` (a Dask
    scheduler, ``[tcp|tls|ws|wss|ucx://]host:port``).

    Raises:
        ConfigurationError: anything else (names where the value comes from and what is
            expected).
    """
    if value in (TASK_RUNNER_DEFAULT, TASK_RUNNER_DASK):
        return value
    prefix = TASK_RUNNER_DASK + ":"
    if value.startswith(prefix) and _DASK_ADDRESS.match(value[len(prefix) :]):
        return value
    raise ConfigurationError(
        f"task runner {value!r} (--task-runner or CONCORDOSE_TASK_RUNNER) is not one of "
        f"'{TASK_RUNNER_DEFAULT}', '{TASK_RUNNER_DASK}' (a local Dask cluster for the run) or "
        f"'{prefix}ADDRESS' with ADDRESS a scheduler's [tcp://]host:port (e.g. "
        f"{prefix}tcp://dask-scheduler:8786)"
    )


def dask_scheduler_address(task_runner: str) -> str | None:
    """The scheduler address of a ``dask:ADDRESS`` task runner; ``None`` for the others.

    Raises:
        ConfigurationError: ``task_runner`` is not a task runner (:func:`check_task_runner`).
    """
    check_task_runner(task_runner)
    prefix = TASK_RUNNER_DASK + ":"
    return task_runner[len(prefix) :] if task_runner.startswith(prefix) else None


def resolve_task_runner(task_runner: str | None) -> str:
    """``task_runner`` checked, or ``CONCORDOSE_TASK_RUNNER`` (default ``default``) when None.

    Raises:
        ConfigurationError: not a task runner.
    """
    return Settings().task_runner if task_runner is None else check_task_runner(task_runner)


# --- end task runner ----------------------------------------------------------------------------


class Settings(BaseSettings):
    """Platform settings.

    Attributes:
        output_uri: where harmonised tables are published: a local folder (path or ``file://``)
            or ``s3://bucket/prefix`` (any S3-protocol server: MinIO, Ceph RGW, AWS).
        s3_endpoint: ``http(s)://host:port`` of the S3 server; ``None`` means AWS defaults.
        s3_access_key / s3_secret_key: credentials for the S3 server.
        s3_region: region name sent to the server (MinIO and moto accept any).
        s3_create_bucket: create the output bucket when it is missing (default: a clear error).
        s3_max_attempts: attempts in all per object-store request before giving up (network
            errors and 5xx only; refused credentials fail at once).
        s3_backoff_s: first retry delay; doubled after each failed attempt, at most 30 s.
        s3_connect_timeout_s / s3_request_timeout_s: per-attempt timeouts.
        pseudonym_key: the consortium secret keying subject pseudonyms (HMAC-SHA256). Never
            logged, never written to outputs.
        receiver_ae_title: our AE title as a storage SCP.
        receiver_host / receiver_port: where the receiver listens (all interfaces by default:
            the PACS routes to it).
        receiver_quiet_period_s: seconds of quiet after a time point's last association before
            it is complete.
        receiver_delivery_backoff_max_s: the longest wait between two attempts to deliver a
            completed time point's event while its hook fails (e.g. the Prefect server is down);
            the wait starts at 2 s and doubles per failed attempt up to this cap.
        receiver_max_associations: concurrent associations the receiver accepts.
        receiver_max_associations_per_site / receiver_max_unassociated /
        receiver_associate_deadline_s / receiver_pdu_deadline_s /
        receiver_check_called_ae_title: the receiver's admission control (associations open
            at once from one site; connections not yet associated; seconds from the connect
            to a complete A-ASSOCIATE-RQ; seconds from a PDU's first byte to its last;
            whether the called AE title must be ours): see
            :class:`concordose.ingest.admission.AdmissionLimits`, which holds the defaults.
        spool_journal_mb: total size (MB) of the receiver's write-ahead journal in the spool
            (16 segments): it bounds what is acknowledged and not yet filed; ``concordose
            receive`` allocates it once when the spool is new, so that much free space is
            needed then; 0 turns it off (each instance filed before it is acknowledged).
        spool_umask: the file-creation mask (octal) ``concordose receive`` runs with: the
            default ``027`` makes the spool's files 0640 and its folders 0750 (the service
            user reads and writes, its group reads, nobody else); ``077`` for owner only.
        spool_free_reserve_mb: free space (MB) kept on the spool's volume beyond what
            acknowledged instances still need to be filed; below it the receiver answers
            0xA700 (out of resources).
        max_pdu_bytes: maximum PDU size we accept (0 = unlimited).
        max_concurrent_cycles: cycles a sweep processes at once (each holds its images in
            memory: the bound that keeps a backlog from exhausting it).
        memory_budget_gb: memory a worker may use for cycles, GB: a cycle whose estimated
            working set exceeds it is held (with the sizes) instead of being killed by the
            kernel, and a sweep runs cycles together only while their estimates fit; default
            half of the machine's physical memory.
        data_docs_keep_runs: how many runs' Great Expectations Data Docs the store keeps under
            ``_data_docs/runs/`` (the newest; older ones are deleted when a run publishes).
        protocol_dir: a folder of site protocol files (``default.yaml``, ``<site_id>.yaml``)
            used instead of the packaged ``schemas/protocols`` (a consortium run uses one per
            processing variant, e.g. partial-volume correction on for all sites).
        metrics_port / metrics_host / log_format: observability (issue 19), see below.
        raw_store_uri: where a ready cycle's instances go for the workers (issue 19):
            ``s3://bucket/prefix`` (the S3 settings above) or a folder; instances are stored
            content-addressed and a cycle manifest names them (:mod:`concordose.payloads`), so a
            worker needs no shared filesystem. ``None`` (default) or empty: workers read the
            spool folder itself (one machine).
        raw_retention_days: days a processed cycle's raw payloads stay in the raw store
            (``concordose raw prune``); ``None`` (default): kept.
        task_runner: where a run's cycles and voxel chunks go: ``default`` (this process's
            threads), ``dask`` (a local Dask cluster started for the run) or ``dask:ADDRESS``
            (an existing Dask scheduler); the CLI's ``--task-runner`` overrides it.
    """

    model_config = SettingsConfigDict(
        env_prefix="CONCORDOSE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    output_uri: str = "concordose-output"
    s3_endpoint: str | None = None
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    s3_create_bucket: bool = False
    s3_max_attempts: int = Field(default=4, ge=1, le=20)
    s3_backoff_s: float = Field(default=0.5, ge=0.0)
    s3_connect_timeout_s: float = Field(default=3.0, gt=0.0)
    s3_request_timeout_s: float = Field(default=30.0, gt=0.0)
    pseudonym_key: SecretStr | None = None
    receiver_ae_title: str = Field(default="CONCORDOSE", max_length=16)
    receiver_host: str = "0.0.0.0"
    receiver_port: int = Field(default=11112, ge=0, le=65535)
    receiver_quiet_period_s: float = Field(default=300.0, ge=0.0)
    receiver_delivery_backoff_max_s: float = Field(default=300.0, gt=0.0)
    receiver_max_associations: int = Field(default=10, ge=1)
    receiver_max_associations_per_site: int = Field(
        default=DEFAULT_ADMISSION.max_associations_per_site, ge=1
    )
    receiver_max_unassociated: int = Field(default=DEFAULT_ADMISSION.max_unassociated, ge=1)
    receiver_associate_deadline_s: float = Field(
        default=DEFAULT_ADMISSION.associate_deadline_s, gt=0.0
    )
    receiver_pdu_deadline_s: float = Field(default=DEFAULT_ADMISSION.pdu_deadline_s, gt=0.0)
    receiver_check_called_ae_title: bool = DEFAULT_ADMISSION.check_called_ae_title
    spool_journal_mb: int = Field(default=DEFAULT_JOURNAL_MB, ge=0)
    spool_free_reserve_mb: int = Field(default=DEFAULT_FREE_RESERVE_MB, ge=0)
    spool_umask: str = Field(default="027", pattern=r"^0?[0-7]{3}$")
    max_pdu_bytes: int = Field(default=131072, ge=0)
    max_concurrent_cycles: int = Field(default=1, ge=1, le=8)
    memory_budget_gb: float | None = Field(default=None, gt=0.0)
    protocol_dir: Path | None = None
    data_docs_keep_runs: int = Field(default=DEFAULT_DATA_DOCS_KEEP_RUNS, ge=1)
    # -- raw payloads through object storage (issue 19, item 1) --
    raw_store_uri: str | None = None
    raw_retention_days: int | None = Field(default=None, ge=0)

    @field_validator("raw_store_uri", "raw_retention_days", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable (``CONCORDOSE_RAW_STORE_URI=``) means unset, as in a compose file."""
        return None if isinstance(value, str) and not value.strip() else value

    # --- observability (issue 19; concordose/observability/) ---
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """``CONCORDOSE_METRICS_PORT``: where ``concordose receive`` and ``concordose metrics serve``
    serve Prometheus ``/metrics``; None (default): no endpoint; 0: a free port, logged."""
    metrics_host: str = "0.0.0.0"
    """``CONCORDOSE_METRICS_HOST``: address of the endpoint. All interfaces by default: the
    scraper runs on another host or pod of the cluster (the compose file and the Service publish
    only the DICOM port and the Prefect UI, so it stays inside); ``127.0.0.1`` for a scraper on
    the same machine. The endpoint has no authentication: it shows counts, never identifiers."""
    log_format: Literal["text", "json"] = "text"
    """``CONCORDOSE_LOG_FORMAT``: ``json`` logs one JSON object per line, without PHI
    (:mod:`concordose.observability.log_format`)."""
    # --- end observability ---
    # task runner (issue 19): validated by check_task_runner (a ConfigurationError, not a
    # pydantic error, so the CLI prints it as one line)
    task_runner: str = TASK_RUNNER_DEFAULT

    # --- kidney-limited planning (issue 20, item 1; concordose/planning/, sources there) ---
    kidney_dose_limit_gy: float = Field(default=23.0, gt=0.0)
    """``CONCORDOSE_KIDNEY_DOSE_LIMIT_GY``: cumulative kidney absorbed-dose limit of table
    ``planning`` (23 Gy, Emami 1991 TD5/5; DOBATOC targets 24 Gy)."""
    kidney_bed_limit_gy: float = Field(default=28.0, gt=0.0)
    """``CONCORDOSE_KIDNEY_BED_LIMIT_GY``: cumulative kidney BED limit (28 Gy, Bodei 2008, with
    risk factors; 40 Gy without)."""
    planning_max_activity_gbq: float | None = Field(default=7.4, gt=0.0)
    """``CONCORDOSE_PLANNING_MAX_ACTIVITY_GBQ``: the most a planned cycle may give (7.4 GBq,
    NETTER-1); empty: no cap."""

    @field_validator("planning_max_activity_gbq", mode="before")
    @classmethod
    def _empty_is_no_cap(cls, value: object) -> object:
        """An empty variable means no cap."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("task_runner")
    @classmethod
    def _known_task_runner(cls, value: str) -> str:
        return check_task_runner(value)

    def receiver_admission(self) -> AdmissionLimits:
        """The receiver's admission limits from these settings."""
        return AdmissionLimits(
            associate_deadline_s=self.receiver_associate_deadline_s,
            pdu_deadline_s=self.receiver_pdu_deadline_s,
            max_unassociated=self.receiver_max_unassociated,
            max_associations_per_site=self.receiver_max_associations_per_site,
            check_called_ae_title=self.receiver_check_called_ae_title,
        )


def default_workdir() -> Path:
    """Folder the demo uses when none is given: ``./concordose-demo`` in the current folder."""
    return Path.cwd() / "concordose-demo"
