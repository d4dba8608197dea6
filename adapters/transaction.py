"""One FHIR transaction per inbound unit (an HL7 message, a DICOM study), run through the
core (``FhirServer.handle``) so that profiles, workflow rules, security and the audit
apply to the adapters exactly as to REST (ADR 0010)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fhir_server.core.model import FhirRequest, FhirResponse, Interaction, RequestContext
from fhir_server.search.query import escape

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer


literal = escape  # a token search value matched as a whole code


def token(system: str, value: str) -> str:
    """A ``system|code`` search value, the code matched as a whole."""
    return f"{system}|{literal(value)}"


class Refused(Exception):
    """The core refused the unit: its OperationOutcome, and where in the input."""

    def __init__(self, resp: FhirResponse, where: str) -> None:
        issues = (resp.resource or {}).get("issue") or [{}]
        text = "; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues[:5])
        expression = ", ".join(e for i in issues[:3] for e in i.get("expression") or [])
        self.status = resp.status
        self.where = where
        self.text = f"{text} [{expression}]" if expression else text
        super().__init__(self.text)


@dataclass
class Context:
    """What a flow needs: the core, who acts (a system principal), the channel."""

    server: FhirServer
    principal: Any
    peer: str = ""
    request_id: str = ""
    settings: Any = None
    source: str = "hl7"

    def request(self, interaction: Interaction, **kw: Any) -> FhirRequest:
        ctx = RequestContext(request_id=self.request_id or uuid.uuid4().hex,
                             principal=self.principal, source=self.source,
                             client_address=self.peer.rsplit(":", 1)[0] or None)
        return FhirRequest(interaction, context=ctx, **kw)

    def handle(self, req: FhirRequest, where: str) -> FhirResponse:
        resp = self.server.handle(req)
        if resp.status >= 400:
            raise self.fail(resp, where)
        return resp

    def fail(self, resp: FhirResponse, where: str) -> Exception:
        return Refused(resp, where)


def find(server: FhirServer, rtype: str, params: list[tuple[str, str]]
         ) -> list[dict[str, Any]]:
    """Live resources matching ``params`` in the whole store (a system actor's view:
    matching must see every patient, R-EXAM-1)."""
    from fhir_server.workflow.records import body, matches

    found = matches(server, rtype, params)
    return [r for r in (body(i) for i in found if not i.deleted) if r]


def flag_identity(server: FhirServer, patient: str, text: str) -> None:
    """A ``Flag`` *identité à vérifier* on ``patient`` (R-EXAM-1: an identity that does
    not match is flagged for a human, never merged), written in its own unit so that it
    survives the refusal of the message or study that revealed it."""
    from adapters.principals import IDENTITY_FLAGS
    from fhir_server.security.system import as_system
    from fhir_server.workflow.records import new_id, save
    from fhir_server.workflow.studies import identity_flag

    with as_system(server, IDENTITY_FLAGS).write():
        save(server, "Flag", new_id(), identity_flag(patient, text))


@dataclass
class Transaction:
    entries: list[dict[str, Any]] = field(default_factory=list)

    def create(self, resource: dict[str, Any], if_none_exist: str | None = None) -> str:
        """POST (conditional when ``if_none_exist``); returns the reference to use."""
        full = f"urn:uuid:{uuid.uuid4()}"
        request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
        if if_none_exist:  # "param=token": the token is URL-encoded (it may hold ? & =)
            name, _, value = if_none_exist.partition("=")
            request["ifNoneExist"] = urlencode([(name, value)])
        self.entries.append({"fullUrl": full, "resource": resource, "request": request})
        return full

    def update(self, ref: str, resource: dict[str, Any]) -> str:
        rid = ref.split("/", 1)[1]
        self.entries.append({"fullUrl": ref, "resource": {**resource, "id": rid},
                             "request": {"method": "PUT", "url": ref}})
        return ref

    def delete(self, ref: str) -> None:
        self.entries.append({"request": {"method": "DELETE", "url": ref}})

    def run(self, ctx: Context, where: str) -> dict[str, str]:
        """Commit all entries at once; returns fullUrl -> ``Type/id`` of what was written."""
        if not self.entries:
            return {}
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}
        resp = ctx.handle(ctx.request(Interaction.BATCH, body=bundle, method="POST"), where)
        out: dict[str, str] = {}
        result = resp.resource or {}
        for entry, answer in zip(self.entries, result.get("entry") or [], strict=False):
            location = (answer.get("response") or {}).get("location") or ""
            ref = "/".join(location.split("/_history/")[0].split("/")[-2:])
            if "fullUrl" in entry:
                out[entry["fullUrl"]] = ref
        return out
