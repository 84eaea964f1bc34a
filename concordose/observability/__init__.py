"""Observability (issue 19): Prometheus metrics of the receiver and the flows
(:mod:`.metrics`: every metric defined there, the endpoint, multiprocess mode) and structured
(JSON) log lines without PHI (:mod:`.log_format`)."""

from concordose.observability.log_format import (
    LOG_FORMATS,
    JsonLogFormatter,
    LogFormat,
    configure_logging,
)
from concordose.observability.metrics import (
    MetricsServer,
    ReceiverStateCollector,
    RejectionReason,
    exposition_registry,
    multiprocess_dir,
    observe_completion_lag,
    record_association,
    record_cycle_run,
    record_instance_stored,
    record_rejection,
    start_metrics_server,
)

__all__ = [
    "LOG_FORMATS",
    "JsonLogFormatter",
    "LogFormat",
    "MetricsServer",
    "ReceiverStateCollector",
    "RejectionReason",
    "configure_logging",
    "exposition_registry",
    "multiprocess_dir",
    "observe_completion_lag",
    "record_association",
    "record_cycle_run",
    "record_instance_stored",
    "record_rejection",
    "start_metrics_server",
]
