"""`concordose receive` in the foreground as an operator runs it, and `concordose spool …`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from concordose.cli import app
from concordose.phantoms import GeneratedPatient
from concordose.spool.store import Spool
from tests.integration.peers import free_port, port_open, stop_process, storescu, wait_until

pytestmark = pytest.mark.integration


def test_receive_logs_associations_and_completed_time_points_then_status_shows_them(
    tmp_path: Path, small_patient: GeneratedPatient
) -> None:
    port = free_port()
    spool = tmp_path / "spool"
    log_path = tmp_path / "receive.log"
    executable = Path(sys.executable).with_name("concordose")
    nm = small_patient.nm_files[0]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                str(executable),
                "receive",
                "--port",
                str(port),
                "--ae-title",
                "CONCORDOSE",
                "--host",
                "127.0.0.1",
                "--spool",
                str(spool),
                "--sites",
                str(small_patient.sites_path),
                "--quiet-period-s",
                "0.5",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: port_open(port), timeout_s=30, what="concordose receive")
            site_ae = small_patient.site.calling_ae_title
            assert storescu(port, site_ae, [nm]).returncode == 0
            rogue = storescu(port, "ROGUE", [nm])
            assert rogue.returncode != 0
            # The proper A-ASSOCIATE-RJ reason (PS3.8 Table 9-21: source 1, reason 3).
            assert "Calling AE Title Not Recognized" in rogue.stderr
            wait_until(
                lambda: "time point complete" in log_path.read_text(),
                timeout_s=30,
                what="the completion log line",
            )
        finally:
            code = stop_process(process)
        assert code == 0
    text = log_path.read_text()
    study = str(pydicom.dcmread(nm, stop_before_pixels=True).StudyInstanceUID)
    assert f"from {site_ae} (site milan) at 127.0.0.1:" in text
    assert "released: 1 stored, 0 failed, 1 study(ies)" in text
    assert "association from ROGUE" in text
    assert "rejected" in text
    assert f"time point complete: {study}#1 patient " in text
    assert small_patient.patient_id not in text  # pseudonymised unless --show-phi
    assert "receiver stopped" in text

    status = CliRunner().invoke(app, ["spool", "status", "--spool", str(spool)])
    assert status.exit_code == 0, status.output
    assert "instances 1" in status.output
    assert "complete 1" in status.output
    assert "events pending 0" in status.output

    unknown = CliRunner().invoke(app, ["spool", "complete", "--spool", str(spool), "--study", "9"])
    assert unknown.exit_code == 2
    assert "has received no instance of study '9'" in unknown.output


@pytest.mark.parametrize(
    ("umask", "file_mode", "folder_mode"), [(None, 0o640, 0o750), ("077", 0o600, 0o700)]
)
def test_spool_files_and_folders_are_not_world_readable(
    tmp_path: Path,
    small_patient: GeneratedPatient,
    umask: str | None,
    file_mode: int,
    folder_mode: int,
) -> None:
    """Issue 18 item 7: everything the receiver creates in its spool (instances, journal,
    index, folders) is 0640 / 0750 by default, owner-only with CONCORDOSE_SPOOL_UMASK=077."""
    port = free_port()
    spool = tmp_path / "spool"
    env = {k: v for k, v in os.environ.items() if k != "CONCORDOSE_SPOOL_UMASK"}
    if umask is not None:
        env["CONCORDOSE_SPOOL_UMASK"] = umask
    executable = Path(sys.executable).with_name("concordose")
    process = subprocess.Popen(
        [
            str(executable), "receive", "--port", str(port), "--host", "127.0.0.1",
            "--spool", str(spool), "--sites", str(small_patient.sites_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )  # fmt: skip
    try:
        wait_until(lambda: port_open(port), timeout_s=30, what="concordose receive")
        files = list(small_patient.nm_files[:2])
        assert storescu(port, small_patient.site.calling_ae_title, files).returncode == 0
    finally:
        assert stop_process(process) == 0
    created = [spool, *spool.rglob("*")]
    instances = [p for p in created if p.suffix == ".dcm"]
    assert len(instances) == len(files)  # filed at the stop
    for path in created:
        mode = path.stat().st_mode & 0o777
        expected = folder_mode if path.is_dir() else file_mode
        assert mode & ~expected == 0, (
            f"{path.relative_to(tmp_path)} is {mode:o}, expected ⊆ {expected:o}"
        )
    assert any(p.is_file() and p.stat().st_mode & 0o777 == file_mode for p in instances)


def test_a_killed_receiver_loses_nothing_it_acknowledged_and_resumes(
    tmp_path: Path, small_patient: GeneratedPatient
) -> None:
    spool = tmp_path / "spool"
    executable = Path(sys.executable).with_name("concordose")
    files = [*small_patient.nm_files, small_patient.seg_path]

    def start(port: int) -> subprocess.Popen[bytes]:
        command = [str(executable), "receive", "--port", str(port), "--host", "127.0.0.1"]
        # --config: the old name of --sites, kept as an alias
        command += ["--spool", str(spool), "--config", str(small_patient.sites_path)]
        command += ["--quiet-period-s", "0.2"]
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(port), timeout_s=30, what="concordose receive")
        return process

    first_port = free_port()
    first = start(first_port)
    try:
        sent = storescu(first_port, small_patient.site.calling_ae_title, files)
        assert sent.returncode == 0, sent.stderr
    finally:
        first.kill()  # SIGKILL: no clean shutdown, no chance to flush anything
        first.wait(timeout=30)
    expected = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    assert Spool(spool).status().instances == len(files)

    second_port = free_port()
    second = start(second_port)  # the restart takes the spool over and completes what was left
    try:
        wait_until(
            lambda: Spool(spool).status().receiving == 0,
            timeout_s=30,
            what="the restarted receiver to complete the pending time points",
        )
    finally:
        code = stop_process(second)
    assert code == 0
    reopened = Spool(spool)
    assert {row.identity.sop_instance_uid for row in reopened.instances()} == expected
    assert all(row.path.is_file() for row in reopened.instances())
    assert reopened.status().pending_events == 0
    assert list(reopened.tmp_dir.iterdir()) == []


def test_sighup_reloads_the_sites_file_and_logs_what_changed(
    tmp_path: Path, small_patient: GeneratedPatient
) -> None:
    """Issue 16: an AE title added to sites.yaml is accepted after SIGHUP, without a restart;
    a file that fails validation keeps the previous registry with one error line."""
    port = free_port()
    sites = tmp_path / "sites.yaml"
    sites.write_text(small_patient.sites_path.read_text())
    log_path = tmp_path / "receive.log"
    nm = small_patient.nm_files[0]
    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "concordose", "receive", "--port", str(port)]
    command += ["--host", "127.0.0.1", "--spool", str(tmp_path / "spool"), "--sites", str(sites)]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=repo)
        try:
            wait_until(lambda: port_open(port), timeout_s=30, what="concordose receive")
            assert storescu(port, "PADUA_NM", [nm]).returncode != 0  # not in the file yet

            add = ["sites", "add", "--sites", str(sites), "--site", "padua"]
            added = CliRunner().invoke(app, [*add, "--ae-title", "PADUA_NM"])
            assert added.exit_code == 0, added.output
            process.send_signal(signal.SIGHUP)
            wait_until(
                lambda: "reloaded: site padua added (AE titles PADUA_NM)" in log_path.read_text(),
                timeout_s=30,
                what="the reload log line",
            )
            sent = storescu(port, "PADUA_NM", [nm])
            assert sent.returncode == 0, sent.stderr

            good = sites.read_text()
            sites.write_text(good.replace("PADUA_NM", "PADUA\\NM"))
            process.send_signal(signal.SIGHUP)
            wait_until(
                lambda: "not reloaded" in log_path.read_text(),
                timeout_s=30,
                what="the refused reload's log line",
            )
            assert storescu(port, "PADUA_NM", [nm]).returncode == 0  # the previous one stays
        finally:
            code = stop_process(process)
    assert code == 0
    text = log_path.read_text()
    refused = [line for line in text.splitlines() if "not reloaded" in line]
    assert len(refused) == 1
    assert "ERROR" in refused[0]
    assert "sites[1] (site_id 'padua').ae_titles[0]" in refused[0]
    assert "from PADUA_NM (site padua) at 127.0.0.1:" in text
    assert small_patient.patient_id not in "\n".join(
        line for line in text.splitlines() if "sites file" in line
    )
