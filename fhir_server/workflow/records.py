"""Reading and writing the records the workflow works on, with the server's own rights.

The workflow reads through the request's store view (so a user only acts on requests
they can see) and reads the facts its rules need as the named system principal
:data:`WORKFLOW` through the guard (:func:`view`, issue 28 item 5, ADR 0022). It writes
its own records — Task, Provenance, Communication, the request's new status — with the
server's rights (:func:`save`): a radiographer starting an exam cannot edit a Task, yet
the exam start must move it. Each such write is added to the interaction's audit
entities so the AuditEvent names it (R-SEC-3).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server.core.errors import ErrorKind, FhirError, Issue
from fhir_server.core.resource_types import DIRECTORY, PATIENT_DATA, classified
from fhir_server.search.values import format_instant, now_us
from fhir_server.security.access import GuardedStore
from fhir_server.security.system import as_system, server_principal
from fhir_server.store.base import Store, Stored

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer

_NS = uuid.UUID("0b6c3c1e-5d7e-4d55-9a5e-7f0c2a1d9e42")


# the workflow engine: reads and searches every patient's data and the directory — not
# the HL7 message journal, not the trail; its writes are :func:`save`'s
WORKFLOW = server_principal("workflow", " ".join(
    f"system/{t}.rs" for t in (*classified(PATIENT_DATA), *classified(DIRECTORY))))


def view(server: FhirServer) -> GuardedStore:
    """The store as the workflow engine (:data:`WORKFLOW`) sees it, through the guard:
    inside the write unit of an interaction already guarded for its principal, the facts
    its rules need — every patient's, so no per-patient filter (no extra query)."""
    return as_system(server, WORKFLOW)


def _raw_store(server: FhirServer) -> Store:
    """The store without the guard, for :func:`save` only: the server's own versions
    (no client meta rules: ``meta.security`` is the server's to set), named in the
    interaction's audit. tests/unit/test_layers.py lists who may reach it."""
    store = server.store
    return store.inner if isinstance(store, GuardedStore) else store


def matches(server: FhirServer, rtype: str, params: list[tuple[str, str]]) -> list[Stored]:
    """Every version-current ``rtype`` matching ``params`` among the server's records."""
    from fhir_server.security.care import all_matches

    return all_matches(view(server), server.limits, rtype, params)


def body(item: Stored | None) -> dict[str, Any] | None:
    if item is None or item.deleted or item.body is None:
        return None
    data: dict[str, Any] = orjson.loads(item.body)
    return data


def split(ref: str | None) -> tuple[str, str] | None:
    if not isinstance(ref, str) or ref.count("/") < 1 or ref.startswith(("urn:", "#")):
        return None
    parts = ref.split("/_history/")[0].split("/")
    return parts[-2], parts[-1]


def ref_of(value: Any) -> str | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref if isinstance(ref, str) else None


def load(server: FhirServer, ref: str | None) -> dict[str, Any] | None:
    """A referenced resource read with the server's rights (rules look at the facts)."""
    key = split(ref)
    if key is None:
        return None
    return body(view(server).read(*key))


def save(server: FhirServer, rtype: str, rid: str, resource: dict[str, Any]) -> Stored:
    """Write a server-owned version (no client hooks) and name it in the audit."""
    from fhir_server.store.versions import store_version

    store = _raw_store(server)
    previous = store.read(rtype, rid)
    item = store_version(server, store, rtype, rid, resource,
                         "PUT" if previous and not previous.deleted else "POST", previous)
    if isinstance(server.store, GuardedStore):
        server.store.touched[f"{rtype}/{rid}"] = server.store.patients(item)
    return item


def new_id() -> str:
    return str(uuid.uuid4())


def task_id(request_id: str) -> str:
    """The fulfilment Task's id, derived from the request's: one Task per request, found
    with a read, created once even by concurrent writers."""
    return str(uuid.uuid5(_NS, f"ServiceRequest/{request_id}"))


def now() -> str:
    return format_instant(now_us())


def parse_instant(text: Any) -> datetime | None:
    if not isinstance(text, str) or len(text) < 10:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def ext(resource: dict[str, Any], url: str) -> Any:
    """The value[x] of the first extension with ``url`` (None when absent)."""
    for e in resource.get("extension") or []:
        if isinstance(e, dict) and e.get("url") == url:
            for key, value in e.items():
                if key.startswith("value"):
                    return value
    return None


def codes(concept: Any, system: str | None = None) -> set[str]:
    """Codes of a CodeableConcept or Coding (optionally of one system)."""
    if not isinstance(concept, dict):
        return set()
    codings = concept.get("coding") if "coding" in concept else [concept]
    return {c["code"] for c in codings or [] if isinstance(c, dict) and "code" in c
            and (system is None or c.get("system") == system)}


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def rule(message: str, expression: str | None = None,
         kind: ErrorKind = ErrorKind.UNPROCESSABLE) -> FhirError:
    """A business rule refused: 422 (content) or 409 (state), code ``business-rule``."""
    return FhirError(kind, message, issues=[Issue(message, code="business-rule",
                                                  expression=[expression] if expression
                                                  else [])])


def step_time(task: dict[str, Any], state: str) -> str | None:
    """When the request first reached ``state`` (the Task's step-times extension)."""
    from fhir_server.workflow.machine import EXT_STEP

    for e in task.get("extension", []):
        if e.get("url") == EXT_STEP:
            for s in e.get("extension", []):
                if s.get("url") == state:
                    value = s.get("valueDateTime")
                    return value if isinstance(value, str) else None
    return None
