"""Storage SCU: sends DICOM files to a storage SCP (the PACS side)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import AE

from concordose.errors import ConcordoseError, UnreadableDicomError

logger = logging.getLogger(__name__)


@dataclass
class SendReport:
    """Outcome of one send: counts and the files that were refused with their status."""

    sent: int = 0
    refused: list[tuple[Path, int]] = field(default_factory=list)


MAX_FRUITLESS_ASSOCIATIONS = 3
"""Associations in a row that may end before any file got a response before the send gives up."""

DEFAULT_DIMSE_TIMEOUT_S = 30.0
"""How long to wait for a C-STORE response (pynetdicom's default) before aborting."""


def send_files(
    paths: Sequence[Path],
    *,
    host: str,
    port: int,
    called_ae_title: str,
    calling_ae_title: str,
    on_sent: Callable[[Path], None] | None = None,
    dimse_timeout_s: float = DEFAULT_DIMSE_TIMEOUT_S,
) -> SendReport:
    """Send ``paths`` by C-STORE, over one association unless it ends early.

    Presentation contexts are proposed for exactly the (SOP class, transfer syntax) pairs present
    in the files, so compressed files are sent as they are.

    A C-STORE without a response (the peer aborted, or none came within ``dimse_timeout_s`` —
    pynetdicom's reactor can take a fast response for an unexpected message under load, its
    issues #435 and #875) ends the association; the file and those after it are sent again on a
    new one. A storage SCP keeps one copy per SOP Instance UID, so a file stored whose response
    was lost is not duplicated. The send gives up after :data:`MAX_FRUITLESS_ASSOCIATIONS`
    associations in a row ended before any response.

    Raises:
        UnreadableDicomError: a file is not DICOM.
        ConcordoseError: the association was rejected, aborted or never established, or kept
            ending without a response (the message says how many files were left).
    """
    headers = []
    for path in paths:
        try:
            header = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError) as exc:
            raise UnreadableDicomError(path, str(exc)) from exc
        headers.append(header)
    pairs = sorted(
        {(str(header.SOPClassUID), str(header.file_meta.TransferSyntaxUID)) for header in headers}
    )
    ae = AE(ae_title=calling_ae_title)
    ae.dimse_timeout = dimse_timeout_s
    for sop_class, syntax in pairs:
        ae.add_requested_context(sop_class, syntax)
    report = SendReport()
    pending = list(paths)
    fruitless = 0
    while pending:
        answered = _send_over_one_association(
            ae,
            pending,
            report,
            host=host,
            port=port,
            called_ae_title=called_ae_title,
            on_sent=on_sent,
        )
        if not pending:
            break
        fruitless = 0 if answered else fruitless + 1
        if fruitless >= MAX_FRUITLESS_ASSOCIATIONS:
            raise ConcordoseError(
                f"association {calling_ae_title} → {called_ae_title} at {host}:{port} ended "
                f"{fruitless} times in a row without a C-STORE response; {len(pending)} of "
                f"{len(paths)} file(s) not sent (first: {pending[0].name})"
            )
        logger.warning(
            "association %s → %s ended without a C-STORE response; resending %d file(s) on a "
            "new association",
            calling_ae_title,
            called_ae_title,
            len(pending),
        )
    return report


def _send_over_one_association(
    ae: AE,
    pending: list[Path],
    report: SendReport,
    *,
    host: str,
    port: int,
    called_ae_title: str,
    on_sent: Callable[[Path], None] | None,
) -> int:
    """Send from the head of ``pending`` (removing each file answered) until done or the
    association ends; returns how many files got a response."""
    assoc = ae.associate(host, port, ae_title=called_ae_title)
    if not assoc.is_established:
        raise ConcordoseError(
            f"association {ae.ae_title} → {called_ae_title} at {host}:{port} was not "
            "established (rejected, aborted or unreachable); check the AE titles and the port"
        )
    answered = 0
    try:
        while pending and assoc.is_established:
            path = pending[0]
            status = assoc.send_c_store(path)
            if not status or "Status" not in status:
                break  # no response: pynetdicom aborted the association
            pending.pop(0)
            answered += 1
            code = int(status.Status)
            if code == 0x0000:
                report.sent += 1
                if on_sent is not None:
                    on_sent(path)
            else:
                report.refused.append((path, code))
    finally:
        if assoc.is_established:
            assoc.release()
    return answered
