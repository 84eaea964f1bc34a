"""``concordose prediction …``: pre-therapy PET dose prediction (issue 20, item 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from concordose.cli.console import console, error_console, run_or_exit

__all__ = ["prediction_app"]

prediction_app = typer.Typer(
    help="Pre-therapy PET dose prediction: the dose_prediction table.\n\n"
    "Example: concordose prediction build --spool /var/lib/concordose/spool --sites sites.yaml",
    no_args_is_help=True,
)


@prediction_app.command("build")
def build_command(
    spool: Annotated[
        Path, typer.Option(help="The receiver's spool holding the pre-therapy PET studies.")
    ],
    sites: Annotated[Path, typer.Option(help="sites.yaml: which site each calling AE title is.")],
    output: Annotated[
        str | None,
        typer.Option(help="Published store: folder or s3://… (default CONCORDOSE_OUTPUT_URI)."),
    ] = None,
) -> None:
    """Compute every pre-therapy PET's SUV features per VOI (registered to the patient's
    first-cycle VOIs, or its PET study's own SEG), train the dose-per-GBq predictor on the
    store's first-cycle doses (validated leave one site out) and publish dose_prediction.
    Exit 0 done (or no PET: nothing published), 2 bad input.

    Example: concordose prediction build --spool ./spool --sites sites.yaml --output ./output
    """

    def run() -> tuple[int, str | None, tuple[str, ...]]:
        from concordose.calibration.registry import SiteRegistry
        from concordose.pipeline.pretherapy_pet import publish_spool_dose_prediction
        from concordose.results.object_store import open_object_store
        from concordose.results.provenance import Provenance, new_run_id
        from concordose.settings import Settings
        from concordose.spool.store import Spool

        settings = Settings()
        registry = SiteRegistry.load(sites)  # the configuration first, then the data
        done = publish_spool_dose_prediction(
            Spool.open_existing(spool),
            registry,
            open_object_store(output or settings.output_uri, settings),
            Provenance(run_id=new_run_id()),
            pseudonym_key=settings.pseudonym_key,
        )
        run_id = None if done.published is None else done.published.run_id
        return done.n_vois, run_id, done.problems

    n_vois, run_id, problems = run_or_exit(run)
    for problem in problems:
        error_console.print(f"skipped: {problem}", highlight=False, soft_wrap=True)
    if run_id is None:
        console.print("no pre-therapy PET features: dose_prediction not published")
        return
    console.print(
        f"dose_prediction: {n_vois} VOIs with PET features, run {run_id}",
        highlight=False,
        soft_wrap=True,
    )
