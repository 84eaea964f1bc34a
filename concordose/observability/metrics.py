"""Prometheus metrics of the receiver and the flows: every metric is defined here, once (issue 19).

Names follow the Prometheus conventions (``concordose_`` namespace, base units in the name,
``_total`` on counters). What each one means:

* ``concordose_receiver_instances_received_total`` — instances acknowledged with success
  (0x0000: durable in the spool's journal or filed);
* ``concordose_receiver_bytes_received_total`` — bytes of those instances' data sets as the
  sender encoded them (the Part 10 file the spool keeps, less its file meta header);
* ``concordose_receiver_associations_total`` — associations accepted;
* ``concordose_receiver_rejections_total{reason}`` — associations rejected, connections closed
  and instances refused, by :class:`RejectionReason` (every reason is exported from 0);
* ``concordose_receiver_associations_open`` — associations established now;
* ``concordose_receiver_journal_depth`` — instances held in the spool's write-ahead journal and
  not yet filed (its bound: ``CONCORDOSE_SPOOL_JOURNAL_MB``);
* ``concordose_receiver_unfiled_instances`` — acknowledged instances not yet filed and indexed
  (the journal's, and those made durable as temp files when the journal was full);
* ``concordose_receiver_filed_before_answer_total`` — instances the receiver filed before
  answering because no journal segment had room (the slow path: a steady rise means the
  journal, ``CONCORDOSE_SPOOL_JOURNAL_MB``, is too small for the bursts it gets);
* ``concordose_receiver_completion_lag_seconds`` — per completed time point, from its last
  activity (stored instance or association release) to its completion (at least the quiet
  period, unless triggered);
* ``concordose_cycles_total{outcome}`` — ``process-cycle`` runs by outcome (``processed``,
  ``held``, ``failed``; a skipped run did nothing and is not counted);
* ``concordose_cycle_processing_seconds`` — wall time of those runs.

The three gauges and that counter are read from the running receiver when scraped
(:class:`ReceiverStateCollector`): nothing on the C-STORE path maintains them. The counters and
histograms are incremented where the event happens (:func:`record_instance_stored` and its
siblings), one call each.

Processes. A long-lived process serves ``/metrics`` over HTTP (:func:`start_metrics_server`):
``concordose receive --metrics-port``, or ``concordose metrics serve``. Flow runs live in other,
short-lived processes (``concordose receive --run-flows`` starts ``concordose process-cycle`` per
cycle; a Prefect process worker starts one subprocess per flow run), and a scrape cannot reach
a process that has exited. So the flows use prometheus_client's *multiprocess mode*: when
``PROMETHEUS_MULTIPROC_DIR`` names a folder (set in the environment of the receiver, the worker
and hence their children, before Python starts), every process writes its counters and
histograms to memory-mapped files there, and the serving process sums every file when scraped —
counts of exited runs included. Without it (the default: one process, e.g. a receiver without
flows, a test), each process serves its own values from the default registry (with the
``process_*`` and ``python_*`` collectors). Alternatives weighed: exposing the endpoint from
``sweep``/``process-spool`` while they run loses every run that ends between two scrapes (a
held cycle takes seconds); a Pushgateway is one more service to run and secure. Multiprocess
mode needs that folder shared by the processes (one machine, one pod, or one volume), emptied
when the services start (a ``tmpfs``/``emptyDir``); Kubernetes flow-run pods without a shared
volume do not reach it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from concordose.errors import ConcordoseError
from concordose.spool.cycles import OUTCOME_STATES, CycleState

NAMESPACE = "concordose"
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's own switch to multiprocess mode (read when it is first imported)."""


def multiprocess_dir() -> Path | None:
    """The folder of multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), if set."""
    value = os.environ.get(MULTIPROCESS_DIR_ENV)
    return Path(value) if value else None


_folder = multiprocess_dir()
if _folder is not None:
    # Named but missing (e.g. a tmpfs path after a reboot): created, rather than every process
    # failing when the metrics below write their first file there.
    _folder.mkdir(parents=True, exist_ok=True)


class RejectionReason(StrEnum):
    """The ``reason`` label of ``concordose_receiver_rejections_total``.

    Association level (A-ASSOCIATE-RJ or connection closed): ``called_ae_title`` (not ours),
    ``calling_ae_title`` (not in the sites file), ``association_limit`` (``max_associations``
    open), ``site_association_limit`` (the site's ``max_associations_per_site`` open),
    ``unassociated_limit`` (a connection without A-ASSOCIATE-RQ closed to admit a newer one).
    Instance level (the C-STORE status): ``not_authorized`` (0x0124, TLS certificate not the
    site's), ``sop_class_not_supported`` (0x0122), ``out_of_resources`` (0xA700, disk),
    ``cannot_understand`` (0xC000, undecodable or unidentifiable: quarantined),
    ``data_set_mismatch`` (0xA900, UIDs differ from the request's: quarantined).
    """

    CALLED_AE_TITLE = "called_ae_title"
    CALLING_AE_TITLE = "calling_ae_title"
    ASSOCIATION_LIMIT = "association_limit"
    SITE_ASSOCIATION_LIMIT = "site_association_limit"
    UNASSOCIATED_LIMIT = "unassociated_limit"
    NOT_AUTHORIZED = "not_authorized"
    SOP_CLASS_NOT_SUPPORTED = "sop_class_not_supported"
    OUT_OF_RESOURCES = "out_of_resources"
    CANNOT_UNDERSTAND = "cannot_understand"
    DATA_SET_MISMATCH = "data_set_mismatch"


# Seconds. The lag is at least the quiet period (default 300 s) unless a time point is
# triggered; delivery retries (Prefect down) stretch it to hours.
COMPLETION_LAG_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 450, 600, 900, 1800, 3600, 7200, 21600)
# Seconds. A held cycle takes seconds (headers only); a processed one minutes, more with voxel
# dosimetry (benchmarks/README.md).
CYCLE_PROCESSING_BUCKETS_S = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)

INSTANCES_RECEIVED = Counter(
    "instances_received",
    "Instances acknowledged with success (durable in the spool).",
    namespace=NAMESPACE,
    subsystem="receiver",
)
BYTES_RECEIVED = Counter(
    "bytes_received",
    "Bytes of the acknowledged instances' data sets, as encoded by the sender.",
    namespace=NAMESPACE,
    subsystem="receiver",
)  # "bytes" in the name, not as OpenMetrics unit metadata (which would append "_bytes")
ASSOCIATIONS = Counter(
    "associations",
    "Associations accepted.",
    namespace=NAMESPACE,
    subsystem="receiver",
)
REJECTIONS = Counter(
    "rejections",
    "Associations rejected, connections closed and instances refused, by reason.",
    ["reason"],
    namespace=NAMESPACE,
    subsystem="receiver",
)
COMPLETION_LAG = Histogram(
    "completion_lag",
    "Per completed time point: seconds from its last activity to its completion.",
    namespace=NAMESPACE,
    subsystem="receiver",
    unit="seconds",
    buckets=COMPLETION_LAG_BUCKETS_S,
)
CYCLES = Counter(
    "cycles",
    "process-cycle runs by outcome (processed, held, failed).",
    ["outcome"],
    namespace=NAMESPACE,
)
CYCLE_PROCESSING = Histogram(
    "cycle_processing",
    "Wall time of process-cycle runs that processed, held or failed their cycle, seconds.",
    namespace=NAMESPACE,
    unit="seconds",
    buckets=CYCLE_PROCESSING_BUCKETS_S,
)
for _reason in RejectionReason:
    REJECTIONS.labels(reason=_reason.value)  # exported from 0, so rate() sees the first one
for _state in OUTCOME_STATES:
    CYCLES.labels(outcome=_state.value)


def record_instance_stored(data_set_bytes: int) -> None:
    """One instance acknowledged with success; ``data_set_bytes`` as the sender encoded it."""
    INSTANCES_RECEIVED.inc()
    BYTES_RECEIVED.inc(data_set_bytes)


def record_association() -> None:
    """One association accepted."""
    ASSOCIATIONS.inc()


def record_rejection(reason: RejectionReason) -> None:
    """One association rejected, connection closed or instance refused."""
    REJECTIONS.labels(reason=reason.value).inc()


def observe_completion_lag(last_activity_at: datetime, completed_at: datetime | None) -> None:
    """A time point completed at ``completed_at`` (None: not complete, nothing observed) after
    its last activity at ``last_activity_at`` (both UTC)."""
    if completed_at is not None:
        COMPLETION_LAG.observe(max(0.0, (completed_at - last_activity_at).total_seconds()))


def record_cycle_run(outcome: CycleState, seconds: float) -> None:
    """One ``process-cycle`` run ended with ``outcome`` (processed, held or failed) after
    ``seconds`` of wall time.

    Raises:
        ValueError: ``outcome`` is not a processing outcome (receiving, ready).
    """
    if outcome not in OUTCOME_STATES:
        expected = ", ".join(state.value for state in OUTCOME_STATES)
        raise ValueError(f"cycle run outcome must be one of {expected}, found {outcome!r}")
    CYCLES.labels(outcome=outcome.value).inc()
    CYCLE_PROCESSING.observe(seconds)


class SpoolBacklog(Protocol):
    """What :class:`ReceiverStateCollector` reads from the spool (:class:`~.store.Spool`)."""

    def journal_depth(self) -> int: ...

    def unfiled_instance_count(self) -> int: ...

    @property
    def filed_before_acknowledgement(self) -> int: ...


class ReceiverState(Protocol):
    """What :class:`ReceiverStateCollector` reads from the receiver
    (:class:`~concordose.ingest.receiver.StorageReceiver`)."""

    @property
    def spool(self) -> SpoolBacklog: ...

    @property
    def active_associations(self) -> int: ...


class ReceiverStateCollector(Collector):
    """The receiver's gauges, read from it when scraped (see the module docstring)."""

    def __init__(self, receiver: ReceiverState) -> None:
        self.receiver = receiver

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        """The three gauges and the counter of instances filed before their answer (each
        read takes the spool's or the receiver's lock briefly, or none)."""
        spool = self.receiver.spool
        prefix = f"{NAMESPACE}_receiver"
        yield GaugeMetricFamily(
            f"{prefix}_associations_open",
            "Associations established now.",
            value=self.receiver.active_associations,
        )
        yield GaugeMetricFamily(
            f"{prefix}_journal_depth",
            "Instances in the spool's write-ahead journal, not yet filed.",
            value=spool.journal_depth(),
        )
        yield GaugeMetricFamily(
            f"{prefix}_unfiled_instances",
            "Acknowledged instances not yet filed and indexed.",
            value=spool.unfiled_instance_count(),
        )
        yield CounterMetricFamily(
            f"{prefix}_filed_before_answer",
            "Instances filed before their answer: no journal segment had room.",
            value=spool.filed_before_acknowledgement,
        )


def exposition_registry(
    collectors: Sequence[Collector] = (), *, metrics_dir: Path | None = None
) -> CollectorRegistry:
    """What a ``/metrics`` endpoint serves: every process's metrics summed from ``metrics_dir``
    (multiprocess mode) or, without one, this process's default registry; plus ``collectors``
    (e.g. a :class:`ReceiverStateCollector`)."""
    registry = CollectorRegistry(auto_describe=False)
    if metrics_dir is not None:
        MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    else:
        registry.register(REGISTRY)  # a registry is a collector of everything registered in it
    for collector in collectors:
        registry.register(collector)
    return registry


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint (HTTP, a daemon thread); :meth:`stop` ends it."""

    server: WSGIServer
    thread: threading.Thread
    host: str

    @property
    def port(self) -> int:
        """The bound port (the one chosen by the system when 0 was asked)."""
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port/metrics`` (a wildcard host shown as the loopback address)."""
        host = "127.0.0.1" if self.host in {"", "0.0.0.0", "::"} else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def start_metrics_server(
    port: int,
    host: str = "0.0.0.0",
    collectors: Sequence[Collector] = (),
    *,
    metrics_dir: Path | None = None,
) -> MetricsServer:
    """Serve :func:`exposition_registry` on ``host:port`` (0: a free port, see
    :attr:`MetricsServer.port`) until :meth:`MetricsServer.stop`.

    Args:
        port, host: where to listen.
        collectors: added to what is served.
        metrics_dir: the multiprocess folder to sum; default ``PROMETHEUS_MULTIPROC_DIR``.

    Raises:
        ConcordoseError: the address cannot be bound (in use, not ours).
    """
    registry = exposition_registry(collectors, metrics_dir=metrics_dir or multiprocess_dir())
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConcordoseError(
            f"metrics endpoint: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "choose another CONCORDOSE_METRICS_PORT / --metrics-port"
        ) from None
    return MetricsServer(server, thread, host)
