"""The HL7 flows' FHIR transaction (``adapters.transaction``), its refusals told in ACK
terms."""

from __future__ import annotations

from dataclasses import dataclass

from adapters.hl7v2.message import MessageError
from adapters.transaction import Context as _Context
from adapters.transaction import Refused, Transaction, token
from fhir_server.core.model import FhirResponse

__all__ = ["Context", "Transaction", "fhir_failure", "token"]


@dataclass
class Context(_Context):
    def fail(self, resp: FhirResponse, where: str) -> Exception:
        return fhir_failure(resp, where)


def fhir_failure(resp: FhirResponse, where: str) -> MessageError:
    """A refusal of the core, told in ACK terms: the client's data (4xx) is AE, ours
    (5xx, a lock) AR so the sender retries later."""
    refused = Refused(resp, where)
    if resp.status >= 500:
        return MessageError("207", f"erreur interne : {refused.text}", where, reject=True)
    code = {409: "205", 404: "204", 403: "207", 412: "205"}.get(resp.status, "102")
    return MessageError(code, f"refusé par le serveur FHIR ({resp.status}) : {refused.text}",
                        where)
