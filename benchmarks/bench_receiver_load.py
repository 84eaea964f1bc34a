"""Load on the receiver: one sender vs 4 senders in parallel, same total; Orthanc in the same run.

Run: ``.venv/bin/python -m benchmarks.bench_receiver_load [--instances 2000] [--repeats 3]
[--senders 4] [--json FILE]``.

A CT series of ``--instances`` slices (512×512 16-bit, ≈0.5 MB each, fresh UIDs; generated as
:func:`benchmarks.bench_receiver.write_series` does) is sent by dcmtk ``storescu`` processes
(``TCP_NODELAY=1``, 128 kB PDUs):

* *one sender*: one ``storescu``, one association, every instance;
* *N senders*: ``--senders`` ``storescu`` processes started together, each with its own
  association and an equal share of the instances (the same total).

Separate ``storescu`` processes, not pynetdicom associations in threads of this process: they are
what sites run, and they do not share this process's GIL, so the senders cannot be the
bottleneck that serialises the associations.

Peers, each run into a fresh folder, the order rotated between repeats (medians reported):

* ``concordose receive`` (subprocess, this checkout's code) on a fresh spool (journal segments
  allocated at start-up): an instance is acknowledged once its journal record is ``fdatasync``-ed;
* the same receiver with every ``os.fdatasync``/``os.fsync`` replaced by a no-op (a
  ``sitecustomize`` on its path; reference only, nothing durable): flushes cost nothing, so its
  throughput is the ceiling any batching of flushes (group commit) could approach here;
* with ``--baseline CHECKOUT``: ``concordose receive`` with that checkout's ``concordose`` first on
  its path (e.g. a ``git worktree`` of the commit before a change), for a before/after in the
  same run;
* Orthanc 1.10 with its default durable storage (file storage area, SQLite index):
  ``SyncStorageArea`` defaults to true since Orthanc 1.7.4, so each stored file is
  ``fdatasync``-ed before the C-STORE is answered (strace: one ``fdatasync`` per instance, of
  its file; none per instance of its index or folders).

After each of our runs the receiver is stopped (SIGTERM files what is still only journaled) and
every sent instance is looked up in the spool index: all must be there and the data set bytes
after the file meta must equal the sent file's (the spool files carry our own file meta). For
Orthanc the stored instance count is read from its REST API. The receiver's peak resident memory
(``VmHWM``) in each run is reported, its CPU time per instance (``/proc/<pid>/stat``) and the
senders' (their ``rusage``), how busy the machine's cores were during each send
(``/proc/stat``, every process) and how many cache flushes the disk completed meanwhile (every
process; ours include the filing's fsyncs when the burst outgrows the journal).

Group commit evidence: our receiver (not the reference or baseline runs) starts with a
``sitecustomize`` that counts its calls of ``os.fdatasync`` (the journal's flushes: records and
recycled segment headers) and ``os.fsync`` (instances filed before their answer, no journal
segment having room: each file and folder; a batch the filing thread files takes one
``syncfs``, not counted here, as SQLite's own fsyncs are not) and writes the counts when it
exits; flushes per instance below 1 with several senders means one flush covered several
associations' records. The disk's own count of completed flushes (``/proc/diskstats``) covers
everything. ``ours_many_over_one_cpu_ceiling``: 100 % over the share of the cores one sender
kept busy, the most any number of senders could reach over one at one sender's CPU per
instance. ``--json FILE`` writes every figure (runs, medians, ratios, flushes per instance,
peak RSS, the machine's load and ``uptime``) to ``FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread

from benchmarks.bench_receiver import (
    NODELAY_ENV,
    concordose_receiver,
    memory_kib,
    orthanc,
    storescu_command,
    write_series,
)
from concordose.spool.journal import DEFAULT_JOURNAL_MB
from concordose.spool.store import Spool

PREAMBLE_BYTES = 128 + 4  # Part 10 preamble + "DICM"

NO_FLUSH_SITECUSTOMIZE = """\
import os

os.fdatasync = lambda fd: None  # reference run only: nothing is durable
os.fsync = lambda fd: None
"""
"""Loaded by the no-flush reference receiver (``sitecustomize`` on its ``PYTHONPATH``): every
flush returns at once, so its throughput is the ceiling any batching of flushes (group commit)
could approach on this machine."""

COUNTING_SITECUSTOMIZE = """\
import atexit
import json
import os
import threading

_counts = {{"fdatasync": 0, "fsync": 0}}
_lock = threading.Lock()
_fdatasync, _fsync = os.fdatasync, os.fsync


def _counted(name, flush):
    def call(fd):
        with _lock:
            _counts[name] += 1
        return flush(fd)

    return call


os.fdatasync = _counted("fdatasync", _fdatasync)
os.fsync = _counted("fsync", _fsync)
atexit.register(lambda: open({path!r}, "w").write(json.dumps(_counts)))
"""
"""Loaded by our receiver in the timed runs: counts its ``fdatasync`` (journal) and ``fsync``
(filing) calls and writes them to ``path`` at exit (a lock per call: nothing next to a flush)."""


def flush_counter(folder: Path) -> tuple[Path, Path]:
    """A ``sitecustomize`` folder counting the receiver's flushes, and the file it writes."""
    folder.mkdir()
    counts = folder / "flush-counts.json"
    (folder / "sitecustomize.py").write_text(COUNTING_SITECUSTOMIZE.format(path=str(counts)))
    return folder, counts


def data_set_bytes(path: Path) -> bytes:
    """A Part 10 file's bytes after its file meta (located by its group length, 0002,0000).

    Raises:
        ValueError: the file does not start with an explicit-VR group length element.
    """
    raw = path.read_bytes()
    group, element, vr, length = struct.unpack("<HH2sH", raw[PREAMBLE_BYTES : PREAMBLE_BYTES + 8])
    if raw[128:132] != b"DICM" or (group, element, vr, length) != (2, 0, b"UL", 4):
        raise ValueError(f"{path}: expected a Part 10 file starting with (0002,0000) UL")
    (meta_bytes,) = struct.unpack("<I", raw[PREAMBLE_BYTES + 8 : PREAMBLE_BYTES + 12])
    return raw[PREAMBLE_BYTES + 12 + meta_bytes :]


def split(series: Sequence[Path], folder: Path, parts: int) -> list[Path]:
    """Hard-link ``series`` into ``parts`` folders of (nearly) equal size, one per sender."""
    folders = [folder / f"part{index}" for index in range(parts)]
    for target in folders:
        target.mkdir(parents=True)
    for index, path in enumerate(series):
        os.link(path, folders[index % parts] / path.name)
    return folders


def send_parallel(port: int, called_ae: str, folders: Sequence[Path]) -> float:
    """One ``storescu`` per folder, all started together; wall seconds until the last ends."""
    commands = [storescu_command(port, called_ae, folder) for folder in folders]
    start = time.perf_counter()
    processes = [
        subprocess.Popen(command, env=NODELAY_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for command in commands
    ]
    failures = []
    for process in processes:
        _out, err = process.communicate(timeout=1800)
        if process.returncode:
            failures.append(err.decode(errors="replace")[-500:])
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"storescu failed: {failures}")
    return elapsed


def verify_spool(spool_root: Path, series: Sequence[Path]) -> None:
    """Every instance of ``series`` indexed, its data set byte-identical to the sent file's.

    Raises:
        AssertionError: one missing or different (says which and how many).
    """
    spool = Spool.open_existing(spool_root)
    try:
        stored = {row.identity.sop_instance_uid: row.path for row in spool.instances()}
    finally:
        spool.close()
    missing, different = 0, 0
    for path in series:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        if uid not in stored:
            missing += 1
        elif data_set_bytes(stored[uid]) != data_set_bytes(path):
            different += 1
    if missing or different or len(stored) != len(series):
        raise AssertionError(
            f"spool {spool_root}: expected {len(series)} instances byte-identical, found "
            f"{len(stored)} indexed, {missing} missing, {different} different"
        )


def orthanc_instance_count(workdir: Path) -> int:
    """Instances in the Orthanc of ``workdir`` (its REST ``/statistics``; port from its config)."""
    http_port = json.loads((workdir / "orthanc.json").read_text())["HttpPort"]
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/statistics", timeout=10) as reply:
        return int(json.load(reply)["CountInstances"])


def cpu_ticks() -> tuple[int, int]:
    """The machine's (all, idle + iowait) CPU ticks so far (``/proc/stat``)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


def disk_flushes(folder: Path) -> int | None:
    """Cache-flush requests completed so far by the block device holding ``folder``
    (``/sys/dev/block/<major>:<minor>/stat``, field 16; every process's); ``None`` where the
    kernel does not report them (a partition's counters are its disk's)."""
    device = os.stat(folder).st_dev
    stat = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/stat")
    try:
        fields = stat.read_text().split()
    except OSError:
        return None
    return int(fields[15]) if len(fields) > 15 else None


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) process ``pid`` has used (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's children waited for so far (the senders)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def busy_percent(since: tuple[int, int]) -> float:
    """How busy the machine's cores were since ``since`` (:func:`cpu_ticks`), % of all cores
    (every process: ours, the senders, the kernel's loopback and writeback, other users)."""
    all_now, idle_now = cpu_ticks()
    elapsed = all_now - since[0]
    return 100.0 * (1 - (idle_now - since[1]) / elapsed) if elapsed else 0.0


def uptime() -> str:
    """``uptime``'s line (the machine's load when measured)."""
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def summary(
    args: argparse.Namespace,
    instances: int,
    size_mb: float,
    figures: dict[str, dict[str, list[float]] | dict[str, list[int]]],
) -> dict[str, Any]:
    """Every figure of a run as JSON: per peer its runs and medians, and the ratios the issue
    names (ours N senders / 1 sender, ours / Orthanc, journal flushes per instance)."""
    seconds = figures["seconds"]
    peers: dict[str, dict[str, Any]] = {}
    for name, runs in seconds.items():
        peer: dict[str, Any] = {
            "median_s": statistics.median(runs),
            "instances_per_s": instances / statistics.median(runs),
        }
        for key, values in figures.items():
            if values.get(name):
                peer[key] = {"runs": values[name], "median": statistics.median(values[name])}
        peers[name] = peer

    def rate(name: str) -> float | None:
        return peers[name]["instances_per_s"] if name in peers else None

    def ratio(numerator: str, denominator: str) -> float | None:
        top, bottom = rate(numerator), rate(denominator)
        return None if top is None or bottom is None else top / bottom

    many = f"-{args.senders}"
    busy_one = peers.get("ours-1", {}).get("cpu_busy_percent", {}).get("median")
    return {
        "benchmark": "bench_receiver_load",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "instances": instances,
        "size_mb": size_mb,
        "senders": args.senders,
        "repeats": args.repeats,
        "journal_mb": args.journal_mb if args.journal_mb is not None else DEFAULT_JOURNAL_MB,
        "peers": peers,
        "ratios": {
            "ours_many_over_one": ratio("ours" + many, "ours-1"),
            "ours_over_orthanc_one_sender": ratio("ours-1", "orthanc-1"),
            "ours_over_orthanc_many_senders": ratio("ours" + many, "orthanc" + many),
            "orthanc_many_over_one": ratio("orthanc" + many, "orthanc-1"),
            "no_flush_many_over_one": ratio("ours" + many + "-no-flush", "ours-1-no-flush"),
            "ours_over_no_flush_many_senders": ratio("ours" + many, "ours" + many + "-no-flush"),
            "baseline_many_over_one": ratio("baseline" + many, "baseline-1"),
            "ours_over_baseline_one_sender": ratio("ours-1", "baseline-1"),
            "ours_over_baseline_many_senders": ratio("ours" + many, "baseline" + many),
            # The most N senders could reach over one if they kept every core busy at one
            # sender's CPU per instance: 100 % / the share of the cores one sender kept busy.
            "ours_many_over_one_cpu_ceiling": None if not busy_one else 100.0 / busy_one,
        },
        "targets": {"ours_many_over_one": 2.0, "ours_over_orthanc_many_senders": 2.0},
    }


def main() -> None:
    """Time one sender vs parallel senders into our receiver and Orthanc; print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-orthanc", action="store_true", help="our receiver only")
    parser.add_argument(
        "--no-flush-reference",
        action="store_true",
        help="skip the reference runs of our receiver with every flush a no-op",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument(
        "--journal-mb",
        type=int,
        default=None,
        help="our receivers' journal size (CONCORDOSE_SPOOL_JOURNAL_MB; default: the setting's "
        "default, 256). Bursts larger than the journal are filed while they arrive.",
    )
    parser.add_argument(
        "--no-flush-count",
        action="store_true",
        help="run our receiver without the sitecustomize counting its flushes",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout of concordose to run as the 'baseline' receiver (before/after)",
    )
    args = parser.parse_args()
    for tool in ("storescu", *(() if args.no_orthanc else ("Orthanc",))):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is required: run ./scripts/bootstrap --test")
    journal_setting = (
        {} if args.journal_mb is None else {"CONCORDOSE_SPOOL_JOURNAL_MB": str(args.journal_mb)}
    )
    root = Path(tempfile.mkdtemp(prefix="bench-receiver-load-", dir=args.workdir)).resolve()
    try:
        series_folder = root / "series"
        series = write_series(series_folder, args.instances)
        parts = split(series, root / "parts", args.senders)
        size_mb = sum(path.stat().st_size for path in series) / 1e6
        print(
            f"series: {args.instances} CT instances, {size_mb:.0f} MB; 1 sender vs "
            f"{args.senders} senders ({len(list(parts[0].iterdir()))} instances each); "
            f"load average at start {os.getloadavg()[0]:.1f}"
        )
        names = ["ours-1", f"ours-{args.senders}"]
        no_flush = root / "no-flush"
        if not args.no_flush_reference:
            no_flush.mkdir()
            (no_flush / "sitecustomize.py").write_text(NO_FLUSH_SITECUSTOMIZE)
            names += ["ours-1-no-flush", f"ours-{args.senders}-no-flush"]
        if args.baseline is not None:
            names += ["baseline-1", f"baseline-{args.senders}"]
        if not args.no_orthanc:
            names += ["orthanc-1", f"orthanc-{args.senders}"]
        times: dict[str, list[float]] = {name: [] for name in names}
        busy: dict[str, list[float]] = {name: [] for name in names}  # % of all cores, any process
        flushes: dict[str, list[int]] = {name: [] for name in names}  # the disk's, any process
        peaks_mib: dict[str, list[float]] = {
            name: [] for name in names if not name.startswith("orthanc")
        }
        receiver_cpu_ms: dict[str, list[float]] = {name: [] for name in peaks_mib}  # per instance
        sender_cpu_ms: dict[str, list[float]] = {name: [] for name in names}  # per instance
        # Our receiver's os.fdatasync (journal) and os.fsync (filing) calls per instance.
        fdatasyncs: dict[str, list[float]] = {name: [] for name in names if name.startswith("ours")}
        fsyncs: dict[str, list[float]] = {name: [] for name in fdatasyncs}
        uptime_start = uptime()
        loads: list[float] = []
        starts_mib: list[float] = []  # our receiver's resident memory once listening
        for repeat in range(args.repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                folder = root / f"run{repeat}" / name
                folder.mkdir(parents=True)
                folders = [series_folder] if "-1" in name else parts
                loads.append(os.getloadavg()[0])
                ticks_before, flushes_before = cpu_ticks(), disk_flushes(root)
                if not name.startswith("orthanc"):
                    extra = no_flush if name.endswith("no-flush") else None
                    counts_file = None
                    if (
                        name in fdatasyncs
                        and not name.endswith("no-flush")
                        and not args.no_flush_count
                    ):
                        extra, counts_file = flush_counter(folder / "count")
                    # ``python -m`` puts its working folder first on the path: the baseline
                    # receiver starts in its checkout, so that its ``concordose`` is imported.
                    cwd = Path.cwd()
                    if name.startswith("baseline"):
                        extra = cwd = args.baseline.resolve()
                    with (
                        contextlib.chdir(cwd),
                        concordose_receiver(
                            folder, extra_path=extra, environment=journal_setting
                        ) as (port, pid),
                    ):
                        starts_mib.append(memory_kib(pid, "VmRSS") / 1024)
                        cpu_before, senders_before = process_cpu_s(pid), children_cpu_s()
                        times[name].append(send_parallel(port, "CONCORDOSE", folders))
                        receiver_cpu_ms[name].append(
                            (process_cpu_s(pid) - cpu_before) * 1e3 / len(series)
                        )
                        sender_cpu_ms[name].append(
                            (children_cpu_s() - senders_before) * 1e3 / len(series)
                        )
                        busy[name].append(busy_percent(ticks_before))
                        flushes_after = disk_flushes(root)
                        if flushes_before is not None and flushes_after is not None:
                            flushes[name].append(flushes_after - flushes_before)
                        peaks_mib[name].append(memory_kib(pid, "VmHWM") / 1024)
                    if counts_file is not None:  # written by the receiver as it exited
                        counted = json.loads(counts_file.read_text())
                        fdatasyncs[name].append(counted["fdatasync"] / len(series))
                        fsyncs[name].append(counted["fsync"] / len(series))
                    verify_spool(folder / "spool", series)
                else:
                    with orthanc(folder) as port:
                        senders_before = children_cpu_s()
                        times[name].append(send_parallel(port, "ORTHANC", folders))
                        sender_cpu_ms[name].append(
                            (children_cpu_s() - senders_before) * 1e3 / len(series)
                        )
                        busy[name].append(busy_percent(ticks_before))
                        flushes_after = disk_flushes(root)
                        if flushes_before is not None and flushes_after is not None:
                            flushes[name].append(flushes_after - flushes_before)
                        count = orthanc_instance_count(folder)
                    if count != len(series):
                        raise AssertionError(f"Orthanc stored {count} of {len(series)} instances")
                print(
                    f"  repeat {repeat} {name:<10} {times[name][-1]:6.2f} s "
                    f"({len(series) / times[name][-1]:6.1f} instances/s, CPU busy "
                    f"{busy[name][-1]:.0f} %, load {loads[-1]:.1f})",
                    flush=True,
                )
            shutil.rmtree(root / f"run{repeat}")
        median = {name: statistics.median(values) for name, values in times.items()}
        for name, value in median.items():
            runs = ", ".join(f"{v:.2f}" for v in times[name])
            peak = ""
            flushed = ""
            if flushes[name]:
                flushed = f", disk flushes median {statistics.median(flushes[name]):.0f}"
            if name in peaks_mib:
                peak = (
                    f", peak RSS median {statistics.median(peaks_mib[name]):.0f} MiB, receiver "
                    f"CPU {statistics.median(receiver_cpu_ms[name]):.2f} ms/instance"
                )
            peak += f", senders' CPU {statistics.median(sender_cpu_ms[name]):.2f} ms/instance"
            if fdatasyncs.get(name):
                peak += (
                    f", journal flushes {statistics.median(fdatasyncs[name]):.2f}/instance, "
                    f"filing fsyncs {statistics.median(fsyncs[name]):.2f}/instance"
                )
            print(
                f"{name:<10} median {value:6.2f} s = {len(series) / value:6.1f} instances/s "
                f"(runs {runs}), CPU busy {statistics.median(busy[name]):.0f} %{flushed}{peak}"
            )
        many = f"-{args.senders}"
        busy_one = statistics.median(busy["ours-1"])
        print(
            f"ours {args.senders} senders / 1 sender throughput: "
            f"{median['ours-1'] / median['ours' + many]:.2f}x (target ≥ 2); one sender kept "
            f"{busy_one:.0f} % of the {os.cpu_count()} cores busy, so no number of senders can "
            f"exceed {100 / busy_one:.2f}x at its CPU per instance"
        )
        if not args.no_flush_reference:
            print(
                f"no-flush reference (flushes cost nothing, nothing durable): "
                f"{args.senders} senders / 1 sender "
                f"{median['ours-1-no-flush'] / median['ours' + many + '-no-flush']:.2f}x; "
                f"ours with {args.senders} senders reaches "
                f"{median['ours' + many + '-no-flush'] / median['ours' + many]:.2f} of that ceiling"
            )
        if args.baseline is not None:
            print(
                f"baseline {args.senders} senders / 1 sender throughput: "
                f"{median['baseline-1'] / median['baseline' + many]:.2f}x; ours / baseline: "
                f"1 sender {median['baseline-1'] / median['ours-1']:.2f}x, {args.senders} "
                f"senders {median['baseline' + many] / median['ours' + many]:.2f}x"
            )
        if not args.no_orthanc:
            print(
                f"Orthanc {args.senders} senders / 1 sender throughput: "
                f"{median['orthanc-1'] / median['orthanc' + many]:.2f}x"
            )
            print(
                f"ours / Orthanc throughput, {args.senders} senders: "
                f"{median['orthanc' + many] / median['ours' + many]:.2f}x (target ≥ 2); "
                f"1 sender: {median['orthanc-1'] / median['ours-1']:.2f}x"
            )
        print(f"our receiver's RSS once listening: median {statistics.median(starts_mib):.0f} MiB")
        print(
            f"load average during runs: median {statistics.median(loads):.1f} "
            f"(min {min(loads):.1f}, max {max(loads):.1f})"
        )
        uptime_end = uptime()
        print(f"uptime at start: {uptime_start}\nuptime at end:   {uptime_end}")
        if args.json is not None:
            result = summary(
                args,
                len(series),
                size_mb,
                {
                    "seconds": times,
                    "cpu_busy_percent": busy,
                    "disk_flushes": flushes,
                    "peak_rss_mib": peaks_mib,
                    "receiver_cpu_ms_per_instance": receiver_cpu_ms,
                    "sender_cpu_ms_per_instance": sender_cpu_ms,
                    "journal_fdatasync_per_instance": fdatasyncs,
                    "filing_fsync_per_instance": fsyncs,
                },
            )
            result["machine"] = {
                "cores": os.cpu_count(),
                "uptime_start": uptime_start,
                "uptime_end": uptime_end,
                "load_average_during_runs": {
                    "median": statistics.median(loads),
                    "min": min(loads),
                    "max": max(loads),
                },
                "receiver_rss_once_listening_mib": statistics.median(starts_mib),
            }
            args.json.write_text(json.dumps(result, indent=2) + "\n")
            print(f"figures written to {args.json}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
