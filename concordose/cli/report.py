"""``concordose report``: build reports on demand from the published tables (issue 17)."""

from __future__ import annotations

from typing import Annotated

import typer

from concordose.cli.console import console, run_or_exit

__all__ = ["report"]


def report(
    output: Annotated[
        str | None,
        typer.Option(
            help="Published store: folder or s3://bucket/prefix (default CONCORDOSE_OUTPUT_URI); "
            "reports are written into it, under _reports/.",
        ),
    ] = None,
    cycle: Annotated[
        list[str] | None,
        typer.Option(
            "--cycle",
            help="cycle_key of a cycle to report (repeatable); default: every published cycle "
            "(none with --dashboard).",
        ),
    ] = None,
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard",
            help="Build the consortium dashboard (_reports/dashboard/index.html) instead of "
            "every cycle's report; with --cycle, those cycles' reports too.",
        ),
    ] = False,
) -> None:
    """Build per-cycle reports and the consortium dashboard (self-contained HTML) from the
    published tables, and write them into the store: _reports/cycles/<cycle_key>.html,
    _reports/dashboard/index.html.

    Example: concordose report --output ./output --cycle cyc-eb0807cf387427874c38cfd9
    Example: concordose report --output s3://results/lu177 --dashboard
    """

    def run() -> list[tuple[str, str]]:
        from concordose.report import build_cycle_report, build_dashboard, publish_cycle_report
        from concordose.report.cycle_tables import published_cycle_keys
        from concordose.report.dashboard import publish_dashboard
        from concordose.results.catalogue import connect
        from concordose.results.object_store import open_object_store
        from concordose.settings import Settings

        settings = Settings()
        store = open_object_store(output or settings.output_uri, settings, create=False)
        written = []
        if cycle or not dashboard:
            connection = connect(store)
            try:
                keys = list(dict.fromkeys(cycle)) if cycle else published_cycle_keys(connection)
                for key in keys:
                    html = build_cycle_report(store, key, connection=connection)
                    written.append((key, publish_cycle_report(store, key, html)))
            finally:
                connection.close()
        if dashboard:
            written.append(("dashboard", publish_dashboard(store, build_dashboard(store))))
        return written

    written = run_or_exit(run)
    if not written:
        console.print("no published cycle: nothing to report", soft_wrap=True)
        return
    for key, path in written:
        console.print(f"{key}  {path}", highlight=False, soft_wrap=True)
