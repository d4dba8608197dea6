"""Builders shared by the guard's tests (R-SEC-2, R-SEC-4; issue 27 items 3, 5, 6).

Resources are written straight through the store (``put``): the tests need instances of
every served type, with a reference at any search parameter's path, and thousands of
requests, fast — what they check is what the server serves from them. The paths are
read from the search parameter registry, so a new parameter or type is covered without
editing the tests.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson

from fhir_server.core.resource_types import CLASSIFICATION, PATIENT_DATA, PATIENT_MESSAGES
from fhir_server.search.extract import extract
from fhir_server.search.paths import _CHOICES, _ELSEWHERE, _TYPES
from fhir_server.search.registry import SearchParam, get, params_for
from fhir_server.security.care import SELF_ASSERTED
from fhir_server.security.compartment import NARROWING_PARAM
from fhir_server.store.base import Store, Stored

RPPS = "urn:oid:1.2.250.1.71.4.2.1"
PATIENT_TYPES = tuple(t for t, k in CLASSIFICATION.items()
                      if k in (PATIENT_DATA, PATIENT_MESSAGES))
_STEP = re.compile(r"^[a-z][A-Za-z]*$")


def put(store: Store, resource: dict[str, Any]) -> str:
    """Write ``resource`` as version 1 (an id is made when it has none)."""
    resource.setdefault("id", str(uuid.uuid4()))
    resource["meta"] = {**resource.get("meta", {}), "versionId": "1",
                        "lastUpdated": "2024-01-01T00:00:00.000Z"}
    item = Stored(resource["resourceType"], resource["id"], 1, 1, False,
                  orjson.dumps(resource), "POST")
    with store.write():
        store.put(item, extract(resource))
    return str(resource["id"])


def keys_of(param: SearchParam) -> list[str] | None:
    """The JSON keys a Reference sits at for ``param`` (its first path): choice
    elements take their Reference form; None when the path is not a plain one."""
    expression = param.paths[0].expression
    wanted = None
    if " as " in expression:
        expression, wanted = expression.split(" as ")
    rtype, *steps = expression.split(".")
    if not steps or not all(_STEP.match(s) for s in steps):
        return None
    out, current = [], rtype
    for i, step in enumerate(steps):
        path = _ELSEWHERE.get(f"{current}.{step}", f"{current}.{step}")
        choices = _CHOICES.get(path, ())
        if choices:
            kind = wanted or "Reference"
            if kind not in choices:
                return None
            out.append(step + kind)
        else:
            out.append(step)
        kind_of = _TYPES.get(path)
        current = kind_of if kind_of and kind_of[0].isupper() and kind_of not in (
            "BackboneElement", "Element") else path
        if i == len(steps) - 1 and kind_of == "canonical":
            return None
    return out


def set_reference(resource: dict[str, Any], keys: list[str], ref: str) -> None:
    node = resource
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = {"reference": ref}


def patient_keys(rtype: str) -> list[str]:
    """Where a resource of ``rtype`` names its patient (the guard's parameter)."""
    if rtype == "Binary":
        return ["securityContext"]
    param = get(rtype, NARROWING_PARAM[rtype])
    assert param is not None
    keys = keys_of(param)
    assert keys is not None, rtype
    return keys


def instance(rtype: str, patient: str | None = None, **fields: Any) -> dict[str, Any]:
    """A minimal ``rtype`` of ``patient`` (a Patient: its own record)."""
    resource: dict[str, Any] = {"resourceType": rtype, "id": str(uuid.uuid4()), **fields}
    if patient is not None and rtype == "Patient":
        resource["id"] = patient
    elif patient is not None:
        set_reference(resource, patient_keys(rtype), f"Patient/{patient}")
    return resource


def created_by(key: str) -> dict[str, Any]:
    """The server's record that the principal with ``key`` registered a Patient."""
    return {"tag": [{"system": SELF_ASSERTED, "code": key}]}


def reference_params() -> list[tuple[str, SearchParam, list[str]]]:
    """Every reference search parameter of a patient-data type with a served target
    and a plain path: (type, parameter, its served patient-data or directory targets)."""
    out = []
    for rtype in PATIENT_TYPES:
        for param in params_for(rtype).values():
            if param.kind != "reference":
                continue
            targets = [t for t in param.targets if t in CLASSIFICATION and t != "AuditEvent"]
            if targets and keys_of(param) is not None:
                out.append((rtype, param, targets))
    return out


def put_many(store: Store, resources: list[dict[str, Any]]) -> None:
    """Write many resources as version 1 at once: one write unit on the embedded store;
    on MongoDB the documents ``put`` would write, inserted in bulk (mongomock's ``put``
    is too slow for thousands)."""
    items = []
    for resource in resources:
        resource.setdefault("id", str(uuid.uuid4()))
        resource["meta"] = {**resource.get("meta", {}), "versionId": "1",
                            "lastUpdated": "2024-01-01T00:00:00.000Z"}
        items.append((Stored(resource["resourceType"], resource["id"], 1, 1, False,
                             orjson.dumps(resource), "POST"), extract(resource)))
    if not hasattr(store, "res"):
        with store.write():
            for item, rows in items:
                store.put(item, rows)
        return
    mongo: Any = store
    first, seq = mongo._next("pk", len(items)), mongo._next("seq", len(items))
    # mongomock checks a unique index against every document on each insert: drop the
    # unique ones while inserting (the ids are fresh), then build them again
    unique = {name: info for coll in (mongo.res, mongo.hist)
              for name, info in coll.index_information().items() if info.get("unique")}
    for coll in (mongo.res, mongo.hist):
        for name in unique:
            if name in coll.index_information():
                coll.drop_index(name)
    mongo.res.insert_many([mongo._doc(item, rows, first + n)
                           for n, (item, rows) in enumerate(items)])
    mongo.hist.insert_many([mongo._hist(item, seq + n) for n, (item, _) in enumerate(items)])
    for name, info in unique.items():
        coll = mongo.res if name == "pk_1" else mongo.hist
        coll.create_index(info["key"], unique=True, name=name)
