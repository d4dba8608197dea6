"""The patient identity feed: IHE PAM-FR 2.11 ADT messages (R-EXAM-1).

We keep identities, not venues: every ADT event that carries a PID updates (or
creates) the patient, matched by INS then IPP; A40 merges two patients — the merged
one's resources are re-pointed to the survivor, the merged Patient is deactivated and
both keep a ``link`` —; A47 changes a patient identifier. A conflicting identity is never
merged silently (see :mod:`adapters.hl7v2.identity`).
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2 import datatypes as dt
from adapters.hl7v2.identity import IdentityConflict, find_patient, merged, patient_from_pid
from adapters.hl7v2.message import Message, MessageError
from adapters.hl7v2.orm_o01 import patient_entry
from adapters.hl7v2.tx import Context, Transaction, token
from fhir_server.security.care import all_matches
from fhir_server.security.compartment import NARROWING_PARAM, PATIENT_PATHS, walk
from fhir_server.security.system import as_system
from fhir_server.workflow.records import body, matches, save

# ADT trigger events handled as an identity update (PAM-FR: admissions, transfers,
# discharges, pre-admissions, updates and the A28/A31 patient-information messages)
IDENTITY_EVENTS = frozenset({"A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11",
                             "A12", "A13", "A14", "A21", "A22", "A28", "A31", "A38"})
MERGE_EVENTS = frozenset({"A40"})
IDENTIFIER_EVENTS = frozenset({"A47"})
EVENTS = IDENTITY_EVENTS | MERGE_EVENTS | IDENTIFIER_EVENTS


def identity_update(ctx: Context, msg: Message) -> tuple[list[str], str]:
    tx = Transaction()
    ref = patient_entry(ctx, tx, msg, feed=True)
    written = tx.run(ctx, "PID^1^3")
    return sorted(set(written.values())), written.get(ref, ref)


def _find_by(ctx: Context, identifiers: list[dict[str, Any]]) -> list[str]:
    if not identifiers:
        return []
    # as the sending RIS's system principal, through the guard (ADR 0022)
    found = all_matches(as_system(ctx.server, ctx.principal), ctx.server.limits, "Patient", [
        ("identifier", ",".join(token(i["system"], i["value"]) for i in identifiers))])
    return sorted({i.id for i in found if not i.deleted})


def merge(ctx: Context, msg: Message) -> tuple[list[str], str]:
    """A40: PID is the surviving patient, MRG-1 the identifiers of the merged one."""
    mrg = msg.require("MRG")
    old_ids = [i for i in (dt.cx(f) for f in mrg.repetitions(1)) if i]
    if not old_ids:
        raise MessageError("101", "MRG-1 : identifiant du patient fusionné absent", "MRG^1^1")
    incoming = patient_from_pid(msg.require("PID"))
    survivor = find_patient(ctx.server, incoming)
    if survivor.id is None:
        raise MessageError("204", "A40 : patient survivant inconnu", "PID^1^3")
    merged_ids = [p for p in _find_by(ctx, old_ids) if p != survivor.id]
    if len(merged_ids) > 1:
        raise IdentityConflict("A40 : MRG-1 désigne plusieurs patients "
                               f"({', '.join(merged_ids)})", f"Patient/{merged_ids[0]}")
    target = f"Patient/{survivor.id}"
    if not merged_ids:  # already merged (a resent A40) or never known: nothing to move
        return [], target
    old = f"Patient/{merged_ids[0]}"
    store = as_system(ctx.server, ctx.principal)  # the merge's write unit
    written: list[str] = []
    with store.write():
        for rtype, paths in PATIENT_PATHS.items():
            if rtype in ("Patient", "AuditEvent", "Provenance"):
                continue  # the trail keeps what happened to whom
            for item in _referencing(ctx, rtype, old):
                resource = body(item)
                if resource is not None and _repoint(resource, paths, old, target):
                    save(ctx.server, rtype, item.id, resource)
                    written.append(f"{rtype}/{item.id}")
        loser = body(store.read("Patient", merged_ids[0])) or {}
        loser["active"] = False
        loser["link"] = [{"other": {"reference": target}, "type": "replaced-by"}]
        save(ctx.server, "Patient", merged_ids[0], loser)
        winner = merged(survivor, update_traits=True)
        links = [x for x in winner.get("link") or [] if x.get("other", {}).get(
            "reference") != old]
        winner["link"] = [*links, {"other": {"reference": old}, "type": "replaces"}]
        save(ctx.server, "Patient", survivor.id, winner)
    return [*written, old, target], target


def _referencing(ctx: Context, rtype: str, patient: str) -> list[Any]:
    param = NARROWING_PARAM.get(rtype)
    if param is None or param == "_id":
        return []
    if rtype == "Basic":  # the HL7 message records: the adapter's own journal
        return matches(ctx.server, rtype, [(param, patient)])
    return all_matches(as_system(ctx.server, ctx.principal), ctx.server.limits, rtype,
                       [(param, patient)])


def _repoint(node: Any, paths: tuple[tuple[str, ...], ...], old: str, new: str) -> bool:
    changed = False
    for path in paths:
        for ref in walk(node, path):
            if isinstance(ref, dict) and ref.get("reference") == old:
                ref["reference"] = new
                changed = True
    return changed


def change_identifier(ctx: Context, msg: Message) -> tuple[list[str], str]:
    """A47: MRG-1 the incorrect identifier, PID-3 the correct one (same authority)."""
    mrg = msg.require("MRG")
    old_ids = [i for i in (dt.cx(f) for f in mrg.repetitions(1)) if i]
    pid = msg.require("PID")
    new_ids = [i for i in (dt.cx(f) for f in pid.repetitions(3)) if i]
    if not old_ids or not new_ids:
        raise MessageError("101", "A47 : MRG-1 et PID-3 sont obligatoires", "MRG^1^1")
    found = _find_by(ctx, old_ids)
    if not found:
        already = _find_by(ctx, new_ids)
        if already:  # a resent A47
            return [], f"Patient/{already[0]}"
        raise MessageError("204", "A47 : identifiant à corriger inconnu", "MRG^1^1")
    if len(found) > 1:
        raise IdentityConflict("A47 : MRG-1 désigne plusieurs patients",
                               f"Patient/{found[0]}")
    stored = body(as_system(ctx.server, ctx.principal).read("Patient", found[0])) or {}
    replacements = {i["system"]: i for i in new_ids}
    old_keys = {(i["system"], i["value"]) for i in old_ids}
    identifiers = []
    for i in stored.get("identifier") or []:
        if (i.get("system"), i.get("value")) in old_keys and i["system"] in replacements:
            identifiers.append({**i, "value": replacements.pop(i["system"])["value"]})
        else:
            identifiers.append(i)
    stored["identifier"] = identifiers
    tx = Transaction()
    ref = tx.update(f"Patient/{found[0]}", {k: v for k, v in stored.items() if k != "meta"})
    tx.run(ctx, "PID^1^3")
    return [ref], ref
