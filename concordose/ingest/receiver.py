"""Storage SCP: receives instances by C-STORE and hands them to the :class:`~.spool.Spool`.

Associations are negotiated with pynetdicom's PDU classes and presentation-context negotiation;
after the A-ASSOCIATE-AC our own upper layer (:mod:`.upper_layer`) reads the PDUs and streams
each data set into the spool's ``tmp/`` as it arrives (see there for why).

C-STORE contract (:meth:`StorageReceiver.begin_store` → :class:`_IncomingInstance`), written
down once as pynetdicom does for its handlers:

* in: the association's calling AE title, the request's SOP Class/Instance UIDs, the data set
  as encoded by the sender (stored byte-for-byte in the negotiated transfer syntax behind a
  Part 10 file meta header, never decoded beyond its element headers, the UIDs and the few
  elements that place it in its time point; values over 64 kB such as pixel data are not read);
* out: ``0x0124`` (refused, not authorised) over TLS when the peer certificate's CN (or DNS
  name) is not the site the calling AE title belongs to;
  ``0x0000`` only after :meth:`Spool.accept_temp_file` has returned: the instance and its index
  record are durable in the spool journal (one ``fdatasync``, shared with other associations'
  records written meanwhile: group commit), or — journal off or full —
  filed and indexed (fsync + rename + folder fsync + index commit); a journaled instance is
  filed and indexed by the spool's filing thread shortly after, or at the next start-up after
  a crash (:mod:`.journal`);
  ``0xA700`` (out of resources) when the disk refuses a write or a flush, nothing half-written,
  or while the spool's free space, less what is still to be filed, is below its reserve
  (:meth:`Spool.ensure_room`, called by the spool before it makes an instance durable, and
  before each chunk of a deflated data set inflated to disk reaches it: the inflated file
  counts too);
  ``0xC000`` (cannot understand) when identifying UIDs are missing or invalid or the data set
  cannot be decoded, is truncated (a value of any size cut short) or has an element overrunning
  what contains it, has a VR PS3.5 does not define or is not in its context's VR encoding, or
  (deflated) does not inflate or inflates beyond ``max_inflated_bytes``, a decompression bomb
  (:mod:`.dataset_checks`);
  ``0xA900`` (data set does not match SOP class) when its SOP Class/Instance UID differs from
  the request's — in both cases the bytes are kept in the quarantine with the reason, and the
  service stays up;
  ``0x0122`` (SOP class not supported) when the request's SOP class is not its presentation
  context's abstract syntax (e.g. a C-STORE on the Verification context): read and dropped.
  Nothing answered otherwise than ``0x0000`` is journaled or indexed.

C-ECHO is answered with success. Admission (:mod:`.admission`): an A-ASSOCIATE-RQ whose
called AE title is not ours is rejected (permanent, "called AE title not recognised") unless
that check is off; one from a calling AE title not in the sites file is rejected (permanent,
"calling AE title not recognised"); one over ``max_associations``, or over
``max_associations_per_site`` from its site, is rejected transiently ("local limit exceeded").
Connections without an A-ASSOCIATE-RQ yet are bounded (the longest-waiting one is closed) and
the A-ASSOCIATE-RQ and every PDU have overall deadlines (:class:`~.admission.AdmissionLimits`).
:meth:`StorageReceiver.update_sites` swaps the AE titles of a running receiver
(``concordose receive`` reloads ``sites.yaml`` on SIGHUP).

Each stored instance marks its time point busy until its association closes; a
:class:`~.completion.CompletionMonitor` then completes quiet time points and calls the
``on_complete`` hook (see :class:`~.timepoints.OnComplete`). One line is logged per association
(accepted / rejected / closed with its counts) and per completed time point; instances, bytes,
associations and rejections by reason are counted for Prometheus
(:mod:`concordose.observability.metrics`, issue 19).
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import ssl
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, cast

from pydantic import SecretStr
from pydicom.datadict import tag_for_keyword
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
)
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    AllStoragePresentationContexts,
    VerificationPresentationContexts,
)

from concordose.errors import ConcordoseError
from concordose.ingest.admission import (
    DEFAULT_ADMISSION,
    AdmissionLimits,
    UnassociatedConnections,
)
from concordose.ingest.dataset_checks import (
    MAX_INFLATED_BYTES,
    DataBeyondPrefixError,
    DataBuffer,
    DataSetMismatchError,
    check_identity,
    inflate_data_set,
    read_checked_data_set,
)
from concordose.ingest.tls import certificate_refusal
from concordose.ingest.upper_layer import (
    CALLED_AE_NOT_RECOGNISED,
    CALLING_AE_NOT_RECOGNISED,
    LOCAL_LIMIT_EXCEEDED,
    Association,
    IncomingDataSet,
    Rejection,
    StoreRequest,
    UpperLayerSettings,
    serve_connection,
)
from concordose.observability.metrics import (
    RejectionReason,
    record_association,
    record_instance_stored,
    record_rejection,
)
from concordose.spool.completion import (
    DEFAULT_DELIVERY_BACKOFF_MAX_S,
    DEFAULT_QUIET_PERIOD_S,
    CompletionMonitor,
    utc_now,
)
from concordose.spool.journal import (
    DEFAULT_SEGMENT_BYTES,
    DEFAULT_SEGMENT_COUNT,
    JournalOverflowError,
    JournalWriter,
    data_crc32,
    map_region,
)
from concordose.spool.store import (
    RECEIVER_LOCK_FILENAME,
    InstanceIdentity,
    InvalidInstanceError,
    Spool,
)
from concordose.spool.timepoints import SUMMARY_KEYWORDS, InstanceSummary, OnComplete

LOG = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_NOT_AUTHORIZED = 0x0124  # PS3.7 Annex C: "Refused: Not Authorized"
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # PS3.4 B.2.3: identifier mismatch
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 Annex C; on another SOP's context

REJECTION_BY_STATUS = {  # issue 19: concordose_receiver_rejections_total{reason}
    STATUS_NOT_AUTHORIZED: RejectionReason.NOT_AUTHORIZED,
    STATUS_OUT_OF_RESOURCES: RejectionReason.OUT_OF_RESOURCES,
    STATUS_CANNOT_UNDERSTAND: RejectionReason.CANNOT_UNDERSTAND,
    STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS: RejectionReason.DATA_SET_MISMATCH,
    STATUS_SOP_CLASS_NOT_SUPPORTED: RejectionReason.SOP_CLASS_NOT_SUPPORTED,
}

DEFER_VALUES_OVER_BYTES = 65536
"""Values longer than this are not read when an instance is checked (pixel data): reading a
whole 0.5 MB CT slice back with ``dcmread`` took ≈ 0.5 ms per instance (profile, loaded machine)."""


# Explicit VR little endian element headers (PS3.5 §7.1.2): UI/SH/UL have a 2-byte length,
# OB 2 reserved bytes and a 4-byte length.
_META_UI = struct.Struct("<HH2sH")
_META_UL = struct.Struct("<HH2sHI")
_META_OB = struct.Struct("<HH2s2xI")


def _meta_element(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad  # PS3.5 §6.2: UI padded with NUL, SH with a space
    return _META_UI.pack(0x0002, element, vr, len(value)) + value


_META_IMPLEMENTATION = _meta_element(
    0x0012, b"UI", PYNETDICOM_IMPLEMENTATION_UID.encode("ascii"), b"\0"
) + _meta_element(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" ")


def file_meta_bytes(request: StoreRequest) -> bytes:
    """Preamble, prefix and File Meta Information of the Part 10 file (PS3.10 §7.1), the bytes
    pynetdicom's ``Event.encoded_dataset(include_meta=True)`` builds, encoded here directly:
    building them through pydicom's ``FileMetaDataset`` took 0.48 ms per instance, a third of the
    receiver's CPU per instance (py-spy profile, benchmarks/README.md "Receiver under load").

    Raises:
        ValueError: the SOP Class or Instance UID is empty (quarantined as undecodable).
    """
    if not request.sop_class_uid or not request.sop_instance_uid:
        raise ValueError(
            "Required File Meta Information elements are either missing or have an empty "
            "value: the C-STORE-RQ's Affected SOP Class UID or Instance UID is empty"
        )
    body = b"".join(
        (
            _META_OB.pack(0x0002, 0x0001, b"OB", 2) + b"\0\1",  # version 0001
            _meta_element(0x0002, b"UI", request.sop_class_uid.encode("ascii"), b"\0"),
            _meta_element(0x0003, b"UI", request.sop_instance_uid.encode("ascii"), b"\0"),
            _meta_element(0x0010, b"UI", request.transfer_syntax.encode("ascii"), b"\0"),
            _META_IMPLEMENTATION,
        )
    )
    group_length = _META_UL.pack(0x0002, 0x0000, b"UL", 4, len(body))
    return b"\0" * 128 + b"DICM" + group_length + body


INFLATED_IN_MEMORY_BYTES = 8 << 20
"""A deflated data set's inflated bytes are held in memory up to this, then in an unnamed
temp file in the spool's ``tmp/`` (never all in memory: at most
:data:`~.dataset_checks.MAX_INFLATED_BYTES` on disk). That file counts against the spool's
free-space reserve (:func:`inflated_bytes_to_disk`, checked per chunk)."""


def inflated_bytes_to_disk(written_bytes: int, chunk_bytes: int) -> int:
    """Bytes that writing ``chunk_bytes`` more, after ``written_bytes``, to the spooled file
    of :data:`INFLATED_IN_MEMORY_BYTES` puts on disk: none while it stays in memory; all of
    them when it rolls over to disk (``SpooledTemporaryFile`` rolls over once its size passes
    ``max_size``); the chunk once on disk."""
    total = written_bytes + chunk_bytes
    if total <= INFLATED_IN_MEMORY_BYTES:
        return 0
    if written_bytes <= INFLATED_IN_MEMORY_BYTES:
        return total
    return chunk_bytes


HEAD_BYTES = 65536
"""How much of each received Part 10 file is kept in memory as it arrives: the element headers
of a CT or NM slice lie in its first kB (its pixel data last), so it is checked from them; a
data set with headers further in is mapped from the journal or temp file instead."""

KEPT_TAGS = frozenset(
    tag
    for keyword in (
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        *SUMMARY_KEYWORDS,
    )
    if (tag := tag_for_keyword(keyword)) is not None
)
"""The elements the receiver reads with pydicom (its identity and summary); every other
element is checked by its header alone (:func:`~.dataset_checks.read_checked_data_set`)."""


@contextmanager
def _mapped_file(path: Path, size_bytes: int) -> Iterator[memoryview]:
    """The first ``size_bytes`` of the file at ``path``, mapped read-only."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with map_region(fd, 0, size_bytes) as view:
            yield view
    finally:
        os.close(fd)


@dataclass
class _AssociationLog:
    """Counters of one association, logged when it closes."""

    number: int
    association: Association
    site: str
    stored: int = 0
    failed: int = 0
    studies: set[str] = field(default_factory=set)


class _Refused:
    """A data set we read and drop, answering ``status`` (e.g. a certificate not the site's)."""

    def __init__(self, status: int) -> None:
        self.status = status

    def write(self, fragment: memoryview) -> None:
        pass

    def finish(self) -> int:
        return self.status

    def discard(self) -> None:
        pass


class _NoRoomToInflateError(Exception):
    """A deflated data set's inflated bytes could not be written (its ``__cause__``: the
    OSError): answered 0xA700 like any disk error, not 0xC000."""


class _IncomingInstance:
    """One C-STORE data set streamed to disk as it arrives (never held in memory).

    Where: straight into a record of the spool journal (:meth:`Spool.journal_writer`), or —
    journal off, every segment busy, or the instance outgrowing its segment ("spilled") — into a
    temp file in ``tmp/``. ``finish`` checks it (every element header must parse, values are
    skipped, a truncated one is caught; from its first :data:`HEAD_BYTES`, kept as they arrived,
    else from the record or file mapped), validates its UIDs and makes it
    durable (:meth:`Spool.commit_journaled` or :meth:`Spool.accept_temp_file`); undecodable or
    unidentifiable bytes go to the quarantine instead; any disk error drops the partial record
    or file and answers 0xA700.
    """

    def __init__(
        self, receiver: StorageReceiver, entry: _AssociationLog, request: StoreRequest
    ) -> None:
        self.receiver = receiver
        self.entry = entry
        self.request = request
        self._path: Path | None = None  # named when first needed (a temp file, rarely)
        self.size_bytes = 0
        self.crc32 = 0
        self.head = bytearray()  # the first HEAD_BYTES received, for checking without a read
        self.handed_over = False
        self.error: OSError | None = None
        self.fd: int | None = None
        self.meta_error: Exception | None = None
        try:
            header = file_meta_bytes(request)
        except Exception as exc:  # a UID pydicom cannot even encode: quarantined in finish()
            self.meta_error, header = exc, b""
        self.data_start = len(header)
        self.writer: JournalWriter | None = receiver.spool.journal_writer()
        if self.writer is None:
            self._open_temp()
        self.write(memoryview(header))

    @property
    def path(self) -> Path:
        """The temp file in ``tmp/`` the instance goes to when not (only) in the journal."""
        if self._path is None:
            self._path = self.receiver.spool.new_temp_path()
        return self._path

    def _open_temp(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            self.error = exc

    def _spill(self) -> None:
        """Move what the journal record holds so far into the temp file, drop the record."""
        writer = self.writer
        assert writer is not None
        self.writer = None
        self._open_temp()
        try:
            if self.fd is not None:
                writer.copy_to(self.fd)
                os.lseek(self.fd, 0, os.SEEK_END)
        except OSError as exc:
            self.error = exc
        finally:
            writer.abort()

    def write(self, fragment: memoryview) -> None:
        if self.error is not None:
            return
        self.crc32 = data_crc32(fragment, self.crc32)  # for the journal record
        if len(self.head) < HEAD_BYTES:
            self.head += fragment[: HEAD_BYTES - len(self.head)]
        try:
            if self.writer is not None:
                try:
                    self.writer.write(fragment)
                    self.size_bytes += len(fragment)
                    return
                except JournalOverflowError:
                    self._spill()
            if self.fd is None:
                return
            while fragment:
                written = os.write(self.fd, fragment)
                fragment = fragment[written:]
                self.size_bytes += written
        except OSError as exc:
            self.error = exc

    def _close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def discard(self) -> None:
        self._close()
        if self.writer is not None:
            self.writer.abort()  # no-op once committed
        if not self.handed_over and self._path is not None:
            self._path.unlink(missing_ok=True)

    def finish(self) -> int:
        try:
            return self._finish()
        finally:
            self.discard()  # unless the spool or the quarantine took it

    def _mapped(self) -> AbstractContextManager[memoryview]:
        """The received Part 10 file, mapped read-only (journal record or temp file)."""
        if self.writer is not None:
            return self.writer.mapped()
        return _mapped_file(self.path, self.size_bytes)

    def _decode(self) -> tuple[InstanceIdentity, InstanceSummary]:
        """Read the data set back and check it (:mod:`.dataset_checks`).

        Raises:
            MalformedDataSetError, DataSetMismatchError, InvalidInstanceError: see there;
            anything pydicom raises for bytes it cannot parse.
        """
        request = self.request
        if self.meta_error is not None:
            raise self.meta_error
        if request.transfer_syntax != DeflatedExplicitVRLittleEndian:
            try:  # element headers first in the bytes kept as they arrived (no read, no map)
                return self._checked(
                    bytes(self.head[self.data_start :]), size=self.size_bytes - self.data_start
                )
            except DataBeyondPrefixError:
                pass  # headers further in (e.g. elements after the pixel data): map it all
            with self._mapped() as received, received[self.data_start :] as data:
                return self._checked(data)
        # PS3.5 A.5: the data set deflated, then Explicit VR Little Endian; inflated in chunks
        # up to a cap (a decompression bomb is refused, never inflated in full).
        with (
            self.writer.reader() if self.writer is not None else open(self.path, "rb") as handle,
            tempfile.SpooledTemporaryFile(
                max_size=INFLATED_IN_MEMORY_BYTES, dir=str(self.receiver.spool.tmp_dir)
            ) as spooled,
        ):
            inflated = cast(BinaryIO, spooled)  # an IO[bytes] with every method BinaryIO has
            try:
                end = inflate_data_set(
                    handle,
                    start=self.data_start,
                    end=self.size_bytes,
                    target=inflated,
                    max_bytes=self.receiver.max_inflated_bytes,
                    before_write=self._ensure_room_to_inflate,
                )
            except OSError as exc:  # the spooled file's disk is full: not the sender's fault
                raise _NoRoomToInflateError from exc
            if end <= INFLATED_IN_MEMORY_BYTES:  # still in memory (not rolled over)
                inflated.seek(0)
                return self._checked(inflated.read(end), ExplicitVRLittleEndian)
            inflated.flush()  # rolled over to a file: its buffered tail too, before mapping
            with map_region(inflated.fileno(), 0, end) as data:
                return self._checked(data, ExplicitVRLittleEndian)

    def _ensure_room_to_inflate(self, written_bytes: int, chunk_bytes: int) -> None:
        """Before the next inflated chunk is written: the bytes it puts on disk must leave the
        spool's free-space reserve (an instance sent deflated never takes the volume below it).

        Raises:
            SpoolFullError: (an ``OSError``, ENOSPC) answered 0xA700.
        """
        to_disk = inflated_bytes_to_disk(written_bytes, chunk_bytes)
        if to_disk:
            self.receiver.spool.ensure_room(to_disk)

    def _checked(
        self, data: DataBuffer, encoding: str | None = None, *, size: int | None = None
    ) -> tuple[InstanceIdentity, InstanceSummary]:
        """Check the data set ``data`` in ``encoding`` (default: the request's transfer syntax)
        and read its identity and summary (see :meth:`_decode`): every element header is
        walked (:func:`~.dataset_checks.read_checked_data_set`), pydicom reads only
        :data:`KEPT_TAGS` and the elements it must decode to check them."""
        request = self.request
        dataset = read_checked_data_set(
            data,
            transfer_syntax=encoding or request.transfer_syntax,
            keep_tags=KEPT_TAGS,
            defer_size=DEFER_VALUES_OVER_BYTES,
            size=size,
        )
        check_identity(
            dataset,
            sop_class_uid=request.sop_class_uid,
            sop_instance_uid=request.sop_instance_uid,
        )
        identity = InstanceIdentity.checked(
            sop_class_uid=request.sop_class_uid,
            sop_instance_uid=request.sop_instance_uid,
            study_uid=dataset.get("StudyInstanceUID"),
            series_uid=dataset.get("SeriesInstanceUID"),
            transfer_syntax=UID(request.transfer_syntax),
        )
        return identity, InstanceSummary.from_dataset(dataset)

    def _finish(self) -> int:
        receiver, entry, request = self.receiver, self.entry, self.request
        calling_ae = entry.association.calling_ae_title
        self._close()
        if self.error is not None:
            # Disk full, quota, I/O error: nothing was indexed, the sender may retry later.
            LOG.error("could not store %s: %s", request.sop_instance_uid, self.error)
            return receiver._fail(entry, STATUS_OUT_OF_RESOURCES)
        try:
            identity, summary = self._decode()
        except _NoRoomToInflateError as exc:
            # The sender's bytes may be fine: like any disk error, nothing kept, retry later.
            LOG.error("could not inflate %s: %s", request.sop_instance_uid, exc.__cause__)
            return receiver._fail(entry, STATUS_OUT_OF_RESOURCES)
        except Exception as exc:
            # Undecodable bytes raise anything pydicom's parser can raise; none may stop us.
            if isinstance(exc, DataSetMismatchError):
                kind, status = "identity mismatch", STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS
            elif isinstance(exc, InvalidInstanceError):
                kind, status = "invalid identity", STATUS_CANNOT_UNDERSTAND
            else:
                kind, status = "undecodable", STATUS_CANNOT_UNDERSTAND
            reason = f"from {calling_ae}: {kind}: {type(exc).__name__}: {exc}"
            try:
                if self.writer is not None:
                    self._spill()
                    self._close()
                    if self.error is not None:
                        raise self.error
                path = receiver.spool.quarantine_temp_file(self.path, reason)
                self.handed_over = True
            except OSError as disk_error:
                LOG.error("could not quarantine (%s): %s", reason, disk_error)
                return receiver._fail(entry, STATUS_OUT_OF_RESOURCES)
            LOG.warning("quarantined instance %s (%s)", path.name, reason)
            return receiver._fail(entry, status)
        spool, now = receiver.spool, receiver.completion.clock()
        try:
            if self.writer is not None:
                try:
                    spool.commit_journaled(
                        self.writer,
                        identity,
                        self.crc32,
                        calling_ae_title=calling_ae,
                        summary=summary,
                        now=now,
                    )
                except JournalOverflowError:
                    self._spill()  # no room for the index record: through a temp file
                    self._close()
                    if self.error is not None:
                        raise self.error from None
            if self.writer is None:
                spool.accept_temp_file(
                    identity,
                    self.path,
                    self.size_bytes,
                    self.crc32,
                    calling_ae_title=calling_ae,
                    summary=summary,
                    now=now,
                )
            self.handed_over = True
        except OSError as exc:
            LOG.error("could not store %s: %s", identity.sop_instance_uid, exc)
            return receiver._fail(entry, STATUS_OUT_OF_RESOURCES)
        receiver.completion.association_stored(id(entry.association), identity.study_uid)
        entry.stored += 1
        entry.studies.add(identity.study_uid)
        with receiver._counter_lock:
            receiver.stored_count += 1
        record_instance_stored(self.size_bytes - self.data_start)  # issue 19 (metrics)
        return STATUS_SUCCESS


class _Server(socketserver.ThreadingTCPServer):
    """Accepts connections; one daemon thread per association runs the upper layer."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128  # listen backlog: a burst of connects is accepted, then admitted

    def __init__(self, address: tuple[str, int], receiver: StorageReceiver) -> None:
        self.receiver = receiver
        super().__init__(address, socketserver.BaseRequestHandler, bind_and_activate=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        connection: socket.socket = request
        receiver = self.receiver
        thread = threading.current_thread()

        def track(live: socket.socket) -> None:
            with receiver._counter_lock:
                receiver._connections[thread] = live

        peer = f"{client_address[0]}:{client_address[1]}"
        track(connection)
        # Counted until its A-ASSOCIATE-RQ is read; one over the limit closes the oldest.
        receiver.unassociated.enter(thread, connection, peer)
        try:
            serve_connection(
                connection,
                peer,
                receiver._settings,
                receiver,
                ssl_context=receiver.ssl_context,
                on_socket=track,
                on_associate_phase_end=lambda: receiver.unassociated.leave(thread),
            )
        finally:
            receiver.unassociated.leave(thread)
            with receiver._counter_lock:
                receiver._connections.pop(thread, None)


class StorageReceiver:
    """Our storage SCP writing into a :class:`Spool` (see the module docstring).

    Args:
        spool: where instances are made durable.
        ae_title: our AE title (called AE).
        host, port: where to listen; port 0 picks a free port (see :attr:`port` after start).
        allowed_calling_ae_titles: if given, associations from any other calling AE title are
            rejected at association with reason 0x03 "calling AE title not recognised".
        max_pdu_bytes: maximum PDU size we receive, announced to the peer (0 = unlimited).
        max_associations: concurrent associations accepted; one more is rejected transiently
            ("local limit exceeded").
        admission: deadlines and limits of connections and associations (associations per
            site, connections not yet associated, the called AE title check): see
            :class:`~.admission.AdmissionLimits`.
        site_by_ae_title: calling AE title → site id (from ``sites.yaml``); named in the log,
            and, when ``allowed_calling_ae_titles`` is not given, the titles allowed.
        ssl_context: a server TLS context (see :mod:`.tls`); ``None`` for plain TCP.
        quiet_period_s: seconds without activity after the last association touching a time
            point before it is complete.
        on_complete: the completion hook (contract: :class:`~.timepoints.OnComplete`).
        delivery_backoff_max_s: the longest wait between delivery attempts while the hook
            fails (see :class:`~.completion.CompletionMonitor`).
        completion_poll_interval_s: how often the background thread looks for quiet time
            points; ``None`` starts no thread (call :meth:`CompletionMonitor.poll` yourself).
        clock: current UTC time (injectable for tests).
        show_phi, pseudonym_key: how the log names patients (PatientID only with ``show_phi``;
            see :class:`~.completion.CompletionMonitor`).
        network_timeout_s: silence (s) after which an open association is aborted.
        journal_segment_bytes: size of each of the spool journal's segments
            (:mod:`.journal`); ``None`` acknowledges only filed instances (no journal).
        journal_segments: how many segments (their total bounds the instances journaled and
            not yet filed; beyond it instances are filed before they are acknowledged).
        journal_prefill: write the journal's blocks at start-up when the spool is new (once per
            spool: ``journal_segments × journal_segment_bytes`` of zeros), so that every
            acknowledgement's ``fdatasync`` overwrites allocated blocks (``concordose receive``
            does; off by default to keep short-lived receivers, e.g. tests, light).
        max_inflated_bytes: the most a data set sent deflated (1.2.840.10008.1.2.1.99) may
            inflate to; more is refused with 0xC000 as a decompression bomb
            (:data:`~.dataset_checks.MAX_INFLATED_BYTES`).
    """

    def __init__(
        self,
        spool: Spool,
        *,
        ae_title: str = "CONCORDOSE",
        host: str = "127.0.0.1",
        port: int = 11112,
        allowed_calling_ae_titles: Iterable[str] | None = None,
        max_pdu_bytes: int = 131072,
        max_associations: int = 10,
        admission: AdmissionLimits = DEFAULT_ADMISSION,
        site_by_ae_title: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        quiet_period_s: float = DEFAULT_QUIET_PERIOD_S,
        on_complete: OnComplete | None = None,
        delivery_backoff_max_s: float = DEFAULT_DELIVERY_BACKOFF_MAX_S,
        completion_poll_interval_s: float | None = None,
        clock: Callable[[], datetime] = utc_now,
        network_timeout_s: float = 60.0,
        journal_segment_bytes: int | None = DEFAULT_SEGMENT_BYTES,
        journal_segments: int = DEFAULT_SEGMENT_COUNT,
        journal_prefill: bool = False,
        show_phi: bool = False,
        pseudonym_key: SecretStr | None = None,
        max_inflated_bytes: int = MAX_INFLATED_BYTES,
    ) -> None:
        self.max_inflated_bytes = max_inflated_bytes
        self.journal_prefill = journal_prefill
        self.journal_segment_bytes = journal_segment_bytes
        self.journal_segments = journal_segments
        self.spool = spool
        self.site_by_ae_title = dict(site_by_ae_title or {})
        self.ssl_context = ssl_context
        self.completion = CompletionMonitor(
            spool,
            quiet_period_s=quiet_period_s,
            on_complete=on_complete,
            clock=clock,
            delivery_backoff_max_s=delivery_backoff_max_s,
            show_phi=show_phi,
            pseudonym_key=pseudonym_key,
        )
        self._poll_interval_s = completion_poll_interval_s
        self._associations: dict[int, _AssociationLog] = {}
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._association_counter = 0
        self._counter_lock = threading.Lock()
        if allowed_calling_ae_titles is None and site_by_ae_title is not None:
            allowed_calling_ae_titles = list(site_by_ae_title)
        self._allowed_calling_ae_titles = (
            None
            if allowed_calling_ae_titles is None
            else {title.strip() for title in allowed_calling_ae_titles}
        )
        self.max_associations = max_associations
        self.admission = admission
        self.unassociated = UnassociatedConnections(admission.max_unassociated)
        self.host = host
        self._requested_port = port
        # The pynetdicom AE only holds what we negotiate: our title and supported contexts.
        self._ae = AE(ae_title=ae_title)
        for context in [*VerificationPresentationContexts, *AllStoragePresentationContexts]:
            assert context.abstract_syntax is not None
            # Every transfer syntax, compressed ones included: stored as received.
            self._ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self._settings = UpperLayerSettings(
            ae=self._ae,
            max_pdu_bytes=max_pdu_bytes,
            associate_deadline_s=admission.associate_deadline_s,
            pdu_deadline_s=admission.pdu_deadline_s,
            network_timeout_s=network_timeout_s,
        )
        self._server: _Server | None = None
        self._server_thread: threading.Thread | None = None
        self.stored_count = 0
        self.failed_count = 0

    def update_sites(self, site_by_ae_title: Mapping[str, str]) -> None:
        """Replace the calling AE title → site map of a running receiver (``sites.yaml``
        reloaded on SIGHUP); the titles allowed become its keys. Associations admitted from
        now on see the new map; open ones keep their admission."""
        mapping = dict(site_by_ae_title)
        allowed = {title.strip() for title in mapping}
        with self._counter_lock:  # two plain assignments: readers see the old or the new map
            self.site_by_ae_title = mapping
            self._allowed_calling_ae_titles = allowed

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def active_associations(self) -> int:
        """Associations currently established (0 when not started)."""
        with self._counter_lock:
            return len(self._associations)

    @property
    def associations_by_site(self) -> dict[str, int]:
        """Associations currently established per site (the calling AE title when it names
        none)."""
        with self._counter_lock:
            counts: dict[str, int] = {}
            for entry in self._associations.values():
                counts[entry.site] = counts.get(entry.site, 0) + 1
            return counts

    def _describe(self, calling_ae: str) -> str:
        site = self.site_by_ae_title.get(calling_ae)
        return f"{calling_ae} (site {site})" if site else calling_ae

    def _fail(self, entry: _AssociationLog, status: int) -> int:
        entry.failed += 1
        with self._counter_lock:
            self.failed_count += 1
        record_rejection(REJECTION_BY_STATUS[status])  # issue 19 (metrics)
        return status

    # -- the upper layer's service contract (upper_layer.StorageService) ------------------------

    def admit(self, association: Association) -> Rejection | None:
        """Reject a called AE title not ours (permanent, when checked), an unknown calling AE
        title (permanent), and associations over the limit or over their site's limit
        (transient); otherwise count the association as established."""
        rejection: Rejection | None = None
        why = ""
        reason = RejectionReason.CALLED_AE_TITLE  # issue 19: metric label; others set their own
        ours = str(self._ae.ae_title).strip()
        calling_ae = association.calling_ae_title
        allowed = self._allowed_calling_ae_titles
        site = self.site_by_ae_title.get(calling_ae) or calling_ae
        if self.admission.check_called_ae_title and association.called_ae_title != ours:
            rejection = CALLED_AE_NOT_RECOGNISED
            why = f"called AE title {association.called_ae_title!r} is not ours ({ours!r})"
        elif allowed is not None and calling_ae not in allowed:
            rejection = CALLING_AE_NOT_RECOGNISED
            why = "calling AE title not allowed"
            reason = RejectionReason.CALLING_AE_TITLE
        else:
            with self._counter_lock:
                open_for_site = sum(1 for e in self._associations.values() if e.site == site)
                if len(self._associations) >= self.max_associations:
                    rejection = LOCAL_LIMIT_EXCEEDED
                    why = f"busy: {self.max_associations} association(s) open"
                    reason = RejectionReason.ASSOCIATION_LIMIT
                elif open_for_site >= self.admission.max_associations_per_site:
                    rejection = LOCAL_LIMIT_EXCEEDED
                    reason = RejectionReason.SITE_ASSOCIATION_LIMIT
                    why = (
                        f"busy: {open_for_site} association(s) open from site {site} "
                        "(limit CONCORDOSE_RECEIVER_MAX_ASSOCIATIONS_PER_SITE)"
                    )
                else:
                    self._association_counter += 1
                    self._associations[id(association)] = _AssociationLog(
                        self._association_counter, association, site
                    )
        if rejection is not None:
            record_rejection(reason)
            LOG.warning(
                "association from %s at %s rejected (%s)", calling_ae, association.peer, why
            )
        return rejection

    def established(self, association: Association) -> None:
        """Log the accepted association."""
        entry = self._associations[id(association)]
        record_association()  # issue 19 (metrics)
        LOG.info(
            "association #%d from %s at %s accepted%s",
            entry.number,
            self._describe(association.calling_ae_title),
            association.peer,
            " (TLS)" if association.certificate_names is not None else "",
        )

    def begin_store(self, association: Association, request: StoreRequest) -> IncomingDataSet:
        """Where a C-STORE's data set goes: ``tmp/`` (or nowhere, if the sender is refused)."""
        entry = self._associations[id(association)]
        # TLS proves the institution: a site's certificate may only send as that site.
        refusal = association.certificate_names is not None and certificate_refusal(
            association.certificate_names,
            self.site_by_ae_title.get(association.calling_ae_title),
            set(self.site_by_ae_title.values()),
        )
        if refusal:  # TLS only: on plain TCP, no certificate to check (nor its sites' set)
            LOG.warning("refused instance from %s: %s", association.calling_ae_title, refusal)
            return _Refused(self._fail(entry, STATUS_NOT_AUTHORIZED))
        context = request.context_abstract_syntax
        if context and context != request.sop_class_uid:
            # e.g. a C-STORE on the Verification context: the data set is read and dropped.
            LOG.warning(
                "refused instance %s from %s: SOP class %s sent on a presentation context "
                "negotiated for %s",
                request.sop_instance_uid,
                association.calling_ae_title,
                request.sop_class_uid,
                context,
            )
            return _Refused(self._fail(entry, STATUS_SOP_CLASS_NOT_SUPPORTED))
        return _IncomingInstance(self, entry, request)

    def ended(self, association: Association) -> None:
        """Start the quiet period of the association's studies and log its counts."""
        with self._counter_lock:
            entry = self._associations.pop(id(association), None)
        self.completion.association_closed(id(association))
        if entry is None:
            return
        LOG.info(
            "association #%d from %s %s: %d stored, %d failed, %d study(ies)",
            entry.number,
            self._describe(association.calling_ae_title),
            "aborted" if association.aborted else "released",
            entry.stored,
            entry.failed,
            len(entry.studies),
        )

    # -- life cycle -----------------------------------------------------------------------------

    def _acquire_spool_lock(self) -> None:
        try:
            self.spool.lock_for_receiver()
        except BlockingIOError:
            raise ConcordoseError(
                f"another receiver already serves spool {self.spool.root} "
                f"(lock {RECEIVER_LOCK_FILENAME} is held); run one receiver per spool"
            ) from None

    def _release_spool_lock(self) -> None:
        self.spool.unlock_receiver()

    def start(self) -> int:
        """Start listening in a background thread; returns the bound port.

        Raises:
            ConcordoseError: another receiver holds this spool.
        """
        self._acquire_spool_lock()
        try:
            if self.journal_segment_bytes is not None:
                self.spool.start_journal(
                    segment_bytes=self.journal_segment_bytes,
                    segment_count=self.journal_segments,
                    prefill=self.journal_prefill,
                )
            self._server = _Server((self.host, self._requested_port), self)
        except BaseException:
            self.spool.stop_journal()
            self._release_spool_lock()
            raise
        self._server_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="concordose-receiver",
            daemon=True,
        )
        self._server_thread.start()
        if self._poll_interval_s is not None:
            self.completion.start(self._poll_interval_s)
        LOG.info(
            "receiver %s listening on %s:%d%s, spool %s, quiet period %.0f s",
            self._ae.ae_title,
            self.host,
            self.port,
            " (TLS)" if self.ssl_context else "",
            self.spool.root,
            self.completion.quiet_period_s,
        )
        return self.port

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop listening, end open associations, stop the completion thread, release the spool.

        An instance being stored finishes first (its association thread is joined); one being
        received is discarded, never acknowledged.
        """
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with self._counter_lock:
                connections = dict(self._connections)
            for connection in connections.values():
                with suppress(OSError):  # already closed
                    connection.shutdown(socket.SHUT_RDWR)
            for thread in connections:
                thread.join(timeout_s)
            if self._server_thread is not None:
                self._server_thread.join(timeout_s)
            self._server = None
            self._server_thread = None
        self.completion.stop()
        self.spool.stop_journal()  # files everything journaled before the lock is released
        self._release_spool_lock()

    def __enter__(self) -> StorageReceiver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
