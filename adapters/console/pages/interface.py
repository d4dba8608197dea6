"""``/console/interface``: the interface team's console (issue 30, R-INT-2) — HL7 v2
messages in and out (their records: state, ACK, error; the raw message and the ACK as
segments with their fields named), reprocess (inbound) and resend (outbound), the report
deliveries by channel and state with their attempts and the peer's answer, retry, and
the queues' depth and age.

Reads go through the core as the signed-in user (:class:`adapters.console.fhir.Fhir`):
what the API refuses the role — the raw message (a Binary: patient data), the delivery
Tasks (patient data) for the admin role — is refused here too, with the server's words.
The actions are the operator commands' own functions (``Receiver.reprocess`` /
``resend`` of ``teleimagerie hl7``, ``Outbox.retry`` of ``teleimagerie delivery``), run
only after the user could read the record through the core, and audited with the user
as the operator. The queue gauges are the counts ``/metrics`` publishes (no patient
data)."""

from __future__ import annotations

import base64
import re
from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from prometheus_client.core import GaugeMetricFamily

from adapters.console.web import Nav, Posted, User, console, requires
from adapters.delivery.outbox import CHANNEL_LABELS, CODE, STATES, SYSTEM, Delivery
from adapters.hl7v2.records import INBOUND, KIND_SYSTEM, OUTBOUND, STATUSES, Record

router = APIRouter()
ROLES = ("admin",)  # "Administrateur PACS / interfaces"
Admin = Annotated[User, Depends(requires(*ROLES))]
NAV = [Nav("Interfaces", "/console/interface", frozenset(ROLES), order=30)]
PAGE = 50
STATUS_LABELS = {"received": "reçu", "processed": "traité", "error": "en erreur",
                 "rejected": "rejeté", "held": "en attente", "pending": "à envoyer",
                 "sent": "envoyé", "failed": "refusé par le destinataire",
                 "dead": "abandonné (lettre morte)"}


def operator(user: User) -> str:
    """The operator named in the action's AuditEvent (like ``user@host`` of the CLI)."""
    return f"{user.principal.sub} (console)"


@cache
def _field_names(segment: str) -> dict[int, str]:
    """HL7 v2.5 field names of ``segment`` (hl7apy's reference), {} for Z-segments."""
    try:
        from hl7apy import load_reference

        ref = load_reference(segment, "Segment", "2.5")
    except Exception:  # an unknown (Z-) segment: positions only
        return {}
    out = {}
    for child in ref[1]:
        name, spec = child[0], child[1]
        position = int(name.rsplit("_", 1)[1])
        out[position] = str(spec[3]).replace("_", " ").lower()
    return out


def segments(text: str) -> list[dict[str, Any]]:
    """An ER7 message as segments, each field with its position and name (MSH-1 is the
    field separator itself, so MSH's fields are shifted by one)."""
    out = []
    for line in (s for s in re.split(r"\r\n|\r|\n", text) if s.strip()):
        sep = line[3:4] if line.startswith("MSH") else "|"
        parts = line.split(sep) if sep else [line]
        name, values = parts[0], parts[1:]
        names = _field_names(name)
        fields = []
        for i, value in enumerate(values):
            position = i + 2 if name == "MSH" else i + 1
            if name == "MSH" and i == 0:
                fields.append({"pos": f"{name}-1", "name": "field separator", "value": sep})
            if value:
                fields.append({"pos": f"{name}-{position}",
                               "name": names.get(position, ""), "value": value})
        out.append({"name": name, "fields": fields, "line": line})
    return out


def _search(user: User, rtype: str, params: list[tuple[str, str]]) -> Any:
    return user.fhir.search(rtype, [*params, ("_count", str(PAGE))])


@router.get("/interface", name="interface")
def page(request: Request, user: Admin) -> Response:
    q = request.query_params
    direction = OUTBOUND if q.get("sens") == "sortant" else INBOUND
    status = q.get("etat") if q.get("etat") in STATUSES else ""
    params = [("code", f"{KIND_SYSTEM}|{direction}"), ("_sort", "-_lastUpdated")]
    if status:
        params.append(("hl7-status", status))
    found = _search(user, "Basic", params)
    messages = [Record.parse(r) for r in found.entries("Basic")] if found.ok else []
    channel = q.get("canal") if q.get("canal") in CHANNEL_LABELS else ""
    state = q.get("livraison") if q.get("livraison") in STATES else ""
    dparams = [("code", f"{SYSTEM}|{CODE}"), ("_sort", "-authored-on")]
    if channel:
        dparams.append(("delivery-channel", channel))
    if state:
        dparams.append(("business-status", f"{SYSTEM}|{state}"))
    got = _search(user, "Task", dparams)
    deliveries = [Delivery.parse(t) for t in got.entries("Task")] if got.ok else []
    return console(request).render(
        request, "interface.html", user, title="Interfaces", messages=messages,
        messages_error=found.message, direction=direction, hl7_status=status,
        statuses=[(s, STATUS_LABELS[s]) for s in STATUSES], labels=STATUS_LABELS,
        deliveries=deliveries, deliveries_error=got.message, channel=channel, state=state,
        channels=list(CHANNEL_LABELS.items()),
        states=[(s, label) for s, (_, label) in STATES.items()], queues=queues(request),
        notice=q.get("info", ""))


def queues(request: Request) -> list[dict[str, Any]]:
    """Depth per state, oldest pending age and dead letters per queue — the gauges of
    ``/metrics`` (:func:`adapters.queues.measure`), counts only."""
    from adapters.queues import measure

    families = [GaugeMetricFamily(n, n, labels=labels) for n, labels in (
        ("items", ["queue", "channel", "state"]), ("oldest", ["queue", "channel"]),
        ("dead", ["queue", "channel"]))]
    measure(console(request).core, *families)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for sample in families[0].samples:
        key = (sample.labels["queue"], sample.labels["channel"])
        row = rows.setdefault(key, {"queue": key[0], "channel": key[1], "states": {},
                                    "oldest": 0.0, "dead": 0})
        if sample.value:
            row["states"][sample.labels["state"]] = int(sample.value)
    for sample in families[1].samples:
        key = (sample.labels["queue"], sample.labels["channel"])
        if key in rows:
            rows[key]["oldest"] = sample.value
    for sample in families[2].samples:
        key = (sample.labels["queue"], sample.labels["channel"])
        if key in rows:
            rows[key]["dead"] = int(sample.value)
    return list(rows.values())


@router.get("/interface/messages/{record_id}", name="interface-message")
def message(request: Request, record_id: str,
            user: Admin) -> Response:
    here = console(request)
    found = user.fhir.read("Basic", record_id)
    if not found.ok or (found.resource.get("code", {}).get("coding") or [{}])[0].get(
            "system") != KIND_SYSTEM:
        return here.render(request, "error.html", user, status=found.status if not found.ok
                           else 404, title="Message HL7",
                           message=found.message or "Ce n'est pas un message HL7 v2.")
    record = Record.parse(found.resource)
    raw = user.fhir.read("Binary", record.raw_id)  # patient data: the API's rules
    raw_text = ""
    if raw.ok:
        raw_text = base64.b64decode(raw.resource.get("data") or "").decode(
            "utf-8", errors="replace")
    ack_text = record.ack.decode("utf-8", errors="replace") if record.ack else ""
    return here.render(
        request, "interface_message.html", user, title=f"Message HL7 {record.id}",
        record=record, labels=STATUS_LABELS, raw=segments(raw_text) if raw_text else [],
        raw_error="" if raw.ok else raw.message, ack=segments(ack_text) if ack_text else [],
        notice=request.query_params.get("info", ""), error=request.query_params.get("erreur", ""))


def _back(record_id: str, info: str = "", error: str = "") -> Response:
    from urllib.parse import urlencode

    query = urlencode({k: v for k, v in (("info", info), ("erreur", error)) if v})
    return RedirectResponse(f"/console/interface/messages/{record_id}"
                            f"{'?' + query if query else ''}", status_code=303)


def _receiver(request: Request) -> Any:
    from adapters.hl7v2.receiver import Receiver
    from adapters.hl7v2.settings import Hl7Settings

    return Receiver(console(request).core, Hl7Settings.from_env())


@router.post("/interface/messages/{record_id}/retraiter", name="interface-reprocess")
def reprocess(request: Request, record_id: str, user: Admin,
              form: Posted) -> Response:
    """``teleimagerie hl7 reprocess ID`` for the user, audited with them as operator."""
    from adapters.hl7v2.receiver import Refused

    if not user.fhir.read("Basic", record_id).ok:  # what the user may not read, untouched
        return _back(record_id, error="Message introuvable ou non accessible.")
    try:
        done = _receiver(request).reprocess(record_id, operator(user))
    except (KeyError, Refused) as exc:
        return _back(record_id, error=f"Retraitement impossible : {exc}")
    return _back(record_id, info=f"Message retraité : {STATUS_LABELS.get(done.status, done.status)}"
                 f" {done.ack_code} {done.error}".rstrip())


@router.post("/interface/messages/{record_id}/renvoyer", name="interface-resend")
def resend(request: Request, record_id: str, user: Admin,
           form: Posted) -> Response:
    """``teleimagerie hl7 resend ID`` for the user, audited with them as operator."""
    from adapters.hl7v2.receiver import Refused

    if not user.fhir.read("Basic", record_id).ok:
        return _back(record_id, error="Message introuvable ou non accessible.")
    try:
        _receiver(request).resend(record_id, operator(user))
    except (KeyError, Refused) as exc:
        return _back(record_id, error=f"Renvoi impossible : {exc}")
    return _back(record_id, info="Message remis en file d'envoi (prochain essai immédiat).")


@router.post("/interface/livraisons/{delivery_id}/relancer", name="interface-retry")
def retry(request: Request, delivery_id: str, user: Admin,
          form: Posted) -> Response:
    """``teleimagerie delivery retry ID`` for the user — only on a delivery the user may
    read through the core."""
    from urllib.parse import urlencode

    from adapters.delivery.outbox import Outbox
    from adapters.exchange import Refused

    def back(text: str) -> Response:
        return RedirectResponse(f"/console/interface?{urlencode({'info': text})}",
                                status_code=303)

    seen = user.fhir.read("Task", delivery_id)
    if not seen.ok:
        return back(f"Relance impossible : {seen.message}")
    try:
        done = Outbox(console(request).core).retry(delivery_id, operator(user))
    except Refused as exc:
        return back(f"Relance impossible : {exc}")
    return back("Livraison relancée (prochain essai immédiat)." if done
                else "Livraison introuvable.")
