"""The security policy the core applies to every request (R-SEC-1, R-SEC-2, R-ACT-1).

Authentication turns the bearer token into a :class:`Principal`; authorisation checks
the interaction against roles, scopes and the strong-authentication rule, then hands
the interaction a :class:`GuardedStore` limited to the principal's patients.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.limits import Limits
from fhir_server.core.model import FhirRequest, Interaction
from fhir_server.core.resource_types import CONFORMANCE_TYPES
from fhir_server.security import breakglass
from fhir_server.security.access import Access
from fhir_server.security.compartment import in_compartment
from fhir_server.security.principal import Principal
from fhir_server.security.scopes import LETTER_OF
from fhir_server.security.tokens import TokenValidator
from fhir_server.store.base import APPEND_ONLY_TYPES, Store


@dataclass
class SecurityPolicy:
    validator: TokenValidator

    def authenticate(self, req: FhirRequest) -> Principal:
        return self.validator.principal(req.header("authorization"))


def access_for(req: FhirRequest, store: Store, limits: Limits) -> Access | None:
    """The request's :class:`Access` (shared by Bundle entries), None for trusted callers."""
    ctx = req.context
    if ctx.principal is None:
        return None
    if ctx.access is None:
        ctx.access = Access(ctx.principal, store, limits)
    access: Access = ctx.access
    return access


def authorize(req: FhirRequest, access: Access, server_name: str = "") -> None:
    """Interaction-level checks; patient-level ones happen in the guarded store. A
    declared break-the-glass is granted and alerted here, once its interaction is
    allowed (:mod:`breakglass`)."""
    principal = access.principal
    rtype = req.resource_type
    letter = LETTER_OF.get(req.interaction)
    if rtype in CONFORMANCE_TYPES:  # the shipped IG: public to every known role
        if not access.roles:
            access.require(rtype, "r")  # produces the "no known role" refusal
        return
    if rtype in APPEND_ONLY_TYPES and letter in ("c", "u", "d"):
        raise FhirError(ErrorKind.FORBIDDEN, f"{rtype} is append-only: audit records are "
                        "written by the server and never changed or deleted (R-SEC-3)")
    if req.interaction == Interaction.OPERATION and req.operation == "everything":
        letter = "r"
    if letter and rtype:
        access.require(rtype, letter)
    elif not access.roles:
        access.require(rtype or "*", "r")  # produces the "no known role" refusal
    patient_data = rtype is None or in_compartment(rtype) or rtype in APPEND_ONLY_TYPES
    if patient_data and req.interaction != Interaction.BATCH and not principal.is_system \
            and not principal.strong:
        raise FhirError(ErrorKind.FORBIDDEN, "access to patient data requires strong "
                        f"authentication (R-SEC-1); this token's level is "
                        f"{principal.acr or principal.auth_mode or 'unknown'}")
    if breakglass.declared(req):
        breakglass.declare(req, access, server_name)
