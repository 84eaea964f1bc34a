"""The wheel (issue 19 item 4): one top-level package, run from a fresh virtual environment.

The repository is copied (without tool state) to a temporary folder and built there with
``pip wheel --no-build-isolation`` (the checkout gets no ``build/`` or ``*.egg-info``). The wheel
goes into a new virtual environment with ``--no-deps``; its dependencies come from the test's own
environment through a ``.pth`` line naming that environment's site-packages. Python adds such a
folder to ``sys.path`` without reading the ``.pth`` files inside it, so the editable install of the
checkout living there (its import hook) stays off: every command runs from a temporary working
directory, and the test asserts that ``concordose`` and ``concordose.flows`` are imported from the
new environment and that no ``sys.path`` entry is inside the repository. Installing every
dependency from the package mirror instead would take minutes.

In that environment: ``concordose --version``, ``concordose check`` on the Siemens fixture (held by
the packaged site protocol), ``concordose generate`` and a ``process`` of its cycle. An editable
install of the same copy is checked to import the same module names (the way ``scripts/bootstrap``
installs a checkout).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from concordose.phantoms.site_profiles import DEFAULT_SITE
from tests.conftest import SIEMENS_NM_FIXTURE

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSION = "0.1.0"
DIST_INFO = f"concordose-{VERSION}.dist-info"
PACKAGES = ("flows", "tasks", "schemas", "phantoms")
COMMAND_TIMEOUT_S = 300
# Tool state and build output at the top of a checkout (the vendored Data Docs assets keep their
# own build/ and dist/ folders deeper down: only top-level ones are left out).
TOP_LEVEL_SKIPPED = frozenset({".git", ".venv", "build", "dist"})

PROBE = """
import importlib.util, json, sys
import concordose
from importlib.resources import files
from prefect.flows import load_flow_from_entrypoint

# what a Prefect worker's flow-run process does with a module-path entrypoint
flow = load_flow_from_entrypoint("concordose.flows.process_cycle:process_cycle")
bare = {name: importlib.util.find_spec(name) for name in ("flows", "tasks", "schemas", "phantoms")}
print(json.dumps({
    "concordose": concordose.__file__,
    "modules": {name: sys.modules[f"concordose.{name}"].__file__ for name in ("flows", "tasks")},
    "schemas": str(files("concordose.schemas").joinpath("expectations.yaml")),
    "flow": flow.name,
    "bare": {name: spec.origin if spec else None for name, spec in bare.items()},
    "sys_path": sys.path,
}))
"""


def _ignore_tool_state(folder: str, names: list[str]) -> set[str]:
    skipped = {
        n
        for n in names
        if n == "__pycache__" or n.endswith(".egg-info") or (n[0] == "." and n.endswith("_cache"))
    }
    if Path(folder) == REPO_ROOT:
        skipped |= TOP_LEVEL_SKIPPED & set(names)
    return skipped


def _run(command: Sequence[str | Path], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``command`` in ``cwd``, environment without PYTHONPATH (nothing of the checkout)."""
    environment = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def _ok(completed: subprocess.CompletedProcess[str]) -> str:
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


@dataclass(frozen=True)
class Environment:
    """A fresh virtual environment with the test's dependencies reachable (no concordose)."""

    python: Path
    site_packages: Path
    before: frozenset[str]
    """site-packages' entries before concordose was installed"""

    def probe(self, cwd: Path) -> dict[str, Any]:
        """Where ``concordose`` and its subpackages are imported from (see PROBE)."""
        result: dict[str, Any] = json.loads(_ok(_run([self.python, "-c", PROBE], cwd)))
        return result


def _fresh_environment(folder: Path) -> Environment:
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", folder], folder.parent))
    python = folder / "bin" / "python"
    paths = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site_packages = Path(_ok(_run([python, "-c", paths], folder.parent)).strip())
    before = frozenset(os.listdir(site_packages))
    dependencies = sysconfig.get_paths()["purelib"]  # this environment's, read only
    (site_packages / "test_dependencies.pth").write_text(dependencies + "\n", encoding="utf-8")
    return Environment(python, site_packages, before)


def _pip_install(environment: Environment, *arguments: str | Path) -> None:
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--python", environment.python, "install"]
    _ok(_run([*pip, "--no-deps", "--no-index", "--no-build-isolation", *arguments], Path("/")))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout (symlinks kept as symlinks), tool state left out."""
    copy = tmp_path_factory.mktemp("source") / "concordose"
    shutil.copytree(REPO_ROOT, copy, symlinks=True, ignore=_ignore_tool_state)
    return copy


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the copy."""
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _ok(_run([*pip_wheel, "--no-index", "--wheel-dir", out, source], source))
    (built,) = out.glob("concordose-*.whl")
    return built


def test_the_wheel_holds_one_top_level_package_with_everything_in_it(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {name.split("/", 1)[0] for name in names} == {"concordose", DIST_INFO}
    for package in PACKAGES:  # every module and data file of the top-level folders
        folder = REPO_ROOT / package
        for path in folder.rglob("*"):
            if path.suffix in {".py", ".yaml", ".json"} and "__pycache__" not in path.parts:
                relative = path.relative_to(folder).as_posix()
                assert f"concordose/{package}/{relative}" in names, relative
    for directory, _, files in os.walk(REPO_ROOT / "concordose", followlinks=True):
        for name in files:  # and every module of the library, through the symlinks
            if name.endswith(".py"):
                relative = Path(directory, name).relative_to(REPO_ROOT).as_posix()
                assert relative in names, relative
    assert "concordose/schemas/protocols/default.yaml" in names
    assert {"concordose/py.typed", "concordose/data/lu177_sphere_svalues_unit_density.tsv"} <= names
    # PEP 639 metadata, which needs setuptools >= 77 (the build floor)
    metadata = zipfile.ZipFile(wheel).read(f"{DIST_INFO}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()
    licence = zipfile.ZipFile(wheel).read(f"{DIST_INFO}/licenses/LICENSE").decode()
    assert licence == (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")


def test_the_installed_wheel_runs_version_check_and_process(wheel: Path, tmp_path: Path) -> None:
    environment = _fresh_environment(tmp_path / "venv")
    _pip_install(environment, wheel)
    site = environment.site_packages
    installed = set(os.listdir(site)) - environment.before - {"test_dependencies.pth"}
    assert installed == {"concordose", DIST_INFO}  # nothing called flows, tasks, schemas…

    work = tmp_path / "work"
    work.mkdir()
    found = environment.probe(work)
    assert Path(found["concordose"]) == site / "concordose" / "__init__.py"
    assert found["modules"] == {
        name: str(site / "concordose" / name / "__init__.py") for name in ("flows", "tasks")
    }
    assert Path(found["schemas"]).is_relative_to(site / "concordose" / "schemas")
    assert found["flow"] == "process-cycle"
    assert found["bare"] == dict.fromkeys(PACKAGES)
    # The checkout is not on the path (the dependencies' site-packages may live inside it: a
    # fresh clone's .venv; its editable finder is not loaded, `bare` above shows it).
    dependencies = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert not [
        p
        for p in found["sys_path"]
        if p and Path(p).resolve().is_relative_to(REPO_ROOT) and Path(p).resolve() != dependencies
    ]

    concordose = environment.python.parent / "concordose"
    assert VERSION in _ok(_run([concordose, "--version"], work))

    patient = work / "patient"
    _ok(_run([concordose, "generate", "--out", patient, "--preset", "test"], work))
    sites: list[str | Path] = ["--sites", patient / "sites.yaml", "--site", DEFAULT_SITE.site_id]

    checked = _run([concordose, "check", SIEMENS_NM_FIXTURE, *sites, "--json"], work)
    assert checked.returncode == 1, checked.stdout + checked.stderr  # held
    (report,) = json.loads(checked.stdout)["files"]
    rules = {finding["rule"] for finding in report["findings"]}
    # the packaged protocol's rules (concordose/schemas/protocols/default.yaml): MEGP collimator
    assert {"radionuclide", "collimator", "calibration"} <= rules

    out = work / "published"
    # the temporary Prefect server's start-up deadline is the installed package's own
    # (flows.EPHEMERAL_STARTUP_TIMEOUT_S), as a user's would be
    key = {"CONCORDOSE_PSEUDONYM_KEY": "test-secret"}
    process: list[str | Path] = [
        concordose,
        "process",
        "--spool",
        patient / "dicom",
        *sites,
        "--output",
        out,
    ]
    processed = _ok(_run(process, work, **key))
    assert "1 processed, 0 held, 0 failed" in processed
    assert list((out / "_manifests").glob("*.json"))
    assert list((out / "absorbed_dose").rglob("*.parquet"))


def test_an_editable_install_imports_the_same_names(source: Path, tmp_path: Path) -> None:
    environment = _fresh_environment(tmp_path / "venv")
    _pip_install(environment, "--editable", source)
    work = tmp_path / "work"
    work.mkdir()
    found = environment.probe(work)
    assert Path(found["concordose"]) == source / "concordose" / "__init__.py"
    assert found["modules"] == {
        name: str(source / "concordose" / name / "__init__.py") for name in ("flows", "tasks")
    }
    assert found["flow"] == "process-cycle"
    # the editable finder maps only ``concordose``: the top-level folders are not importable
    assert found["bare"] == dict.fromkeys(PACKAGES)
