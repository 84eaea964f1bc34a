"""What is in a spool or a folder of DICOM files: one :class:`CataloguedInstance` per file, and
the treatment cycles they make (:class:`CycleSource`).

A spool (with its index) is read from the index; any other folder is scanned and every regular
file's header parsed (pixel data never loaded). A file that is not DICOM at all (no ``DICM``
preamble: a ``ground_truth.json``, a README) is skipped and counted, so that a folder as exported
can be processed; the caller reports the count. A file that claims to be DICOM (named ``.dcm``,
or with the preamble) but does not parse stops the scan with a message naming it. Both are
grouped into cycles by the one rule of :mod:`concordose.spool.cycles`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from concordose.errors import SpoolNotFoundError, UnreadableDicomError
from concordose.spool.cycles import (
    CycleMembers,
    CycleRecord,
    StudyMembership,
    cycle_number_among,
    find_cycle,
    group_cycles,
    is_pretherapy_study,
)
from concordose.spool.store import Spool, SpooledInstance
from concordose.spool.timepoints import InstanceSummary


@dataclass(frozen=True)
class CataloguedInstance:
    """One DICOM instance available to the pipeline.

    Attributes:
        path: the file.
        sop_class_uid: its SOP class.
        calling_ae_title: who sent it, when known (spool); ``None`` for a plain folder.
        study_uid: its StudyInstanceUID (its time point).
        summary: the header facts it is grouped by (plain folder only; a spool's index holds
            them per time point).
    """

    path: Path
    sop_class_uid: str
    calling_ae_title: str | None
    study_uid: str = ""
    summary: InstanceSummary | None = None


def _from_spool(rows: list[SpooledInstance]) -> list[CataloguedInstance]:
    """Catalogue entries of indexed instances, checking each file is still there."""
    instances = []
    for row in rows:
        if not row.path.is_file():
            raise UnreadableDicomError(row.path, "listed in the spool index but missing on disk")
        instances.append(
            CataloguedInstance(
                row.path, row.identity.sop_class_uid, row.calling_ae_title, row.identity.study_uid
            )
        )
    return instances


DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".ima"})
"""File name endings (any case) that claim DICOM: such a file that does not parse is an error,
never skipped."""


def catalogue(
    source: Path,
    on_file: Callable[[Path], None] | None = None,
    on_skipped: Callable[[Path], None] | None = None,
) -> list[CataloguedInstance]:
    """List the instances in ``source`` (a spool or a folder of DICOM files).

    In a plain folder, a file without the DICOM preamble whose name does not end in one of
    :data:`DICOM_SUFFIXES` is not DICOM: it is skipped and passed to ``on_skipped``.

    Raises:
        SpoolNotFoundError: ``source`` is not an existing folder.
        UnreadableDicomError: a file in a plain folder named or marked as DICOM does not parse,
            or an indexed file vanished.
    """
    if not source.is_dir():
        raise SpoolNotFoundError(source)
    if Spool.exists_at(source):
        return _from_spool(Spool.open_existing(source).instances())
    found = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        if on_file is not None:
            on_file(path)
        try:
            header = dcmread(path, stop_before_pixels=True)
        except InvalidDicomError as exc:
            if path.suffix.lower() in DICOM_SUFFIXES:
                raise UnreadableDicomError(path, str(exc)) from exc
            if on_skipped is not None:
                on_skipped(path)
            continue
        except OSError as exc:
            raise UnreadableDicomError(path, str(exc)) from exc
        sop_class = header.get("SOPClassUID")
        if sop_class is None:
            raise UnreadableDicomError(path, "no SOPClassUID: not a DICOM instance")
        found.append(
            CataloguedInstance(
                path,
                str(sop_class),
                None,
                str(header.get("StudyInstanceUID") or ""),
                InstanceSummary.from_dataset(header),
            )
        )
    return found


def folder_memberships(instances: list[CataloguedInstance]) -> list[StudyMembership]:
    """One :class:`StudyMembership` per study of a scanned folder: the patient and injection
    its instances carry (the first instance that has each)."""
    patients: dict[str, str | None] = {}
    injections: dict[str, datetime | None] = {}
    modalities: dict[str, set[str]] = {}
    for instance in instances:
        summary = instance.summary
        patients.setdefault(instance.study_uid, None)
        injections.setdefault(instance.study_uid, None)
        modalities.setdefault(instance.study_uid, set())
        if summary is None:
            continue
        if summary.modality is not None:
            modalities[instance.study_uid].add(summary.modality)
        if patients[instance.study_uid] is None:
            patients[instance.study_uid] = summary.patient_id
        if injections[instance.study_uid] is None:
            injections[instance.study_uid] = summary.injection_datetime
    return [
        StudyMembership(
            uid,
            patients[uid],
            injections[uid],
            pretherapy=is_pretherapy_study(modalities[uid]),
        )
        for uid in sorted(patients)
    ]


CACHE_DIRNAME = "cache"


class CycleSource:
    """A spool or a plain folder seen as treatment cycles.

    A spool's cycles come from its index (with their recorded state); a folder is scanned once
    (headers only) and its cycles carry no state. Either way, :meth:`instances` returns one
    cycle's instances only.

    Raises:
        SpoolNotFoundError: ``root`` is not an existing folder.
    """

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise SpoolNotFoundError(root)
        self.root = root
        self.spool: Spool | None = Spool.open_existing(root) if Spool.exists_at(root) else None
        self._folder: list[CataloguedInstance] | None = None
        self._skipped: list[Path] = []

    @property
    def namespace(self) -> str:
        """What cycle ids are keyed with: the spool's UUID, or the folder's absolute path."""
        if self.spool is not None:
            return self.spool.spool_id
        return f"folder:{self.root.resolve()}"

    @property
    def cache_dir(self) -> Path | None:
        """Where expensive intermediate results are cached (``<spool>/cache``; none for a plain
        folder, which the platform does not own)."""
        return self.spool.root / CACHE_DIRNAME if self.spool is not None else None

    def _folder_instances(self) -> list[CataloguedInstance]:
        if self._folder is None:
            self._folder = catalogue(self.root, on_skipped=self._skipped.append)
        return self._folder

    @property
    def skipped_files(self) -> tuple[Path, ...]:
        """The files of a plain folder skipped as not DICOM (scanning it if not yet done;
        none for a spool).

        Raises:
            UnreadableDicomError: a file of a plain folder named or marked DICOM does not parse.
        """
        if self.spool is not None:
            return ()
        self._folder_instances()
        return tuple(self._skipped)

    def cycles(self) -> list[CycleRecord]:
        """Every cycle, ordered by injection (see :func:`concordose.spool.cycles.group_cycles`).

        Raises:
            UnreadableDicomError: a file of a plain folder is not DICOM.
        """
        if self.spool is not None:
            return self.spool.cycles()
        members = group_cycles(folder_memberships(self._folder_instances()), self.namespace)
        return [CycleRecord(member, None) for member in members]

    def cycle(self, cycle_id: str) -> CycleRecord:
        """One cycle by id.

        Raises:
            CycleNotFoundError: no such cycle here.
        """
        return find_cycle(self.cycles(), cycle_id, self.root)

    def cycle_number(self, members: CycleMembers) -> int | None:
        """The cycle's number (:func:`concordose.spool.cycles.cycle_number`: its rank by
        injection among the same patient's cycles here); ``None`` without a PatientID. A spool
        answers from one index query for that patient; a folder from its scanned cycles.

        Raises:
            UnreadableDicomError: a file of a plain folder is not DICOM.
        """
        if self.spool is not None:
            return self.spool.cycle_number(members)
        return cycle_number_among(members, (record.members for record in self.cycles()))

    def instances(self, members: CycleMembers) -> list[CataloguedInstance]:
        """The instances of one cycle's studies, nothing else.

        Raises:
            UnreadableDicomError: an indexed file vanished from the spool.
        """
        uids = set(members.all_study_uids)
        if self.spool is None:
            return [i for i in self._folder_instances() if i.study_uid in uids]
        return _from_spool(self.spool.cycle_instances(members))
