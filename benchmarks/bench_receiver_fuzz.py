"""Fuzzing the receiver at scale (issue 18, item 5): 3,000 seeded mutants of the Siemens SPECT
fixture and of a generated patient's NM, CT and SEG files over real associations, the count of
each status, and the same first mutants sent to dcmtk's ``storescp`` in the same run.

Run: ``.venv/bin/python -m benchmarks.bench_receiver_fuzz [--count 3000] [--seed 18]
[--peer-count 300] [--json FILE]``.

The mutator and the checks are the suite's (``tests/integration/receiver_fuzzing.py``,
``tests/integration/test_receiver_fuzz.py`` runs 300): every mutant must be answered (no
association aborted), the receiver must answer a C-ECHO after, the spool must index exactly the
instances answered 0x0000, and each of those must read back with pydicom and ``dcmdump`` and
(NM) through ``concordose check``'s reading path. For ``storescp`` (``-od``, default options,
``--dimse-timeout 5``) the same mutants are counted by answer, association aborted (or no
answer within 5 s), and how many of the files it wrote ``dcmdump`` cannot read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from concordose.calibration.registry import SiteRegistry
from concordose.ingest.receiver import StorageReceiver
from concordose.phantoms import generate_patient
from concordose.spool.store import Spool
from tests.integration.crafted_peer import CraftedPeer
from tests.integration.peers import free_port, port_open, stop_process, wait_until
from tests.integration.receiver_fuzzing import (
    ECHO_CONTEXT,
    Campaign,
    Seed,
    contexts,
    fuzz_seeds,
    mutants,
    rtstruct_ct_files,
    run_campaign,
    unreadable_successes,
)

SIEMENS_FIXTURE = (
    Path(__file__).resolve().parent.parent
    / "tests"
    / "data"
    / ("siemens_intevo_lu177_phantom_recon.dcm")
)
SENDER = "MILAN_SPECT"
STATUS_NAMES = {
    0x0000: "0x0000 success",
    0xC000: "0xC000 cannot understand",
    0xA900: "0xA900 does not match SOP class",
    0x0122: "0x0122 SOP class not supported",
    0xA700: "0xA700 out of resources",
}


def _named(counts: Counter[int]) -> dict[str, int]:
    return {STATUS_NAMES.get(k, f"0x{k:04X}"): v for k, v in sorted(counts.items())}


def _ours(
    work: Path,
    seeds: list[Seed],
    args: argparse.Namespace,
    registry: SiteRegistry,
    ct_files: list[Path],
) -> dict[str, object]:
    with StorageReceiver(
        Spool(work / "spool"), port=0, allowed_calling_ae_titles=[SENDER]
    ) as receiver:
        campaign = run_campaign(
            receiver.port, seeds, seed=args.seed, count=args.count, calling_ae=SENDER
        )
        peer = CraftedPeer(receiver.port, contexts(), calling_ae=SENDER)
        echo = peer.echo(ECHO_CONTEXT)
        peer.release()
        rows = {row.identity.sop_instance_uid: row for row in receiver.spool.instances()}
        start = time.monotonic()
        failures = unreadable_successes(
            campaign,
            {uid: row.path for uid, row in rows.items()},
            {uid: row.identity.sop_class_uid for uid, row in rows.items()},
            registry,
            seed=args.seed,
            rtstruct_ct_files=ct_files,
        )
        verify_s = time.monotonic() - start
    by_operator: dict[str, Counter[int]] = {}
    for item in mutants(seeds, args.seed, args.count):
        for name in item.operators:
            by_operator.setdefault(name, Counter())[campaign.statuses.get(item.index, -1)] += 1
    return {
        "mutants": args.count,
        "elapsed_s": round(campaign.elapsed_s, 1),
        "mutants_per_s": round(args.count / campaign.elapsed_s, 1),
        "statuses": _named(campaign.counts()),
        "aborted": len(campaign.aborted),
        "echo_after": echo,
        "indexed_equals_successes": set(rows) == set(campaign.accepted),
        "successes_unreadable": failures,
        "verify_successes_s": round(verify_s, 1),
        "statuses_by_operator": {k: _named(v) for k, v in sorted(by_operator.items())},
    }


def _storescp(work: Path, seeds: list[Seed], args: argparse.Namespace) -> dict[str, object]:
    executable = shutil.which("storescp")
    if executable is None or args.peer_count == 0:
        return {"skipped": "storescp not installed" if executable is None else "--peer-count 0"}
    out = work / "storescp"
    out.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [executable, "--dimse-timeout", "5", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: port_open(port), timeout_s=30, what="storescp")
        campaign: Campaign = run_campaign(
            port, seeds, seed=args.seed, count=args.peer_count, calling_ae=SENDER, timeout_s=5.0
        )
    finally:
        stop_process(process)
    files = [p for p in out.iterdir() if p.is_file()]
    unreadable = sum(
        subprocess.run(["dcmdump", "-q", str(p)], capture_output=True, check=False).returncode != 0
        for p in files
    )
    return {
        "mutants": args.peer_count,
        "elapsed_s": round(campaign.elapsed_s, 1),
        "statuses": _named(campaign.counts()),
        "aborted_or_no_answer": len(campaign.aborted),
        "files_written": len(files),
        "files_dcmdump_cannot_read": unreadable,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--peer-count", type=int, default=300, help="mutants sent to storescp")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        work = Path(tmp)
        patient = generate_patient(work / "patient", seed=11, preset="test")
        seeds = fuzz_seeds(SIEMENS_FIXTURE, patient)
        registry = SiteRegistry.load(patient.sites_path)
        result = {
            "seed": args.seed,
            "concordose": _ours(work, seeds, args, registry, rtstruct_ct_files(patient)),
            "storescp": _storescp(work, seeds, args),
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
