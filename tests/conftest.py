"""Shared fixtures: small synthetic patients and paths to the shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from phantoms import GeneratedPatient, generate_patient

REPO_ROOT = Path(__file__).resolve().parent.parent
SIEMENS_NM_FIXTURE = REPO_ROOT / "tests" / "data" / "siemens_intevo_lu177_phantom_recon.dcm"


@pytest.fixture(scope="session")
def small_patient(tmp_path_factory: pytest.TempPathFactory) -> GeneratedPatient:
    """A synthetic patient on the fast "test" preset (written once per session; read-only)."""
    return generate_patient(tmp_path_factory.mktemp("small-patient"), seed=11, preset="test")
