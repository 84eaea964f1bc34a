"""`concordose spool …` and `concordose receive` on bad input: one clear message, exit status 2."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from concordose.cli import EXIT_INPUT_ERROR, app
from concordose.spool.store import InstanceIdentity, Spool
from concordose.spool.timepoints import InstanceSummary

runner = CliRunner()


def _output(args: list[str]) -> tuple[int, str]:
    result = runner.invoke(app, args)
    return result.exit_code, " ".join((result.output + (result.stderr or "")).split())


def test_status_of_a_missing_spool_is_a_clear_error(tmp_path: Path) -> None:
    code, output = _output(["spool", "status", "--spool", str(tmp_path / "none")])
    assert code == EXIT_INPUT_ERROR
    assert "does not exist or is not a folder" in output
    assert "Traceback" not in output


def test_status_and_explicit_completion(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    identity = InstanceIdentity.checked(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.20",
        sop_instance_uid="1.2.3.4.5",
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        transfer_syntax="1.2.840.10008.1.2.1",
    )
    summary = InstanceSummary("P7", "NM", None, None)
    spool.store(identity, b"bytes", "MILAN_SPECT", summary, now=datetime.now(UTC))
    spool.quarantine(b"junk", "from ROGUE: undecodable")

    code, output = _output(["spool", "status", "--spool", str(spool.root)])
    assert code == 0
    assert "receiving 1, complete 0" in output
    assert "quarantined 1" in output
    assert "from ROGUE: undecodable" in output

    code, output = _output(["spool", "complete", "--spool", str(spool.root), "--study", "1.2.3"])
    assert (code, "time point 1.2.3 marked complete") == (0, output)
    assert spool.status().complete == 1
    assert spool.status().pending_events == 1  # the running receiver delivers it
    code, output = _output(["spool", "complete", "--spool", str(spool.root), "--study", "1.2.3"])
    assert "was already complete or processed" in output


def test_receive_with_partial_tls_options_is_a_clear_error(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    sites.write_text("format_version: 1\nsites:\n  - site_id: milan\n    ae_titles: [MILAN]\n")
    args = ["receive", "--spool", str(tmp_path / "spool"), "--config", str(sites), "--port", "0"]
    code, output = _output([*args, "--tls-cert", str(sites)])
    assert code == EXIT_INPUT_ERROR
    assert "TLS needs all of --tls-cert, --tls-key and --tls-ca" in output
