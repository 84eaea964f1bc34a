"""A command's run folder: emptied when the command made it, refused otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from concordose.errors import ConcordoseError
from concordose.run_folder import fresh_run_folder

ARGS = {
    "marker": ".made-by-test",
    "command": "concordose demo",
    "name": "demo folder",
    "not_ours": "created by the demo; choose another with --workdir",
}


def test_a_folder_the_command_made_is_emptied_and_marked(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    fresh_run_folder(folder, **ARGS)
    (folder / "old.parquet").write_text("x")
    fresh_run_folder(folder, **ARGS)
    assert sorted(p.name for p in folder.iterdir()) == [".made-by-test"]
    assert "concordose demo" in (folder / ".made-by-test").read_text()


def test_a_folder_the_command_did_not_make_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep")
    with pytest.raises(ConcordoseError, match="is not empty and was not created by the demo"):
        fresh_run_folder(tmp_path, **ARGS)
    assert (tmp_path / "precious.txt").read_text() == "keep"
    a_file = tmp_path / "precious.txt"
    with pytest.raises(ConcordoseError, match="exists and is not a folder"):
        fresh_run_folder(a_file, **ARGS)
