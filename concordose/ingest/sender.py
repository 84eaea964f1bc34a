"""Storage SCU: sends DICOM files to a storage SCP over one association (the PACS side)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import AE

from concordose.errors import ConcordoseError, UnreadableDicomError


@dataclass
class SendReport:
    """Outcome of one send: counts and the files that were refused with their status."""

    sent: int = 0
    refused: list[tuple[Path, int]] = field(default_factory=list)


def send_files(
    paths: Sequence[Path],
    *,
    host: str,
    port: int,
    called_ae_title: str,
    calling_ae_title: str,
    on_sent: Callable[[Path], None] | None = None,
) -> SendReport:
    """Send ``paths`` by C-STORE over a single association.

    Presentation contexts are proposed for exactly the (SOP class, transfer syntax) pairs present
    in the files, so compressed files are sent as they are.

    Raises:
        UnreadableDicomError: a file is not DICOM.
        ConcordoseError: the association was rejected, aborted or never established.
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
    for sop_class, syntax in pairs:
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(host, port, ae_title=called_ae_title)
    if not assoc.is_established:
        raise ConcordoseError(
            f"association {calling_ae_title} → {called_ae_title} at {host}:{port} was not "
            "established (rejected, aborted or unreachable); check the AE titles and the port"
        )
    report = SendReport()
    try:
        for path in paths:
            status = assoc.send_c_store(path)
            code = int(status.Status) if status and "Status" in status else -1
            if code == 0x0000:
                report.sent += 1
                if on_sent is not None:
                    on_sent(path)
            else:
                report.refused.append((path, code))
    finally:
        if assoc.is_established:
            assoc.release()
    return report
