"""Orthanc as the hospital's routing PACS: REST ``/modalities/…/store`` and a Lua ``OnStableStudy``
auto-route to our receiver, with the real vendor file and a synthetic patient."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pydicom
import pytest

from concordose.ingest.receiver import StorageReceiver
from concordose.phantoms import GeneratedPatient
from concordose.spool.store import Spool
from tests.conftest import SIEMENS_NM_FIXTURE
from tests.fakes import FakeClock, Recorder
from tests.integration.peers import free_port, port_open, wait_until

pytestmark = pytest.mark.integration

QUIET_S = 60.0
ROUTE_LUA = """
-- Auto-route: once a study has been stable (no new instance for StableAge s), send it on
-- through Orthanc's own REST store job (one association per study).
function OnStableStudy(studyId, tags, metadata)
  RestApiPost('/modalities/concordose/store', studyId)
end
"""


@dataclass
class Routing:
    receiver: StorageReceiver
    clock: FakeClock
    hook: Recorder
    rest_url: str

    def post(self, path: str, body: bytes) -> object:
        request = urllib.request.Request(self.rest_url + path, data=body, method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")


def _orthanc_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/system", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def routing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routing]:
    """Our receiver, and an Orthanc that routes to it (temporary config, free loopback ports)."""
    orthanc = shutil.which("Orthanc")
    assert orthanc is not None, "Orthanc is required (installed by `make test`)"
    folder = tmp_path_factory.mktemp("orthanc")
    clock, hook = FakeClock(), Recorder()
    receiver = StorageReceiver(
        Spool(folder / "spool"),
        port=0,
        site_by_ae_title={"ORTHANC": "milan"},  # the site's PACS routes on the modality's behalf
        quiet_period_s=QUIET_S,
        on_complete=hook,
        clock=clock,
    )
    receiver.start()
    http_port, dicom_port = free_port(), free_port()
    (folder / "route.lua").write_text(ROUTE_LUA)
    config = {
        "Name": "routing-pacs",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "StableAge": 1,
        "LuaScripts": [str(folder / "route.lua")],
        "DicomModalities": {"concordose": ["CONCORDOSE", "127.0.0.1", receiver.port]},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen([orthanc, str(folder / "orthanc.json")], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_until(
            lambda: _orthanc_answers(url) and port_open(dicom_port), timeout_s=30, what="Orthanc"
        )
        yield Routing(receiver, clock, hook, url)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        receiver.stop()


def _stored_uids(receiver: StorageReceiver) -> set[str]:
    return {row.identity.sop_instance_uid for row in receiver.spool.instances()}


def test_rest_store_to_our_modality_delivers_the_vendor_file(routing: Routing) -> None:
    uploaded = routing.post("/instances", SIEMENS_NM_FIXTURE.read_bytes())
    assert isinstance(uploaded, dict)
    job = routing.post("/modalities/concordose/store", str(uploaded["ID"]).encode())
    assert isinstance(job, dict)
    assert job["InstancesCount"] == 1  # synchronous C-STORE done and answered with success
    original = pydicom.dcmread(SIEMENS_NM_FIXTURE)
    rows = {row.identity.sop_instance_uid: row for row in routing.receiver.spool.instances()}
    row = rows[str(original.SOPInstanceUID)]
    assert row.calling_ae_title == "ORTHANC"
    stored = pydicom.dcmread(row.path)
    assert stored.PixelData == original.PixelData
    assert stored == original  # every element as the camera wrote it, through the PACS


def test_lua_auto_route_of_stable_studies_completes_each_time_point_once(
    routing: Routing, small_patient: GeneratedPatient
) -> None:
    studies: dict[str, int] = {}
    for path in small_patient.dicom_files:
        routing.post("/instances", path.read_bytes())
        study = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        studies[study] = studies.get(study, 0) + 1
    expected = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in small_patient.dicom_files
    }
    # Nothing is sent by hand: Orthanc routes each study once it has been stable for 1 s.
    wait_until(
        lambda: expected <= _stored_uids(routing.receiver),
        timeout_s=60,
        what="Orthanc's Lua route to deliver the patient",
    )
    wait_until(
        lambda: not routing.receiver.completion.busy_study_uids(),
        timeout_s=10,
        what="Orthanc's associations to close",
    )
    routing.clock.advance(QUIET_S + 1)
    routing.receiver.completion.poll()
    events = [e for e in routing.hook.events if e.timepoint.study_uid in studies]
    assert sorted(e.event_id for e in events) == sorted(f"{uid}#1" for uid in studies)
    for event in events:
        assert event.timepoint.instance_count == studies[event.timepoint.study_uid]
        assert event.timepoint.patient_id == small_patient.patient_id
    assert routing.receiver.completion.poll() == []
