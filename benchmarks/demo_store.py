"""A published store to benchmark readers against: ``concordose demo``'s output, made on demand."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from concordose.cli import app


def demo_output(folder: Path) -> Path:
    """Run ``concordose demo`` under ``folder`` (≈ 45 s) and return its published store's path.

    Raises:
        SystemExit: the demo failed (its output is the message).
    """
    result = CliRunner().invoke(app, ["demo", "--workdir", str(folder / "run")])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    return folder / "run" / "output"
