"""The transport-agnostic request and response (FHIR R4 http.html interactions).

The HTTP adapter, bundle processing and the HL7/DICOM adapters all build a
:class:`FhirRequest` and get a :class:`FhirResponse` back from :func:`fhir_server.core.handle`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Interaction(Enum):
    CAPABILITIES = "capabilities"
    READ = "read"
    VREAD = "vread"
    CREATE = "create"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"
    HISTORY_INSTANCE = "history-instance"
    HISTORY_TYPE = "history-type"
    HISTORY_SYSTEM = "history-system"
    SEARCH_TYPE = "search-type"
    SEARCH_SYSTEM = "search-system"  # GET [base]?… and POST [base]/_search
    SEARCH_COMPARTMENT = "search-compartment"  # GET [base]/Patient/[id]/[type]?…
    BATCH = "batch"  # batch or transaction, decided by Bundle.type
    OPERATION = "operation"  # $name at system, type or instance level


@dataclass
class RequestContext:
    """Who is asking, from where, and what the request touched (shared by Bundle entries).

    ``principal`` is set by authentication (HTTP) or by an adapter (its system
    identity); ``None`` only for trusted in-process callers. ``access`` is the
    per-request rights and data view; ``events`` collects audit records until the
    request completes.
    """

    request_id: str = ""
    principal: Any = None  # fhir_server.security.principal.Principal
    source: str = "rest"  # rest | bundle | hl7 | dicom | internal
    client_address: str | None = None
    user_agent: str | None = None
    access: Any = None  # fhir_server.security.access.Access, built on first use
    events: list[Any] = field(default_factory=list)
    # checks that need the whole write unit applied (a transaction entry's rule about
    # another entry: R-REQ-1 reads the patient a later PUT of the same Bundle updates);
    # None: run at once. The transaction runs them after its last entry, before commit.
    deferred: list[Callable[[], None]] | None = None


@dataclass
class FhirRequest:
    interaction: Interaction
    resource_type: str | None = None
    id: str | None = None
    version_id: str | None = None
    params: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None  # parsed JSON (dict) or None
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    base_url: str = "http://localhost/fhir"
    context: RequestContext = field(default_factory=RequestContext)
    # create inside a transaction: the id pre-assigned to resolve urn:uuid references
    assigned_id: str | None = None
    operation: str | None = None  # name without "$" for Interaction.OPERATION
    # compartment search (resource_type/id name the compartment): the type searched, "*"
    compartment_search: str | None = None
    method: str = "GET"  # the HTTP verb (operations that change state need POST)
    # an operation that changes data records its AuditEvent as an update (durable)
    audit_action: str | None = None
    # what it changed, as versioned references (a workflow transition: its Task and its
    # request, ADR 0009): the AuditEvent names each instead of the bare target
    audit_targets: list[str] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


@dataclass
class FhirResponse:
    """Status, headers and a payload: ``raw`` (stored JSON bytes, served as-is) or ``resource``."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    resource: dict[str, Any] | None = None
    raw: bytes | None = None
    # a file the transport streams as NDJSON (a Bulk Data export file: never read whole)
    file: str | None = None

    @property
    def has_body(self) -> bool:
        return self.resource is not None or self.raw is not None
