"""The CLI's observability (issue 19): ``--log-format``, ``receive --metrics-port`` and
``concordose metrics serve`` (the endpoint of flow runs' metrics, for a Prefect worker's host).

See :mod:`concordose.observability.metrics` for the metrics, their endpoint and why flow runs
count through prometheus_client's multiprocess mode.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from concordose.cli.console import run_or_exit
from concordose.errors import ConcordoseError
from concordose.observability import (
    LogFormat,
    MetricsServer,
    ReceiverStateCollector,
    configure_logging,
    multiprocess_dir,
    start_metrics_server,
)
from concordose.observability.metrics import MULTIPROCESS_DIR_ENV
from concordose.settings import Settings

if TYPE_CHECKING:
    from concordose.ingest.receiver import StorageReceiver

__all__ = [
    "LogFormatOption",
    "MetricsPortOption",
    "apply_log_format",
    "configure_cli_logging",
    "metrics_app",
    "start_receiver_metrics",
]

LOG = logging.getLogger("concordose.metrics")
LOG_FORMAT_ENV = "CONCORDOSE_LOG_FORMAT"

LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option(
        "--log-format",
        help="Log lines of receive and metrics serve as text or JSON (one object per line, "
        "without PHI); default CONCORDOSE_LOG_FORMAT, else text. Prefect's flow-run logs keep "
        "Prefect's format.",
    ),
]
MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=0,
        max=65535,
        help="Serve Prometheus /metrics on this port (0: a free one, logged); default "
        "CONCORDOSE_METRICS_PORT, else no endpoint.",
    ),
]


def apply_log_format(log_format: LogFormat | None) -> None:
    """Make ``--log-format`` the setting of this process (``CONCORDOSE_LOG_FORMAT``, which the
    processes it starts inherit too)."""
    if log_format is not None:
        os.environ[LOG_FORMAT_ENV] = log_format


def configure_cli_logging() -> None:
    """Log to stderr in the configured format (``CONCORDOSE_LOG_FORMAT``)."""
    configure_logging(Settings().log_format)


def _announce(server: MetricsServer, what: str) -> None:
    folder = multiprocess_dir()
    LOG.info(
        "metrics of %s on %s (port %d)%s",
        what,
        server.url,
        server.port,
        f", summed over the processes writing to {folder}" if folder else "",
    )


def start_receiver_metrics(
    receiver: StorageReceiver, metrics_port: int | None
) -> MetricsServer | None:
    """The receiver's ``/metrics`` endpoint on ``metrics_port`` (default
    ``CONCORDOSE_METRICS_PORT``), or None when neither is set.

    Raises:
        ConcordoseError: the port cannot be bound.
    """
    settings = Settings()
    port = settings.metrics_port if metrics_port is None else metrics_port
    if port is None:
        return None
    server = start_metrics_server(port, settings.metrics_host, [ReceiverStateCollector(receiver)])
    _announce(server, "the receiver")
    return server


metrics_app = typer.Typer(
    help="Prometheus metrics of the flows.\n\nExample: concordose metrics serve --metrics-port "
    "9465 (PROMETHEUS_MULTIPROC_DIR set as for the worker)",
    no_args_is_help=True,
)


@metrics_app.command("serve")
def serve(
    metrics_port: MetricsPortOption = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on; default CONCORDOSE_METRICS_HOST, 0.0.0.0."),
    ] = None,
) -> None:
    """Serve the metrics every process writes to PROMETHEUS_MULTIPROC_DIR (flow runs of a
    Prefect process worker, ``receive --run-flows`` workers), summed, until Ctrl-C / SIGTERM.

    Run it beside the worker, with the same PROMETHEUS_MULTIPROC_DIR (an empty folder at start).

    Example: concordose metrics serve --metrics-port 9465 (with
    PROMETHEUS_MULTIPROC_DIR=/run/concordose-metrics, as for the worker)
    """
    configure_cli_logging()

    def start() -> MetricsServer:
        settings = Settings()
        if multiprocess_dir() is None:
            raise ConcordoseError(
                f"metrics serve sums the files of {MULTIPROCESS_DIR_ENV}, which is not set: set "
                "it (the same folder) for this command and the worker whose flow runs it serves"
            )
        port = settings.metrics_port if metrics_port is None else metrics_port
        if port is None:
            raise ConcordoseError("metrics serve needs --metrics-port or CONCORDOSE_METRICS_PORT")
        return start_metrics_server(port, host or settings.metrics_host)

    stops = {signal.SIGINT, signal.SIGTERM}
    # Blocked before the server's thread starts (threads inherit the mask): sigwait takes them.
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        server = run_or_exit(start)
        _announce(server, "the flows")
        signal.sigwait(stops)
        server.stop()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
