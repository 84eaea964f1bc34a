"""The receiver as a service: several dcmtk associations, compressed transfer syntaxes, completion
of time points, restart, disk full, undecodable data, one receiver per spool, mutual TLS."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom import association as pynetdicom_association
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from concordose.errors import ConcordoseError
from concordose.ingest.receiver import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    StorageReceiver,
)
from concordose.ingest.tls import server_context
from concordose.phantoms import GeneratedPatient
from concordose.spool.store import Spool
from concordose.spool.timepoints import TimePointState
from tests.conftest import SIEMENS_NM_FIXTURE
from tests.fakes import FakeClock, Recorder
from tests.integration.peers import wait_until

pytestmark = pytest.mark.integration

SITES = {"MILAN_SPECT": "milan", "STORESCU": "milan"}
QUIET_S = 120.0


def _dcmtk(tool: str) -> str:
    path = shutil.which(tool)
    assert path is not None, f"dcmtk's {tool} is required (installed by `make test`)"
    return path


def _storescu(port: int, files: list[Path], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            _dcmtk("storescu"),
            *extra,
            "-aet",
            "STORESCU",
            "-aec",
            "CONCORDOSE",
            "--required",  # propose each file's own SOP class and transfer syntax
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _by_time_point(patient: GeneratedPatient) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for path in patient.dicom_files:
        study = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        groups.setdefault(study, []).append(path)
    return groups


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hook() -> Recorder:
    return Recorder()


@pytest.fixture
def receiver(tmp_path: Path, clock: FakeClock, hook: Recorder) -> Iterator[StorageReceiver]:
    with StorageReceiver(
        Spool(tmp_path / "spool"),
        port=0,
        site_by_ae_title=SITES,
        quiet_period_s=QUIET_S,
        on_complete=hook,
        clock=clock,
    ) as running:
        yield running


def _all_closed(receiver: StorageReceiver) -> bool:
    return not receiver.completion.busy_study_uids()


def test_storescu_per_series_associations_complete_each_time_point_once(
    receiver: StorageReceiver,
    clock: FakeClock,
    hook: Recorder,
    small_patient: GeneratedPatient,
) -> None:
    groups = _by_time_point(small_patient)
    # One storescu process (one association) per file group: NM, then CT slices, then the SEG.
    for files in groups.values():
        nm = [p for p in files if p in small_patient.nm_files]
        others = [p for p in files if p not in small_patient.nm_files]
        for batch in (nm, others):
            completed = _storescu(receiver.port, batch)
            assert completed.returncode == 0, completed.stderr
    wait_until(lambda: _all_closed(receiver), timeout_s=10, what="associations to close")
    assert receiver.spool.status().instances == len(small_patient.dicom_files)

    clock.advance(QUIET_S - 1)
    assert receiver.completion.poll() == []  # still within the quiet period
    clock.advance(2)
    delivered = receiver.completion.poll()
    assert sorted(e.timepoint.study_uid for e in delivered) == sorted(groups)
    assert receiver.completion.poll() == []
    assert sorted(hook.event_ids) == sorted(f"{study}#1" for study in groups)
    for event in delivered:
        record = event.timepoint
        assert record.instance_count == len(groups[record.study_uid])
        assert record.calling_ae_title == "STORESCU"
        assert record.time_h is not None
    times = sorted(e.timepoint.time_h or 0.0 for e in delivered)
    assert times == pytest.approx([4.0, 24.0, 72.0, 168.0], abs=0.1)


def test_compressed_transfer_syntaxes_are_stored_as_received(
    receiver: StorageReceiver, tmp_path: Path, small_patient: GeneratedPatient
) -> None:
    ct = next(p for p in small_patient.dicom_files if "/ct/" in p.as_posix())
    # A copy of the slice under a new SOP Instance UID, then compressed by dcmtk (or deflated
    # by pydicom), sent with storescu proposing that syntax.
    copies = []
    for tool, propose in (
        ("dcmcjpls", "-xt"),
        ("dcmcrle", "-xr"),
        ("dcmcjpeg", "-xs"),
        ("deflate", "-xd"),
    ):
        dataset = pydicom.dcmread(ct)
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        source, target = tmp_path / f"{tool}-source.dcm", tmp_path / f"{tool}.dcm"
        if tool == "deflate":
            dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
            dataset.save_as(target, enforce_file_format=True)
        else:
            dataset.save_as(source, enforce_file_format=True)
            subprocess.run([_dcmtk(tool), str(source), str(target)], check=True, timeout=30)
        completed = _storescu(receiver.port, [target], propose)
        assert completed.returncode == 0, completed.stderr
        copies.append(target)
    rows = {row.identity.sop_instance_uid: row for row in receiver.spool.instances()}
    for path in copies:
        sent = pydicom.dcmread(path)
        row = rows[str(sent.SOPInstanceUID)]
        stored = pydicom.dcmread(row.path)
        syntax = sent.file_meta.TransferSyntaxUID
        assert row.identity.transfer_syntax == syntax
        assert stored.file_meta.TransferSyntaxUID == syntax
        if syntax.is_compressed:
            assert stored.PixelData == sent.PixelData  # encapsulated fragments, untouched
    assert stored.pixel_array.shape == (sent.Rows, sent.Columns)


def test_restart_loses_nothing_and_completes_what_was_pending(
    tmp_path: Path, clock: FakeClock, small_patient: GeneratedPatient
) -> None:
    root = tmp_path / "spool"
    files = [*small_patient.nm_files, SIEMENS_NM_FIXTURE]
    with StorageReceiver(
        Spool(root), port=0, site_by_ae_title=SITES, quiet_period_s=QUIET_S, clock=clock
    ) as first:
        assert _storescu(first.port, files).returncode == 0
        wait_until(lambda: _all_closed(first), timeout_s=10, what="associations to close")
    # Stopped before any quiet period ended: everything acknowledged is on disk and indexed.
    assert {row.identity.sop_instance_uid for row in Spool(root).instances()} == {
        _sop_uid(p) for p in files
    }
    hook = Recorder()
    clock.advance(QUIET_S + 1)
    with StorageReceiver(
        Spool(root),
        port=0,
        site_by_ae_title=SITES,
        quiet_period_s=QUIET_S,
        on_complete=hook,
        completion_poll_interval_s=0.05,  # the real background thread, as in production
        clock=clock,
    ):
        wait_until(lambda: len(hook.events) == len(files), timeout_s=10, what="5 events")
    assert len(set(hook.event_ids)) == len(files)
    # Another restart: nothing is delivered twice.
    again = Recorder()
    with StorageReceiver(
        Spool(root), port=0, site_by_ae_title=SITES, on_complete=again, clock=clock
    ) as third:
        assert third.completion.poll() == []
    siemens = next(
        e
        for e in hook.events
        if e.timepoint.modalities == ("NM",)
        and e.timepoint.calling_ae_title == "STORESCU"
        and e.timepoint.patient_id != small_patient.patient_id
    )
    assert siemens.timepoint.state is TimePointState.COMPLETE


def test_a_second_receiver_on_the_same_spool_is_refused(receiver: StorageReceiver) -> None:
    with pytest.raises(ConcordoseError, match="another receiver already serves spool"):
        StorageReceiver(Spool(receiver.spool.root), port=0).start()


def _association(port: int) -> pynetdicom_association.Association:
    ae = AE(ae_title="MILAN_SPECT")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="CONCORDOSE")
    assert assoc.is_established
    return assoc


def test_disk_full_answers_out_of_resources_and_a_retry_succeeds(
    receiver: StorageReceiver, small_patient: GeneratedPatient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ct = next(p for p in small_patient.dicom_files if "/ct/" in p.as_posix())

    def no_space(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    assoc = _association(receiver.port)
    try:
        # Every flush refused: the spool journal's fdatasync and the direct path's fsync.
        monkeypatch.setattr(os, "fsync", no_space)
        monkeypatch.setattr(os, "fdatasync", no_space)
        refused = assoc.send_c_store(ct)
        monkeypatch.undo()
        echo = assoc.send_c_echo()
        accepted = assoc.send_c_store(ct)
    finally:
        assoc.release()
    assert refused.Status == STATUS_OUT_OF_RESOURCES
    assert echo.Status == 0x0000
    assert accepted.Status == 0x0000
    assert [row.identity.sop_instance_uid for row in receiver.spool.instances()] == [_sop_uid(ct)]
    assert list(receiver.spool.tmp_dir.iterdir()) == []


def test_undecodable_data_is_quarantined_and_the_service_stays_up(
    receiver: StorageReceiver, small_patient: GeneratedPatient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dataset whose first element claims 64 bytes of value but the stream ends after 3.
    garbage = b"\x08\x00\x18\x00UI\x40\x001.2"
    monkeypatch.setattr(pynetdicom_association, "encode", lambda *_args: garbage)
    dataset = Dataset()
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = "1.2.3.4"
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assoc = _association(receiver.port)
    try:
        status = assoc.send_c_store(dataset)
        monkeypatch.undo()
        echo = assoc.send_c_echo()
        ct = next(p for p in small_patient.dicom_files if "/ct/" in p.as_posix())
        good = assoc.send_c_store(ct)
    finally:
        assoc.release()
    assert status.Status == STATUS_CANNOT_UNDERSTAND
    assert (echo.Status, good.Status) == (0x0000, 0x0000)
    (kept,) = receiver.spool.quarantined()
    assert kept.read_bytes().endswith(garbage)  # the bytes as received, after our file meta
    reason = kept.with_suffix(".reason.txt").read_text()
    assert reason.startswith("from MILAN_SPECT: ")
    assert receiver.spool.status().instances == 1


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def site_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A consortium CA, the receiver's certificate and one site certificate (EC P-256)."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_pem = folder / "ca.key", folder / "ca.pem"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key))
    _openssl(
        "req", "-x509", "-new", "-key", str(ca_key), "-out", str(ca_pem), "-days", "2",
        "-subj", "/CN=concordose test CA",
    )  # fmt: skip
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("milan", None),
        ("rome", None),
        ("gateway-rome", "subjectAltName=DNS:gw01.rome.example,DNS:rome"),  # site in a SAN
        ("milan-and-rome", "subjectAltName=DNS:rome"),  # CN milan, SAN rome: two sites
    ):
        key, csr, pem = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
        common_name = {"gateway-rome": "gateway", "milan-and-rome": "milan"}.get(name, name)
        _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={common_name}")
        extra = []
        if extension:
            (folder / f"{name}.ext").write_text(extension + "\n")
            extra = ["-extfile", str(folder / f"{name}.ext")]
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(pem), "-days", "2", *extra,
        )  # fmt: skip
    return folder


def test_mutual_tls_with_storescu(
    tmp_path: Path,
    site_pki: Path,
    small_patient: GeneratedPatient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = server_context(site_pki / "server.pem", site_pki / "server.key", site_pki / "ca.pem")
    files = list(small_patient.nm_files[:2])
    with StorageReceiver(
        Spool(tmp_path / "spool"), port=0, site_by_ae_title=SITES, ssl_context=context
    ) as receiver:
        with_certificate = _storescu(
            receiver.port,
            files,
            "+tls",
            str(site_pki / "milan.key"),
            str(site_pki / "milan.pem"),
            "+cf",
            str(site_pki / "ca.pem"),
        )
        refused = [small_patient.nm_files[2]]
        without_certificate = _storescu(
            receiver.port, refused, "+tla", "+cf", str(site_pki / "ca.pem")
        )
        plain_tcp = _storescu(receiver.port, refused)
        other_site = _storescu(
            receiver.port,
            [small_patient.seg_path],
            "+tls",
            str(site_pki / "rome.key"),
            str(site_pki / "rome.pem"),
            "+cf",
            str(site_pki / "ca.pem"),
        )
        stored = {row.identity.sop_instance_uid for row in receiver.spool.instances()}
    assert with_certificate.returncode == 0, with_certificate.stderr
    assert stored == {_sop_uid(p) for p in files}
    assert without_certificate.returncode != 0  # no site certificate: handshake refused
    assert "Association Request Failed" in without_certificate.stderr
    assert plain_tcp.returncode != 0
    # Rome's certificate with Milan's AE title: the handshake succeeds, the instance is refused.
    assert other_site.returncode != 0
    assert _sop_uid(small_patient.seg_path) not in stored
    assert "its TLS certificate (rome) is not site milan's" in caplog.text
    assert "Association Request Failed" in plain_tcp.stderr


def test_a_certificate_naming_another_site_in_a_san_or_two_sites_cannot_send_as_milan(
    tmp_path: Path,
    site_pki: Path,
    small_patient: GeneratedPatient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The TLS site rule (``concordose.ingest.tls``) over real handshakes with dcmtk: with milan
    and rome both known, a certificate whose SAN names rome, and one whose CN names milan and SAN
    rome, each send as MILAN_SPECT: the handshake succeeds, the instance is refused (0x0124)."""
    context = server_context(site_pki / "server.pem", site_pki / "server.key", site_pki / "ca.pem")
    sites = {**SITES, "ROME_SPECT": "rome"}
    with StorageReceiver(
        Spool(tmp_path / "spool"), port=0, site_by_ae_title=sites, ssl_context=context
    ) as receiver:
        results = {
            name: _storescu(
                receiver.port,
                [small_patient.nm_files[index]],
                "+tls",
                str(site_pki / f"{name}.key"),
                str(site_pki / f"{name}.pem"),
                "+cf",
                str(site_pki / "ca.pem"),
            )
            for index, name in enumerate(("gateway-rome", "milan-and-rome", "milan"))
        }
        stored = {row.identity.sop_instance_uid for row in receiver.spool.instances()}
    assert results["milan"].returncode == 0, results["milan"].stderr  # the control
    assert stored == {_sop_uid(small_patient.nm_files[2])}
    for name in ("gateway-rome", "milan-and-rome"):
        assert results[name].returncode != 0, name
    assert "its TLS certificate (gateway, gw01.rome.example, rome) is not site milan's" in (
        caplog.text
    )
    assert "its TLS certificate names more than one site (milan, rome)" in caplog.text


def test_association_limit_rejects_the_extra_association_transiently(tmp_path: Path) -> None:
    with StorageReceiver(
        Spool(tmp_path / "spool"), port=0, site_by_ae_title=SITES, max_associations=1
    ) as receiver:
        held = _association(receiver.port)
        try:
            ae = AE(ae_title="MILAN_SPECT")
            ae.add_requested_context(Verification)
            extra = ae.associate("127.0.0.1", receiver.port, ae_title="CONCORDOSE")
            assert extra.is_rejected  # transient: "local limit exceeded", retry later
        finally:
            held.release()
        wait_until(
            lambda: receiver.active_associations == 0,
            timeout_s=10,
            what="the association to close",
        )
        later = _association(receiver.port)  # the slot is free again
        later.release()


_JOURNAL_ONLY_RECEIVER = """
import signal, sys
from pathlib import Path
from concordose.ingest.receiver import StorageReceiver
from concordose.spool.store import Spool

Spool.file_journaled = lambda self: 0  # never file: only the journal holds what is acknowledged
receiver = StorageReceiver(Spool(Path(sys.argv[1])), port=0, site_by_ae_title={"STORESCU": "milan"})
receiver.start()
print(receiver.port, flush=True)
signal.pause()
"""


def test_a_receiver_killed_between_journal_and_filing_loses_nothing(
    tmp_path: Path, small_patient: GeneratedPatient
) -> None:
    root = tmp_path / "spool"
    files = [*small_patient.nm_files, small_patient.seg_path, SIEMENS_NM_FIXTURE]
    process = subprocess.Popen(
        [sys.executable, "-c", _JOURNAL_ONLY_RECEIVER, str(root)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        sent = _storescu(port, files)
        assert sent.returncode == 0, sent.stderr
    finally:
        process.kill()  # SIGKILL after every acknowledgement, before any filing
        process.wait(timeout=30)
    with sqlite3.connect(root / "index.sqlite3") as index:
        (indexed,) = index.execute("SELECT COUNT(*) FROM instances").fetchone()
    assert indexed == 0  # acknowledged instances were only in the journal

    spool = Spool(root)  # no receiver holds the spool: the journal is replayed
    rows = {row.identity.sop_instance_uid: row for row in spool.instances()}
    assert set(rows) == {_sop_uid(p) for p in files}
    for path in files:
        sent_ds = pydicom.dcmread(path)
        stored = pydicom.dcmread(rows[str(sent_ds.SOPInstanceUID)].path)
        assert stored.PixelData == sent_ds.PixelData
    assert list(spool.tmp_dir.iterdir()) == []
    counts = {tp.study_uid: tp.instance_count for tp in spool.timepoints()}
    assert sum(counts.values()) == len(files)
    spool.close()
    again = Spool(root)  # replayed once: the records were invalidated after filing
    assert {tp.study_uid: tp.instance_count for tp in again.timepoints()} == counts
