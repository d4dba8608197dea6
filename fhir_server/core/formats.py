"""Representations (FHIR R4 http.html#mime-type, search.html#summary, #elements).

Stored resources travel as :class:`RawJson` (the stored bytes); the plain JSON case
embeds them unchanged via ``orjson.Fragment``. Only ``_summary``, ``_elements``,
``_pretty`` and XML parse them back.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson
from lxml import etree

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.resource_types import (
    choice_elements,
    mandatory_elements,
    model_class,
    summary_elements,
)

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
# asked for by name, the generic types are answered with that Content-Type (http.html#mime-type)
GENERIC = {"application/json": "application/json", "application/xml": "application/xml"}
_JSON_NAMES = {"json", "application/json", FHIR_JSON, "application/json+fhir", "text/json"}
_XML_NAMES = {"xml", "application/xml", FHIR_XML, "application/xml+fhir", "text/xml"}
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED", "display": "Resource encoded in summary mode"}
XHTML = "{http://www.w3.org/1999/xhtml}"


class RawJson(bytes):
    """Stored JSON bytes of a resource, embedded without re-serialisation."""


def _default(obj: Any) -> Any:
    if isinstance(obj, RawJson):
        return orjson.Fragment(bytes(obj))
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def dumps(obj: Any, pretty: bool = False) -> bytes:
    return orjson.dumps(obj, default=_default,
                        option=orjson.OPT_INDENT_2 if pretty else 0)


def materialize(obj: Any) -> Any:
    """Replace every RawJson by its parsed value (for subsetting or XML)."""
    if isinstance(obj, RawJson):
        return orjson.loads(bytes(obj))
    if isinstance(obj, dict):
        return {k: materialize(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [materialize(v) for v in obj]
    return obj


def media_type(fmt: str | None, accept: str | None) -> str:
    """The response media type from ``_format`` or the Accept header (JSON by default):
    ``application/fhir+json`` or ``+xml``, or ``application/json`` / ``application/xml``
    when the client named that generic type."""
    if fmt:
        name = fmt.split(";")[0].strip().lower()
        if name in GENERIC:
            return GENERIC[name]
        if name in _XML_NAMES:
            return FHIR_XML
        if name in _JSON_NAMES:
            return FHIR_JSON
        raise FhirError(ErrorKind.NOT_ACCEPTABLE, f"unsupported _format {fmt!r}")
    if accept:
        for part in accept.split(","):
            name = part.split(";")[0].strip().lower()
            if name in GENERIC:
                return GENERIC[name]
            if name in _JSON_NAMES or name in ("*/*", "application/*", ""):
                return FHIR_JSON
            if name in _XML_NAMES:
                return FHIR_XML
        raise FhirError(ErrorKind.NOT_ACCEPTABLE, f"cannot produce any of {accept!r} "
                        "(application/fhir+json, application/fhir+xml)")
    return FHIR_JSON


def is_xml(mtype: str) -> bool:
    """Is this response media type (as :func:`media_type` gives it) an XML one?"""
    return mtype.split(";")[0] in (FHIR_XML, "application/xml")


def native_binary(raw: bytes, accept: str | None) -> tuple[bytes, str] | None:
    """A Binary read asked for in its own media type (binary.html#rest: an Accept that
    is not a FHIR format gets the content itself — IHE MHD ITI-68 fetches documents so):
    (content, contentType), or None for the FHIR representation. The first Accept entry
    that names either decides; neither -> 406."""
    if not accept:
        return None
    binary = orjson.loads(bytes(raw))
    ctype = str(binary.get("contentType") or "application/octet-stream")
    major = ctype.split("/")[0]
    for part in accept.split(","):
        name = part.split(";")[0].strip().lower()
        if name in _JSON_NAMES or name in _XML_NAMES or name in ("*/*", "application/*", ""):
            return None
        if name in (ctype.lower(), f"{major}/*"):
            return base64.b64decode(binary.get("data") or ""), ctype
    raise FhirError(ErrorKind.NOT_ACCEPTABLE, f"this Binary is {ctype}: cannot produce any "
                    f"of {accept!r} (nor application/fhir+json, application/fhir+xml)")


def _tag_subsetted(resource: dict[str, Any]) -> None:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    meta["tag"] = [*tags, SUBSETTED]
    resource["meta"] = meta


def subset(resource: dict[str, Any], summary: str | None, elements: list[str] | None
           ) -> dict[str, Any]:
    """Apply ``_summary`` (true|text|data) or ``_elements`` to one resource."""
    rtype = resource.get("resourceType", "")
    try:
        summary_names = summary_elements(rtype)
        required = mandatory_elements(rtype)
    except Exception:  # e.g. OperationOutcome inside a bundle: leave it whole
        return resource
    if summary == "true":
        out = {k: v for k, v in resource.items() if k in summary_names}
    elif summary == "text":
        keep = {"resourceType", "id", "meta", "text"} | required
        out = {k: v for k, v in resource.items() if k in keep}
    elif summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    elif elements is not None:
        choices = choice_elements(rtype)
        keep = {"resourceType", "id", "meta"} | required | set(elements)
        keep.update(*(choices[e] for e in elements if e in choices))  # value -> valueQuantity
        # a kept primitive keeps its extensions (``_birthDate``)
        out = {k: v for k, v in resource.items()
               if k in keep or (k[:1] == "_" and k[1:] in keep)}
    else:
        return resource
    _tag_subsetted(out)
    return out


def subset_bundle(bundle: dict[str, Any], summary: str | None, elements: list[str] | None
                  ) -> dict[str, Any]:
    for entry in bundle.get("entry", []):
        if isinstance(entry.get("resource"), dict) and entry.get("search", {}).get(
                "mode") != "outcome":
            entry["resource"] = subset(entry["resource"], summary, elements)
    return bundle


# characters XML 1.0 cannot carry (§2.2 Char), even escaped
XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_incompatible(node: Any) -> bool:
    if isinstance(node, str):
        return XML_FORBIDDEN.search(node) is not None
    if isinstance(node, dict):
        return any(_xml_incompatible(k) or _xml_incompatible(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_xml_incompatible(v) for v in node)
    return False


def to_xml(resource: dict[str, Any]) -> bytes:
    """The XML form; 406 when the answer holds characters XML 1.0 cannot carry (a search
    link echoing a client's control character): the client may ask for JSON (issue 27)."""
    rtype = resource.get("resourceType")
    if _xml_incompatible(resource):
        raise FhirError(ErrorKind.NOT_ACCEPTABLE, f"this {rtype} holds characters XML 1.0 "
                        "cannot represent; ask for application/fhir+json")
    try:
        model = model_class(str(rtype)).model_validate(resource)
        return bytes(model.model_dump_xml())
    except Exception as exc:
        raise FhirError(ErrorKind.INTERNAL, f"cannot render {rtype} as XML: {exc}") from None


def from_xml(raw: bytes) -> dict[str, Any]:
    """Parse an XML FHIR resource into its JSON form (via the R4B model)."""
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
        root = etree.fromstring(raw, parser)
    except etree.XMLSyntaxError as exc:
        raise FhirError(ErrorKind.STRUCTURE, f"malformed XML: {exc}") from None
    rtype = etree.QName(root).localname
    try:
        model = model_class(rtype).model_validate_xml(raw)
    except KeyError:
        raise FhirError(ErrorKind.UNSUPPORTED_TYPE,
                        f"resource type not supported: {rtype}") from None
    except Exception as exc:
        raise FhirError(ErrorKind.UNPROCESSABLE, f"invalid {rtype} XML: {exc}") from None
    data: dict[str, Any] = orjson.loads(model.model_dump_json(by_alias=True, exclude_none=True))
    return data
