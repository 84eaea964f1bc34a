"""Receiving a CT series by C-STORE: our receiver vs dcmtk ``storescp`` vs Orthanc, one run.

Run: ``.venv/bin/python -m benchmarks.bench_receiver [--instances 200] [--repeats 3]
[--large-mb 500]``.

The same ``storescu`` (dcmtk) sends the same series (512×512 16-bit CT slices, ≈0.5 MB each) over
one association with ``TCP_NODELAY=1`` and 128 kB PDUs to each peer in turn, ``--repeats`` times
(interleaved, the order rotated from one repeat to the next, median and best reported), into a
fresh folder each time (all deleted after the last repeat); each repeat after the first sends a
series with new UIDs:

* (a) ``concordose receive`` (subprocess) on a fresh spool: each instance streamed into a
  spool-journal record whose ``fdatasync`` precedes the success response (filed and indexed
  after the burst; the SIGTERM → exit time, which includes that filing, is printed);
* (a') the same on one spool kept across repeats (primed by an untimed series), as a running
  service keeps its spool: its journal segments' blocks were written before, so the flush needs
  no file-system journal commit;
* (b) ``storescp +B`` (bit-preserving, writes each file, no fsync);
* (c) Orthanc (its default file storage and SQLite index; strace shows one ``fdatasync`` per
  instance, of the file, and none of its index or folders);
* (d) for reference, pynetdicom itself with a handler that stores nothing and answers success
  at once (debug handlers unbound, 0.2 ms DUL poll): the floor of a receiver built on
  pynetdicom's reactors, as ours was before;
* (f) for reference, our upper layer (:mod:`concordose.ingest.upper_layer`) with a service that
  keeps nothing: the floor of our network path;
* (e) for reference, our :class:`~concordose.spool.store.Spool` taking the same files one after
  the other with no network (journal record + ``fdatasync`` per instance): the floor of our
  durability guarantee on this disk.

(a) ≈ (f) + (e): each instance is acknowledged only once durable, and ``storescu`` sends the next
one only after the acknowledgement, so the two costs add up instance by instance.

Then ``--large-mb`` of instances are sent to our receiver alone and its peak resident memory
(``VmHWM``) is compared with its resident memory before the send: the receiver holds one instance
at a time, never a study. Peers are awaited by polling (port open / REST ``/system``) with a
deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)

from concordose.ingest.receiver import _Refused
from concordose.ingest.upper_layer import (
    Association,
    IncomingDataSet,
    Rejection,
    StoreRequest,
    UpperLayerSettings,
    serve_connection,
)
from concordose.spool.journal import JournalOverflowError
from concordose.spool.store import InstanceIdentity, Spool
from concordose.spool.timepoints import InstanceSummary

PDU_BYTES = 131072
ROWS = COLUMNS = 512
# dcmtk (storescu, storescp, Orthanc's DICOM layer) reads TCP_NODELAY from the environment;
# pynetdicom sets it on its sockets itself. Every peer gets it, so none waits on Nagle.
NODELAY_ENV = {**os.environ, "TCP_NODELAY": "1"}


FLOOR_DUL_POLL_INTERVAL_S = 0.0002
"""The do-nothing pynetdicom SCP's DUL idle sleep (pynetdicom's default is 1 ms): the setting
our receiver used while it was built on pynetdicom's reactors (0.67 → 0.42 s for this series)."""


def _unbind_pynetdicom_debug_handlers(server: Any) -> None:
    """pynetdicom formats a debug text per PDU even when its logger discards it (≈5 %)."""
    for event, handler in (
        (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
        (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
        (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
        (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
    ):
        server.unbind(event, handler)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come up within {timeout_s} s")
        time.sleep(0.05)


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def write_series(folder: Path, count: int, seed: int = 0, side: int = ROWS) -> list[Path]:
    """``count`` CT slices of one series, ``side`` × ``side`` pixels (random 12-bit noise:
    incompressible, like raw CT), each with fresh UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    pixels = rng.integers(0, 4096, size=(side, side), dtype=np.uint16)
    paths = []
    for index in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName = "BENCH", "Bench^CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.Modality = "20261124", "100000", "CT"
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(index)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.98, 0.98]
        ds.SliceThickness = 1.0
        ds.Rows, ds.Columns = side, side
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.roll(pixels, index).tobytes()
        path = folder / f"{index:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def storescu_command(port: int, called_ae: str, folder: Path) -> list[str]:
    """dcmtk ``storescu`` sending every file of ``folder`` over one association as ``BENCH``."""
    return [
        "storescu", "-aet", "BENCH", "-aec", called_ae,
        "--max-pdu", str(PDU_BYTES), "--max-send-pdu", str(PDU_BYTES),
        "+sd", "127.0.0.1", str(port), str(folder),
    ]  # fmt: skip


def send(port: int, called_ae: str, folder: Path) -> float:
    """Send every file of ``folder`` over one association; returns the wall time in seconds."""
    command = storescu_command(port, called_ae, folder)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=NODELAY_ENV, capture_output=True, timeout=1800)
    return time.perf_counter() - start


def memory_kib(pid: int, field: str) -> int:
    """A memory figure of process ``pid`` from ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``:
    the peak resident set), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@contextmanager
def concordose_receiver(
    workdir: Path,
    spool: Path | None = None,
    stop_times: list[float] | None = None,
    *,
    extra_path: Path | None = None,
    environment: Mapping[str, str] | None = None,
) -> Iterator[tuple[int, int]]:
    """``concordose receive`` in a subprocess; yields (port, pid).

    ``spool`` defaults to a fresh one in ``workdir``. The time from SIGTERM to exit (filing what
    is still only journaled, then stopping) is appended to ``stop_times``. ``extra_path`` goes
    first on the receiver's ``PYTHONPATH`` (e.g. a ``sitecustomize`` for a reference run);
    ``environment`` adds settings (e.g. ``CONCORDOSE_SPOOL_JOURNAL_MB``).
    """
    port = _free_port()
    sites = workdir / "sites.yaml"
    sites.write_text("format_version: 1\nsites:\n  - site_id: bench\n    ae_titles: [BENCH]\n")
    # ``python -m concordose`` with this checkout first on the path: the benchmark measures the
    # code beside it (the venv's ``concordose`` script may import another checkout).
    checkout = Path(__file__).resolve().parents[1]
    python_path = os.pathsep.join(
        filter(None, [str(extra_path or ""), str(checkout), os.environ.get("PYTHONPATH")])
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "concordose",
            "receive",
            "--spool",
            str(spool or workdir / "spool"),
            "--sites",
            str(sites),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--quiet-period-s",
            "3600",
            "--max-pdu",
            str(PDU_BYTES),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**NODELAY_ENV, **(environment or {}), "PYTHONPATH": python_path},
    )
    try:
        _wait(lambda: _port_open(port), "concordose receive")
        yield port, process.pid
    finally:
        stopping = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        if stop_times is not None:
            stop_times.append(time.perf_counter() - stopping)


@contextmanager
def storescp(workdir: Path) -> Iterator[int]:
    """dcmtk ``storescp`` writing bit-preserved files into ``workdir``."""
    port = _free_port()
    out = workdir / "storescp"
    out.mkdir()
    process = subprocess.Popen(
        [
            "storescp",
            "-aet",
            "STORESCP",
            "+B",
            "-od",
            str(out),
            "--max-pdu",
            str(PDU_BYTES),
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=NODELAY_ENV,
    )
    try:
        _wait(lambda: _port_open(port), "storescp")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def pynetdicom_floor() -> Iterator[int]:
    """A pynetdicom storage SCP (in this process) that discards every instance."""
    ae = AE(ae_title="FLOOR")
    ae.maximum_pdu_size = PDU_BYTES
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)

    def tune(event: Any) -> None:
        event.assoc.dul._run_loop_delay = FLOOR_DUL_POLL_INTERVAL_S

    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, lambda _event: 0x0000), (evt.EVT_CONN_OPEN, tune)],
    )
    assert server is not None  # non-blocking: the server object is returned
    _unbind_pynetdicom_debug_handlers(server)
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()


class _DiscardingService:
    """Our upper layer's service contract, answering success and keeping nothing."""

    def admit(self, association: Association) -> Rejection | None:
        return None

    def established(self, association: Association) -> None:
        pass

    def begin_store(self, association: Association, request: StoreRequest) -> IncomingDataSet:
        return _Refused(0x0000)

    def ended(self, association: Association) -> None:
        pass


@contextmanager
def concordose_floor() -> Iterator[int]:
    """Our upper layer (in this process) with a service that discards every instance."""
    ae = AE(ae_title="FLOOR")
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    settings = UpperLayerSettings(ae=ae, max_pdu_bytes=PDU_BYTES)
    service = _DiscardingService()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            address = self.client_address
            serve_connection(self.request, f"{address[0]}:{address[1]}", settings, service)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def spool_only(workdir: Path, folder: Path) -> float:
    """Accept every file of ``folder`` into a fresh :class:`Spool` as the receiver does, no
    network; wall seconds.

    The headers are decoded before the clock starts. Timed: writing each file into a journal
    record (as the receiver streams it) and :meth:`Spool.commit_journaled` (its index record and
    the ``fdatasync``); not timed: filing them afterwards (:meth:`Spool.stop_journal`).
    """
    prepared = []
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        header = dcmread(path, stop_before_pixels=True)
        identity = InstanceIdentity.checked(
            sop_class_uid=header.SOPClassUID,
            sop_instance_uid=header.SOPInstanceUID,
            study_uid=header.StudyInstanceUID,
            series_uid=header.SeriesInstanceUID,
            transfer_syntax=header.file_meta.TransferSyntaxUID,
        )
        prepared.append((identity, data, InstanceSummary.from_dataset(header)))
    spool = Spool(workdir / "spool")
    spool.lock_for_receiver()
    spool.start_journal()
    try:
        start = time.perf_counter()
        for identity, data, summary in prepared:
            writer = spool.journal_writer()
            crc = zlib.crc32(data)
            if writer is not None:
                try:
                    writer.write(memoryview(data))
                    spool.commit_journaled(
                        writer, identity, crc, calling_ae_title="BENCH", summary=summary
                    )
                    continue
                except JournalOverflowError:
                    writer.abort()  # as the receiver: spilled into a temp file
            temp_path = spool.new_temp_path()
            temp_path.write_bytes(data)
            spool.accept_temp_file(
                identity, temp_path, len(data), crc, calling_ae_title="BENCH", summary=summary
            )
        return time.perf_counter() - start
    finally:
        spool.stop_journal()
        spool.unlock_receiver()
        spool.close()


@contextmanager
def orthanc(workdir: Path) -> Iterator[int]:
    """Orthanc with a temporary configuration and storage; yields its DICOM port."""
    dicom_port, http_port = _free_port(), _free_port()
    storage = workdir / "orthanc"
    storage.mkdir()
    config = {
        "Name": "bench", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
        "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False, "UnknownSopClassAccepted": True,
        "MaximumPduLength": PDU_BYTES, "Plugins": [],
    }  # fmt: skip
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config))
    process = subprocess.Popen(
        ["Orthanc", str(config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=NODELAY_ENV,
    )

    def answering() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/system", timeout=1):
                return _port_open(dicom_port)
        except OSError:
            return False

    try:
        _wait(answering, "Orthanc")
        yield dicom_port
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    """Time the three peers, print ratios and the receiver's peak memory."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large-mb", type=int, default=500, help="0 skips the memory run")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "Orthanc"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is required: run ./scripts/bootstrap --test")
    root = Path(tempfile.mkdtemp(prefix="bench-receiver-", dir=args.workdir))
    try:
        series = root / "series"
        write_series(series, args.instances)
        size_mb = sum(p.stat().st_size for p in series.iterdir()) / 1e6
        print(f"series: {args.instances} CT instances, {size_mb:.0f} MB, one association each run")
        times: dict[str, list[float]] = {
            "concordose": [],
            "concordose-warm": [],
            "storescp": [],
            "orthanc": [],
            "pynetdicom-floor": [],
            "concordose-floor": [],
            "spool-only": [],
        }
        stop_times: list[float] = []
        # (a') one spool kept across repeats, as a running service keeps its spool: its journal
        # segments were written once (primed by an untimed series of other UIDs), so records
        # overwrite allocated blocks and each fdatasync needs no file-system journal commit.
        warm_spool = root / "warm" / "spool"
        warm_spool.parent.mkdir()
        primer = root / "primer"
        write_series(primer, args.instances, seed=2)
        with concordose_receiver(warm_spool.parent, warm_spool) as (port, _pid):
            send(port, "CONCORDOSE", primer)
        shutil.rmtree(primer)
        names = list(times)
        for repeat in range(args.repeats):
            run = root / f"run{repeat}"
            series_of_run = series
            if repeat:  # new UIDs each repeat, so the warm spool stores (not skips) them
                series_of_run = root / f"series{repeat}"
                write_series(series_of_run, args.instances, seed=10 + repeat)
            # Rotate the order: each peer runs in each position (after another peer's unsynced
            # writes are being flushed) equally often.
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                runs = times[name]
                folder = run / name
                folder.mkdir(parents=True)
                if name == "concordose":
                    with concordose_receiver(folder, stop_times=stop_times) as (port, _pid):
                        runs.append(send(port, "CONCORDOSE", series_of_run))
                elif name == "concordose-warm":
                    with concordose_receiver(folder, warm_spool) as (port, _pid):
                        runs.append(send(port, "CONCORDOSE", series_of_run))
                elif name == "storescp":
                    with storescp(folder) as port:
                        runs.append(send(port, "STORESCP", series_of_run))
                elif name == "orthanc":
                    with orthanc(folder) as port:
                        runs.append(send(port, "ORTHANC", series_of_run))
                elif name == "pynetdicom-floor":
                    with pynetdicom_floor() as port:
                        runs.append(send(port, "FLOOR", series_of_run))
                elif name == "concordose-floor":
                    with concordose_floor() as port:
                        runs.append(send(port, "FLOOR", series_of_run))
                else:
                    runs.append(spool_only(folder, series_of_run))
        # Deleted only now: removing ~0.4 GB between runs would load the disk under the next one.
        for repeat in range(args.repeats):
            shutil.rmtree(root / f"run{repeat}")
        median = {name: statistics.median(values) for name, values in times.items()}
        best = {name: min(values) for name, values in times.items()}
        for name, value in median.items():
            each = ", ".join(f"{v:.2f}" for v in times[name])
            print(f"{name:<16} median {value:6.2f} s  ({size_mb / value:6.1f} MB/s; runs {each})")
        for ours in ("concordose", "concordose-warm"):
            print(
                f"{ours} / storescp: {median[ours] / median['storescp']:.2f}x (target ≤ 1.5), "
                f"/ orthanc: {median[ours] / median['orthanc']:.2f}x (target < 1); best runs: "
                f"{best[ours] / best['storescp']:.2f}x, {best[ours] / best['orthanc']:.2f}x"
            )
        print(
            f"floors / storescp (medians): our upper layer "
            f"{median['concordose-floor'] / median['storescp']:.2f}x, pynetdicom "
            f"{median['pynetdicom-floor'] / median['storescp']:.2f}x; "
            f"(our upper layer + spool-only) / storescp "
            f"{(median['concordose-floor'] + median['spool-only']) / median['storescp']:.2f}x"
        )
        print(
            "concordose SIGTERM → exit (files what is still only journaled): "
            + ", ".join(f"{v:.2f}" for v in stop_times)
            + " s"
        )

        if args.large_mb > 0:
            count = int(args.large_mb * 1e6 / (ROWS * COLUMNS * 2))
            large = root / "large"
            write_series(large, count, seed=1)
            large_mb = sum(p.stat().st_size for p in large.iterdir()) / 1e6
            folder = root / "memory"
            folder.mkdir()
            with concordose_receiver(folder) as (port, pid):
                before_kib = memory_kib(pid, "VmRSS")
                elapsed = send(port, "CONCORDOSE", large)
                peak_kib = memory_kib(pid, "VmHWM")
            print(
                f"large study: {count} instances, {large_mb:.0f} MB in {elapsed:.1f} s; receiver "
                f"RSS before {before_kib / 1024:.0f} MiB, peak {peak_kib / 1024:.0f} MiB "
                f"(+{(peak_kib - before_kib) / 1024:.0f} MiB)"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
