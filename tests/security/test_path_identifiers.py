"""Identifiers a peer sends never name a file outside its directory (issue 27 item 1;
R-SEC-2, R-INT-2, R-SEC-3).

The attack: a C-STORE whose SOP Instance UID was ``../../../../<dir>/pwned`` was written
into ``<dir>`` and answered 0000. Every UID that reaches the DICOM adapter (C-STORE,
STOW-RS, file import) is checked against the UI grammar (PS3.5 §9.1): a bad one is
answered A900 (PS3.4 B.2.3 *Data Set does not match SOP Class*), written nowhere and
audited (DCM 110104, outcome 4). The grammar helpers are tested with the neighbours of
the attack.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from adapters.dicom.pipeline import Importer
from adapters.dicom.reader import NOT_MATCHING_SOP_CLASS, BadUid, expand, read
from adapters.dicom.scp import StoreScp
from adapters.dicom.settings import DicomSettings
from adapters.dicom.stow import store as stow_store
from fhir_server.config import Settings
from fhir_server.core import safepath
from fhir_server.core.safepath import UnsafeIdentifier
from fhir_server.http.app import ReadFastPath
from fhir_server.security.principal import Principal
from fhir_server.security.scopes import parse_scopes
from fhir_server.server.dispatch import FhirServer
from teleimagerie.wiring import create_app
from tests.behaviour.dicom_world import CT_IMAGE, ct_images
from tests.conftest import mint, secured_core, serve
from tests.e2e.harness import free_port, in_thread, server_env, start, stop

DCM = "http://dicom.nema.org/resources/ontology/DCM"
VALID_64 = "1." + "2" * 62  # exactly 64 characters
# the attack and its neighbours; each breaks the UI grammar one way
BAD_UIDS = {
    "traversal": "../../../../{target}/pwned",
    "dot-dot": "..",
    "absolute": "/{target}/pwned",
    "uid-then-traversal": "1.2.3/../x",
    "backslash": "1.2.3\\..\\x",
    "leading-zero": "1.2.03",
    "leading-zero-first": "01.2.3",
    "empty-component": "1..2",
    "trailing-dot": "1.2.",
    "letters": "1.2.abc",
    "space-inside": "1.2 .3",
    "65-chars": VALID_64 + "3",
}
# a pynetdicom SCU sends no UID over 64 characters, nor one of multiplicity 2
SENDABLE = {k: v for k, v in BAD_UIDS.items() if k not in ("65-chars", "backslash")}


# -- the grammar helpers (R-SEC-2) ----------------------------------------------------------
@pytest.mark.parametrize("uid", ["0", "0.0", "1.2.3", "1.2.840.10008.5.1.4.1.1.2",
                                 "2.25.329800735698586629295641978511506172918", VALID_64,
                                 "1.0.10"])
def test_conformant_uids_are_accepted(uid: str) -> None:
    """PS3.5 §9.1: digits and dots, no leading zero but the component "0", ≤ 64."""
    assert safepath.is_uid(uid)
    assert safepath.check_uid(uid) == uid


@pytest.mark.parametrize("uid", [
    *BAD_UIDS.values(), "", ".", "...", "1.2.3\x00", "1.2\x00.3", "\x00", "1.2.3\n",
    "1.2.3 ", " 1.2.3", ".1.2", "00", "1.00", "٣.٤", "１.２", "1" * 65, "1.2.3%2F..",
    "~/x", "C:\\x", None, 123, ["1.2", "3.4"], b"1.2.3"])
def test_uids_breaking_the_grammar_are_refused(uid: object) -> None:
    """``..``, absolute paths, ``1.2.3/../x``, NUL, 65 characters, leading zeros, empty,
    non-ASCII digits, values of multiplicity 2, not a string: all refused, the value
    escaped in the reason (no control character reaches a log; R-SEC-6)."""
    assert not safepath.is_uid(uid)
    with pytest.raises(UnsafeIdentifier) as refused:
        safepath.check_uid(uid, "SOPInstanceUID")
    text = str(refused.value)
    assert "SOPInstanceUID" in text and "\x00" not in text and "\n" not in text


@pytest.mark.parametrize("title", ["MODALITE1", "TLR-SCP", "A", "PACS_01.X", "X" * 16,
                                   " PACS ", "a b"])
def test_conformant_ae_titles_are_accepted(title: str) -> None:
    """PS3.5 §6.2 AE: ≤ 16 printable ISO 646 characters, spaces at the ends ignored."""
    assert safepath.check_ae_title(title) == title.strip()


@pytest.mark.parametrize("title", ["", "   ", "X" * 17, "A\\B", "A\nB", "A\x00", "\x1b[31m",
                                   "ÉCHOGRAPHE", "A\tB", None, 7])
def test_ae_titles_breaking_the_grammar_are_refused(title: object) -> None:
    with pytest.raises(UnsafeIdentifier):
        safepath.check_ae_title(title)


def test_ae_title_settings_are_checked_not_cut() -> None:
    """A configured AE title outside VR AE stops the adapter with its reason (it used to
    be cut to 16 characters silently)."""
    assert DicomSettings.from_env({"TELEIMG_DICOM_AE_TITLE": "TLR-SCP",
                                   "TELEIMG_DICOM_ALLOWED_AES": "MOD1, MOD2"}
                                  ).allowed_aes == {"MOD1", "MOD2"}
    for env in ({"TELEIMG_DICOM_AE_TITLE": "X" * 17},
                {"TELEIMG_DICOM_ALLOWED_AES": "MOD1,A\\B"}):
        with pytest.raises(SystemExit, match="AE"):
            DicomSettings.from_env(env)


@pytest.mark.parametrize("name", ["..", ".", "", "../x", "a/b", "/etc/passwd", "a\x00b",
                                  "x" * 129, "~", "a b", "é"])
def test_a_path_component_must_be_one_plain_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeIdentifier):
        safepath.inside(tmp_path, name)


def test_inside_keeps_paths_in_their_directory(tmp_path: Path) -> None:
    """A plain name stays in; a symbolic link leading out is refused once resolved;
    ``within`` refuses a path built elsewhere that leaves the directory."""
    assert safepath.inside(tmp_path, "spool", "1.2.3.dcm") == tmp_path / "spool" / "1.2.3.dcm"
    outside = tmp_path.parent / f"outside-{uuid.uuid4().hex}"
    outside.mkdir()
    (tmp_path / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeIdentifier):
        safepath.inside(tmp_path, "escape", "pwned.dcm")
    with pytest.raises(UnsafeIdentifier):
        safepath.within(tmp_path, tmp_path / ".." / "x")
    with pytest.raises(UnsafeIdentifier):
        safepath.within(tmp_path, tmp_path / "a\x00")
    assert safepath.within(tmp_path, tmp_path / "a" / ".." / "b") == tmp_path / "a/../b"


# -- DICOM objects carrying a bad UID ---------------------------------------------------------
def _instance(study: str | None = None, series: str | None = None,
              sop: str | None = None) -> Dataset:
    """One CT image header; any UID may be replaced by a bad one."""
    [ds] = ct_images(study or generate_uid(), 1)
    if series is not None:
        ds.SeriesInstanceUID = series
    if sop is not None:
        ds.SOPInstanceUID = sop
    return ds


def _part10(ds: Dataset) -> bytes:
    """``ds`` as Part 10 bytes, whatever its UIDs (no file named after them)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()  # the data set's own is the attack
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture
def target() -> Iterator[Path]:
    """A directory the attack aims at, with a path short enough for a 64-character UID
    (the run's was ``../../../../<any directory>/pwned``)."""
    path = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))
    yield path
    shutil.rmtree(path)


def _aimed_at(attack: str, spool: Path, target: Path) -> str:
    """The bad UID; the traversal climbs exactly out of ``spool``'s folder into target."""
    if attack == "traversal":
        depth = len(spool.resolve().parts)  # the association's folder is one deeper
        uid = "/".join([".."] * depth) + str(target) + "/pwned"
    else:
        uid = BAD_UIDS[attack].format(target=str(target).lstrip("/"))
    assert len(uid) <= 64 or attack == "65-chars", uid
    return uid


def _files_under(root: Path) -> set[Path]:
    """Every file under root; an association's spool folder may vanish mid-walk (the SCP
    removes it after release), which os.walk tolerates and rglob does not."""
    return {Path(folder, name) for folder, _dirs, names in os.walk(root) for name in names}


def _refusals(store: Any, tmp_path: Path) -> list[dict[str, Any]]:
    """The DICOM transfer AuditEvents with outcome 4 (read from the store as it is)."""
    client = serve(FhirServer(store), tmp_path, None)
    r = client.get(f"/fhir/AuditEvent?type={DCM}|110104&outcome=4&_count=500")
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


@pytest.mark.parametrize("where", ["StudyInstanceUID", "SeriesInstanceUID",
                                   "SOPInstanceUID", "SOPClassUID"])
def test_reader_refuses_a_bad_uid_in_any_of_the_four(where: str) -> None:
    """R-INT-2: the reader every way in shares (C-STORE, STOW-RS, import) refuses it."""
    ds = _instance()
    setattr(ds, where, "1.2.3/../x")
    with pytest.raises(BadUid, match=where):
        read(_part10(ds))
    read(_part10(_instance()))  # the same object with its UIDs is read


def test_dicomdir_cannot_name_a_file_outside_its_folder(tmp_path: Path) -> None:
    """A DICOMDIR (a patient's CD) whose Referenced File ID climbs out of its folder:
    the file it names is not read (R-SEC-2)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "SECRET").write_bytes(_part10(_instance()))
    fileset = FileSet()
    fileset.add(dcmread(io.BytesIO(_part10(_instance()))))
    fileset.write(tmp_path / "cd")
    directory = dcmread(tmp_path / "cd" / "DICOMDIR")
    [record] = [r for r in directory.DirectoryRecordSequence if "ReferencedFileID" in r]
    inside_file = tmp_path / "cd" / Path(*record.ReferencedFileID)
    assert list(expand([tmp_path / "cd" / "DICOMDIR"])) == [inside_file]
    record.ReferencedFileID = ["..", "elsewhere", "SECRET"]
    directory.save_as(tmp_path / "cd" / "DICOMDIR")
    assert list(expand([tmp_path / "cd" / "DICOMDIR"])) == []


# -- C-STORE: a real SCU against the SCP, both stores -----------------------------------------
@pytest.fixture
def scp(store: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    core = secured_core(store, tmp_path)
    spool = tmp_path / "data" / "dicom-spool"
    server = StoreScp(core, DicomSettings(port=0, ae_title="TLR-SCP"), spool)
    _host, port = server.start()
    try:
        yield {"port": port, "spool": spool, "core": core, "store": store}
    finally:
        server.stop()
        assert core.audit is not None
        core.audit.close()


def _c_store(port: int, datasets: list[Dataset]) -> list[int]:
    ae = AE(ae_title="MODALITE1")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="TLR-SCP")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


@pytest.mark.parametrize("attack", sorted(SENDABLE))
def test_c_store_of_a_bad_sop_instance_uid_is_a900_and_written_nowhere(
        scp: dict[str, Any], tmp_path: Path, target: Path, attack: str) -> None:
    """R-SEC-2, R-INT-2: the SOP Instance UID that named the spool file — traversal,
    absolute path, ``1.2.3/../x``, leading zeros… — is answered A900 (PS3.4 B.2.3); no
    file appears anywhere (the traversal's target above all); a conformant instance in
    the same association is still stored (0000); the refusal is audited (R-SEC-3)."""
    uid = _aimed_at(attack, scp["spool"], target)
    before = _files_under(tmp_path)
    good = _instance()
    statuses = _c_store(scp["port"], [_instance(sop=uid), good])
    assert statuses == [NOT_MATCHING_SOP_CLASS, 0x0000]
    assert not list(target.iterdir())
    written = _files_under(tmp_path) - before  # the good one's spool file at most
    assert {p.name for p in written if "pwned" in p.name or ".dcm" in p.name} <= \
        {f"{good.SOPInstanceUID}.dcm", f"{good.SOPInstanceUID}.dcm.txt"}, written
    scp["core"].audit.flush()
    [refusal] = _refusals(scp["store"], tmp_path)
    assert "SOPInstanceUID" in refusal["outcomeDesc"]
    assert refusal["agent"][0]["who"]["display"] == "MODALITE1"
    assert "C-STORE" in refusal["entity"][0]["description"]


@pytest.mark.parametrize("where", ["StudyInstanceUID", "SeriesInstanceUID"])
@pytest.mark.parametrize("attack", ["traversal", "65-chars", "leading-zero"])
def test_c_store_of_a_bad_study_or_series_uid_is_a900(
        scp: dict[str, Any], tmp_path: Path, target: Path, where: str, attack: str) -> None:
    """The UIDs that do not name the spool file today are held to the same grammar: the
    next use of them in a path must not reopen the hole."""
    ds = _instance()
    setattr(ds, where, _aimed_at(attack, scp["spool"], target))
    assert _c_store(scp["port"], [ds]) == [NOT_MATCHING_SOP_CLASS]
    assert not [p for p in _files_under(scp["spool"]) if p.suffix == ".dcm"]
    scp["core"].audit.flush()
    assert [where in e["outcomeDesc"] for e in _refusals(scp["store"], tmp_path)] == [True]


def test_scp_refuses_a_data_set_that_is_not_the_instance_the_request_names(
        scp: dict[str, Any]) -> None:
    """PS3.7 §9.1.1.1: a C-STORE-RQ names the instance it carries; a data set with
    another SOP Instance UID is refused A900, not spooled under either."""
    ds = _instance()
    raw = _part10(ds)

    class Request:
        AffectedSOPInstanceUID = generate_uid()

    class Requestor:
        ae_title, address, port = "MODALITE1", "127.0.0.1", 104

    class Assoc:
        requestor = Requestor()

    class Event:
        request, assoc = Request(), Assoc()

        @staticmethod
        def encoded_dataset(include_meta: bool = True) -> bytes:
            return raw

    server = StoreScp(scp["core"], DicomSettings(port=0), scp["spool"])
    assert server._store(Event()) == NOT_MATCHING_SOP_CLASS
    assert not [p for p in _files_under(scp["spool"]) if p.suffix == ".dcm"]


# -- STOW-RS over HTTP, both stores -----------------------------------------------------------
def _multipart(*parts: bytes) -> tuple[bytes, str]:
    boundary = "limite-" + uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                    + part + b"\r\n" for part in parts)
    return body + b"--" + boundary.encode() + b"--\r\n", \
        f'multipart/related; type="application/dicom"; boundary={boundary}'


@pytest.fixture
def pacs(store: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The HTTP app as served (read fast path in front), on a real socket: uvicorn in a
    thread of this process, so that both stores (mongomock too) are behind it."""
    core = secured_core(store, tmp_path)
    app = ReadFastPath(create_app(Settings(data_dir=tmp_path), server=core), core, None)
    token = mint(tmp_path, ["pacs"], ["system/*.cruds"])
    try:
        with in_thread(app) as port, httpx.Client(
                base_url=f"http://127.0.0.1:{port}", timeout=30,
                headers={"Authorization": f"Bearer {token}"}) as http:
            yield {"http": http, "core": core, "store": store}
    finally:
        assert core.audit is not None
        core.audit.close()


@pytest.mark.parametrize("attack", sorted(BAD_UIDS))
def test_stow_refuses_a_bad_uid_with_a900_in_its_response(
        pacs: dict[str, Any], tmp_path: Path, attack: str) -> None:
    """PS3.18 §10.5.3: the bad instance is in Failed SOP Sequence with FailureReason
    A900 and no echo of the bad value; the good one is stored (202); audited."""
    bad = _instance(sop=BAD_UIDS[attack].format(target="tmp/pwned"))
    good = _instance()
    body, ctype = _multipart(_part10(bad), _part10(good))
    before = _files_under(tmp_path)
    r = pacs["http"].post("/dicomweb/studies", content=body,
                          headers={"Content-Type": ctype})
    assert r.status_code == 202, r.text
    answer = r.json()
    [failed] = answer["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [NOT_MATCHING_SOP_CLASS]
    assert failed["00081155"]["Value"] == [""]  # the bad UID is not echoed
    assert [s["00081155"]["Value"] for s in answer["00081199"]["Value"]] == \
        [[str(good.SOPInstanceUID)]]
    assert "SOPInstanceUID" in r.headers["Warning"]
    assert not [p for p in _files_under(tmp_path) - before if "pwned" in p.name]
    pacs["core"].audit.flush()
    [refusal] = _refusals(pacs["store"], tmp_path)
    assert "STOW-RS" in refusal["entity"][0]["description"]
    assert "SOPInstanceUID" in refusal["outcomeDesc"]


def test_stow_with_only_bad_uids_is_409(pacs: dict[str, Any]) -> None:
    body, ctype = _multipart(_part10(_instance(study="1.2.03")),
                             _part10(_instance(series="1..2")))
    r = pacs["http"].post("/dicomweb/studies", content=body,
                          headers={"Content-Type": ctype})
    assert r.status_code == 409, r.text
    assert [f["00081197"]["Value"] for f in r.json()["00081198"]["Value"]] == \
        [[NOT_MATCHING_SOP_CLASS]] * 2


# ("..", ".": the client resolves them before sending: no STOW request at all)
@pytest.mark.parametrize("study", ["1.02.3", "...", "1" * 65, "a.b", "1.2.3%00", "1.2.3%0A"])
def test_stow_to_a_study_url_that_is_not_a_uid_is_400(
        pacs: dict[str, Any], tmp_path: Path, study: str) -> None:
    """PS3.18 §10.5.3: ``/dicomweb/studies/{study}`` with a non-UID is a bad request,
    never a 5xx, and audited."""
    r = pacs["http"].post(f"/dicomweb/studies/{study}", content=_part10(_instance()),
                          headers={"Content-Type": "application/dicom"})
    assert r.status_code == 400, r.text
    pacs["core"].audit.flush()
    assert len(_refusals(pacs["store"], tmp_path)) == 1


@pytest.mark.parametrize("study", ["1.2.3%2F..%2Fx", "..%2F..%2Fx"])
def test_stow_to_a_study_url_with_an_encoded_slash_matches_no_route(
        pacs: dict[str, Any], tmp_path: Path, study: str) -> None:
    """The server decodes ``%2F`` before routing: such a path is no STOW URL (404, a
    client error), and nothing is stored."""
    r = pacs["http"].post(f"/dicomweb/studies/{study}", content=_part10(_instance()),
                          headers={"Content-Type": "application/dicom"})
    assert r.status_code == 404, r.text
    studies = serve(FhirServer(pacs["store"]), tmp_path, None).get("/fhir/ImagingStudy")
    assert studies.status_code == 200 and not studies.json().get("entry"), studies.text


# -- file import (teleimagerie dicom import) --------------------------------------------------
def test_import_refuses_and_audits_a_file_with_a_bad_uid(store: Any, tmp_path: Path) -> None:
    core = secured_core(store, tmp_path)
    folder = tmp_path / "cd"
    folder.mkdir()
    (folder / "IM1").write_bytes(_part10(_instance(sop="1.2.3/../../x")))
    summary = Importer(core, DicomSettings()).import_paths([folder])
    assert [s for s, _ in summary.failed] == [str(folder / "IM1")] and not summary.studies
    assert core.audit is not None
    core.audit.flush()
    assert len(_refusals(store, tmp_path)) == 1
    core.audit.close()


# -- the attack as reported: teleimagerie serve, any calling AE -------------------------------
@pytest.mark.e2e
def test_serve_answers_the_reported_attack_a900_and_writes_nothing(
        tmp_path: Path, target: Path) -> None:
    """The run's exact attack against ``teleimagerie serve`` with its default settings
    (any calling AE): A900, nothing in the target directory, the server still serving."""
    data = tmp_path / "data"
    data.mkdir()
    dicom, http = free_port(), free_port()
    # serve answers HTTP only once the SCP said it listens
    proc = start(server_env(data, http, TELEIMG_DICOM_PORT=str(dicom),
                            TELEIMG_DELIVERY="off"))
    try:
        uid = _aimed_at("traversal", data / "dicom-spool", target)
        ae = AE(ae_title="ANYONE")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", dicom, ae_title="TELEIMAGERIE")
        assert assoc.is_established
        assert assoc.send_c_store(_instance(sop=uid)).Status == NOT_MATCHING_SOP_CLASS
        assert assoc.send_c_store(_instance()).Status == 0x0000
        assoc.release()
        assert not list(target.iterdir())
        assert not [p for p in _files_under(tmp_path) if "pwned" in p.name]
        assert httpx.get(f"http://127.0.0.1:{http}/fhir/metadata", timeout=10
                         ).status_code == 200
        assert proc.poll() is None
    finally:
        stop(proc)


def _principal() -> Principal:
    return Principal(sub="test:pacs", issuer="test", roles=("pacs",),
                     scopes=parse_scopes("system/*.cruds"))


def test_stow_store_function_never_echoes_a_bad_uid(store: Any, tmp_path: Path) -> None:
    """The response dataset of the adapter itself (what the HTTP route serialises)."""
    core = secured_core(store, tmp_path)
    status, dataset, reasons = stow_store(core, _principal(), _part10(_instance(
        sop="../../x")), "application/dicom", DicomSettings())
    assert status == 409
    assert "../../x" not in str(dataset)
    assert reasons and "'../../x'" in reasons[0]
    assert core.audit is not None
    core.audit.close()
