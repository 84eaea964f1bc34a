"""The task runner setting (issue 19): ``default``, ``dask`` or ``dask:ADDRESS``, from
``CONCORDOSE_TASK_RUNNER`` or the CLI, and a one-line error naming the accepted values for
anything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from concordose.cli import app
from concordose.cli.console import EXIT_INPUT_ERROR
from concordose.errors import ConfigurationError
from concordose.settings import (
    Settings,
    check_task_runner,
    dask_scheduler_address,
    resolve_task_runner,
)


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("default", None),
        ("dask", None),
        ("dask:tcp://dask-scheduler:8786", "tcp://dask-scheduler:8786"),
        ("dask:127.0.0.1:8786", "127.0.0.1:8786"),
        ("dask:tls://[::1]:8786", "tls://[::1]:8786"),
    ],
)
def test_known_task_runners_and_their_scheduler(value: str, address: str | None) -> None:
    assert check_task_runner(value) == value
    assert dask_scheduler_address(value) == address


@pytest.mark.parametrize(
    "value", ["", "Dask", "spark", "dask:", "dask:scheduler", "dask:http://host:8786", "dask: h:1"]
)
def test_anything_else_is_refused_naming_what_is_accepted(value: str) -> None:
    with pytest.raises(ConfigurationError, match="CONCORDOSE_TASK_RUNNER") as raised:
        check_task_runner(value)
    assert "'default', 'dask'" in str(raised.value)
    assert "dask:tcp://dask-scheduler:8786" in str(raised.value)


def test_the_environment_sets_it_and_an_explicit_value_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CONCORDOSE_TASK_RUNNER", raising=False)
    assert Settings().task_runner == "default"
    assert resolve_task_runner(None) == "default"
    monkeypatch.setenv("CONCORDOSE_TASK_RUNNER", "dask:tcp://dask-scheduler:8786")
    assert Settings().task_runner == "dask:tcp://dask-scheduler:8786"
    assert resolve_task_runner(None) == "dask:tcp://dask-scheduler:8786"
    assert resolve_task_runner("default") == "default"
    monkeypatch.setenv("CONCORDOSE_TASK_RUNNER", "threads")
    with pytest.raises(ConfigurationError, match="'threads'"):
        Settings()


@pytest.mark.parametrize("command", ["process", "sweep", "process-cycle"])
def test_the_cli_refuses_a_bad_task_runner_before_anything_runs(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arguments = [command, "--spool", str(tmp_path), "--sites", str(tmp_path / "sites.yaml")]
    if command == "process-cycle":
        arguments += ["--cycle-id", "c"]
    runner = CliRunner()
    result = runner.invoke(app, [*arguments, "--task-runner", "spark"])
    assert result.exit_code == EXIT_INPUT_ERROR, result.output
    assert "task runner 'spark'" in result.output
    assert "Traceback" not in result.output
    monkeypatch.setenv("CONCORDOSE_TASK_RUNNER", "dask:no-port")
    result = runner.invoke(app, arguments)
    assert result.exit_code == EXIT_INPUT_ERROR, result.output
    assert "task runner 'dask:no-port'" in result.output
