"""The durable delivery outbox (issue 8; R-REP-5, R-REP-6, R-CONS-5, R-INT-2).

One delivery per (report version, channel, recipient), stored as a FHIR ``Task`` so its
state is visible and searchable like any resource (``Task?code=…|diffusion-cr&
business-status=lettre-morte``), narrowed to the patient's care team and audited:

* ``focus`` the DocumentReference sent, ``for`` the patient, ``basedOn`` the request,
  ``owner`` the recipient (a professional or the requesting site);
* ``status`` requested (to send) → completed (sent) | failed (dead letter, or refused
  for good) | on-hold (held: opposition, identity not qualified, channel not configured,
  document failing the ANS schematrons,
  no MSSanté address, earlier version not settled) | cancelled;
* ``businessStatus`` says which, in words; extensions carry the attempts, the next
  attempt (indexed: the sender's due query) and the last error.

Deliveries are planned in the report's write unit (ids derive from the document version,
channel and recipient, so a replayed trigger plans nothing new); a held delivery is
re-examined every ``recheck`` seconds and leaves the hold when its reason is gone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from adapters.exchange import Refused, operator_event, system_object
from adapters.principals import DELIVERY_OUTBOX
from fhir_server.core.canonical import url
from fhir_server.search.registry import register_missing
from fhir_server.security.system import as_system
from fhir_server.workflow.records import body, ref_of, save

if TYPE_CHECKING:
    from adapters.delivery.settings import DeliverySettings
    from fhir_server.server.dispatch import FhirServer

SYSTEM = url("CodeSystem", "teleimagerie-delivery")
EXT = url("StructureDefinition", "delivery-")
CODE = "diffusion-cr"
# businessStatus code -> (Task.status, label)
STATES: dict[str, tuple[str, str]] = {
    "a-envoyer": ("requested", "à envoyer"),
    "nouvel-essai": ("requested", "nouvel essai programmé"),
    "envoye": ("completed", "envoyé"),
    "lettre-morte": ("failed", "abandonné après le nombre maximal d'essais"),
    "rejete": ("failed", "refusé par le destinataire"),
    "bloque-opposition": ("on-hold", "bloqué : opposition du patient (R-CONS-5)"),
    "bloque-masquage": ("on-hold", "bloqué : document masqué aux professionnels (MASQUE_PS)"),
    "identite-non-qualifiee": ("on-hold", "en attente : identité INS non qualifiée"),
    "canal-non-configure": ("on-hold", "en attente : canal non configuré"),
    "adresse-absente": ("on-hold", "en attente : pas d'adresse MSSanté"),
    "version-precedente": ("on-hold", "en attente : version précédente non transmise"),
    "document-invalide": ("on-hold", "bloqué : document non conforme aux schématrons ANS "
                          "(R-REP-6)"),
    "annule": ("cancelled", "annulé"),
}
CHANNEL_LABELS = {"dmp": "DMP (XDS.b ITI-41)", "ris": "RIS (HL7 v2 MDM)",
                  "mssante": "MSSanté (SMTP, IHE XDM)"}
_NS = uuid.UUID("4d6f0c1b-2b8e-4f51-9a0b-6b3d2e7c5f18")
ROWS = [
    {"type": "Task", "name": "delivery-next", "kind": "date",
     "url": url("SearchParameter", "Task-delivery-next"),
     "paths": [{"expression": f"Task.extension.where(url='{EXT}next-attempt').value"}]},
    {"type": "Task", "name": "delivery-channel", "kind": "token",
     "url": url("SearchParameter", "Task-delivery-channel"),
     "paths": [{"expression": "Task.input.where(type.coding.code='canal').value"}]},
]


def register_all() -> None:
    register_missing(ROWS)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def delivery_id(report_id: str, version: int, channel: str, recipient: str,
                action: str = "transmission") -> str:
    suffix = "" if action == "transmission" else f"/{action}"
    return str(uuid.uuid5(_NS, f"{report_id}/{version}/{channel}/{recipient}{suffix}"))


@dataclass
class Delivery:
    id: str
    channel: str
    document: str  # DocumentReference/…
    patient: str
    report: str  # DiagnosticReport/…
    version: int
    request: str | None = None
    recipient: str | None = None  # Practitioner/…, PractitionerRole/…, Organization/…
    address: str = ""  # MSSanté address, FINESS of the RIS route, "DMP"
    state: str = "a-envoyer"
    detail: str = ""
    attempts: int = 0
    next_attempt: str | None = None
    response: str = ""
    previous: str | None = None  # the delivery of the version before (sent first)
    created: str = ""
    sent: str | None = None
    action: str = "transmission"  # or "suppression": withdraw what was sent (T04, ITI-57)

    @property
    def status(self) -> str:
        return STATES[self.state][0]

    @property
    def settled(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    def to(self, state: str, detail: str = "", next_attempt: str | None = None) -> None:
        self.state, self.detail, self.next_attempt = state, detail, next_attempt

    def resource(self) -> dict[str, Any]:
        label = STATES[self.state][1]
        inputs: list[dict[str, Any]] = [
            {"type": _concept("canal"), "valueCode": self.channel},
            {"type": _concept("version"), "valueInteger": self.version},
            {"type": _concept("compte-rendu"), "valueReference": {"reference": self.report}},
            {"type": _concept("action"), "valueCode": self.action}]
        if self.address:
            inputs.append({"type": _concept("adresse"), "valueString": self.address})
        if self.previous:
            inputs.append({"type": _concept("diffusion-precedente"),
                           "valueReference": {"reference": f"Task/{self.previous}"}})
        ext: list[dict[str, Any]] = [{"url": f"{EXT}attempts", "valueInteger": self.attempts}]
        if self.next_attempt:
            ext.append({"url": f"{EXT}next-attempt", "valueDateTime": self.next_attempt})
        out: dict[str, Any] = {
            "resourceType": "Task", "id": self.id, "extension": ext,
            "status": self.status, "intent": "order",
            "businessStatus": {"coding": [{"system": SYSTEM, "code": self.state,
                                           "display": label}],
                               "text": f"{label}{' — ' + self.detail if self.detail else ''}"},
            "code": {"coding": [{"system": SYSTEM, "code": CODE,
                                 "display": "Diffusion du compte rendu"}],
                     "text": f"{'Retrait' if self.action == 'suppression' else 'Diffusion'}"
                             f" vers {CHANNEL_LABELS.get(self.channel, self.channel)}"},
            "focus": {"reference": self.document},
            "for": {"reference": self.patient},
            "authoredOn": self.created or now(), "lastModified": now(),
            "input": inputs,
        }
        if self.request:
            out["basedOn"] = [{"reference": self.request}]
        if self.recipient:
            out["owner"] = {"reference": self.recipient}
        if self.response:
            out["output"] = [{"type": _concept("reponse"), "valueString": self.response}]
        if self.sent:
            out["executionPeriod"] = {"end": self.sent}
        return out

    @classmethod
    def parse(cls, task: dict[str, Any]) -> Delivery:
        inputs = {(i.get("type", {}).get("coding") or [{}])[0].get("code"): i
                  for i in task.get("input") or []}
        ext = {e.get("url", "")[len(EXT):]: e for e in task.get("extension") or []}
        previous = ref_of((inputs.get("diffusion-precedente") or {}).get("valueReference"))
        return cls(
            id=task["id"], channel=inputs["canal"]["valueCode"],
            document=ref_of(task.get("focus")) or "", patient=ref_of(task.get("for")) or "",
            report=ref_of(inputs["compte-rendu"].get("valueReference")) or "",
            version=inputs["version"]["valueInteger"],
            request=ref_of(next(iter(task.get("basedOn") or []), None)),
            recipient=ref_of(task.get("owner")),
            address=(inputs.get("adresse") or {}).get("valueString", ""),
            state=task["businessStatus"]["coding"][0]["code"],
            detail=task["businessStatus"].get("text", "").partition(" — ")[2],
            attempts=(ext.get("attempts") or {}).get("valueInteger", 0),
            next_attempt=(ext.get("next-attempt") or {}).get("valueDateTime"),
            response=next((o.get("valueString", "") for o in task.get("output") or []), ""),
            previous=previous.split("/", 1)[1] if previous else None,
            created=task.get("authoredOn", ""),
            sent=(task.get("executionPeriod") or {}).get("end"),
            action=(inputs.get("action") or {}).get("valueCode", "transmission"))


def _concept(code: str) -> dict[str, Any]:
    return {"coding": [{"system": SYSTEM, "code": code}]}


class Outbox:
    """Deliveries kept through the server's store (server-owned writes)."""

    def __init__(self, server: FhirServer) -> None:
        self.server = server

    def get(self, delivery_id: str) -> Delivery | None:
        task = body(as_system(self.server, DELIVERY_OUTBOX).read("Task", delivery_id))
        if task is None or not any(c.get("system") == SYSTEM and c.get("code") == CODE
                                   for c in (task.get("code") or {}).get("coding") or []):
            return None
        return Delivery.parse(task)

    def add(self, delivery: Delivery) -> bool:
        """Plan ``delivery`` unless it exists (a replayed trigger plans nothing new)."""
        if as_system(self.server, DELIVERY_OUTBOX).read("Task", delivery.id) is not None:
            return False
        delivery.created = delivery.created or now()
        delivery.next_attempt = delivery.next_attempt or delivery.created
        save(self.server, "Task", delivery.id, delivery.resource())
        return True

    def update(self, delivery: Delivery) -> None:
        store = as_system(self.server, DELIVERY_OUTBOX)
        with store.write():
            save(self.server, "Task", delivery.id, delivery.resource())

    def find(self, params: list[tuple[str, str]], limit: int = 100) -> list[Delivery]:
        from fhir_server.search.query import QueryParser

        query = QueryParser(self.server.limits, strict=True).parse(
            "Task", [("code", f"{SYSTEM}|{CODE}"), *params, ("_count", str(limit))])
        page = as_system(self.server, DELIVERY_OUTBOX).search(query)
        return [Delivery.parse(t) for t in (body(i) for i in page.items) if t is not None]

    def due(self, limit: int = 50) -> list[Delivery]:
        """Deliveries to send or re-examine now, oldest first (an indexed query)."""
        return self.find([("status", "requested,on-hold"), ("delivery-next", f"le{now()}"),
                          ("_sort", "delivery-next")], limit)

    def check_retry(self, delivery_id: str) -> Delivery | None:
        """The delivery if an operator may send it again (dead letter ``lettre-morte``,
        refused ``rejete``, or held); None when there is none; :class:`Refused` when a
        retry does not apply: sent, cancelled, or already queued (issue 24)."""
        delivery = self.get(delivery_id)
        if delivery is None:
            return None
        what = f"Task/{delivery.id} ({delivery.channel} v{delivery.version}" \
               f"{', ' + delivery.action if delivery.action != 'transmission' else ''})"
        if delivery.state == "envoye":
            raise Refused(f"{what}: already sent ({delivery.sent or '?'}): nothing to retry "
                          "(a new version of the report is delivered on its own)")
        if delivery.status == "cancelled":
            raise Refused(f"{what}: cancelled ({delivery.detail or 'annulé'}): nothing to "
                          "retry; a withdrawn report is not sent again")
        if delivery.status == "requested":
            raise Refused(f"{what}: already queued ({delivery.state}, {delivery.attempts} "
                          f"attempt(s), next {delivery.next_attempt or 'now'}): the sender "
                          "sends it; nothing to retry")
        return delivery

    def retry(self, delivery_id: str, operator: str | None = None) -> Delivery | None:
        """An operator sends a dead letter, a refused or a held delivery again, from
        attempt 1 (``teleimagerie delivery retry``); None when there is no such delivery,
        :class:`Refused` (nothing changed) when a retry does not apply. The Task and the
        operator's AuditEvent commit in one write unit."""
        delivery = self.check_retry(delivery_id)
        if delivery is None:
            return None
        before = f"{delivery.state}, {delivery.attempts} essai(s)" + \
            (f", {delivery.detail}" if delivery.detail else "")
        delivery.attempts = 0
        delivery.to("a-envoyer", "relance manuelle", now())
        with as_system(self.server, DELIVERY_OUTBOX).write():
            save(self.server, "Task", delivery.id, delivery.resource())
            self._audit_retry(delivery, operator or "?", before)
        return delivery

    def _audit_retry(self, d: Delivery, operator: str, before: str) -> None:
        """The operator's ``retry`` (exchange.operator_event): the Task and the document
        as entities."""
        if self.server.audit is None:
            return
        entities = [system_object(f"Task/{d.id}", "4",
                                  f"teleimagerie delivery retry : {d.action} {d.channel} "
                                  f"v{d.version} — avant : {before}"),
                    system_object(d.document, "20")]
        self.server.audit.record([operator_event("delivery", "retry", operator,
                                                 self.server.name, True, entities,
                                                 d.patient or None)], durable=True)


def backoff(settings: DeliverySettings, attempts: int) -> float:
    return float(min(settings.retry_max, settings.retry_base * 2 ** max(0, attempts - 1)))
