"""End to end: the command line as an operator meets it (issue 29 items 6, 7).

``--version``; invalid filter values exit 2 naming the accepted ones; ``hl7 send`` prints
an ACK in the charset it was sent in (MSH-18); ``dicom import`` skips a file that is not
DICOM with a warning and prints whole identifiers; ``serve`` gives the development-mode
warning once for all its processes; ``ig package`` writes a FHIR NPM package (package.json,
.index.json naming every file, an ImplementationGuide declaring its dependencies).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydicom.uid import generate_uid

from tests.behaviour.dicom_world import ct_images, write
from tests.e2e.harness import ROOT, free_port, server_env, start, stop

pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "teleimagerie.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})})


def test_version() -> None:
    from fhir_server import __version__

    done = cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"teleimagerie {__version__}"


@pytest.mark.parametrize(("args", "accepted"), [
    (["hl7", "list", "--status", "bogus"], ["received", "processed", "dead"]),
    (["hl7", "replay", "--status", "processed"], ["received", "error", "rejected", "held"]),
    (["delivery", "list", "--state", "nope"], ["lettre-morte", "bloque-opposition",
                                               "document-invalide"]),
    (["delivery", "list", "--channel", "fax"], ["dmp", "ris", "mssante"]),
])
def test_invalid_filter_values_exit_2_with_the_accepted_ones(
        args: list[str], accepted: list[str], tmp_path: Path) -> None:
    done = cli(*args, env={"TELEIMG_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    assert "invalid choice" in done.stderr
    for value in accepted:
        assert f"'{value}'" in done.stderr, value
    assert not any(tmp_path.iterdir())  # refused before anything is opened or created


@pytest.fixture
def latin1_peer() -> Iterator[tuple[int, list[bytes]]]:
    """An MLLP peer that answers every message with an ACK in ISO 8859-1 (MSH-18 8859/1),
    its text accented; (port, the messages it received)."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\x1c\r" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            received.append(data)
            ack = ("MSH|^~\\&|RIS|HOPITAL|TELEIMG|TLM|20260101120000||ACK^O23^ACK|A1|P|2.5"
                   "||||||8859/1\rMSA|AA|MSG1|Reçu, déjà intégré à l'étude\r")
            conn.sendall(b"\x0b" + ack.encode("iso8859-1") + b"\x1c\r")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1]), received
    finally:
        server.close()
        thread.join(5)


def test_hl7_send_prints_the_ack_in_its_charset(latin1_peer: tuple[int, list[bytes]],
                                                tmp_path: Path) -> None:
    port, received = latin1_peer
    message = tmp_path / "orm.hl7"
    message.write_bytes("MSH|^~\\&|TELEIMG|TLM|RIS|HOPITAL|20260101120000||ORM^O01|MSG1|P|"
                        "2.5||||||8859/1\rPID|1||IPP1^^^HOP||DUPRÉ^Noël\r".encode("iso8859-1"))
    done = cli("hl7", "send", str(message), "--port", str(port), "--timeout", "10")
    assert received, done.stderr
    assert done.returncode == 0, done.stderr
    assert "MSA|AA|MSG1|Reçu, déjà intégré à l'étude" in done.stdout
    assert "\ufffd" not in done.stdout  # nothing decoded as the wrong charset


def test_dicom_import_skips_a_file_that_is_not_dicom(tmp_path: Path) -> None:
    folder = tmp_path / "cd"
    uid = generate_uid()
    for ds in ct_images(uid, 2, placer="CLI-POLISH-1"):
        write(ds, folder)
    (folder / "README.txt").write_text("Ce CD contient les images de l'examen.\n")
    env = {"TELEIMG_DATA_DIR": str(tmp_path / "data")}
    done = cli("dicom", "import", str(folder), env=env)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.strip()
                and "DEVELOPMENT MODE" not in line]
    assert warnings == [f"ignoré : {folder / 'README.txt'} n'est pas un fichier DICOM "
                        "Part 10"], done.stderr
    # whole identifiers: the Study Instance UID on one line, nothing cut with an ellipsis
    assert uid in done.stdout and "…" not in done.stdout, done.stdout
    assert "1 ignoré(s)" in done.stdout and "0 en échec" in done.stdout
    again = cli("dicom", "import", "--json", str(folder), env=env)
    summary = json.loads(again.stdout)
    assert again.returncode == 0 and not summary["failed"]
    assert summary["skipped"] == [str(folder / "README.txt")]


def test_serve_warns_of_development_mode_once(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    # the HTTP server, the MLLP listener and the delivery sender: three processes
    proc = start(server_env(tmp_path / "data", free_port(),
                            TELEIMG_METRICS_PORT=str(free_port())), log=log)
    try:
        time.sleep(1.0)  # the listeners have built their core: they would have said it
    finally:
        stop(proc)
    text = log.read_text("utf-8", errors="replace")
    assert text.count("DEVELOPMENT MODE: tokens from the local development issuer") == 1, \
        text


# FHIR NPM package (packages.html): a lowercase dotted name, a semver, every file indexed
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SEMVER = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")


def _package(tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "package.tgz"
    done = cli("ig", "package", "--out", str(out))
    assert done.returncode == 0, done.stderr
    with tarfile.open(out) as tar:
        assert all(m.name.startswith("package/") and m.isfile() for m in tar.getmembers())
        return {m.name[len("package/"):]: json.load(tar.extractfile(m))  # type: ignore[arg-type]
                for m in tar.getmembers()}


def test_ig_package_loads_as_a_fhir_npm_package(tmp_path: Path) -> None:
    files = _package(tmp_path)
    manifest, index = files.pop("package.json"), files.pop(".index.json")
    assert NAME.match(manifest["name"]) and SEMVER.match(manifest["version"])
    assert manifest["fhirVersions"] == ["4.0.1"] and manifest["type"] == "IG"
    assert manifest["canonical"].startswith("https://")
    deps = manifest["dependencies"]
    assert deps["hl7.fhir.r4.core"] == "4.0.1"
    assert "hl7.fhir.fr.core" in deps and "ihe.iti.mhd" in deps
    assert all(SEMVER.match(v) for v in deps.values())
    # .index.json: every resource file, with what it says it holds
    assert index["index-version"] == 1
    assert {f["filename"] for f in index["files"]} == set(files)
    for entry in index["files"]:
        res = files[entry["filename"]]
        assert (res["resourceType"], res["id"], res.get("url")) == \
            (entry["resourceType"], entry["id"], entry["url"])
    # the ImplementationGuide: a valid R4 resource naming its dependencies and contents
    (guide,) = [r for r in files.values() if r["resourceType"] == "ImplementationGuide"]
    get_fhir_model_class("ImplementationGuide").model_validate(guide)
    assert guide["packageId"] == manifest["name"] and guide["version"] == manifest["version"]
    assert {(d["packageId"], d["version"]) for d in guide["dependsOn"]} == \
        {(p, v) for p, v in deps.items() if p != "hl7.fhir.r4.core"}
    listed = {r["reference"]["reference"] for r in guide["definition"]["resource"]}
    assert listed == {f"{r['resourceType']}/{r['id']}" for r in files.values()
                      if r is not guide}
    # every foreign canonical a resource names belongs to a declared dependency
    bases = {"hl7.fhir.fr.core": "https://hl7.fr/ig/fhir/core/",
             "ihe.iti.mhd": "https://profiles.ihe.net/ITI/MHD/"}
    text = json.dumps([r for r in files.values() if r is not guide])
    for host in ("https://hl7.fr/", "https://profiles.ihe.net/"):
        for found in re.findall(re.escape(host) + r"[^\"' )]+", text):
            assert any(found.startswith(b) and p in deps for p, b in bases.items()), found
    assert "https://hl7.fr/ig/fhir/core/" in text  # FR Core is really used
