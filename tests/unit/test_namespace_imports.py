"""Installed names of the orchestration packages (issue 19 item 4,
``scripts/namespace_imports.py``): the repository imports ``concordose.flows`` etc., never a bare
``flows`` that exists only in a checkout, and the rewrite that keeps it so does what it says."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "namespace_imports.py"
PACKAGES = ("flows", "tasks", "schemas", "phantoms")


def _script() -> ModuleType:
    if "namespace_imports" in sys.modules:
        return sys.modules["namespace_imports"]
    spec = importlib.util.spec_from_file_location("namespace_imports", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_the_repository_imports_only_the_installed_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = _script().main(["--check", str(REPO_ROOT)])
    assert status == 0, (
        "bare imports (run scripts/namespace_imports.py):\n" + capsys.readouterr().out
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_is_a_symlink_inside_concordose(package: str) -> None:
    link = REPO_ROOT / "concordose" / package
    assert link.is_symlink()
    assert link.resolve() == (REPO_ROOT / package).resolve()
    assert (link / "__init__.py").is_file()


def test_the_rewrite_keeps_every_bound_name_and_reports_what_it_cannot_rewrite() -> None:
    source = (
        '"""Run ``python -m '  # split: this file is itself checked for bare names
        'schemas.lock`` after a schema change."""\n'
        "import os\n"
        "import flows  # noqa: F401  (side effect)\n"
        "import schemas as s\n"
        "import tasks.study as study_tasks\n"
        "import phantoms.patient\n"
        "from flows.sweep import (\n"
        "    sweep,\n"
        ")\n"
        "from phantoms import generate_patient\n"
        "from . import sibling\n"
        "from concordose.flows import demo\n"
        "from importlib.resources import files\n"
        "\n"
        "def f(monkeypatch):  # µ: non-ASCII before an edit on the same line keeps offsets right\n"
        '    µ = files("schemas"); monkeypatch.setattr("tasks.report.build", f)\n'
        '    monkeypatch.setattr("tasks", "x"); other("flows.sweep")\n'
    )
    findings, rewritten = _script().scan(Path("example.py"), source)
    assert rewritten == (
        '"""Run ``python -m concordose.schemas.lock`` after a schema change."""\n'
        "import os\n"
        "from concordose import flows  # noqa: F401  (side effect)\n"
        "from concordose import schemas as s\n"
        "import concordose.tasks.study as study_tasks\n"
        "import phantoms.patient\n"
        "from concordose.flows.sweep import (\n"
        "    sweep,\n"
        ")\n"
        "from concordose.phantoms import generate_patient\n"
        "from . import sibling\n"
        "from concordose.flows import demo\n"
        "from importlib.resources import files\n"
        "\n"
        "def f(monkeypatch):  # µ: non-ASCII before an edit on the same line keeps offsets right\n"
        '    µ = files("concordose.schemas"); '
        'monkeypatch.setattr("concordose.tasks.report.build", f)\n'
        '    monkeypatch.setattr("tasks", "x"); other("flows.sweep")\n'
    )
    # ``import phantoms.patient`` binds ``phantoms``: left for a person, and reported as such
    by_hand = [f for f in findings if f.replacement is None]
    assert [(f.line, f.text) for f in by_hand] == [(6, "import phantoms.patient")]
    assert len(findings) == 9


def test_check_mode_reports_without_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / "module.py"
    module.write_text("from tasks.study import x\n", encoding="utf-8")
    assert _script().main(["--check", str(tmp_path)]) == 1
    assert "module.py:1: from tasks.study import x → from concordose.tasks.study …" in (
        capsys.readouterr().out
    )
    assert module.read_text(encoding="utf-8") == "from tasks.study import x\n"
