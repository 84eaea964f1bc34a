"""What every command shares: the consoles, the input-error exit status, running an action with
input errors as one line, and the progress bar of long commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from concordose.errors import ConcordoseError

__all__ = ["EXIT_INPUT_ERROR", "console", "error_console", "progress_bar", "run_or_exit"]

console = Console()
error_console = Console(stderr=True)

EXIT_INPUT_ERROR = 2
ResultT = TypeVar("ResultT")


def progress_bar() -> Progress:
    """The progress bar of the long generating commands (description, bar, n/total, times)."""
    return Progress(
        TextColumn("[bold]{task.description:<36}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def run_or_exit(action: Callable[[], ResultT]) -> ResultT:
    """Run ``action``; a ConcordoseError becomes a one-line message and exit status 2."""
    try:
        return action()
    except ConcordoseError as exc:
        error_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INPUT_ERROR) from None
