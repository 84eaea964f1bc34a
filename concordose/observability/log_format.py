"""Log lines as text (the default) or as JSON, one object per line (issue 19).

``CONCORDOSE_LOG_FORMAT=json`` (or ``concordose --log-format json …``) makes the long-running
commands (``receive``, ``metrics serve``) log one JSON object per line, for a log shipper
(Loki, Elasticsearch): ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
``process``, ``thread``, and ``exc_info`` (the traceback) when there is one.

PHI: patients reach the log only through the messages, which name them by
:func:`~concordose.dicom.pseudonym.patient_label` (a subject key, or ``(hidden)``; the PatientID
only with ``receive --show-phi``). A record's other attributes — ``extra={...}`` or a dict
logged as the message — are *not* emitted, except the identifiers in :data:`SAFE_EXTRA_FIELDS`
(keyed hashes and configuration names, never a patient's): a field such as ``patient_name``
passed by some library never reaches the JSON line.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

SAFE_EXTRA_FIELDS = frozenset({"cycle_id", "cycle_key", "site_id", "run_id", "flow_run_id"})
"""Extra record attributes emitted in JSON lines: identifiers that name no patient (cycle ids
and keys are keyed hashes, sites and runs are configuration)."""

_RENAMED = {"levelname": "level", "name": "logger", "threadName": "thread"}
JSON_FIELDS = frozenset(
    {"timestamp", "level", "logger", "message", "process", "thread", "exc_info"}
)
"""The fields of every JSON line (``exc_info`` only with a traceback)."""


class JsonLogFormatter(JsonFormatter):
    """python-json-logger's formatter, emitting :data:`JSON_FIELDS` and
    :data:`SAFE_EXTRA_FIELDS` only (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s %(process)d %(threadName)s",
            rename_fields=_RENAMED,
            timestamp=True,
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        """Drop every field that is not a known safe one."""
        return {
            key: value
            for key, value in log_data.items()
            if key in JSON_FIELDS or key in SAFE_EXTRA_FIELDS
        }


def log_formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter of ``log_format``."""
    if log_format == "json":
        return JsonLogFormatter()
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(log_format: LogFormat, level: int = logging.INFO) -> None:
    """Log to stderr at ``level`` in ``log_format``, with pynetdicom (one line per PDU) and httpx
    (one per Prefect API request) at warnings only.

    As :func:`logging.basicConfig`: nothing changes when the root logger already has handlers
    (an embedding application's, or a test runner's capture)."""
    handler = logging.StreamHandler()
    handler.setFormatter(log_formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
