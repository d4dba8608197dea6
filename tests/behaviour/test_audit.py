"""The audit trail (R-SEC-3, R-INT-2): BALP AuditEvents for every interaction, hash-chained."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.audit import records
from fhir_server.audit.chain import head, verify
from fhir_server.server.dispatch import FhirServer
from tests.conftest import Fhir, mint, serve

RPPS = "urn:oid:1.2.250.1.71.4.2.1"
INTERACTION = "http://hl7.org/fhir/restful-interaction"


def _events(core: FhirServer) -> list[dict[str, Any]]:
    assert core.audit is not None
    core.audit.flush()
    out, cursor = [], None
    while True:
        page = core.store.history("AuditEvent", None, None, 500, cursor)
        out += [orjson.loads(i.body) for i in page.items if i.body]
        if page.next_cursor is None:
            return out[::-1]  # history is newest first; the chain is oldest first
        cursor = page.next_cursor


def _subtypes(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        out.setdefault(e["subtype"][0]["code"], []).append(e)
    return out


@pytest.fixture
def imager(secured: FhirServer, tmp_path: Path) -> Fhir:
    """A system RIS seeds data; the tests act as a remote imager with a request."""
    ris = Fhir(serve(secured, tmp_path, mint(tmp_path, ["ris"])))
    prac = ris.create({"resourceType": "Practitioner",
                       "identifier": [{"system": RPPS, "value": "810000000042"}]})["id"]
    for n in ("1", "2"):
        pat = ris.create({"resourceType": "Patient", "id": n})["id"]
        ris.create({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                    "subject": {"reference": f"Patient/{pat}"},
                    "performer": [{"reference": f"Practitioner/{prac}"}]})
    token = mint(tmp_path, ["remote-imager"], ["user/*.cruds"], id_nat_ps="810000000042",
                 name="Jeanne Imageuse", acr="eidas3")
    return Fhir(serve(secured, tmp_path, token))


def test_every_interaction_leaves_a_balp_audit_event_R_SEC_3(
        secured: FhirServer, imager: Fhir) -> None:
    before = len(_events(secured))
    pats = [e["resource"]["id"] for e in imager.search("Patient?_count=50")["entry"]]
    obs = imager.create({"resourceType": "Observation", "status": "final",
                         "code": {"text": "DLP"}, "subject": {"reference": f"Patient/{pats[0]}"}})
    oid = obs["id"]
    imager.get(f"/fhir/Observation/{oid}", headers={"X-Request-Id": "req-audit-1"})
    imager.get(f"/fhir/Observation/{oid}/_history/1")
    imager.put(f"/fhir/Observation/{oid}", json={**obs, "status": "amended"})
    imager.patch(f"/fhir/Observation/{oid}", json=[{"op": "replace", "path": "/status",
                                                     "value": "final"}],
                 headers={"content-type": "application/json-patch+json"})
    imager.get(f"/fhir/Observation/{oid}/_history")
    imager.get("/fhir/Observation/_history")
    imager.get(f"/fhir/Patient/{pats[0]}/$everything")
    imager.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Observation/{oid}"}}]})
    imager.get("/fhir/Observation/does-not-exist")
    events = _events(secured)[before:]
    by = _subtypes(events)
    assert set(by) >= {"search-type", "create", "read", "vread", "update", "patch",
                       "history-instance", "history-type", "operation", "batch"}
    assert len(by["search-type"]) == 2  # one per patient found (BALP PatientQuery)
    assert {e["action"] for e in by["create"]} == {"C"}
    assert {e["action"] for e in by["update"] + by["patch"]} == {"U"}
    assert {e["action"] for e in by["search-type"]} == {"E"}
    read = next(e for e in by["read"] if e["outcome"] == "0" and any(
        x["what"].get("identifier", {}).get("value") == "req-audit-1" for x in e["entity"]))
    assert read["type"]["code"] == "rest" and read["action"] == "R"
    user = read["agent"][0]
    assert user["requestor"] is True and user["who"]["identifier"] == {
        "system": RPPS, "value": "810000000042"}
    assert user["who"]["display"] == "Jeanne Imageuse" and user["policy"] == ["acr:eidas3"]
    assert any(a["type"]["coding"][0]["code"] == "110152" for a in read["agent"])
    roles = {x.get("role", {}).get("code"): x for x in read["entity"]}
    assert roles["1"]["what"]["reference"] == f"Patient/{pats[0]}"
    assert roles["4"]["what"]["reference"] == f"Observation/{oid}"
    query = next(x for x in by["search-type"][0]["entity"] if x.get("role", {}).get(
        "code") == "24")
    assert query["query"]  # base64 of the query string
    assert by["create"][0]["entity"][1]["what"]["reference"].startswith(f"Observation/{oid}")
    missing = [e for e in by["read"] if e["outcome"] == "4"]
    assert missing and "not known" in missing[0]["outcomeDesc"]
    entry = [e for e in by["read"] if e.get("source", {}).get("type", [{}])[-1].get(
        "code") == "bundle"]
    assert entry, "batch entries are audited one by one"


def test_denied_attempts_are_audited_with_the_person_R_SEC_3(
        secured: FhirServer, tmp_path: Path) -> None:
    outsider = serve(secured, tmp_path, mint(tmp_path, ["requesting-physician"],
                                             ["user/*.cruds"], id_nat_ps="810000000077"))
    Fhir(serve(secured, tmp_path, mint(tmp_path, ["ris"]))).create(
        {"resourceType": "Patient", "id": "x"})
    assert outsider.get("/fhir/Patient/x").status_code == 404
    assert outsider.delete("/fhir/Patient/x").status_code == 403
    events = [e for e in _events(secured) if e["outcome"] == "4"]
    who = {e["agent"][0]["who"].get("identifier", {}).get("value") for e in events}
    assert "810000000077" in who
    assert any(e["action"] == "D" and "may not delete" in e["outcomeDesc"] for e in events)


def test_transaction_entries_are_marked_failed_when_it_rolls_back(
        secured: FhirServer, client: Fhir) -> None:
    r = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/nope"}}]})
    assert r.status_code == 404
    created = [e for e in _events(secured) if e["subtype"][0]["code"] == "create"]
    assert created and all(e["outcome"] == "4" for e in created)


def _tamper(core: FhirServer, event_id: str, change: dict[str, Any] | None) -> None:
    """Edit (or delete when ``change`` is None) a stored AuditEvent behind the API's back."""
    store: Any = core.store
    if hasattr(store, "res"):  # MongoDB
        key = f"AuditEvent/{event_id}"
        if change is None:
            store.res.delete_one({"_id": key})
        else:
            doc = store.res.find_one({"_id": key})
            body = {**orjson.loads(doc["body"]), **change}
            store.res.update_one({"_id": key}, {"$set": {"body": orjson.dumps(body)}})
        return
    conn = store._conn()
    if change is None:
        conn.execute("DELETE FROM audit_resource WHERE type='AuditEvent' AND id=?", (event_id,))
    else:
        (raw,) = conn.execute("SELECT body FROM audit_resource WHERE type='AuditEvent' AND "
                              "id=?", (event_id,)).fetchone()
        body = {**orjson.loads(raw), **change}
        conn.execute("UPDATE audit_resource SET body=? WHERE type='AuditEvent' AND id=?",
                     (orjson.dumps(body), event_id))


def _truncate(core: FhirServer) -> None:
    """Remove the last journal record and the AuditEvents it stands for, as an intruder
    covering their tracks would (both stores)."""
    store: Any = core.store
    seq, body = store.journal_records(0, 10**6)[-1]
    for event in records.expand(orjson.loads(body)):
        _tamper(core, event["id"], None)
    if hasattr(store, "journal"):  # MongoDB
        store.journal.delete_one({"_id": seq})
    else:
        store._conn().execute("DELETE FROM audit_record WHERE seq = ?", (seq,))


def test_chain_verification_detects_edited_and_deleted_records_R_SEC_3(
        secured: FhirServer, client: Fhir) -> None:
    for n in range(6):
        client.create({"resourceType": "Organization", "name": f"O{n}"})
    events = _events(secured)
    report = verify(secured.store)
    assert report.ok and report.checked == len(events) and report.head_sequence == len(events)
    exported = head(secured.store)
    _tamper(secured, events[2]["id"], {"outcome": "0", "outcomeDesc": "nothing to see"})
    report = verify(secured.store)
    assert not report.ok and events[2]["id"] in report.problems[0] and "edited" in \
        report.problems[0]
    _tamper(secured, events[4]["id"], None)
    problems = verify(secured.store).problems
    assert any("missing" in p for p in problems)
    report = verify(secured.store)
    _truncate(secured)  # truncating the end needs the exported head
    assert verify(secured.store).problems == report.problems  # unseen without the head
    assert any("removed from the end" in p for p in verify(secured.store, exported).problems)


@pytest.mark.skipif(bool(os.environ.get("TELEIMG_TEST_MONGODB_URI")), reason="CLI uses sqlite")
def test_audit_verify_cli_reports_the_chain(tmp_path: Path, monkeypatch: Any,
                                            capsys: Any) -> None:
    from teleimagerie.cli import main
    from tests.conftest import make_store, secured_core

    store = make_store("sqlite", tmp_path)
    core = secured_core(store, tmp_path / "data")
    Fhir(serve(core, tmp_path / "data", mint(tmp_path / "data", ["ris"]))).create(
        {"resourceType": "Organization", "name": "O"})
    assert core.audit is not None
    core.audit.close()
    monkeypatch.setenv("TELEIMG_DATA_DIR", str(tmp_path / "data"))
    assert main(["audit", "verify"]) == 0
    assert "audit chain intact: 1 events checked" in capsys.readouterr().out
    assert main(["audit", "head"]) == 0
    assert '"sequence": 1' in capsys.readouterr().out


@pytest.mark.skipif(bool(os.environ.get("TELEIMG_TEST_MONGODB_URI")), reason="CLI uses sqlite")
def test_signed_chain_head_detects_truncation_and_a_forged_signature_R_SEC_3(
        tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from teleimagerie.cli import main
    from tests.conftest import make_store, secured_core

    def keypair(name: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        private, public = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub.pem"
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return private, public

    store = make_store("sqlite", tmp_path)
    core = secured_core(store, tmp_path / "data")
    client = Fhir(serve(core, tmp_path / "data", mint(tmp_path / "data", ["ris"])))
    for n in range(3):
        client.create({"resourceType": "Organization", "name": f"O{n}"})
    assert core.audit is not None
    core.audit.close()
    monkeypatch.setenv("TELEIMG_DATA_DIR", str(tmp_path / "data"))
    private, public = keypair("audit")
    _, other_public = keypair("other")
    capsys.readouterr()
    assert main(["audit", "head", "--sign-key", str(private)]) == 0
    jws_head = tmp_path / "head.jws"
    jws_head.write_text(capsys.readouterr().out)
    assert jws_head.read_text().count(".") == 2  # compact JWS
    assert main(["audit", "verify", "--head", str(jws_head), "--public-key", str(public)]) == 0
    assert main(["audit", "verify", "--head", str(jws_head),
                 "--public-key", str(other_public)]) == 2
    assert "does not verify" in capsys.readouterr().err
    assert main(["audit", "verify", "--head", str(jws_head)]) == 2  # signed needs the key
    _truncate(core)
    assert main(["audit", "verify", "--head", str(jws_head), "--public-key", str(public)]) == 1
    assert "removed from the end" in capsys.readouterr().out
