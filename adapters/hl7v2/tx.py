"""A FHIR transaction built by a flow and run through the core (``FhirServer.handle``),
so profiles, the workflow rules, security and the audit apply to HL7 as to REST."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from adapters.hl7v2.message import MessageError
from adapters.hl7v2.records import literal
from fhir_server.core.model import FhirRequest, FhirResponse, Interaction, RequestContext

if TYPE_CHECKING:
    from fhir_server.core.server import FhirServer


def token(system: str, value: str) -> str:
    """A ``system|code`` search value, the code matched as a whole."""
    return f"{system}|{literal(value)}"


@dataclass
class Context:
    """What a flow needs: the core, who acts (the RIS's system principal), the channel."""

    server: FhirServer
    principal: Any
    peer: str = ""
    request_id: str = ""
    settings: Any = None  # adapters.hl7v2.settings.Hl7Settings

    def request(self, interaction: Interaction, **kw: Any) -> FhirRequest:
        ctx = RequestContext(request_id=self.request_id or uuid.uuid4().hex,
                             principal=self.principal, source="hl7",
                             client_address=self.peer.rsplit(":", 1)[0] or None)
        return FhirRequest(interaction, context=ctx, **kw)

    def handle(self, req: FhirRequest, where: str) -> FhirResponse:
        resp = self.server.handle(req)
        if resp.status >= 400:
            raise fhir_failure(resp, where)
        return resp


def fhir_failure(resp: FhirResponse, where: str) -> MessageError:
    """A refusal of the core, told in ACK terms: the client's data (4xx) is AE, ours
    (5xx, a lock) AR so the sender retries later."""
    issues = (resp.resource or {}).get("issue") or [{}]
    text = "; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues[:5])
    expression = ", ".join(e for i in issues[:3] for e in i.get("expression") or [])
    if expression:
        text = f"{text} [{expression}]"
    if resp.status >= 500:
        return MessageError("207", f"erreur interne : {text}", where, reject=True)
    code = {409: "205", 404: "204", 403: "207", 412: "205"}.get(resp.status, "102")
    return MessageError(code, f"refusé par le serveur FHIR ({resp.status}) : {text}", where)


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
            out[entry["fullUrl"]] = ref
        return out
