"""``concordose spool …``: inspect and steer a spool (status, explicit completion)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from concordose.cli.console import console, run_or_exit
from concordose.cli.output import echo_json

__all__ = ["spool_app"]

spool_app = typer.Typer(
    help="Inspect and steer a spool.\n\nExample: concordose spool status --spool /var/lib/spool",
    no_args_is_help=True,
)

STATUS_COLUMNS = (
    "cycle",
    "patient",
    "injection",
    "h p.i.",
    "study",
    "sender",
    "modalities",
    "instances",
    "MB",
    "time point",
    "event",
    "cycle state",
)
NO_CYCLE_YET = "no SPECT with injection data yet"
"""Cycle state of a time point that belongs to no cycle yet."""


def _status_document(spool: Path, *, show_phi: bool) -> dict[str, Any]:
    """The spool's status as plain data: what ``spool status --json`` prints and the table
    shows (patients named by :func:`~concordose.dicom.pseudonym.patient_label`)."""
    from concordose.dicom.pseudonym import patient_label
    from concordose.settings import Settings
    from concordose.spool.store import Spool

    opened = Spool.open_existing(spool)
    key = None if show_phi else Settings().pseudonym_key
    status = opened.status()
    by_study = {record.study_uid: record for record in opened.timepoints()}

    def time_point(uid: str) -> dict[str, Any]:
        record = by_study[uid]
        event = "delivered" if record.notified_at else "pending" if record.completed_at else None
        return {
            "study_uid": record.study_uid,
            "patient": patient_label(record.patient_id, key, show_phi=show_phi),
            "time_h": record.time_h,
            "sender": record.calling_ae_title,
            "modalities": list(record.modalities),
            "instances": record.instance_count,
            "size_bytes": record.size_bytes,
            "state": record.state.value,
            "revision": record.revision,
            "event": event,
        }

    cycles = []
    shown: set[str] = set()
    for cycle in opened.cycles():
        in_time_order = sorted(
            cycle.members.all_study_uids,
            key=lambda uid: (by_study[uid].time_h is None, by_study[uid].time_h or 0.0),
        )
        shown.update(in_time_order)
        cycles.append(
            {
                "cycle_id": cycle.cycle_id,
                "patient": patient_label(cycle.members.patient_id, key, show_phi=show_phi),
                "injection": cycle.members.injection_datetime.isoformat(),
                "state": cycle.state.value,
                "reason": cycle.reason,
                "time_points": [time_point(uid) for uid in in_time_order],
            }
        )
    quarantined = []
    for path in opened.quarantined():
        reason = path.with_suffix(".reason.txt")
        quarantined.append(
            {
                "file": path.name,
                "reason": reason.read_text(errors="replace") if reason.is_file() else None,
            }
        )
    return {
        "spool": str(spool),
        "cycles": cycles,
        "unassigned_time_points": [time_point(uid) for uid in by_study if uid not in shown],
        "totals": {
            "instances": status.instances,
            "size_bytes": status.size_bytes,
            "time_points": {
                "receiving": status.receiving,
                "complete": status.complete,
                "processed": status.processed,
            },
            "pending_events": status.pending_events,
            "cycles": dict(status.cycles),
            "quarantined": status.quarantined,
            "duplicates": {
                "conflicting": status.duplicates_conflicting,
                "other_study": status.duplicates_other_study,
            },
        },
        "quarantined": quarantined,
    }


def _time_point_cells(point: dict[str, Any]) -> list[str]:
    return [
        "—" if point["time_h"] is None else f"{point['time_h']:.1f}",
        point["study_uid"],
        point["sender"],
        ",".join(point["modalities"]),
        str(point["instances"]),
        f"{point['size_bytes'] / 1e6:.1f}",
        f"{point['state']} r{point['revision']}",
        point["event"] or "—",
    ]


def _print_status(document: dict[str, Any]) -> None:
    table = Table(title=f"Cycles → time points in {document['spool']}")
    for column in STATUS_COLUMNS:
        # The study UID folds in a narrow terminal (operators copy it for `spool complete`).
        table.add_column(column, overflow="fold", no_wrap=column not in ("study", "cycle state"))
    for cycle in document["cycles"]:
        state = cycle["state"] + (f": {cycle['reason']}" if cycle["reason"] else "")
        injection = cycle["injection"][:16].replace("T", " ")
        for point in cycle["time_points"]:
            table.add_row(
                cycle["cycle_id"],
                point["patient"],
                injection,
                *_time_point_cells(point),
                state,
            )
    for point in document["unassigned_time_points"]:
        table.add_row("(none yet)", point["patient"], "?", *_time_point_cells(point), NO_CYCLE_YET)
    console.print(table)
    totals = document["totals"]
    points = totals["time_points"]
    counts = ", ".join(f"{name} {count}" for name, count in totals["cycles"].items())
    console.print(
        f"instances {totals['instances']} ({totals['size_bytes'] / 1e6:.1f} MB) · time points: "
        f"receiving {points['receiving']}, complete {points['complete']}, processed "
        f"{points['processed']} · events pending {totals['pending_events']} · cycles: "
        f"{counts or 'none'} · quarantined {totals['quarantined']}"
        f" · duplicates kept: conflicting {totals['duplicates']['conflicting']}, other study "
        f"{totals['duplicates']['other_study']}"
    )
    for item in document["quarantined"]:
        reason = item["reason"] if item["reason"] is not None else "(no reason file)"
        console.print(f"  quarantine {item['file']}: {reason}", highlight=False)


@spool_app.command("status")
def spool_status(
    spool: Annotated[Path, typer.Option(help="Spool folder.")],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON document instead of the table. Keys: spool; cycles (cycle_id, "
            "patient, injection, state, reason, time_points); unassigned_time_points; totals "
            "(instances, size_bytes, time_points {receiving, complete, processed}, "
            "pending_events, cycles {state: count}, quarantined, duplicates {conflicting, "
            "other_study}: copies of an already-filed SOP Instance UID with other bytes, kept "
            "in the quarantine); quarantined (file, reason). "
            "A time point: study_uid, patient, time_h, sender, modalities, instances, "
            "size_bytes, state, revision, event (pending, delivered or null).",
        ),
    ] = False,
    show_phi: Annotated[
        bool,
        typer.Option(
            "--show-phi",
            help="Show PatientIDs. Default: the subject key (CONCORDOSE_PSEUDONYM_KEY), or "
            "'(hidden)' without a key.",
        ),
    ] = False,
) -> None:
    """Show cycles (receiving, ready, processed, held with the reason, failed), their time
    points, and what is quarantined. Patients appear pseudonymised unless --show-phi.

    Example: concordose spool status --spool /var/lib/concordose/spool --json
    """
    document = run_or_exit(lambda: _status_document(spool, show_phi=show_phi))
    if as_json:
        echo_json(document)
    else:
        _print_status(document)


@spool_app.command("complete")
def spool_complete(
    spool: Annotated[Path, typer.Option(help="Spool folder.")],
    study: Annotated[str, typer.Option(help="StudyInstanceUID of the time point.")],
) -> None:
    """Explicit trigger: mark a time point complete now (the running receiver emits its event).

    Example: concordose spool complete --spool /var/lib/concordose/spool --study 1.2.826.0.1.3
    """
    from datetime import UTC, datetime

    from concordose.spool.store import Spool

    def complete() -> None:
        changed = Spool.open_existing(spool).mark_complete(
            study, "explicit trigger (concordose spool complete)", datetime.now(UTC)
        )
        state = "marked complete" if changed else "was already complete or processed"
        console.print(f"time point {study} {state}")

    run_or_exit(complete)
