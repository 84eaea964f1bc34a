"""The per-cycle report (issue 17, item 1): built by the cycle flow beside the tables, rebuilt on
demand by ``concordose report``, its numbers equal to the published tables, self-contained, and
without patient identifiers.

One demo run (the whole path: C-STORE → spool → ``process-cycle`` → publication → report,
``demo_output`` in tests/integration/conftest.py) is shared by the report tests.
"""

from __future__ import annotations

import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pydicom
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from typer.testing import CliRunner

from concordose.cli import app
from concordose.flows.process_cycle import CycleRunResult, ReportInputs, with_report
from concordose.report import SECTION_IDS, cycle_report_key, image_products_key
from concordose.results.catalogue import read_current
from concordose.results.object_store import open_object_store
from concordose.settings import Settings
from tests.integration.s3_stores import copy_store_to_s3

pytestmark = pytest.mark.integration


class _ReportParser(HTMLParser):
    """Collects ids, table cells with data-value (by table class and row attributes), and every
    src/href attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.references: list[tuple[str, str, str]] = []
        self.cells: list[dict[str, str]] = []
        self._table: str = ""
        self._row: dict[str, str] = {}
        self._cell: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if "id" in attributes:
            self.ids.add(attributes["id"])
        for name in ("src", "href"):
            if name in attributes:
                self.references.append((tag, name, attributes[name]))
        if tag == "table":
            self._table = attributes.get("class", "")
        elif tag == "tr":
            self._row = {k: v for k, v in attributes.items() if k.startswith("data-")}
        elif tag == "td" and "data-value" in attributes:
            self._cell = {
                "table": self._table,
                **{f"row-{k}": v for k, v in self._row.items()},
                **attributes,
                "text": "",
            }

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None


def _parse(html: str) -> _ReportParser:
    parser = _ReportParser()
    parser.feed(html)
    return parser


def _cycle_key(output: Path) -> str:
    store = open_object_store(str(output), Settings())
    (key,) = set(read_current(store, "acquisitions").column("cycle_key").to_pylist())
    return str(key)


def _cells(parser: _ReportParser, table: str) -> list[dict[str, str]]:
    return [cell for cell in parser.cells if cell["table"] == table]


def _shown(text: str) -> float:
    """The first number of a displayed cell ("5249 ± 3.4" → 5249)."""
    return float(text.split("±", maxsplit=1)[0].strip())


def test_flow_publishes_report_and_images_beside_tables(demo_output: Path) -> None:
    output = demo_output / "output"
    key = _cycle_key(output)
    report = output / cycle_report_key(key)
    assert report.is_file()
    assert (output / image_products_key(key)).is_file()
    parser = _parse(report.read_text())
    assert set(SECTION_IDS) <= parser.ids
    html = report.read_text()
    assert "Images are not available" not in html  # the flow published the MIPs
    assert 'alt="Coronal MIPs' in html
    # voxel dosimetry ran (demo protocol): one dose-map slice per lesion with a dose
    lesions = {
        row["voi_label"]
        for row in read_current(
            open_object_store(str(output), Settings()), "voxel_dose"
        ).to_pylist()
        if row["voi_type"] == "lesion" and row["status"] == "ok"
    }
    assert lesions
    for lesion in lesions:
        assert f'alt="Dose-map slice through {lesion}"' in html


def test_report_numbers_equal_published_tables(demo_output: Path) -> None:
    output = demo_output / "output"
    key = _cycle_key(output)
    parser = _parse((output / cycle_report_key(key)).read_text())
    store = open_object_store(str(output), Settings())

    tia = {
        (cell["row-data-voi"], cell["row-data-method"]): cell
        for cell in _cells(parser, "tia")
        if "tia" in cell["class"].split()
    }
    kinetics = read_current(store, "kinetics").to_pylist()
    assert len(tia) == len(kinetics) > 0
    for row in kinetics:
        cell = tia[(row["voi_label"], row["kinetics_method"])]
        if row["tia_mbq_h"] is None:
            assert cell["data-value"] == ""
            continue
        assert float(cell["data-value"]) == row["tia_mbq_h"]
        assert math.isclose(_shown(cell["text"]), row["tia_mbq_h"], rel_tol=1e-3)

    dose = {
        (cell["row-data-voi"], cell["row-data-method"], cell["data-dose-method"]): cell
        for cell in _cells(parser, "dose")
    }
    absorbed = read_current(store, "absorbed_dose").to_pylist()
    assert len(dose) == len(absorbed) > 0
    for row in absorbed:
        cell = dose[(row["voi_label"], row["kinetics_method"], row["dose_method"])]
        if row["status"] != "ok":
            assert cell["data-value"] == ""
            continue
        assert float(cell["data-value"]) == row["mean_dose_gy"]
        assert math.isclose(_shown(cell["text"]), row["mean_dose_gy"], rel_tol=1e-3)
        if row["dose_sd_gy"] is not None:
            assert "±" in cell["text"]

    voxel = {
        (c["row-data-voi"], c["row-data-method"], c["row-data-dose-method"]): c
        for c in _cells(parser, "voxel-dose")
        if "voxel-mean" in c["class"].split()
    }
    voxel_rows = read_current(store, "voxel_dose").to_pylist()
    assert len(voxel) == len(voxel_rows) > 0
    for row in voxel_rows:
        cell = voxel[(row["voi_label"], row["kinetics_method"], row["dose_method"])]
        assert float(cell["data-value"]) == row["mean_dose_gy"]


def test_report_is_self_contained_and_without_identifiers(demo_output: Path) -> None:
    output = demo_output / "output"
    html = (output / cycle_report_key(_cycle_key(output))).read_text()
    parser = _parse(html)
    assert not re.search(r"https?://", html)
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    for tag, attribute, value in parser.references:
        if attribute == "src":
            assert value.startswith("data:image/png;base64,"), (tag, value[:40])
        else:
            assert value.startswith("#"), (tag, value)  # in-page navigation only
    header = pydicom.dcmread(demo_output / "input" / "dicom" / "seg.dcm", stop_before_pixels=True)
    for identifier in (str(header.PatientID), str(header.PatientName), header.PatientBirthDate):
        assert identifier
        assert identifier not in html
    assert "uid-hash" in html  # input UID hashes are shown, the UIDs are not
    assert str(header.SOPInstanceUID) not in html


def test_report_command_rebuilds_on_demand_and_says_when_images_are_missing(
    demo_output: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "published"
    shutil.copytree(demo_output / "output", copy)
    key = _cycle_key(copy)
    (copy / image_products_key(key)).unlink()
    (copy / cycle_report_key(key)).unlink()
    result = CliRunner().invoke(app, ["report", "--output", str(copy)])
    assert result.exit_code == 0, result.output
    assert key in result.output
    rebuilt = (copy / cycle_report_key(key)).read_text()
    assert "Images are not available for this cycle" in rebuilt
    original = _parse((demo_output / "output" / cycle_report_key(key)).read_text())
    again = _parse(rebuilt)
    assert [c["data-value"] for c in _cells(again, "tia")] == [
        c["data-value"] for c in _cells(original, "tia")
    ]
    unknown = CliRunner().invoke(app, ["report", "--output", str(copy), "--cycle", "cyc-nope"])
    assert unknown.exit_code == 2
    assert "cyc-nope" in unknown.output


def test_report_failure_is_recorded_not_raised(prefect_server: None, tmp_path: Path) -> None:
    store = open_object_store(str(tmp_path / "empty"), Settings())
    result = CycleRunResult("cycle-x", "processed")

    @flow
    def report_only() -> CycleRunResult:
        return with_report(result, ReportInputs(store, "cyc-missing", None))

    outcome: Any = report_only()
    assert outcome.report_path is None
    assert "cyc-missing" in outcome.report_error


def test_run_artifact_links_the_report(demo_output: Path) -> None:
    key = _cycle_key(demo_output / "output")
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="cycle-%"))
        )
    linked = [a for a in artifacts if cycle_report_key(key) in str(a.data)]
    assert linked, [str(a.data)[:200] for a in artifacts]
    assert "Report: [" in str(linked[0].data)


def test_report_command_on_s3(
    demo_output: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = copy_store_to_s3(
        demo_output / "output", "s3://cycle-reports/lu177", s3_endpoint, monkeypatch
    )
    key = _cycle_key(demo_output / "output")
    store.filesystem.delete_file(store.path(cycle_report_key(key)))
    result = CliRunner().invoke(
        app, ["report", "--output", "s3://cycle-reports/lu177", "--cycle", key]
    )
    assert result.exit_code == 0, result.output
    html = store.read_bytes(store.path(cycle_report_key(key))).decode()
    assert 'alt="Coronal MIPs' in html  # the image products were read from S3
    parser = _parse(html)
    tia = [c["data-value"] for c in _cells(parser, "tia")]
    assert tia == [
        c["data-value"]
        for c in _cells(_parse((demo_output / "output" / cycle_report_key(key)).read_text()), "tia")
    ]
