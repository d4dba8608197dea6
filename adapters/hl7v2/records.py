"""The message store: every HL7 v2 message in or out, kept before anything else happens.

A message is a ``Binary`` (the raw bytes as received or sent, written once) and a
``Basic`` record that follows its processing: status, type, control id, peer, the ACK,
the error, the resources it produced, and for outbound messages the retry schedule.
Both are ordinary resources, so the store is the same on both backends, searchable
with indexes and paged like any FHIR search (the admin API is
``GET /fhir/Basic?code=…|hl7v2-inbound&hl7-status=error``), narrowed to the patient's
care team, and audited (R-INT-2, ADR 0010).

A message that reuses the control key (MSH-3, MSH-4, MSH-10) of a different stored
message gets a record of its own whose key is kept under ``REUSED_CONTROL_SYSTEM``: it
shows in listings, and :meth:`MessageStore.by_control` never returns it for a resend of
the original (issue 24).
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from adapters.principals import HL7_JOURNAL
from adapters.transaction import literal
from fhir_server.core.canonical import url
from fhir_server.search.registry import register_missing
from fhir_server.security.system import as_system
from fhir_server.workflow.records import body, save

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer

KIND_SYSTEM = url("CodeSystem", "hl7v2-message")
CONTROL_SYSTEM = "https://teleimagerie.fr/fhir/NamingSystem/hl7v2-control-id"
# a message that reused the control key of another (answered AE 205, issue 24): its key is
# kept under this system, so it is never taken for the original by MessageStore.by_control
REUSED_CONTROL_SYSTEM = "https://teleimagerie.fr/fhir/NamingSystem/hl7v2-control-id-reused"
# a message we could not read (no MSH, bad delimiters, charset, oversize): the key its ACK
# echoes, read best-effort from the raw MSH (issue 27), kept apart too — it was never
# taken, so a corrected message sent again under the same MSH-10 is a new message
UNREADABLE_CONTROL_SYSTEM = \
    "https://teleimagerie.fr/fhir/NamingSystem/hl7v2-control-id-unreadable"
EXT = "https://teleimagerie.fr/fhir/StructureDefinition/hl7v2-"
MEDIA_TYPE = "x-application/hl7-v2+er7"
INBOUND, OUTBOUND = "hl7v2-inbound", "hl7v2-outbound"
# inbound: received -> processed | error | rejected | held; outbound: pending -> sent |
# failed (the peer answered AE/CE) | dead (no AA/CA within the retry budget: dead letter)
STATUSES = ("received", "processed", "error", "rejected", "held", "pending", "sent",
            "failed", "dead")


def _row(name: str, kind: str, expression: str) -> dict[str, Any]:
    return {"type": "Basic", "name": name, "kind": kind,
            "url": url("SearchParameter", f"Basic-{name}"),
            "paths": [{"expression": expression}]}


ROWS = [
    _row("hl7-status", "token", f"Basic.extension.where(url='{EXT}status').value"),
    _row("hl7-type", "token", f"Basic.extension.where(url='{EXT}type').value"),
    _row("hl7-next", "date", f"Basic.extension.where(url='{EXT}next-attempt').value"),
    _row("hl7-error", "string", f"Basic.extension.where(url='{EXT}error').value"),
    _row("hl7-order", "token", f"Basic.extension.where(url='{EXT}order').value"),
    # MSH-10 alone, as MSA-2 of our ACK echoes it (``teleimagerie hl7 list --control``)
    _row("hl7-control", "token", f"Basic.extension.where(url='{EXT}control-id').value"),
]


def register_all() -> None:
    register_missing(ROWS)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def control_key(app: str, facility: str, control_id: str) -> str:
    """Duplicates are the same MSH-3, MSH-4 and MSH-10 (HL7 v2.5.1 §2.10.2)."""
    return f"{app}^{facility}^{control_id}"


@dataclass
class Record:
    """A message record, as read from / written to its ``Basic`` resource."""

    id: str
    kind: str  # INBOUND | OUTBOUND
    status: str
    created: str
    raw_id: str
    type: str = ""
    control: str = ""  # control_key()
    peer: str = ""
    ack: bytes | None = None
    ack_code: str = ""
    error: str = ""
    patient: str | None = None
    order: str = ""  # placer order number (system|value) the message is about
    results: list[str] = field(default_factory=list)
    attempts: int = 0
    next_attempt: str | None = None
    destination: str = ""
    decision: str = ""  # outbound: the business event it reports (never sent twice)
    reused: bool = False  # inbound: its control key belongs to another message (AE 205)
    unreadable: bool = False  # inbound: key read best-effort from a message not readable
    control_id: str = ""  # MSH-10 alone (what MSA-2 of the ACK echoes)

    def resource(self) -> dict[str, Any]:
        ext: list[dict[str, Any]] = [
            {"url": f"{EXT}status", "valueCode": self.status},
            {"url": f"{EXT}at", "valueDateTime": self.created},
            {"url": f"{EXT}raw", "valueReference": {"reference": f"Binary/{self.raw_id}"}},
        ]
        for name, value in (("type", self.type), ("peer", self.peer),
                            ("ack-code", self.ack_code), ("error", self.error),
                            ("order", self.order), ("destination", self.destination),
                            ("decision", self.decision)):
            if value:
                kind = "valueCode" if name in ("type", "ack-code", "order") else "valueString"
                ext.append({"url": f"{EXT}{name}", kind: value})
        if self.ack is not None:
            ext.append({"url": f"{EXT}ack",
                        "valueBase64Binary": base64.b64encode(self.ack).decode()})
        if self.kind == OUTBOUND:
            ext.append({"url": f"{EXT}attempts", "valueInteger": self.attempts})
        if self.next_attempt:
            ext.append({"url": f"{EXT}next-attempt", "valueDateTime": self.next_attempt})
        ext += [{"url": f"{EXT}result", "valueReference": {"reference": r}}
                for r in self.results]
        out: dict[str, Any] = {
            "resourceType": "Basic", "id": self.id, "extension": ext,
            "code": {"coding": [{"system": KIND_SYSTEM, "code": self.kind}],
                     "text": self.type or self.kind},
            "created": self.created[:10],
        }
        if self.control_id:
            ext.append({"url": f"{EXT}control-id",
                        "valueIdentifier": {"value": self.control_id}})
        if self.control:
            system = REUSED_CONTROL_SYSTEM if self.reused else \
                UNREADABLE_CONTROL_SYSTEM if self.unreadable else CONTROL_SYSTEM
            out["identifier"] = [{"system": system, "value": self.control}]
        if self.patient:
            out["subject"] = {"reference": self.patient}
        return out

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Record:
        values: dict[str, Any] = {}
        results: list[str] = []
        for e in data.get("extension") or []:
            name = e.get("url", "")[len(EXT):]
            value = next((v for k, v in e.items() if k.startswith("value")), None)
            if name == "result" and isinstance(value, dict):
                results.append(value.get("reference", ""))
            else:
                values[name] = value
        ack = values.get("ack")
        identifier: dict[str, Any] = next(iter(data.get("identifier") or []), {})
        return cls(
            id=data["id"], kind=data["code"]["coding"][0]["code"], status=values["status"],
            created=values.get("at") or data.get("created", ""),
            raw_id=values["raw"]["reference"].split("/", 1)[1], type=values.get("type", ""),
            control=identifier.get("value", ""),
            peer=values.get("peer", ""), ack=base64.b64decode(ack) if ack else None,
            ack_code=values.get("ack-code", ""), error=values.get("error", ""),
            patient=(data.get("subject") or {}).get("reference"), order=values.get("order", ""),
            results=results, attempts=values.get("attempts", 0),
            next_attempt=values.get("next-attempt"), destination=values.get("destination", ""),
            decision=values.get("decision", ""),
            reused=identifier.get("system") == REUSED_CONTROL_SYSTEM,
            unreadable=identifier.get("system") == UNREADABLE_CONTROL_SYSTEM,
            control_id=(values.get("control-id") or {}).get("value", ""))


class MessageStore:
    """Messages kept through the server's store (no client hooks, no profile checks)."""

    def __init__(self, server: FhirServer) -> None:
        self.server = server

    def add(self, kind: str, raw: bytes, status: str, *, record_id: str | None = None,
            durable: bool = True, **fields: Any) -> Record:
        """Keep the raw bytes and a new record in one write unit. ``durable=False`` when a
        durable write follows before anyone is answered (it flushes this one too): the
        record then survives a crash of the process, which is what keeps a message that
        crashes us, just not a power loss before its ACK — after which it is resent."""
        record = Record(id=record_id or str(uuid.uuid4()), kind=kind, status=status,
                        created=now(), raw_id=str(uuid.uuid4()), **fields)
        store = as_system(self.server, HL7_JOURNAL)
        with store.write(durable):
            binary = {"resourceType": "Binary", "contentType": MEDIA_TYPE}
            if raw:  # an empty frame is kept too, as a Binary without data (no "" in FHIR)
                binary["data"] = base64.b64encode(raw).decode()
            save(self.server, "Binary", record.raw_id, binary)
            save(self.server, "Basic", record.id, record.resource())
        return record

    def update(self, record: Record) -> None:
        store = as_system(self.server, HL7_JOURNAL)
        with store.write():
            if record.patient:  # the raw message follows its patient's access rules
                raw = body(store.read("Binary", record.raw_id))
                if raw is not None and not raw.get("securityContext"):
                    raw["securityContext"] = {"reference": record.patient}
                    save(self.server, "Binary", record.raw_id, raw)
            save(self.server, "Basic", record.id, record.resource())

    def get(self, record_id: str) -> Record | None:
        data = body(as_system(self.server, HL7_JOURNAL).read("Basic", record_id))
        if data is None or data.get("code", {}).get("coding", [{}])[0].get("system") \
                != KIND_SYSTEM:
            return None
        return Record.parse(data)

    def raw(self, record: Record) -> bytes:
        data = body(as_system(self.server, HL7_JOURNAL).read("Binary", record.raw_id)) or {}
        return base64.b64decode(data.get("data") or "")

    def find(self, params: list[tuple[str, str]], limit: int = 100) -> list[Record]:
        from fhir_server.search.query import QueryParser

        query = QueryParser(self.server.limits).parse("Basic", [*params, ("_count",
                                                                           str(limit))])
        page = as_system(self.server, HL7_JOURNAL).search(query)
        return [Record.parse(d) for d in (body(i) for i in page.items) if d is not None]

    def page(self, params: list[tuple[str, str]], limit: int,
             cursor: dict[str, Any] | None = None) -> tuple[list[Record],
                                                             dict[str, Any] | None]:
        """One page of a search and the cursor of the next (keyset paging: rows that stop
        matching meanwhile never make the next page skip one)."""
        from fhir_server.search.query import QueryParser

        query = QueryParser(self.server.limits).parse("Basic", [*params, ("_count",
                                                                           str(limit))])
        query.cursor = cursor
        page = as_system(self.server, HL7_JOURNAL).search(query)
        return ([Record.parse(d) for d in (body(i) for i in page.items) if d is not None],
                page.next_cursor)

    def by_control(self, key: str, kind: str = INBOUND) -> Record | None:
        """The message that owns control key ``key`` (never one that reused it)."""
        found = self.find([("identifier", f"{CONTROL_SYSTEM}|{literal(key)}"),
                           ("code", f"{KIND_SYSTEM}|{kind}")], limit=1)
        return found[0] if found else None

    def reusing(self, key: str, limit: int = 20) -> list[Record]:
        """Inbound messages that reused control key ``key`` (each answered AE 205)."""
        return self.find([("identifier", f"{REUSED_CONTROL_SYSTEM}|{literal(key)}"),
                          ("code", f"{KIND_SYSTEM}|{INBOUND}")], limit=limit)


def same_message(a: bytes, b: bytes) -> bool:
    """Whether two messages are the same one sent again: equal once line endings are
    normalised (CR, LF, CRLF; empty lines dropped) and MSH-7 ignored, since some RIS
    stamp a resend with a new date/time of message (issue 24)."""
    return _comparable(a) == _comparable(b)


def _comparable(raw: bytes) -> list[bytes]:
    text = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    segments = [s for s in text.split(b"\r") if s.strip()]
    if segments and segments[0].startswith(b"MSH") and len(segments[0]) > 3:
        fields = segments[0].split(segments[0][3:4])
        if len(fields) > 6:
            fields[6] = b""  # MSH-7 (MSH-1 is the separator itself: fields[1] is MSH-2)
        segments[0] = segments[0][3:4].join(fields)
    return segments
