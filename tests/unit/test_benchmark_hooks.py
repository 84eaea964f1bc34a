"""The clinical-cycle benchmark times functions inside the flow's steps by replacing them where
the pipeline calls them; a rename in the pipeline must fail here, not in a 5-minute benchmark."""

from __future__ import annotations

import pytest

from benchmarks.bench_clinical_cycle import TIMED_FUNCTIONS


@pytest.mark.parametrize(("module", "name", "label"), TIMED_FUNCTIONS)
def test_every_timed_function_exists_where_the_benchmark_wraps_it(
    module: object, name: str, label: str
) -> None:
    assert callable(getattr(module, name, None)), f"{label}: {module!r} has no {name}"
