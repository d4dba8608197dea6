"""FHIR Subscriptions on both stores (issue 31, ADR 0024): rest-hook and websocket
channels, each payload, the guard at the event (care relationship, masking), ordering and
retries against a hook that fails then recovers, event numbers, $status and $events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.subscriptions import endpoints
from adapters.subscriptions.operations import OPERATIONS
from adapters.subscriptions.outbox import Notifier
from adapters.subscriptions.sender import Sender
from adapters.subscriptions.settings import SubscriptionSettings
from fhir_server.search.extract import extract
from fhir_server.server.dispatch import FhirServer
from fhir_server.subscriptions import topics
from fhir_server.subscriptions.criteria import Rows, compile_criteria
from tests.behaviour.workflow_world import UNQUALIFIED, World

HOOK = "http://hook.test/notify"
# the local receiver of the HTTP test is on loopback: allowed by name
SETTINGS = SubscriptionSettings(hosts=("hook.test", "127.0.0.1"), https_only=False,
                                retry_base=0.0,
                                max_attempts=3)
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"


class Hook:
    """A local rest-hook receiver answering the statuses it is given, then 200."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[dict[str, Any], dict[str, str]]] = []

    def __call__(self, url: str, content: bytes, headers: dict[str, str],
                 timeout: float) -> int:
        status = self.statuses.pop(0) if self.statuses else 200
        if status < 300:
            self.received.append((orjson.loads(content), headers))
        return status

    def events(self) -> list[tuple[str, int, list[dict[str, Any]]]]:
        """(type, events-since-subscription-start, focus entries) of each bundle."""
        out = []
        for bundle, _ in self.received:
            params = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
            out.append((params["type"]["valueCode"],
                        int(params["events-since-subscription-start"]["valueString"]),
                        bundle["entry"][1:]))
        return out


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path) -> World:
    w = World(secured, tmp_path)
    assert secured.workflow is not None
    Notifier(SETTINGS).attach(secured, secured.workflow.events)
    secured.workflow.operations.update(OPERATIONS)
    return w


def subscription(criteria: str, channel: str = "rest-hook", payload: str | None = None,
                 **extra: Any) -> dict[str, Any]:
    chan: dict[str, Any] = {"type": channel}
    if channel == "rest-hook":
        chan.update(endpoint=HOOK, header=["Authorization: Bearer secret-of-the-hook"])
    if payload:
        chan["payload"] = "application/fhir+json"
        chan["_payload"] = {"extension": [{"url": BACKPORT + "backport-payload-content",
                                           "valueCode": payload}]}
    return {"resourceType": "Subscription", "status": "requested", "reason": "test",
            "criteria": criteria, "channel": chan, **extra}


def subscribe(client: Any, resource: dict[str, Any]) -> str:
    r = client.post("/fhir/Subscription", json=resource)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_rest_hook_id_only_in_order_with_retries(world: World) -> None:
    """Handshake, then id-only (the default) notifications numbered 1, 2, 3, sent in
    order although the hook fails twice first; headers passed; BALP audited."""
    hook = Hook()
    sender = Sender(world.core, SETTINGS, "https://fhir.test/fhir", post=hook)
    sid = subscribe(world.ris, subscription("Patient?family=MARTIN"))
    sender.run_once()
    assert world.ris.get(f"/fhir/Subscription/{sid}").json()["status"] == "active"
    assert hook.events()[0][:2] == ("handshake", 0)
    for born in ("1950-01-01", "1960-01-01", "1970-01-01"):
        world.patient(born, "male")
    world.ris.post("/fhir/Patient", json={"resourceType": "Patient",
                                          "name": [{"family": "DURAND"}]})
    hook.statuses = [503, 500]
    sender.run_once()  # event 1 fails
    sender.run_once()  # event 1 fails again
    assert len(hook.received) == 1
    sender.run_once()  # recovered: 1, 2, 3 in order
    got = hook.events()[1:]
    assert [(kind, n) for kind, n, _ in got] == [("event-notification", 1),
                                                  ("event-notification", 2),
                                                  ("event-notification", 3)]
    for _, _, entries in got:
        assert len(entries) == 1 and "resource" not in entries[0]  # id-only
        assert entries[0]["fullUrl"].startswith("https://fhir.test/fhir/Patient/")
    assert hook.received[1][1]["Authorization"] == "Bearer secret-of-the-hook"
    status = world.ris.get(f"/fhir/Subscription/{sid}/$status").json()
    params = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert params["events-since-subscription-start"]["valueString"] == "3"
    events = world.ris.get(f"/fhir/Subscription/{sid}/$events?eventsSinceNumber=2").json()
    numbers = [p["part"][0]["valueString"] for p in events["entry"][0]["resource"]["parameter"]
               if p["name"] == "notification-event"]
    assert numbers == ["2", "3"]


def test_full_resource_and_empty_payloads(world: World) -> None:
    hook = Hook()
    sender = Sender(world.core, SETTINGS, "https://fhir.test/fhir", post=hook)
    subscribe(world.ris, subscription("Patient?gender=other", payload="full-resource"))
    subscribe(world.ris, subscription("Patient?gender=other", payload="empty"))
    sender.run_once()
    world.patient("1990-01-01", "other")
    sender.run_once()
    bundles = [e for e in hook.events() if e[0] == "event-notification"]
    assert len(bundles) == 2
    full = next(entries for _, _, entries in bundles if entries)
    assert full[0]["resource"]["resourceType"] == "Patient"
    assert full[0]["resource"]["gender"] == "other"
    assert any(entries == [] for _, _, entries in bundles)  # empty: the status only


def test_outside_the_care_relationship_nothing_not_even_the_id(world: World) -> None:
    """R-SEC-2: the performer imager is notified of a new request; an imager party to no
    request gets no notification, no event number, nothing."""
    hook = Hook()
    sender = Sender(world.core, SETTINGS, "https://fhir.test/fhir", post=hook)
    mine = subscribe(world.imager, subscription("ServiceRequest?intent=order"))
    other = world.user(["remote-imager"], UNQUALIFIED)
    theirs = subscribe(other, subscription("ServiceRequest?intent=order"))
    # each principal sees its own subscription only
    assert other.get(f"/fhir/Subscription/{mine}").status_code == 404
    assert world.imager.get(f"/fhir/Subscription/{theirs}").status_code == 404
    assert other.get(f"/fhir/Subscription/{theirs}").status_code == 200
    sender.run_once()
    sr = world.request()
    sender.run_once()
    received = [(b["entry"][0]["resource"]["parameter"][0]["valueReference"]["reference"],
                 b["entry"][1:]) for b, _ in hook.received
                if len(b["entry"]) > 1]
    assert [r.rsplit("/", 1)[1] for r, _ in received] == [mine]
    assert received[0][1][0]["fullUrl"].endswith(f"ServiceRequest/{sr}")
    events = other.get(f"/fhir/Subscription/{theirs}/$events").json()
    assert [p for p in events["entry"][0]["resource"]["parameter"]
            if p["name"] == "notification-event"] == []
    assert not any(sr in orjson.dumps(b).decode() for b, _ in hook.received
                   if theirs in orjson.dumps(b).decode())


def test_topic_request_state_changed(world: World) -> None:
    """Backport topic: a transition notifies the request and its Task."""
    hook = Hook()
    sender = Sender(world.core, SETTINGS, "https://fhir.test/fhir", post=hook)
    subscribe(world.ris, subscription(topics.REQUEST_STATE))
    sender.run_once()
    sr = world.ready("CT")
    sender.run_once()
    focus = [entries for kind, _, entries in hook.events() if kind == "event-notification"]
    assert focus, "a transition was notified"
    assert focus[0][0]["fullUrl"].endswith(f"ServiceRequest/{sr}")
    assert focus[0][1]["fullUrl"].split("/")[-2] == "Task"


def test_websocket_bind_with_token_then_ping(world: World) -> None:
    sid = subscribe(world.ris, subscription("Patient?gender=unknown", channel="websocket"))
    Sender(world.core, SETTINGS).run_once()  # activated at once
    r = world.ris.post(f"/fhir/Subscription/{sid}/$get-ws-binding-token")
    assert r.status_code == 200, r.text
    token = next(p["valueString"] for p in r.json()["parameter"] if p["name"] == "token")
    with world.ris.websocket_connect("/fhir-ws/subscriptions") as ws:
        ws.send_text("bind-with-token nope.nope")
        assert ws.receive_text().startswith("error")
        ws.send_text(f"bind-with-token {token}")
        assert ws.receive_text() == f"bound {sid}"
        world.patient("2000-01-01", "unknown")
        assert ws.receive_text() == f"ping {sid}"


def test_refused_subscriptions(world: World) -> None:
    for bad, status in ((subscription("Patient?name:foo=x"), 400),
                        (subscription("Patient?organization.name=x"), 400),
                        ({**subscription("Patient?gender=male"), "status": "active"}, 422),
                        (subscription("https://example.org/no-such-topic"), 400)):
        r = world.ris.post("/fhir/Subscription", json=bad)
        assert r.status_code == status, (bad["criteria"], r.text)
    loopback = subscription("Patient?gender=male")
    loopback["channel"]["endpoint"] = "http://localhost:9/x"  # loopback, not listed
    assert world.ris.post("/fhir/Subscription", json=loopback).status_code == 422


def test_endpoint_policy() -> None:
    prod = SubscriptionSettings(https_only=True)
    with pytest.raises(endpoints.Refused, match="https"):
        endpoints.check("http://example.org/x", prod)
    with pytest.raises(endpoints.Refused, match="internal"):
        endpoints.check("https://localhost/x", prod)
    with pytest.raises(endpoints.Refused, match="TELEIMG_SUBSCRIPTION_HOSTS"):
        endpoints.check("https://other.example/x", SubscriptionSettings(hosts=("*.ehr.fr",)))
    endpoints.check("https://hook.ehr.fr/x", SubscriptionSettings(hosts=("*.ehr.fr",)))
    with pytest.raises(endpoints.Refused, match="credentials"):
        endpoints.check("https://u:p@hook.ehr.fr/x", SubscriptionSettings(hosts=("*.ehr.fr",)))


def test_criteria_match_the_index_rows() -> None:
    sr = {"resourceType": "ServiceRequest", "id": "a", "status": "active", "intent": "order",
          "subject": {"reference": "Patient/p1"}, "priority": "urgent",
          "authoredOn": "2026-01-02T10:00:00Z"}
    rows = Rows(extract(sr))
    for criteria, expected in (("ServiceRequest?subject=Patient/p1", True),
                               ("ServiceRequest?patient=p2", False),
                               ("ServiceRequest?status=active,completed&priority=urgent", True),
                               ("ServiceRequest?status:not=active", False),
                               ("ServiceRequest?authored=ge2026-01-01", True),
                               ("ServiceRequest?authored=lt2026-01-01", False),
                               ("ServiceRequest?performer:missing=true", True),
                               ("ServiceRequest?_id=a", True)):
        assert compile_criteria(criteria).matches(rows) is expected, criteria
    assert compile_criteria("ServiceRequest?subject=Patient/p1").anchors == {
        ("ServiceRequest.subject", "p1")}


@pytest.fixture
def documents(world: World) -> World:
    from adapters.cda.publish import Publisher
    from tests.behaviour.test_report_delivery import qualify

    assert world.core.workflow is not None
    Publisher().subscribe(world.core.workflow.events)
    qualify(world)
    return world


def test_masked_and_opposed_documents_are_not_notified(documents: World) -> None:
    """R-CONS-5, R-SEC-2 at the event: the document-available topic tells the DMP
    connector of every document, an EHR (document-consumer) of none masked from
    professionals (MASQUE_PS) and of none once the patient opposes sharing with
    professionals — and its event numbers have no gap where it was told nothing."""
    from fhir_server.security import masking
    from tests.behaviour.test_report_delivery import final

    w = documents
    scopes = ["system/DocumentReference.rs", "system/Binary.r", "system/Patient.rs",
              "system/Subscription.cruds"]
    dmp = w.user(["dmp-connector"], scopes=scopes)
    ehr = w.user(["document-consumer"], scopes=scopes)
    ids = {name: subscribe(client, subscription(topics.DOCUMENT))
           for name, client in (("dmp", dmp), ("ehr", ehr))}
    ids["ris"] = subscribe(w.ris, subscription(topics.REPORT))
    sender = Sender(w.core, SETTINGS, "https://fhir.test/fhir", post=Hook())
    sender.run_once()

    def told(name: str, client: Any) -> list[tuple[str, str]]:
        r = client.get(f"/fhir/Subscription/{ids[name]}/$events")
        assert r.status_code == 200, r.text
        return [(next(p["valueString"] for p in e["part"] if p["name"] == "event-number"),
                 next(p["valueReference"]["reference"] for p in e["part"]
                      if p["name"] == "focus").split("/")[-1])
                for e in r.json()["entry"][0]["resource"]["parameter"]
                if e["name"] == "notification-event"]

    report = final(w)
    assert len(told("dmp", dmp)) == 2 and len(told("ehr", ehr)) == 2  # N1, N3
    assert told("ris", w.ris) == [("1", report["id"])]  # the report topic
    final(w, masking.MASQUE_PS)
    assert len(told("dmp", dmp)) == 4
    assert len(told("ehr", ehr)) == 2  # masked from professionals: not even the id
    w.consent("partage-professionnels", decision="deny")
    final(w)
    assert len(told("dmp", dmp)) == 6
    seen = told("ehr", ehr)
    assert [n for n, _ in seen] == ["1", "2"]  # opposed: nothing, and no gap
    # the opposition now hides the earlier ones too: $events full-resource reads now
    assert ehr.get(f"/fhir/DocumentReference/{seen[0][1]}").status_code == 404
    assert ehr.get(f"/fhir/DocumentReference/{seen[0][1]}/_history/1").status_code == 404
    r = ehr.get(f"/fhir/Subscription/{ids['ehr']}/$events?content=full-resource")
    assert all("resource" not in e for e in r.json()["entry"][1:])


def test_order_and_retries_against_a_local_http_hook(world: World) -> None:
    """A real local HTTP receiver (loopback, allowed by name) answers 503 twice, then
    recovers: events 1 and 2 arrive once each, in order, over HTTP."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    answers = [503, 503]
    got: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status = answers.pop(0) if answers else 200
            if status == 200:
                got.append(data)
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        local = SubscriptionSettings(hosts=("127.0.0.1",), https_only=False,
                                     retry_base=0.0, max_attempts=5)
        sender = Sender(world.core, local, "https://fhir.test/fhir")  # real httpx POSTs
        resource = subscription("Patient?gender=male")
        resource["channel"]["endpoint"] = f"http://127.0.0.1:{server.server_address[1]}/h"
        subscribe(world.ris, resource)
        answers.insert(0, 200)  # the handshake
        sender.run_once()
        world.patient("1950-01-01", "male")
        world.patient("1951-01-01", "male")
        for _ in range(3):
            sender.run_once()
        numbers = [int(next(p["valueString"] for p in b["entry"][0]["resource"]["parameter"]
                            if p["name"] == "events-since-subscription-start")) for b in got]
        assert numbers == [0, 1, 2]
    finally:
        server.shutdown()


def test_error_after_the_last_attempt_and_resume(world: World) -> None:
    """After max_attempts failures the notification is a dead letter and the subscription
    ``error``; PUT back to requested, it resumes with the next event (the client sees the
    gap in the numbers and reads $events)."""
    hook = Hook(200, 500, 500, 500)  # handshake, then event 1 fails three times
    sender = Sender(world.core, SETTINGS, "https://fhir.test/fhir", post=hook)
    sid = subscribe(world.ris, subscription("Patient?gender=male"))
    sender.run_once()
    world.patient("1950-01-01", "male")
    for _ in range(3):
        sender.run_once()
    current = world.ris.get(f"/fhir/Subscription/{sid}").json()
    assert current["status"] == "error" and "notification 1" in current["error"]
    dead = world.ris.get(f"/fhir/Task?focus=Subscription/{sid}&status=failed").json()
    assert len(dead.get("entry", [])) == 1
    world.patient("1951-01-01", "male")
    r = world.ris.put(f"/fhir/Subscription/{sid}", json={**current, "status": "requested"})
    assert r.status_code == 200, r.text
    sender.run_once()  # handshake again, then event 2
    assert [n for kind, n, _ in hook.events() if kind == "event-notification"] == [2]
