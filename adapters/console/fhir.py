"""The one way a page reaches the data: the user's own FHIR interactions through
``FhirServer.handle`` (ADR 0023, ADR 0022 "one guarded way in").

A page never reads the store: it routes a method and path with the API's route table
(:func:`fhir_server.interactions.routing.route`), with the user's principal (from their
token, validated again on each request), so authentication, authorisation, the care
relationship, masking, the workflow rules and the audit are the API's. The audit names
the channel ``console``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_server import metrics
from fhir_server.core.errors import FhirError
from fhir_server.core.model import RequestContext
from fhir_server.interactions.routing import route
from fhir_server.server.dispatch import FhirServer, Rendered, render_error
from fhir_server.store import budget as budgets
from fhir_server.store.budget import Budget

SOURCE = "console"  # the audit's channel (CodeSystem teleimagerie-channel)


@dataclass
class Answer:
    """What the core answered: the status and the resource (an OperationOutcome when it
    refused); ``message`` is the server's French diagnostics, shown as is."""

    status: int
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def message(self) -> str:
        """The OperationOutcome's diagnostics (every issue, joined), '' on success."""
        if self.ok:
            return ""
        issues = self.resource.get("issue") or []
        texts = [str(i.get("diagnostics") or (i.get("details") or {}).get("text") or
                     i.get("code") or "") for i in issues]
        return " ; ".join(t for t in texts if t) or f"erreur {self.status}"

    def entries(self, rtype: str | None = None, mode: str | None = None
                ) -> list[dict[str, Any]]:
        """A searchset's resources (of ``rtype``; ``mode`` match or include)."""
        out = []
        for e in self.resource.get("entry") or []:
            res = e.get("resource") or {}
            if rtype and res.get("resourceType") != rtype:
                continue
            if mode and (e.get("search") or {}).get("mode") != mode:
                continue
            out.append(res)
        return out

    def link(self, relation: str) -> str | None:
        for link in self.resource.get("link") or []:
            if link.get("relation") == relation:
                return str(link.get("url"))
        return None


class Fhir:
    """The signed-in user's client of the core, in-process (no HTTP hop, same path)."""

    def __init__(self, core: FhirServer, principal: Any, token: str, base_url: str,
                 client_address: str | None = None, user_agent: str | None = None) -> None:
        self.core = core
        self.principal = principal
        self.token = token
        self.base_url = base_url
        self.client_address = client_address
        self.user_agent = user_agent

    def call(self, method: str, path: str, params: list[tuple[str, str]] | None = None,
             body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
             ) -> Answer:
        """``method`` on ``path`` (relative to the FHIR base, e.g. ``ServiceRequest/1``)
        as the API would run it for this user, under the read time budget."""
        context = metrics.attach(RequestContext(
            request_id=str(uuid.uuid4()), principal=self.principal, source=SOURCE,
            client_address=self.client_address, user_agent=self.user_agent))
        sent = {"authorization": f"Bearer {self.token}", "accept": "application/fhir+json",
                **({"content-type": "application/fhir+json"} if body is not None else {}),
                **{k.lower(): v for k, v in (headers or {}).items()}}
        try:
            req = route(method, path, list(params or []), body=body, headers=sent,
                        base_url=self.base_url, context=context)
        except FhirError as exc:
            return _answer(render_error(exc))
        reading = method in ("GET", "HEAD")
        with budgets.applied(Budget(self.core.limits.query_timeout if reading else None,
                                    self.core.limits.max_includes)):
            # rendered as the API renders it: the same bytes a client would get
            return _answer(self.core.render(req, self.core.handle(req)))

    def read(self, rtype: str, rid: str) -> Answer:
        return self.call("GET", f"{rtype}/{rid}")

    def search(self, rtype: str, params: list[tuple[str, str]]) -> Answer:
        return self.call("GET", rtype, params)

    def operation(self, path: str, parameters: list[dict[str, Any]]) -> Answer:
        """``POST path/$op`` with a Parameters body."""
        return self.call("POST", path, body={"resourceType": "Parameters",
                                             "parameter": parameters})

    def create(self, resource: dict[str, Any]) -> Answer:
        return self.call("POST", str(resource["resourceType"]), body=resource)

    def update(self, resource: dict[str, Any], version: str | None = None) -> Answer:
        headers = {"if-match": f'W/"{version}"'} if version else None
        return self.call("PUT", f"{resource['resourceType']}/{resource['id']}",
                         body=resource, headers=headers)


def _answer(rendered: Rendered) -> Answer:
    body = orjson.loads(rendered.body) if rendered.body else {}
    return Answer(rendered.status, body if isinstance(body, dict) else {})
