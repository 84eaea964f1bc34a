"""What every command shares: the consoles, the exit statuses, running an action with input
errors as one line, and the progress bar of long commands.

Exit statuses (the README's "Exit codes"): 0 done; :data:`EXIT_HELD` 1, something held or
found (a held cycle, a check finding that holds); :data:`EXIT_INPUT_ERROR` 2, bad input.

The consoles never cut a line when their output is not a terminal (piped, redirected, captured):
a script or ``grep`` then gets every value whole, e.g. a long hold reason or path, rather than
tables folded to 80 columns.

Nor do they read console markup: what they print is mostly stored or given text (a hold reason,
an error naming ``sites[2]``, a QC message naming ``[lesion_1, lesion_2]``, a folder called
``scans [2026]``), and rich would drop a bracketed word it took for a tag or fail on a ``[/…]``
it could not close. The few styled words are built as :class:`~rich.text.Text` with
:func:`styled`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console, ConsoleDimensions
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from concordose.errors import ConcordoseError

__all__ = [
    "EXIT_HELD",
    "EXIT_INPUT_ERROR",
    "PIPED_WIDTH",
    "PipeFriendlyConsole",
    "console",
    "error_console",
    "progress_bar",
    "run_or_exit",
    "styled",
]

PIPED_WIDTH = 100_000
"""Columns of a console whose output is not a terminal: wide enough that no value is cut or
wrapped (tables take only the width their content needs)."""


class PipeFriendlyConsole(Console):
    """A rich console that is as wide as its content when its output is not a terminal.

    Rich otherwise lays out for the terminal's width (80 columns when there is none, or the
    ``COLUMNS`` environment variable), so a table piped to a file or a script loses the ends of
    its long values. Console markup is off unless asked for (``markup=True``): see the module
    docstring. ``COLUMNS`` describes a terminal, so it is ignored when there is none (test
    runners and some shells export it); a width given explicitly (``width=``, or setting
    :attr:`size`) still wins.
    """

    def __init__(
        self, *args: Any, width: int | None = None, markup: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, width=width, markup=markup, **kwargs)
        self._width_given = width is not None

    @property
    def size(self) -> ConsoleDimensions:
        """The terminal's size; :data:`PIPED_WIDTH` columns when not writing to a terminal."""
        dimensions = super().size
        if self.is_terminal or self._width_given:
            return dimensions
        return ConsoleDimensions(PIPED_WIDTH, dimensions.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        width, height = new_size
        self._width = width
        self._height = height
        self._width_given = True


console = PipeFriendlyConsole()
error_console = PipeFriendlyConsole(stderr=True)

EXIT_HELD = 1
"""Exit status when something is held or found: a held cycle, a check that holds a file."""
EXIT_INPUT_ERROR = 2
"""Exit status for bad input (a ConcordoseError): one line on stderr, no traceback."""
ResultT = TypeVar("ResultT")


def styled(label: str, style: str, rest: str = "") -> Text:
    """``label`` in ``style`` followed by ``rest`` as written, e.g. ``styled("held", "yellow",
    f" cycle {cycle_id}: {reason}")``: the way to colour a word of a line whose other words are
    stored text (never read as markup)."""
    return Text.assemble((label, style), rest)


def progress_bar() -> Progress:
    """The progress bar of the long generating commands (description, bar, n/total, times)."""
    return Progress(
        TextColumn("{task.description:<36}", style="bold", markup=False),
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
        error_console.print(
            styled("error:", "bold red", f" {exc}"), highlight=False, soft_wrap=True
        )
        raise typer.Exit(EXIT_INPUT_ERROR) from None
