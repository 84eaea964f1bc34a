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


SESSION_RUN_MODULES = {
    "tests/integration/test_cycle_report.py": "demo_output",
    "tests/integration/test_offline_reports.py": "demo_output",
    "tests/integration/test_consortium_command.py": "consortium_run",
    "tests/integration/test_dashboard.py": "consortium_run",
    "tests/integration/test_sink_effect_flow.py": "consortium_run",
}
"""The modules using a session fixture that runs the platform end to end (minutes each), by that
fixture: under pytest-xdist they run on one worker, which builds the run once.
:func:`pytest_collection_modifyitems` fails the session if a module using one is missing here."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's scheduling for the test command's parallel run (``--dist loadscope``).

    Each test module is one unit of work, so its module-scoped fixtures (generated consortia, a
    receiver, a Prefect deployment) are built once and its tests run in order; the modules of
    :data:`SESSION_RUN_MODULES` form one unit per session run. (xdist's ``xdist_group`` marks
    would say the same, but xdist 3.8 renames the node id to group them, which pytest 9.2's node
    ids no longer allow: the marks are silently ignored.)
    """
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]  # noqa: PLC0415

    class SessionRunScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return SESSION_RUN_MODULES.get(module, module)

    return SessionRunScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a session whose modules use a session run without being listed in
    :data:`SESSION_RUN_MODULES` (the parallel run would build that run again on another worker)."""
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        for name in set(SESSION_RUN_MODULES.values()) & set(getattr(item, "fixturenames", ())):
            if SESSION_RUN_MODULES.get(module) != name:
                raise pytest.UsageError(
                    f"{module} uses the session fixture {name!r}: expected an entry "
                    f"{module!r}: {name!r} in tests/conftest.py SESSION_RUN_MODULES, found "
                    f"{SESSION_RUN_MODULES.get(module)!r}"
                )


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
