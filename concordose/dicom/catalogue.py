"""What is in a spool or a folder of DICOM files: one :class:`CataloguedInstance` per file.

A spool (with its index) is read from the index; any other folder is scanned and every regular
file's header parsed (pixel data never loaded). A file that is not DICOM stops the scan with a
message naming it: nothing is skipped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from concordose.dicom.spool import Spool
from concordose.errors import SpoolNotFoundError, UnreadableDicomError

_HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]


@dataclass(frozen=True)
class CataloguedInstance:
    """One DICOM instance available to the pipeline.

    Attributes:
        path: the file.
        sop_class_uid: its SOP class.
        calling_ae_title: who sent it, when known (spool); ``None`` for a plain folder.
    """

    path: Path
    sop_class_uid: str
    calling_ae_title: str | None


def catalogue(
    source: Path, on_file: Callable[[Path], None] | None = None
) -> list[CataloguedInstance]:
    """List the instances in ``source`` (a spool or a folder of DICOM files).

    Raises:
        SpoolNotFoundError: ``source`` is not an existing folder.
        UnreadableDicomError: a file in a plain folder is not DICOM, or an indexed file vanished.
    """
    if not source.is_dir():
        raise SpoolNotFoundError(source)
    if Spool.exists_at(source):
        instances = []
        for row in Spool.open_existing(source).instances():
            if not row.path.is_file():
                raise UnreadableDicomError(
                    row.path, "listed in the spool index but missing on disk"
                )
            instances.append(
                CataloguedInstance(row.path, row.identity.sop_class_uid, row.calling_ae_title)
            )
        return instances
    found = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        if on_file is not None:
            on_file(path)
        try:
            header = dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except (InvalidDicomError, OSError) as exc:
            raise UnreadableDicomError(path, str(exc)) from exc
        sop_class = header.get("SOPClassUID")
        if sop_class is None:
            raise UnreadableDicomError(path, "no SOPClassUID: not a DICOM instance")
        found.append(CataloguedInstance(path, str(sop_class), None))
    return found
