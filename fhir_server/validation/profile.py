"""Validate a resource against a StructureDefinition snapshot (FHIR R4 profiling.html).

A snapshot is compiled once into a tree of :class:`Rule` (children by name, slices by
name), keeping only elements that constrain something: cardinality tighter than the base,
fixed and pattern values, required bindings, our invariants, slicing. Structure and
datatypes are the R4 models' job (validation/resource.py); this adds the profile.

Slicing: a value belongs to the first slice whose fixed or pattern values at the
discriminator paths (``system``, ``url``, ``type``…) it matches. Invariants are FHIRPath,
compiled once into Python closures (validation/fhirpath.py, ADR 0027) with fhirpathpy for
the shapes and cases those leave to it; those of the base specification are left to the
models.
Messages are French: they name the missing clinical element from the element's ``short``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from fhir_server.core.canonical import BASE
from fhir_server.core.errors import Issue
from fhir_server.validation.fhirpath import Fallback, compile_fast
from terminology.service import Terminology, TerminologyError

NOUN = {"ServiceRequest": "la demande d'examen", "Patient": "le patient",
        "DiagnosticReport": "le compte rendu", "Consent": "le consentement",
        "ImagingStudy": "l'examen d'imagerie", "Practitioner": "le professionnel",
        "PractitionerRole": "le rôle du professionnel", "Organization": "la structure",
        "Observation": "l'observation", "AuditEvent": "la trace d'audit",
        "Extension": "l'extension"}


@dataclass
class Rule:
    id: str
    name: str
    short: str
    min: int = 0
    max: int | None = None  # None: unbounded
    types: tuple[str, ...] = ()
    fixed: Any = None
    pattern: Any = None
    binding: str | None = None  # required value set
    # key, severity, human, fhirpathpy's compiled form, ours (None: not compiled)
    constraints: list[tuple[str, str, str, Any, Any]] = field(default_factory=list)
    discriminators: tuple[str, ...] = ()
    closed: bool = False
    slices: dict[str, Rule] = field(default_factory=dict)
    children: dict[str, Rule] = field(default_factory=dict)
    must_support: bool = False

    def matters(self, base_min: int, base_max: str) -> bool:
        return bool(self.min > base_min or (self.max is not None and base_max == "*")
                    or self.fixed is not None or self.pattern is not None or self.binding
                    or self.constraints or self.discriminators or self.slices
                    or self.children or self.must_support)


def _max(value: str) -> int | None:
    return None if value == "*" else int(value)


def _typed(element: dict[str, Any], prefix: str) -> Any:
    for key, value in element.items():
        if key.startswith(prefix) and key[len(prefix):][:1].isupper():
            return value
    return None


def _split(eid: str) -> tuple[str, str, str | None]:
    """``A.b:s.c`` -> parent id, element name, slice name (of the last segment)."""
    head, _, last = eid.rpartition(".")
    name, _, slice_name = last.partition(":")
    return head, name, slice_name or None


def compile_profile(sd: dict[str, Any]) -> Rule:
    elements = sd["snapshot"]["element"]
    rules: dict[str, Rule] = {}
    kept: dict[str, bool] = {}
    for e in elements:
        binding = e.get("binding") or {}
        slicing = e.get("slicing")
        rule = Rule(
            id=e["id"], name=_split(e["id"])[1], short=e.get("short") or e["path"],
            min=int(e.get("min", 0)), max=_max(str(e.get("max", "*"))),
            types=tuple(t["code"] for t in e.get("type", [])),
            fixed=_typed(e, "fixed"), pattern=_typed(e, "pattern"),
            # bindings of the base specification are the R4 models' job (code enums)
            binding=binding.get("valueSet", "").split("|")[0]
            if binding.get("strength") == "required" and
            binding.get("valueSet", "").startswith(BASE) else None,
            constraints=[(c["key"], c.get("severity", "error"), c["human"],
                          fhirpathpy.compile(c["expression"], models["r4"]),
                          compile_fast(c["expression"]))
                         for c in e.get("constraint", []) if c.get("source") == BASE],
            discriminators=tuple(d["path"] for d in slicing["discriminator"])
            if slicing else (),
            closed=bool(slicing and slicing.get("rules") == "closed"),
            must_support=bool(e.get("mustSupport")))
        rules[e["id"]] = rule
        base = e.get("base") or {}
        kept[e["id"]] = rule.matters(int(base.get("min", 0)), str(base.get("max", "*"))) \
            or "sliceName" in e
    # children before parents, so a parent with an interesting child is kept too
    for e in reversed(elements):
        eid = e["id"]
        if "." not in eid and ":" not in eid:
            continue
        head, name, slice_name = _split(eid)
        if slice_name:
            sliced = f"{head}.{name}" if head else name
            rules[sliced].slices[slice_name] = rules[eid]
            kept[sliced] = True
        elif kept.get(eid):
            rules[head].children[name] = rules[eid]
            kept[head] = True
    for rule in rules.values():  # restore document order
        rule.children = dict(reversed(list(rule.children.items())))
        rule.slices = dict(reversed(list(rule.slices.items())))
    return rules[elements[0]["id"]]


def _contains(value: Any, pattern: Any) -> bool:
    """FHIR pattern semantics: every element of the pattern is present in the value."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_contains(value.get(k), v)
                                               for k, v in pattern.items())
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else []
        return all(any(_contains(item, p) for item in items) for p in pattern)
    return bool(value == pattern)


def _values(node: dict[str, Any], name: str) -> list[tuple[str, Any]]:
    if name.endswith("[x]"):
        stem = name[:-3]
        found = [(k, v) for k, v in node.items() if k.startswith(stem)
                 and k[len(stem):][:1].isupper()]
    else:
        found = [(name, node[name])] if name in node else []
    out: list[tuple[str, Any]] = []
    for key, value in found:
        if isinstance(value, list):
            out += [(key, v) for v in value]
        elif value is not None:
            out.append((key, value))
    return out


class ProfileValidator:
    def __init__(self, sd: dict[str, Any], terminology: Terminology) -> None:
        self.type: str = sd["type"]
        self.root = compile_profile(sd)
        self.terminology = terminology
        self.noun = NOUN.get(self.type, "la ressource")
        # per rule, computed once (issue 32): the slices' discriminator values and the
        # form of their expression
        self._discriminated: dict[int, list[tuple[str, list[tuple[str, Any]]]]] = {}
        self._slice_forms: dict[int, tuple[str | None, str | None, str | None]] = {}

    def validate(self, resource: dict[str, Any]) -> list[Issue]:
        issues: list[Issue] = []
        self._node(self.root, resource, self.type, resource, issues)
        return issues

    def must_support_missing(self, resource: dict[str, Any]) -> list[Issue]:
        """Information issues for absent mustSupport elements ($validate reports them)."""
        out: list[Issue] = []
        self._must_support(self.root, resource, self.type, out)
        return out

    def _must_support(self, rule: Rule, node: Any, expr: str, out: list[Issue]) -> None:
        if not isinstance(node, dict):
            return
        for name, child in rule.children.items():
            here = f"{expr}.{name.replace('[x]', '')}"
            values = _values(node, name)
            if child.must_support and not values and child.min == 0:
                out.append(Issue(f"élément à renseigner si disponible (mustSupport) : "
                                 f"{child.short}", code="informational",
                                 severity="information", expression=[here]))
            for _, value in values:
                self._must_support(child, value, here, out)

    # -- walking -----------------------------------------------------------------------
    def _node(self, rule: Rule, node: Any, expr: str, resource: dict[str, Any],
              issues: list[Issue]) -> None:
        self._value_rules(rule, node, expr, resource, issues)
        if not isinstance(node, dict):
            return
        for name, child in rule.children.items():
            values = _values(node, name)
            if values or child.min or child.slices:  # an absent optional one: no rule
                self._element(child, values, f"{expr}.{name.replace('[x]', '')}",
                              resource, issues)

    def _element(self, rule: Rule, values: list[tuple[str, Any]], expr: str,
                 resource: dict[str, Any], issues: list[Issue]) -> None:
        self._count(rule, len(values), expr, issues)
        if rule.slices:
            buckets: dict[str, list[tuple[str, Any]]] = {name: [] for name in rule.slices}
            for key, value in values:
                name = self._slice_of(rule, value)
                if name is not None:
                    buckets[name].append((key, value))
                elif rule.closed:
                    issues.append(Issue(f"{self.noun} contient une valeur non prévue par le "
                                        f"profil à {expr}", code="structure",
                                        expression=[expr]))
            for name, slice_rule in rule.slices.items():
                self._element(slice_rule, buckets[name], self._slice_expr(slice_rule, expr),
                              resource, issues)
        for i, (key, value) in enumerate(values):
            if rule.types and rule.name.endswith("[x]") and \
                    not any(key.lower().endswith(t.lower()) for t in rule.types):
                issues.append(Issue(f"{rule.short} : type {key} non autorisé par le profil "
                                    f"(attendu : {', '.join(rule.types)})", code="structure",
                                    expression=[expr]))
            here = f"{expr}[{i}]" if len(values) > 1 else expr
            self._node(rule, value, here, resource, issues)

    def _count(self, rule: Rule, n: int, expr: str, issues: list[Issue]) -> None:
        if n < rule.min:
            issues.append(Issue(f"{self.noun} doit préciser {rule.short} ({expr} : "
                                f"au moins {rule.min}, trouvé {n})", code="required",
                                expression=[expr]))
        if rule.max is not None and n > rule.max:
            issues.append(Issue(f"{rule.short} : au plus {rule.max} attendu(s), trouvé {n} "
                                f"({expr})", code="structure", expression=[expr]))

    def _value_rules(self, rule: Rule, value: Any, expr: str, resource: dict[str, Any],
                     issues: list[Issue]) -> None:
        if rule.fixed is None and rule.pattern is None and not rule.binding \
                and not rule.constraints:
            return
        if rule.fixed is not None and value != rule.fixed:
            issues.append(Issue(f"{rule.short} : la valeur doit être {rule.fixed!r} ({expr})",
                                code="value", expression=[expr]))
        if rule.pattern is not None and not _contains(value, rule.pattern):
            issues.append(Issue(f"{rule.short} : la valeur ne correspond pas au motif "
                                f"attendu {rule.pattern} ({expr})", code="value",
                                expression=[expr]))
        if rule.binding:
            self._binding(rule, value, expr, issues)
        for key, severity, human, compiled, fast in rule.constraints:
            result = None
            if fast is not None:
                try:
                    result = fast(value)
                except Fallback:
                    pass  # a case the compiled form leaves to fhirpathpy
            if result is None:
                try:
                    result = compiled(value, {"resource": resource})
                except Exception as exc:  # an invariant that cannot run is reported
                    issues.append(Issue(f"{key} : invariant non évaluable ({exc})",
                                        code="exception", severity="warning",
                                        expression=[expr]))
                    continue
            if result == [False]:
                issues.append(Issue(f"{human} [{key}]", code="invariant",
                                    severity="error" if severity == "error" else "warning",
                                    expression=[expr]))

    def _binding(self, rule: Rule, value: Any, expr: str, issues: list[Issue]) -> None:
        assert rule.binding
        codings: list[tuple[Any, Any]]
        if isinstance(value, str):  # code
            codings = [(None, value)]
        elif not isinstance(value, dict):
            return
        elif "code" in value:  # Coding
            codings = [(value.get("system"), value.get("code"))]
        else:  # CodeableConcept
            codings = [(c.get("system"), c.get("code")) for c in value.get("coding") or []
                       if isinstance(c, dict)]
        try:
            ok = any(code is not None and self.terminology.in_value_set(rule.binding, system,
                                                                         code)
                     for system, code in codings)
        except TerminologyError as exc:
            issues.append(Issue(f"{rule.short} : {exc}", code="not-supported",
                                severity="warning", expression=[expr]))
            return
        if not ok:
            shown = ", ".join(f"{s}|{c}" if s else str(c) for s, c in codings) or "aucun code"
            issues.append(Issue(f"{rule.short} : le code {shown} n'appartient pas au jeu de "
                                f"valeurs {rule.binding} ({expr})", code="code-invalid",
                                expression=[expr]))

    # -- slicing -----------------------------------------------------------------------
    def _slice_of(self, sliced: Rule, value: Any) -> str | None:
        slices = self._discriminated.get(id(sliced))
        if slices is None:
            slices = self._discriminated[id(sliced)] = [
                (name, [(path, want) for path in sliced.discriminators
                        if (want := self._slice_value(rule, path)) is not None])
                for name, rule in sliced.slices.items()]
        for name, wanted in slices:
            if wanted and all(_contains(value.get(path) if isinstance(value, dict) else None,
                                        want) for path, want in wanted):
                return name
        return None

    @staticmethod
    def _slice_value(rule: Rule, path: str) -> Any:
        child = rule.children.get(path)
        if child is not None and (child.fixed is not None or child.pattern is not None):
            return child.fixed if child.fixed is not None else child.pattern
        if isinstance(rule.pattern, dict) and path in rule.pattern:
            return rule.pattern[path]
        return None

    def _slice_expr(self, rule: Rule, expr: str) -> str:
        form = self._slice_forms.get(id(rule))
        if form is None:
            form = self._slice_forms[id(rule)] = self._slice_form(rule)
        url, system, code = form
        if url is not None and expr.endswith(".extension"):
            return f"{expr[:-len('.extension')]}.extension('{url}')"
        if system is not None:
            return f"{expr}.where(system = '{system}')"
        if code is not None:
            return f"{expr}.where(type.coding.code = '{code}')"
        return f"{expr}:{rule.name}"

    def _slice_form(self, rule: Rule) -> tuple[str | None, str | None, str | None]:
        """What names a slice in an expression: its extension url, its identifier system,
        its identifier type code (each when the slice fixes it)."""
        url = self._slice_value(rule, "url")
        system = self._slice_value(rule, "system")
        kind = self._slice_value(rule, "type")
        return (url if isinstance(url, str) else None,
                system if isinstance(system, str) else None,
                f"{kind['coding'][0].get('code')}"
                if isinstance(kind, dict) and kind.get("coding") else None)
