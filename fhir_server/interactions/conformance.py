"""The implementation guide we ship, served read-only: StructureDefinition, CodeSystem,
ValueSet, ConceptMap (read, vread, search by url/name/version/status/type), the
terminology operations ``$lookup``, ``$validate-code``, ``$expand``, ``$translate``
(terminology-service.html) and ``$validate`` on any resource (resource-operation-validate).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server.core.errors import ErrorKind, FhirError, Issue, invalid
from fhir_server.core.model import FhirRequest, FhirResponse, Interaction
from fhir_server.validation.registry import definitions
from fhir_server.validation.resource import validate_resource
from terminology.service import Concept, TerminologyError, terminology

if TYPE_CHECKING:
    from fhir_server.interactions.port import Handler, Server

SEARCHABLE = ("url", "name", "version", "status", "type", "_id", "title")


@cache
def catalog() -> dict[tuple[str, str], dict[str, Any]]:
    """Every shipped conformance resource by (type, id), with a version 1 meta."""
    resources = [*definitions().values(), *terminology().resources]
    out = {}
    for res in resources:
        res = {**res, "meta": {"versionId": "1"}}
        out[(res["resourceType"], res["id"])] = res
    return out


def interaction(server: Server, req: FhirRequest) -> FhirResponse:
    assert req.resource_type
    if req.interaction in (Interaction.READ, Interaction.VREAD):
        found = catalog().get((req.resource_type, req.id or ""))
        if found is None or (req.version_id not in (None, "1")):
            raise FhirError(ErrorKind.NOT_FOUND, f"{req.resource_type}/{req.id} is not known")
        return FhirResponse(200, {"ETag": 'W/"1"'}, resource=found)
    if req.interaction == Interaction.SEARCH_TYPE:
        return _search(req)
    raise FhirError(ErrorKind.METHOD_NOT_ALLOWED, f"{req.resource_type} is read-only here: "
                    "it is part of the implementation guide this server ships")


def _search(req: FhirRequest) -> FhirResponse:
    wanted: list[tuple[str, str]] = []
    count = 50
    for key, value in req.params:
        name = key.split(":", 1)[0]
        if name == "_count":
            count = max(0, min(int(value) if value.isdigit() else 50, 1000))
        elif name in SEARCHABLE:
            wanted.append((name, value))
        elif not name.startswith("_"):
            raise invalid(f"unknown search parameter {name} for {req.resource_type} "
                          f"(supported: {', '.join(SEARCHABLE)})", name)
    matches = []
    for (rtype, _), res in catalog().items():
        if rtype != req.resource_type:
            continue
        if all(_matches(res, name, value) for name, value in wanted):
            matches.append(res)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle", "type": "searchset", "total": len(matches),
        "link": [{"relation": "self", "url": f"{req.base_url}/{req.resource_type}"}],
        "entry": [{"fullUrl": f"{req.base_url}/{r['resourceType']}/{r['id']}", "resource": r,
                   "search": {"mode": "match"}} for r in matches[:count]]}
    return FhirResponse(200, {}, resource=bundle)


def _matches(res: dict[str, Any], name: str, value: str) -> bool:
    field = "id" if name == "_id" else name
    have = res.get(field)
    options = value.split(",")
    if field == "url":  # a canonical may carry |version
        return any(have == v.split("|", 1)[0] for v in options)
    if field in ("version", "status", "type", "id"):
        return have in options
    text = str(have or "").casefold()
    return any(text.startswith(v.casefold()) for v in options)


# -- parameters ----------------------------------------------------------------------
def _inputs(req: FhirRequest) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for key, text in req.params:
        out.setdefault(key, []).append(text)
    body = req.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            if not isinstance(p, dict) or "name" not in p:
                continue
            value = p.get("resource")
            if value is None:
                value = next((v for k, v in p.items() if k.startswith("value")), None)
            out.setdefault(p["name"], []).append(value)
    elif isinstance(body, dict) and body.get("resourceType"):
        out.setdefault("resource", []).append(body)
    return out


def _one(inputs: dict[str, list[Any]], name: str) -> Any:
    values = inputs.get(name) or []
    return values[0] if values else None


def _coding_in(inputs: dict[str, list[Any]]) -> tuple[str | None, str | None, str | None]:
    coding = _one(inputs, "coding")
    if isinstance(coding, dict):
        return coding.get("system"), coding.get("code"), coding.get("display")
    concept = _one(inputs, "codeableConcept")
    if isinstance(concept, dict) and concept.get("coding"):
        first = concept["coding"][0]
        return first.get("system"), first.get("code"), first.get("display")
    return _one(inputs, "system"), _one(inputs, "code"), _one(inputs, "display")


def _parameters(*params: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(params)}


def _instance_url(req: FhirRequest, inputs: dict[str, list[Any]], rtype: str) -> str | None:
    if req.id:
        found = catalog().get((rtype, req.id))
        if found is None:
            raise FhirError(ErrorKind.NOT_FOUND, f"{rtype}/{req.id} is not known")
        return str(found["url"])
    value = _one(inputs, "url") or _one(inputs, "system" if rtype == "CodeSystem" else "url")
    return str(value) if value else None


def _terminology_error(exc: TerminologyError) -> FhirError:
    return FhirError(ErrorKind.NOT_FOUND, str(exc))


# -- operations ----------------------------------------------------------------------
def lookup(server: Server, req: FhirRequest) -> FhirResponse:
    inputs = _inputs(req)
    system, code, _ = _coding_in(inputs)
    system = _instance_url(req, inputs, "CodeSystem") if req.id else system
    if not system or not code:
        raise invalid("$lookup needs system and code (or coding)", "code")
    try:
        concept = terminology().lookup(system, code)
    except TerminologyError as exc:
        raise _terminology_error(exc) from None
    cs = terminology().code_systems[system]
    params = [{"name": "name", "valueString": cs.get("title") or cs["name"]},
              {"name": "version", "valueString": cs.get("version", "")},
              {"name": "display", "valueString": concept.display or concept.code}]
    params += [{"name": "property", "part": [{"name": "code", "valueCode": k},
                                             _typed_value(v)]} for k, v in concept.properties]
    return FhirResponse(200, {}, resource=_parameters(*params))


def _typed_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"name": "value", "valueBoolean": value}
    return {"name": "value", "valueString": str(value)}


def validate_code(server: Server, req: FhirRequest) -> FhirResponse:
    inputs = _inputs(req)
    system, code, display = _coding_in(inputs)
    terms = terminology()
    if not code:
        raise invalid("$validate-code needs code (or coding / codeableConcept)", "code")
    try:
        if req.resource_type == "ValueSet":
            vs = _instance_url(req, inputs, "ValueSet")
            if not vs:
                raise invalid("ValueSet/$validate-code needs url", "url")
            ok = terms.in_value_set(vs, system, code)
            where = f"the value set {vs}"
        else:
            system = _instance_url(req, inputs, "CodeSystem") if req.id else \
                (_one(inputs, "url") or system)
            if not system:
                raise invalid("CodeSystem/$validate-code needs url or system", "url")
            if system not in terms.code_systems:
                raise TerminologyError(f"unknown code system {system}")
            ok = code in terms.concepts[system]
            where = f"the code system {system}"
    except TerminologyError as exc:
        raise _terminology_error(exc) from None
    known = terms.display_of(system, code) if system else None
    params: list[dict[str, Any]] = [{"name": "result", "valueBoolean": ok}]
    if known:
        params.append({"name": "display", "valueString": known})
    if not ok:
        params.append({"name": "message", "valueString": f"code {system or ''}|{code} is not "
                       f"in {where}"})
    elif display and known and display != known:
        params.append({"name": "message", "valueString": f"display {display!r} differs from "
                       f"the expected {known!r}"})
    return FhirResponse(200, {}, resource=_parameters(*params))


def expand(server: Server, req: FhirRequest) -> FhirResponse:
    inputs = _inputs(req)
    vs_url = _instance_url(req, inputs, "ValueSet")
    if not vs_url:
        raise invalid("$expand needs url (or an instance)", "url")
    offset, count = _int(inputs, "offset", 0), _int(inputs, "count", None)
    text = _one(inputs, "filter")
    try:
        total, concepts = terminology().expand(vs_url, text, offset, count)
        vs = terminology().value_sets[vs_url.split("|", 1)[0]]
    except TerminologyError as exc:
        raise _terminology_error(exc) from None
    params: list[dict[str, Any]] = [{"name": "offset", "valueInteger": offset}]
    if count is not None:
        params.append({"name": "count", "valueInteger": count})
    if text:
        params.append({"name": "filter", "valueString": text})
    out = {k: v for k, v in vs.items() if k != "compose"}
    out["expansion"] = {"identifier": f"urn:uuid:{uuid.uuid4()}",
                        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                        "total": total, "offset": offset, "parameter": params,
                        "contains": [_contains(c) for c in concepts]}
    return FhirResponse(200, {}, resource=out)


def _contains(c: Concept) -> dict[str, Any]:
    out = {"system": c.system, "code": c.code}
    if c.display:
        out["display"] = c.display
    return out


def _int(inputs: dict[str, list[Any]], name: str, default: int | None) -> Any:
    value = _one(inputs, name)
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid(f"{name} must be a non-negative integer", name) from None
    if number < 0:
        raise invalid(f"{name} must be a non-negative integer", name)
    return number


def translate(server: Server, req: FhirRequest) -> FhirResponse:
    inputs = _inputs(req)
    system, code, _ = _coding_in(inputs)
    if not system or not code:
        raise invalid("$translate needs system and code (or coding)", "code")
    cm = _instance_url(req, inputs, "ConceptMap")
    try:
        matches = terminology().translate(cm, system, code, _one(inputs, "targetsystem"))
    except TerminologyError as exc:
        raise _terminology_error(exc) from None
    params: list[dict[str, Any]] = [{"name": "result", "valueBoolean": bool(matches)}]
    if not matches:
        params.append({"name": "message", "valueString": f"no mapping for {system}|{code}"})
    for m in matches:
        coding = {"system": m["system"], "code": m["code"]}
        if m.get("display"):
            coding["display"] = m["display"]
        params.append({"name": "match", "part": [
            {"name": "equivalence", "valueCode": m["equivalence"]},
            {"name": "concept", "valueCoding": coding},
            {"name": "source", "valueUri": m["source"]}]})
    return FhirResponse(200, {}, resource=_parameters(*params))


def validate(server: Server, req: FhirRequest) -> FhirResponse:
    """$validate (type or instance level; ``profile`` and ``mode``): an OperationOutcome,
    200 whatever the verdict (the outcome carries it)."""
    inputs = _inputs(req)
    mode = _one(inputs, "mode") or "create"
    if mode not in ("create", "update", "delete", "profile"):
        raise invalid(f"unsupported mode {mode!r} (create, update, delete, profile)", "mode")
    resource = _one(inputs, "resource")
    if resource is None and req.id and req.resource_type:
        stored = server.store.read(req.resource_type, req.id)
        if stored is None or stored.body is None:
            raise FhirError(ErrorKind.NOT_FOUND, f"{req.resource_type}/{req.id} is not known")
        resource = orjson.loads(stored.body)
    if mode == "delete":
        return FhirResponse(200, {}, resource=_outcome([]))
    if not isinstance(resource, dict):
        raise invalid("$validate needs a resource (the body or a 'resource' parameter)",
                      "resource")
    issues: list[Issue] = []
    try:
        validate_resource(resource, req.resource_type)
    except FhirError as exc:
        issues += exc.issues
    if not issues:
        profile = _one(inputs, "profile")
        issues = server.profiles.validate(resource, [profile] if profile else None,
                                          must_support=True)
    return FhirResponse(200, {}, resource=_outcome(issues))


def _outcome(issues: list[Issue]) -> dict[str, Any]:
    if not any(i.severity in ("error", "fatal", "warning") for i in issues):
        issues = [*issues, Issue("validation réussie : aucune erreur", code="informational",
                                 severity="information")]
    return {"resourceType": "OperationOutcome",
            "issue": [i.to_json("invalid") for i in issues]}


OPERATIONS: dict[tuple[str | None, str], Handler] = {
    ("CodeSystem", "lookup"): lookup,
    ("CodeSystem", "validate-code"): validate_code,
    ("ValueSet", "validate-code"): validate_code,
    ("ValueSet", "expand"): expand,
    ("ConceptMap", "translate"): translate,
    (None, "validate"): validate,
}
