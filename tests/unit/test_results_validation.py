"""Great Expectations runs in one context per process: suites built once, reused, still strict."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from concordose.results.validation import shared_validator, validate_tables
from concordose.schemas.tables import KINETICS
from tests.results_rows import kinetics_table


def _negative_tia(table: pa.Table) -> pa.Table:
    index = table.schema.get_field_index("tia_mbq_h")
    return table.set_column(
        index, table.schema.field(index), pa.array([-1.0] * table.num_rows, pa.float64())
    )


def test_context_and_suites_are_built_once_and_reused() -> None:
    good = {"kinetics": kinetics_table("run-1", "c1")}
    validator = shared_validator()
    assert validate_tables(good)["kinetics"].success
    built = validator.suites_built
    suite = validator.suite("kinetics")
    context = validator.context

    assert validate_tables(good)["kinetics"].success
    assert validate_tables({"kinetics": kinetics_table("run-2", "c2")})["kinetics"].success
    assert shared_validator() is validator
    assert validator.context is context
    assert validator.suite("kinetics") is suite
    assert validator.suites_built == built, "no suite was built again"


def test_a_bad_batch_still_fails_after_a_good_one() -> None:
    table = kinetics_table("run-1", "c1")
    assert validate_tables({"kinetics": table})["kinetics"].success
    outcome = validate_tables({"kinetics": _negative_tia(table)})["kinetics"]
    assert not outcome.success
    assert outcome.suite == f"kinetics.v{KINETICS.version}"
    assert any("tia_mbq_h" in line for line in outcome.failed), outcome.failed
    # ...and the next good batch passes again: nothing of the failure is kept.
    assert validate_tables({"kinetics": table})["kinetics"].success


def test_validations_from_threads_each_get_their_own_outcome() -> None:
    good = kinetics_table("run-1", "c1")
    bad = _negative_tia(good)
    batches = [good, bad] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda t: validate_tables({"kinetics": t})["kinetics"], batches))
    assert [o.success for o in outcomes] == [True, False] * 4


def test_data_docs_hold_only_the_current_validation(tmp_path: Path) -> None:
    table = kinetics_table("run-1", "c1")
    for run in ("first", "second"):
        validate_tables({"kinetics": table}, data_docs_dir=tmp_path / run)
    pages = sorted((tmp_path / "second" / "validations").rglob("*.html"))
    assert len(pages) == 1
    assert (tmp_path / "second" / "index.html").is_file()
    assert not shared_validator().context.validation_results_store.list_keys()
