"""``concordose report``: build reports on demand from the published tables (issue 17)."""

from __future__ import annotations

from typing import Annotated

import typer

from concordose.cli.console import EXIT_INPUT_ERROR, console, error_console, run_or_exit

__all__ = ["report"]


def report(
    output: Annotated[
        str | None,
        typer.Option(
            help="Published store: folder or s3://bucket/prefix (default CONCORDOSE_OUTPUT_URI); "
            "reports are written into it, under _reports/cycles/.",
        ),
    ] = None,
    cycle: Annotated[
        list[str] | None,
        typer.Option(
            "--cycle",
            help="cycle_key of a cycle to report (repeatable); default: every published cycle.",
        ),
    ] = None,
    dashboard: Annotated[
        bool, typer.Option("--dashboard", help="Build the consortium dashboard (not yet).")
    ] = False,
) -> None:
    """Build per-cycle reports (self-contained HTML) from the published tables and each cycle's
    image products, and write them to _reports/cycles/<cycle_key>.html in the store.

    Example: concordose report --output ./output --cycle cyc-eb0807cf387427874c38cfd9
    """
    if dashboard:
        error_console.print(
            "[bold red]error:[/] --dashboard is not yet implemented (issue 17, item 2); "
            "build cycle reports without it",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INPUT_ERROR)

    def run() -> list[tuple[str, str]]:
        from concordose.report import build_cycle_report, publish_cycle_report
        from concordose.report.cycle_tables import published_cycle_keys
        from concordose.results.catalogue import connect
        from concordose.results.object_store import open_object_store
        from concordose.settings import Settings

        settings = Settings()
        store = open_object_store(output or settings.output_uri, settings, create=False)
        connection = connect(store)
        try:
            keys = list(dict.fromkeys(cycle)) if cycle else published_cycle_keys(connection)
            written = []
            for key in keys:
                html = build_cycle_report(store, key, connection=connection)
                written.append((key, publish_cycle_report(store, key, html)))
            return written
        finally:
            connection.close()

    written = run_or_exit(run)
    if not written:
        console.print("no published cycle: nothing to report", soft_wrap=True)
        return
    for key, path in written:
        console.print(f"{key}  {path}", highlight=False, soft_wrap=True)
