"""Shared fixtures: small synthetic patients and paths to the shared fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from concordose.phantoms import GeneratedPatient, generate_patient
from concordose.phantoms.consortium import Realism, generate_consortium
from concordose.phantoms.site_profiles import DEFAULT_SITE
from concordose.pipeline.assembly import CycleStudy, assemble_cycles
from concordose.pipeline.catalogue import catalogue

REPO_ROOT = Path(__file__).resolve().parent.parent
SIEMENS_NM_FIXTURE = REPO_ROOT / "tests" / "data" / "siemens_intevo_lu177_phantom_recon.dcm"


SESSION_RUNS = ("demo_output", "consortium_run")
"""Session fixtures that run the platform end to end (minutes each): every module using one runs
on the pytest-xdist worker that builds it."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group tests for pytest-xdist's ``--dist loadgroup`` (the test command's parallel run).

    Each module stays on one worker, so its module-scoped fixtures (generated consortia, a
    receiver) are built once; modules that use one of :data:`SESSION_RUNS` share that run's
    worker. Runs before xdist reads the marks (``tryfirst``); without xdist the marks do nothing.
    """
    group_of_module: dict[str, str] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        fixtures = getattr(item, "fixturenames", ())
        shared = next((name for name in SESSION_RUNS if name in fixtures), None)
        if shared is not None:
            group_of_module[module] = shared
        else:
            group_of_module.setdefault(module, module)
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of_module[item.nodeid.split("::", 1)[0]]))


@pytest.fixture(scope="session", autouse=True)
def prefect_logs_to_the_sessions_stderr() -> None:
    """Configure Prefect's logging before any test runs a command.

    Prefect sets up its console handler once per process, on its first import, bound to
    ``sys.stderr`` as it is then (``ext://sys.stderr`` in its logging.yml). The CLI imports flows
    lazily, so when the session's first flow ran inside typer's ``CliRunner``, the handler kept
    that invocation's stream, closed afterwards, and every later Prefect log line printed "I/O
    operation on closed file" with a traceback into the next invocation's output (a test that
    asserts no traceback failed depending on test order). In a real process stderr never changes.
    """
    import prefect.logging.configuration  # noqa: PLC0415 (the import is the set-up)

    prefect.logging.configuration.setup_logging()


@pytest.fixture(scope="session")
def small_patient(tmp_path_factory: pytest.TempPathFactory) -> GeneratedPatient:
    """A synthetic patient on the fast "test" preset (written once per session; read-only)."""
    return generate_patient(tmp_path_factory.mktemp("small-patient"), seed=11, preset="test")


ShiftedPatient = tuple[CycleStudy, dict[str, Any], Path]
"""A consortium patient's cycle, its ground truth and the consortium's sites.yaml."""


def shifted_patient(out: Path, preset: str) -> ShiftedPatient:
    """One consortium patient at the default site whose position changes by up to 5 mm per axis
    between time points (no blur, no noise), assembled into its cycle."""
    generate_consortium(
        out,
        preset=preset,
        sites=(DEFAULT_SITE,),
        realism=Realism(blur=False, noise=False, ct_shift_max_mm=5.0),
        phantoms=False,
    )
    subject = sorted((out / "sites" / DEFAULT_SITE.site_id / "patients").iterdir())[0]
    (cycle,) = assemble_cycles(catalogue(subject / "dicom"))
    truth: dict[str, Any] = json.loads((subject / "ground_truth.json").read_text())
    return cycle, truth, out / "sites.yaml"
