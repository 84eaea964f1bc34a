"""A seeded mutator of C-STORE data sets and a campaign that sends its mutants to a running
receiver over real associations (issue 18, item 5): used by
``tests/integration/test_receiver_fuzz.py`` (≥ 300 mutants in the suite) and
``benchmarks/bench_receiver_fuzz.py`` (a larger run with the count of each status).

Seeds are real files (the Siemens SPECT fixture) and generated ones (NM, CT, SEG of the test
phantom, and an RTSTRUCT rt-utils draws on its first CT from the SEG's masks), sent as their
data sets in their own transfer syntax. Each mutant applies one to three operators chosen by a
:class:`random.Random` seeded from ``(seed, index)`` — the same seed makes the same mutants, and
a failing index can be replayed alone:

* byte flips / random bytes in the header (never the pixel data alone: that is not a defect);
* a cut at a random position (inside the header or the pixel data);
* an element's length field set to a random or nearby value;
* an element's VR replaced by two random letters (``ZZ``…);
* bytes inserted or deleted in the header;
* a value replaced by junk text of the same length (a DS ``4.795íÅ99306679``, an IS ``abc``);
* NumberOfFrames / Rows / Columns set to 0, a huge number or letters;
* the command's SOP Instance UID or SOP Class UID changed;
* the data set sent on the presentation context of the other VR encoding, or on the
  Verification context.

A smaller share of mutants (:func:`syntax_seeds`) is sent in Explicit VR Big Endian and in
Deflated Explicit VR Little Endian: the same operators, in the seed's byte order; a deflated
seed is mutated inflated, then deflated (so the mutants reach the element checks), and now
and then its deflate stream is cut or flipped as well.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Literal

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.filereader import data_element_generator
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    NuclearMedicineImageStorage,
    RTStructureSetStorage,
    SegmentationStorage,
    generate_uid,
)
from pydicom.valuerep import VR

from concordose.calibration.gate import gate_time_point
from concordose.calibration.registry import SiteRegistry
from concordose.dicom.ct import read_ct_series
from concordose.dicom.nm import read_nm_header
from concordose.dicom.rtstruct import read_rtstruct
from concordose.dicom.seg import read_segmentation
from concordose.errors import ConcordoseError
from concordose.phantoms import GeneratedPatient
from tests.integration.crafted_peer import VERIFICATION, Context, CraftedPeer, encode_data_set
from tests.rtstruct_builder import first_ct_files, write_rtstruct_from_seg

ECHO_CONTEXT = 1
SOP_CLASSES = (
    NuclearMedicineImageStorage,
    CTImageStorage,
    SegmentationStorage,
    RTStructureSetStorage,
)
TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
OTHER_SYNTAXES = (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)
"""Sent by the smaller share of mutants (:func:`syntax_seeds`); their contexts come after
the little-endian ones, so those keep their ids."""
PIXEL_DATA_TAG = 0x7FE00010
LONG_HEADER_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})
"""Explicit VRs with a 12-byte element header (PS3.5 §7.1.2)."""
SHAPE_KEYWORDS = {0x00280008: "IS", 0x00280010: "US", 0x00280011: "US"}


def contexts() -> list[Context]:
    """Verification, then every seed SOP class in both VR encodings (ids 3, 5, 7…), then in
    the :data:`OTHER_SYNTAXES`."""
    proposed = [Context(ECHO_CONTEXT, VERIFICATION, ImplicitVRLittleEndian)]
    for syntaxes in (TRANSFER_SYNTAXES, OTHER_SYNTAXES):
        for sop_class in SOP_CLASSES:
            for syntax in syntaxes:
                proposed.append(Context(2 * len(proposed) + 1, sop_class, syntax))
    return proposed


def context_id(sop_class: str, transfer_syntax: str) -> int:
    for context in contexts():
        if (context.abstract_syntax, context.transfer_syntax) == (sop_class, transfer_syntax):
            return context.context_id
    raise KeyError((sop_class, transfer_syntax))


@dataclass(frozen=True)
class Element:
    """Where one top-level element sits in a seed's data-set bytes."""

    tag: int
    header_at: int
    value_at: int
    length: int
    explicit_vr: bool


@dataclass(frozen=True)
class Seed:
    """A data set as a C-STORE carries it, and where its top-level elements are (a deflated
    one: ``data`` is the inflated data set, deflated when a mutant is sent)."""

    name: str
    sop_class: str
    sop_instance_uid: str
    transfer_syntax: str
    data: bytes
    elements: tuple[Element, ...]

    @property
    def header_end(self) -> int:
        """Where PixelData's element starts (the end of the data when there is none)."""
        for element in self.elements:
            if element.tag == PIXEL_DATA_TAG:
                return element.header_at
        return len(self.data)

    @property
    def byteorder(self) -> Literal["little", "big"]:
        return "big" if self.transfer_syntax == ExplicitVRBigEndian else "little"

    @property
    def deflated(self) -> bool:
        return self.transfer_syntax == DeflatedExplicitVRLittleEndian


def deflate(data: bytes) -> bytes:
    """A data set as a deflated transfer syntax carries it: raw deflate (no zlib header),
    padded to an even length (PS3.5 A.5)."""
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    out = compressor.compress(data) + compressor.flush()
    return out + b"\0" * (len(out) % 2)


def _elements(data: bytes, transfer_syntax: str) -> tuple[Element, ...]:
    syntax = UID(transfer_syntax)
    implicit = syntax.is_implicit_VR
    little = syntax.is_little_endian or syntax.is_deflated
    found = []
    for raw in data_element_generator(BytesIO(data), implicit, little, defer_size=256):
        assert isinstance(raw, RawDataElement)
        header = 12 if not implicit and raw.VR in LONG_HEADER_VRS else 8
        found.append(
            Element(int(raw.tag), raw.value_tell - header, raw.value_tell, raw.length, not implicit)
        )
    return tuple(found)


def seed_from_file(path: Path, name: str, transfer_syntax: str | None = None) -> Seed:
    """A seed from a Part 10 file, re-encoded in ``transfer_syntax`` (default: its own)."""
    dataset = pydicom.dcmread(path)
    syntax = str(transfer_syntax or dataset.file_meta.TransferSyntaxUID)
    inflated = syntax == DeflatedExplicitVRLittleEndian
    data = encode_data_set(dataset, ExplicitVRLittleEndian if inflated else syntax)
    return Seed(
        name,
        str(dataset.SOPClassUID),
        str(dataset.SOPInstanceUID),
        syntax,
        data,
        _elements(data, syntax),
    )


def fuzz_seeds(siemens_fixture: Path, patient: GeneratedPatient) -> list[Seed]:
    """The Siemens SPECT fixture, and a generated patient's NM (both VR encodings), one CT
    slice, its SEG and an RTSTRUCT of the SEG's VOIs drawn on its first CT (both VR encodings;
    read back on :func:`rtstruct_ct_files`)."""
    ct = next(p for p in patient.dicom_files if p.parent.name == "ct")
    with tempfile.TemporaryDirectory(prefix="fuzz-rtstruct-") as work:
        rtstruct = write_rtstruct_from_seg(patient, Path(work) / "rtstruct.dcm")
        rtstruct_seeds = [
            seed_from_file(rtstruct, "phantom_rtstruct", ExplicitVRLittleEndian),
            seed_from_file(rtstruct, "phantom_rtstruct_implicit", ImplicitVRLittleEndian),
        ]
    return [
        seed_from_file(siemens_fixture, "siemens_nm"),
        seed_from_file(patient.nm_files[0], "phantom_nm", ExplicitVRLittleEndian),
        seed_from_file(patient.nm_files[1], "phantom_nm_implicit", ImplicitVRLittleEndian),
        seed_from_file(ct, "phantom_ct", ExplicitVRLittleEndian),
        seed_from_file(patient.seg_path, "phantom_seg", ExplicitVRLittleEndian),
        *rtstruct_seeds,
    ]


def syntax_seeds(patient: GeneratedPatient, transfer_syntax: str) -> list[Seed]:
    """A generated patient's NM, one CT slice, its SEG and an RTSTRUCT drawn on its first CT
    (read back on :func:`rtstruct_ct_files`), encoded in ``transfer_syntax`` (one of the
    :data:`OTHER_SYNTAXES`)."""
    ct = next(p for p in patient.dicom_files if p.parent.name == "ct")
    with tempfile.TemporaryDirectory(prefix="fuzz-rtstruct-") as work:
        rtstruct = write_rtstruct_from_seg(patient, Path(work) / "rtstruct.dcm")
        rtstruct_seed = seed_from_file(rtstruct, "phantom_rtstruct", transfer_syntax)
    return [
        seed_from_file(patient.nm_files[0], "phantom_nm", transfer_syntax),
        seed_from_file(ct, "phantom_ct", transfer_syntax),
        seed_from_file(patient.seg_path, "phantom_seg", transfer_syntax),
        rtstruct_seed,
    ]


def rtstruct_ct_files(patient: GeneratedPatient) -> list[Path]:
    """The CT slices the RTSTRUCT seeds were drawn on (an RTSTRUCT is read on them)."""
    return first_ct_files(patient)


@dataclass(frozen=True)
class Mutant:
    """One C-STORE to send: context, command UIDs and data-set bytes, and what was done."""

    index: int
    seed: str
    context_id: int
    sop_class: str
    sop_instance_uid: str
    data: bytes
    operators: tuple[str, ...]


def _fresh_uid(seed: Seed, data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """``data`` with the seed's SOP Instance UID replaced by a new one of the same length
    (``2.25.<digits>``; every mutant is a new instance, so a success is not a duplicate)."""
    old = seed.sop_instance_uid.encode()
    digits = len(old) - len("2.25.")
    new_uid = "2.25." + str(rng.randint(1, 9)) + "".join(rng.choices("0123456789", k=digits - 1))
    return data.replace(old, new_uid.encode(), 1), new_uid


Operator = Callable[[random.Random, Seed, bytearray, dict[str, str]], None]


def _flip(rng: random.Random, seed: Seed, data: bytearray, command: dict[str, str]) -> None:
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(min(len(data), seed.header_end) or 1)
        if at < len(data):
            data[at] = rng.randrange(256)


def _cut(rng: random.Random, seed: Seed, data: bytearray, command: dict[str, str]) -> None:
    cut = rng.randrange(len(data)) & ~1  # PDVs of odd length are a protocol error, not a data set's
    del data[cut:]


def _length(rng: random.Random, seed: Seed, data: bytearray, command: dict[str, str]) -> None:
    element = rng.choice(seed.elements)
    short_form = element.explicit_vr and element.value_at - element.header_at == 8
    size = 2 if short_form else 4
    at = element.value_at - size
    if element.value_at > len(data):
        return
    choices = (element.length + 2, element.length - 2, rng.randrange(1 << (8 * size)), 0xFFFFFFFF)
    length = rng.choice(choices) % (1 << (8 * size))
    data[at : at + size] = length.to_bytes(size, seed.byteorder)


def _vr(rng: random.Random, seed: Seed, data: bytearray, command: dict[str, str]) -> None:
    explicit = [e for e in seed.elements if e.explicit_vr and e.header_at + 6 <= len(data)]
    if explicit:
        element = rng.choice(explicit)
        letters = rng.choice((b"ZZ", bytes(rng.choices(range(65, 91), k=2))))
        data[element.header_at + 4 : element.header_at + 6] = letters


def _splice(rng: random.Random, seed: Seed, data: bytearray, command: dict[str, str]) -> None:
    at = rng.randrange(min(len(data), seed.header_end) or 1)
    count = rng.randint(1, 4) * 2
    if rng.random() < 0.5:
        data[at:at] = bytes(rng.randrange(256) for _ in range(count))
    else:
        del data[at : at + count]


JUNK = ("abc", "4.795íÅ99306679", "-", "1e999", "NaN", "\x00\x01", "0", "-1", "99999999")


def _junk(rng: random.Random, seed: Seed, data: bytearray, command: dict[str, str]) -> None:
    element = rng.choice([e for e in seed.elements if 0 < e.length < 64] or list(seed.elements))
    if element.value_at + element.length > len(data) or element.length == 0xFFFFFFFF:
        return
    text = rng.choice(JUNK).encode("latin-1")
    value = (text * (element.length // max(len(text), 1) + 1))[: element.length]
    data[element.value_at : element.value_at + element.length] = value


def _shape(rng: random.Random, seed: Seed, data: bytearray, command: dict[str, str]) -> None:
    candidates = [e for e in seed.elements if e.tag in SHAPE_KEYWORDS]
    if not candidates:
        return
    element = rng.choice(candidates)
    if element.value_at + element.length > len(data):
        return
    if SHAPE_KEYWORDS[element.tag] == "US":
        value = rng.choice((0, 1, 65535)).to_bytes(2, seed.byteorder)[: element.length]
    else:
        value = rng.choice((b"0", b"ab", b"-3", b"99")).ljust(element.length)[: element.length]
    data[element.value_at : element.value_at + element.length] = value


def _command_uid(rng: random.Random, seed: Seed, data: bytearray, command: dict[str, str]) -> None:
    if rng.random() < 0.5:
        command["sop_instance_uid"] = generate_uid()
    else:
        others = [c for c in SOP_CLASSES if c != seed.sop_class]
        command["sop_class"] = rng.choice(others)


def _context(rng: random.Random, seed: Seed, data: bytearray, command: dict[str, str]) -> None:
    if rng.random() < 0.3:
        command["context"] = "verification"
    else:
        command["context"] = "other_encoding"


OPERATORS: dict[str, Operator] = {
    "flip": _flip,
    "cut": _cut,
    "length": _length,
    "vr": _vr,
    "splice": _splice,
    "junk": _junk,
    "shape": _shape,
    "command_uid": _command_uid,
    "context": _context,
}


def mutant(seeds: Sequence[Seed], seed: int, index: int) -> Mutant:
    """Mutant number ``index`` of campaign ``seed`` (deterministic)."""
    rng = random.Random(f"{seed}:{index}")
    base = rng.choice(seeds)
    raw, uid = _fresh_uid(base, base.data, rng)
    data = bytearray(raw)
    command = {"sop_instance_uid": uid, "sop_class": base.sop_class}
    names = rng.sample(sorted(OPERATORS), k=rng.randint(1, 3))
    for name in names:
        OPERATORS[name](rng, base, data, command)
    if base.deflated:
        data = bytearray(deflate(bytes(data)))
        if rng.random() < 0.25:  # the deflate stream itself damaged
            rng.choice((_flip, _cut))(rng, base, data, command)
    syntax = base.transfer_syntax
    context = context_id(command["sop_class"], syntax)
    if command.get("context") == "verification":
        context = ECHO_CONTEXT
    elif command.get("context") == "other_encoding":
        other = next(s for s in TRANSFER_SYNTAXES if s != syntax)
        context = context_id(command["sop_class"], other)
    return Mutant(
        index,
        base.name,
        context,
        command["sop_class"],
        command["sop_instance_uid"],
        bytes(data),
        tuple(names),
    )


def mutants(seeds: Sequence[Seed], seed: int, count: int) -> Iterator[Mutant]:
    for index in range(count):
        yield mutant(seeds, seed, index)


@dataclass
class Campaign:
    """What a run of mutants got back."""

    statuses: dict[int, int] = field(default_factory=dict)
    """mutant index → status answered"""
    accepted: dict[str, Mutant] = field(default_factory=dict)
    """SOP Instance UID → the mutant answered 0x0000"""
    aborted: list[int] = field(default_factory=list)
    """indexes whose association ended without a response"""
    elapsed_s: float = 0.0

    def counts(self) -> Counter[int]:
        return Counter(self.statuses.values())


def run_campaign(
    port: int,
    seeds: Sequence[Seed],
    *,
    seed: int,
    count: int,
    per_association: int = 50,
    calling_ae: str = "MILAN_SPECT",
    deadline_s: float | None = None,
    timeout_s: float = 30.0,
) -> Campaign:
    """Send ``count`` mutants, ``per_association`` per association; a broken association (or
    no answer within ``timeout_s``) is recorded and a new one opened. Stops early when
    ``deadline_s`` (from the start) passes."""
    campaign = Campaign()
    start = time.monotonic()
    peer: CraftedPeer | None = None
    sent_in_peer = 0
    for item in mutants(seeds, seed, count):
        if deadline_s is not None and time.monotonic() - start > deadline_s:
            break
        try:
            if peer is None:
                peer = CraftedPeer(port, contexts(), calling_ae=calling_ae, timeout_s=timeout_s)
                sent_in_peer = 0
            status = peer.store(item.context_id, item.sop_class, item.sop_instance_uid, item.data)
        except (ConnectionError, OSError):
            campaign.aborted.append(item.index)
            if peer is not None:
                peer.close()
            peer = None
            continue
        campaign.statuses[item.index] = status
        if status == 0x0000:
            campaign.accepted[item.sop_instance_uid] = item
        sent_in_peer += 1
        if sent_in_peer >= per_association:
            peer.release()
            peer = None
    if peer is not None:
        peer.release()
    campaign.elapsed_s = time.monotonic() - start
    return campaign


TEXT_NUMBER_VRS = {VR.DS, VR.IS}


def read_back(path: Path) -> None:
    """Every element decoded by pydicom (a DS/IS that is not a number: the readers' finding)."""
    dataset = pydicom.dcmread(path)
    for element in dataset.iterall():
        try:
            _ = element.value
        except ValueError:
            if element.VR not in TEXT_NUMBER_VRS:
                raise


def describe(item: Mutant, seed: int) -> str:
    return f"mutant {item.index} of seed {seed} ({item.seed}: {', '.join(item.operators)})"


def unreadable_successes(
    campaign: Campaign,
    stored: dict[str, Path],
    sop_class_by_uid: dict[str, str],
    registry: SiteRegistry,
    *,
    seed: int,
    rtstruct_ct_files: Sequence[Path],
    site_id: str = "milan",
) -> list[str]:
    """Of the instances answered 0x0000 (``stored``: SOP Instance UID → file), those that do
    not read back with pydicom, with dcmtk's ``dcmdump``, or through the platform's readers
    (NM: ``concordose check``'s path, header read + gate; CT: the series reader, SimpleITK
    included; SEG: the segmentation reader; RTSTRUCT: its reader on ``rtstruct_ct_files``, the
    CT it was drawn on; a ``ConcordoseError`` is a finding or a held cycle, not a failure) —
    one line each."""
    dcmdump = shutil.which("dcmdump")
    assert dcmdump is not None, "dcmtk's dcmdump is required (installed by `make test`)"
    failures = []
    for uid, item in campaign.accepted.items():
        path = stored[uid]
        try:
            read_back(path)
        except Exception as exc:
            failures.append(f"{describe(item, seed)}: pydicom cannot read it back: {exc!r}")
        dumped = subprocess.run([dcmdump, "-q", str(path)], capture_output=True, check=False)
        if dumped.returncode != 0:
            failures.append(f"{describe(item, seed)}: dcmdump: {dumped.stderr!r}")
        sop_class = sop_class_by_uid[uid]
        try:
            if sop_class == NuclearMedicineImageStorage:
                acquisition = read_nm_header(path)
                gate_time_point(acquisition, registry, calling_ae_title=None, site_id=site_id)
            elif sop_class == CTImageStorage:
                read_ct_series([path, path])
            elif sop_class == SegmentationStorage:
                read_segmentation(path)
            elif sop_class == RTStructureSetStorage:
                read_rtstruct(path, rtstruct_ct_files)
        except ConcordoseError:
            pass  # a finding or a held cycle, not a crash
        except Exception as exc:
            failures.append(f"{describe(item, seed)}: the platform's reader raised {exc!r}")
    return failures
