"""A command's own output folder: emptied for a fresh run, never a folder the command did not make.

``concordose demo`` and ``concordose consortium`` write everything under one folder and start
each run from an empty one. They delete only what they made: a marker file names the command
that created the folder, and a non-empty folder without it is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from concordose.errors import ConcordoseError


def fresh_run_folder(folder: Path, *, marker: str, command: str, name: str, not_ours: str) -> None:
    """Empty ``folder`` for a fresh run of ``command`` (created when missing), then mark it.

    Args:
        folder: the run's folder.
        marker: file name of the marker that says ``command`` made the folder.
        command: the command, e.g. ``"concordose demo"`` (named in the marker).
        name: how errors name the folder, e.g. ``"demo folder"`` or ``"--out"``.
        not_ours: the refusal's ending after "… is not empty and was not ", e.g.
            ``"created by the demo; choose another with --workdir"``.

    Raises:
        ConcordoseError: ``folder`` is a file, or a non-empty folder without the marker.
    """
    if folder.exists():
        if not folder.is_dir():
            raise ConcordoseError(f"{name} {folder} exists and is not a folder")
        if any(folder.iterdir()) and not (folder / marker).is_file():
            raise ConcordoseError(f"{name} {folder} is not empty and was not {not_ours}")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / marker).write_text(f"created by `{command}`; safe to delete\n")
