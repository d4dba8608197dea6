"""What an interaction needs of the server that runs it (the dependency points down).

:class:`fhir_server.server.dispatch.FhirServer` satisfies :class:`Server`; the
interactions and workflow handlers are typed against this protocol, so they do not
import the server layer above them (issue 28, layers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from fhir_server.core.limits import Limits
from fhir_server.core.model import FhirRequest, FhirResponse

if TYPE_CHECKING:
    from fhir_server.store.base import Store
    from fhir_server.validation.registry import ProfileRegistry
    from fhir_server.workflow.engine import Workflow


class Server(Protocol):
    """The server as a handler sees it: the (guarded) store, the limits, the profiles,
    the workflow, and ``dispatch`` for nested interactions (Bundle entries)."""

    store: Store
    limits: Limits
    profiles: ProfileRegistry
    workflow: Workflow | None
    released: str  # the CapabilityStatement's date

    def dispatch(self, req: FhirRequest) -> FhirResponse: ...


# an interaction or operation handler (the server's tables map to these)
Handler = Callable[[Server, FhirRequest], FhirResponse]
