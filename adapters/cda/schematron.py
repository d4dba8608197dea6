"""Every rule of the official ANS schematrons, evaluated by a real Schematron
implementation (issue 26; R-REP-6, R-INT-1; ADR 0021).

Pipeline (ISO/IEC 19757-3 Annex A reference implementation, Rick Jelliffe's "ISO
Schematron skeleton", shipped in the lxml wheel):

1. ``iso_dsdl_include.xsl`` assembles the schema: every ``<include>``, recursively;
2. ``iso_abstract_expand.xsl`` instantiates abstract patterns (``is-a``/``param``);
3. ``iso_svrl_for_xslt1.xsl`` compiles the schema, in its default phase, into an XSLT
   stylesheet that writes an SVRL report. The ANS schematrons declare
   ``queryBinding="xslt2"``: the skeleton's only gate on that is its ``iso:schema``
   template, so :data:`_BINDING` adds one for ``xslt2`` that writes a version 2.0
   stylesheet. Everything else (rules, ``extends``, ``let``, phases, messages) is the
   skeleton's own code.

The stylesheet then runs in SaxonC-HE (XSLT 3.0 / XPath 3.1 processor, ``saxonche``), so
the XPath 2.0 of the rules and ``document()`` on the kit's value-set files are evaluated
as the ANS tooling does. Steps 1-3 run once per schematron and kit version: the compiled
stylesheet is cached on disk (:func:`cache_dir`, keyed by a hash of the kit, the skeleton
and this module); Saxon compiles it once per process.

Value sets the kit names but does not ship (most ``JDV_*.xml`` of the CI-SIS, several
ART-DECOR ``voc-*.xml``) cannot be read: ``document()`` on a missing file is a fatal
error in XSLT 3.0. The stylesheets therefore resolve their relative paths in an
*overlay* of the kit (symbolic links to every file of the kit, and for each missing
value set an empty SVS file), and an assertion that fails only because its value set is
one of those missing files is reported as :attr:`Report.unverifiable`, not as a failure:
we cannot claim a code is outside a list we do not have, nor that it is in it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import multiprocessing
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lxml import etree

log = logging.getLogger("teleimagerie.cda")

ROOT = Path(__file__).resolve().parents[2]
SCH = "http://purl.oclc.org/dsdl/schematron"
SVRL = "http://purl.oclc.org/dsdl/svrl"
# The five schematrons of the kit that apply to an imaging report. The CR-IMG one is the
# volet's (its header rules require the N3 templates); an N1 is a CI-SIS document with a
# PDF body (XDS-SD), checked by the others (CI-SIS "Structuration minimale des documents
# de santé", IHE and ANS header models).
CR_IMG = "CI-SIS_IMG-CR-IMG_2024.01.sch"
STRUCT_MIN = "profils/structurationMinimale/ASIP-STRUCT-MIN-StrucMin.sch"
CONTENT_MODELS = "profils/CI-SIS_ModelesDeContenusCDA.sch"
ANS_MODELS = "profils/CI-SIS_Modeles_ANS.sch"
IHE = "profils/IHE.sch"
BY_LEVEL: dict[str, tuple[str, ...]] = {
    "N3": (CR_IMG, STRUCT_MIN, CONTENT_MODELS, ANS_MODELS, IHE),
    "N1": (STRUCT_MIN, CONTENT_MODELS, ANS_MODELS, IHE),
}
# Version of the compilation below: bump it when the pipeline changes (cache key).
PIPELINE = "iso-skeleton-2010/xslt2-binding/1"
REMEMBER = 512  # verdicts (document, schematron) a validator keeps

# The skeleton accepts queryBinding xslt/xslt1/exslt only; the ANS schematrons are xslt2.
# This adds the xslt2 gate, identical to the skeleton's xslt one but for the version of
# the stylesheet written (so Saxon runs it as XSLT 2.0+, not in 1.0 compatibility mode).
_BINDING = """<?xml version="1.0"?>
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:axsl="http://www.w3.org/1999/XSL/TransformAlias"
    xmlns:iso="http://purl.oclc.org/dsdl/schematron">
  <xsl:import href="{skeleton}"/>
  <xsl:namespace-alias stylesheet-prefix="axsl" result-prefix="xsl"/>
  <xsl:template match="iso:schema[@queryBinding='xslt2']" priority="20">
    <axsl:stylesheet>
      <xsl:apply-templates select="iso:ns"/>
      <xsl:attribute name="version">2.0</xsl:attribute>
      <xsl:apply-templates select="." mode="stylesheetbody"/>
    </axsl:stylesheet>
  </xsl:template>
</xsl:stylesheet>
"""
_EMPTY_VALUE_SET = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
                    b"<!-- absent du kit ANS : jeu de valeurs non verifiable -->\n"
                    b'<RetrieveValueSetResponse xmlns="urn:ihe:iti:svs:2008">'
                    b'<ValueSet id="absent"><ConceptList/></ValueSet>'
                    b"</RetrieveValueSetResponse>\n")
_LITERAL_XML = re.compile(r"""['"]([^'"\s]+\.xml)['"]""")


class Unavailable(RuntimeError):
    """The validator cannot run here (no ANS kit, no saxonche)."""


@dataclass(frozen=True)
class Failure:
    """One failed assertion, as the SVRL reports it."""

    schematron: str  # file of the kit, relative to ``schematrons/``
    pattern: str  # id of the (expanded) pattern
    location: str  # XPath of the node in the document
    message: str  # the assertion's text, whitespace normalised
    test: str = ""  # the assertion's XPath test
    role: str = ""

    @property
    def rule(self) -> str:
        """What names the rule for a person: the pattern and the assertion's message."""
        return f"{self.pattern} : {self.message}"

    def line(self) -> str:
        return f"{self.schematron} [{self.pattern}] {self.location} : {self.message}"


@dataclass
class Report:
    failures: list[Failure] = field(default_factory=list)
    # assertions whose verdict depends on a value set the kit does not ship
    unverifiable: list[Failure] = field(default_factory=list)
    fired: int = 0  # rules fired (evidence that the rules ran)

    @property
    def valid(self) -> bool:
        return not self.failures


def references() -> Path | None:
    """The ANS CDA kit: ``TELEIMG_ANS_CDA`` or ``../shared/references/ans-cda``."""
    candidates = [os.environ.get("TELEIMG_ANS_CDA", ""),
                  str(ROOT.parent / "shared" / "references" / "ans-cda")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "schematrons" / CR_IMG).exists():
            return Path(candidate).resolve()
    return None


def cache_dir() -> Path:
    """Where compiled stylesheets live: ``TELEIMG_SCHEMATRON_CACHE`` or ``build/schematron``
    in the source tree (ignored by git; rebuilt when the kit changes)."""
    configured = os.environ.get("TELEIMG_SCHEMATRON_CACHE")
    return Path(configured) if configured else ROOT / "build" / "schematron"


def available() -> bool:
    try:
        import saxonche  # noqa: F401
    except ImportError:
        return False
    return references() is not None


def _skeleton_dir() -> Path:
    import lxml.isoschematron

    return Path(lxml.isoschematron.__file__).parent / "resources" / "xsl" / \
        "iso-schematron-xslt1"


def _kit_hash(kit: Path) -> str:
    """A digest of everything the compiled stylesheets depend on: the kit's schematrons
    and value sets, the skeleton, this pipeline."""
    digest = hashlib.sha256(PIPELINE.encode() + _BINDING.encode() + str(kit).encode())
    for folder in (kit / "schematrons", kit / "jeuxDeValeurs", _skeleton_dir()):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


class _Saxon:
    """One SaxonC processor per process; its calls are serialised (one lock)."""

    def __init__(self) -> None:
        from saxonche import PySaxonProcessor

        self.lock = threading.RLock()
        self.processor = PySaxonProcessor(license=False)
        # no optimisation: SaxonC-HE 13.1 fails to compile the skeleton's stylesheets with
        # loop-lifting on ("Bad parent pointer in expression tree"), and without any the
        # 25 000 assertions of structuration minimale compile in two thirds of the time
        # while a document's evaluation costs the same (measured; ADR 0021)
        self.processor.set_configuration_property(
            "http://saxon.sf.net/feature/optimizationLevel", "0")
        self.xslt = self.processor.new_xslt30_processor()

    def compile(self, path: Path) -> Any:
        with self.lock:
            return self.xslt.compile_stylesheet(stylesheet_file=str(path))


@cache
def _saxon() -> _Saxon:
    return _Saxon()


class Validator:
    """The ANS schematrons of one kit, compiled (on disk, then in memory) on first use."""

    def __init__(self, kit: Path, cache: Path | None = None) -> None:
        self.kit = kit
        self.root = (cache or cache_dir()) / _kit_hash(kit)
        self.overlay = self.root / "kit"
        self._executables: dict[str, Any] = {}
        self._absent: dict[str, frozenset[str]] = {}  # schematron -> missing files
        self._variables: dict[str, dict[str, str]] = {}  # schematron -> $var -> file
        # (document digest, schematron) -> its part of the report, oldest first
        self._verdicts: OrderedDict[tuple[str, str], Report] = OrderedDict()
        self._lock = threading.RLock()

    # -- compilation ----------------------------------------------------------------------
    def stylesheet(self, name: str) -> Path:
        """The compiled stylesheet of schematron ``name`` (compiled once, cached)."""
        target = self.root / (name.replace("/", "__") + ".xsl")
        meta = target.with_suffix(".absent")
        with self._lock:
            if not target.exists() or not meta.exists():
                # several processes (xdist workers, server workers) may start on an empty
                # cache: one compiles, the others wait and read its result
                self.root.mkdir(parents=True, exist_ok=True)
                with open(self.root / ".lock", "w") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    if not target.exists() or not meta.exists():
                        self._compile(name, target, meta)
            if name not in self._absent:
                lines = meta.read_text().splitlines()
                self._absent[name] = frozenset(x for x in lines if not x.startswith("$"))
                self._variables[name] = dict(
                    x[1:].split("=", 1) for x in lines if x.startswith("$"))
        return target

    def _compile(self, name: str, target: Path, meta: Path) -> None:
        source = self.kit / "schematrons" / name
        if not source.exists():
            raise Unavailable(f"schématron absent du kit : {source}")
        skeleton = _skeleton_dir()
        saxon = _saxon()
        self._mirror()
        missing = self._missing_includes(source)
        # the skeleton runs on the overlay's copy, where a missing included file is an
        # empty pattern: the rest of the schema still runs (the gap is listed, ADR 0021)
        source = self.overlay / "schematrons" / name
        with saxon.lock:
            include = saxon.xslt.compile_stylesheet(
                stylesheet_file=str(skeleton / "iso_dsdl_include.xsl"))
            expand = saxon.xslt.compile_stylesheet(
                stylesheet_file=str(skeleton / "iso_abstract_expand.xsl"))
            binding = self.root / "iso_svrl_for_xslt2.xsl"
            binding.parent.mkdir(parents=True, exist_ok=True)
            binding.write_text(_BINDING.format(
                skeleton=(skeleton / "iso_svrl_for_xslt1.xsl").as_uri()))
            compiler = saxon.xslt.compile_stylesheet(stylesheet_file=str(binding))
            # fired rules are counted: evidence, in the tests, that the rules ran
            compiler.set_parameter("generate-fired-rule",
                                   saxon.processor.make_string_value("true"))
            included = include.transform_to_value(source_file=str(source)).head
            expanded = expand.transform_to_value(xdm_node=included).head
            schema_text = expanded.to_string()
            compiled = compiler.transform_to_string(xdm_node=expanded)
        schema = etree.fromstring(schema_text.encode())
        absent, variables = self._value_sets(schema, name)
        absent |= {f"include:{m}" for m in missing}
        stylesheet = etree.fromstring(compiled.encode())
        # document('../jeuxDeValeurs/…') and doc('include/…') resolve against the
        # stylesheet's base URI: the schematron's place in the overlay
        stylesheet.set("{http://www.w3.org/XML/1998/namespace}base",
                       (self.overlay / "schematrons" / name).as_uri())
        # the list of gaps first, the stylesheet last: a stylesheet on disk is complete
        _atomic(meta, "\n".join([*sorted(absent), *(f"${k}={v}" for k, v in
                                                   sorted(variables.items()))]).encode())
        _atomic(target, etree.tostring(stylesheet, xml_declaration=True, encoding="UTF-8"))
        asserts = len(schema.findall(f".//{{{SCH}}}assert")) + \
            len(schema.findall(f".//{{{SCH}}}report"))
        log.info("schématron %s compilé : %d assertions, %d jeux de valeurs absents du kit",
                 name, asserts, len(absent))

    def _value_sets(self, schema: etree._Element, name: str
                    ) -> tuple[set[str], dict[str, str]]:
        """Mirror the kit in the overlay (links), and write an empty SVS file for each
        value-set file the schema reads and the kit lacks; returns those missing paths
        (as written in the schema) and the variables that name them."""
        base = self.overlay / "schematrons" / name
        self._mirror()
        absent: set[str] = set()
        variables: dict[str, str] = {}
        for node in schema.iter(f"{{{SCH}}}let", f"{{{SCH}}}assert", f"{{{SCH}}}report",
                                f"{{{SCH}}}rule"):
            text = " ".join(node.get(a, "") for a in ("value", "test", "context"))
            for literal in _LITERAL_XML.findall(text):
                if literal.startswith(("http:", "https:")):
                    continue
                real = (self.kit / "schematrons" / name).parent / literal
                if real.exists():
                    continue
                stub = Path(os.path.normpath(base.parent / literal))
                stub.parent.mkdir(parents=True, exist_ok=True)
                if not stub.exists():
                    stub.write_bytes(_EMPTY_VALUE_SET)
                absent.add(literal)
                if node.tag == f"{{{SCH}}}let" and node.get("name"):
                    variables[node.get("name", "")] = literal
        return absent, variables

    def _missing_includes(self, source: Path) -> list[str]:
        """Files that ``source`` includes (recursively) and the kit does not ship; each gets
        an empty pattern in the overlay. Returns their paths relative to the kit."""
        missing: list[str] = []
        seen: set[Path] = set()
        todo = [source]
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            try:
                tree = etree.parse(str(path))
            except (OSError, etree.XMLSyntaxError):
                continue
            for node in tree.iter(f"{{{SCH}}}include", f"{{{SCH}}}extends"):
                href = (node.get("href") or "").split("#")[0]
                if not href:
                    continue
                target = Path(os.path.normpath(path.parent / href))
                if target.exists():
                    todo.append(target)
                    continue
                relative = target.relative_to(self.kit)
                stub = self.overlay / relative
                if not stub.exists():
                    stub.parent.mkdir(parents=True, exist_ok=True)
                    stub.write_text(f'<pattern xmlns="{SCH}" id="absent-du-kit-'
                                    f'{re.sub(r"[^A-Za-z0-9_.-]", "_", target.stem)}"/>\n')
                missing.append(str(relative))
        return sorted(set(missing))

    def _mirror(self) -> None:
        """The overlay: the kit's directories, each file a symbolic link to the kit's."""
        marker = self.overlay / ".mirrored"
        if marker.exists():
            return
        for folder in ("schematrons", "jeuxDeValeurs"):
            for path in (self.kit / folder).rglob("*"):
                link = self.overlay / path.relative_to(self.kit)
                if path.is_dir():
                    link.mkdir(parents=True, exist_ok=True)
                elif not link.exists() and not link.is_symlink():
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(path)
        marker.touch()

    def gaps(self, name: str) -> list[str]:
        """What the kit lacks for schematron ``name``: value-set files its rules read
        (their assertions are :attr:`Report.unverifiable`) and included files (``include:``,
        their rules cannot run)."""
        self.stylesheet(name)
        return sorted(self._absent[name])

    def _executable(self, name: str) -> Any:
        with self._lock:
            if name not in self._executables:
                self._executables[name] = _saxon().compile(self.stylesheet(name))
            return self._executables[name]

    def warm(self, names: Iterable[str] = BY_LEVEL["N3"]) -> None:
        """Compile ``names`` now (a server does it at start, not on the first report)."""
        for name in names:
            self._executable(name)

    def compiled(self) -> list[str]:
        """The schematrons compiled in memory, ready to validate."""
        with self._lock:
            return sorted(self._executables)

    # -- validation -----------------------------------------------------------------------
    def validate(self, xml: bytes, schematrons: Sequence[str] | None = None) -> Report:
        """Every assertion of ``schematrons`` (by default those of the document's level:
        :data:`BY_LEVEL`) over one CDA document. The document is parsed once for all of
        them; the verdict of a schematron on the same bytes is remembered (the same
        document is checked before the report is accepted and before it is sent)."""
        names = schematrons if schematrons is not None else BY_LEVEL[level_of(xml)]
        digest = hashlib.sha256(xml).hexdigest()
        report = Report()
        node = None
        saxon = _saxon()
        for name in names:
            part = self._verdicts.get((digest, name))
            if part is None:
                executable = self._executable(name)
                with saxon.lock:
                    if node is None:
                        node = saxon.processor.parse_xml(xml_text=xml.decode("utf-8"))
                    svrl = executable.transform_to_string(xdm_node=node)
                part = Report()
                self._read(name, svrl, part)
                self._remember((digest, name), part)
            report.failures += part.failures
            report.unverifiable += part.unverifiable
            report.fired += part.fired
        return report

    def _remember(self, key: tuple[str, str], part: Report) -> None:
        with self._lock:
            self._verdicts[key] = part
            while len(self._verdicts) > REMEMBER:
                self._verdicts.popitem(last=False)

    def _read(self, name: str, svrl: str, report: Report) -> None:
        root = etree.fromstring(svrl.encode())
        pattern = ""
        absent = self._absent.get(name, frozenset())
        variables = self._variables.get(name, {})
        for node in root:
            if node.tag == f"{{{SVRL}}}active-pattern":
                pattern = node.get("id") or node.get("name") or ""
            elif node.tag == f"{{{SVRL}}}fired-rule":
                report.fired += 1
            elif node.tag == f"{{{SVRL}}}failed-assert" or (
                    node.tag == f"{{{SVRL}}}successful-report"
                    and node.get("role", "").lower() in ("error", "fatal")):
                text = " ".join("".join(node.itertext()).split())
                failure = Failure(name, pattern, node.get("location", ""), text,
                                  node.get("test", ""), node.get("role", ""))
                if node.get("role", "").lower() in ("warning", "info", "information"):
                    continue  # ART-DECOR's warnings are advice, not conformance
                if _reads_absent(failure, absent, variables):
                    report.unverifiable.append(failure)
                else:
                    report.failures.append(failure)


def _reads_absent(failure: Failure, absent: frozenset[str],
                  variables: dict[str, str]) -> bool:
    """Whether the failed test reads a value set the kit does not ship: a literal path
    to it, or a variable (``$JDV_…``) whose value is one."""
    if "doc(" not in failure.test and "document(" not in failure.test:
        return False
    if any(path in failure.test for path in absent):
        return True
    named = {v for v in re.findall(r"\$([\w.\-]+)", failure.test) if v in variables}
    if named:
        return True
    # an abstract pattern's message names its value set (dansJeuDeValeurs: "doit faire
    # partie du jeu de valeurs ../jeuxDeValeurs/JDV_…"): the expanded test then reads it
    return any(path in failure.message for path in absent)


def level_of(xml: bytes) -> str:
    """``N1`` (nonXMLBody) or ``N3`` (structuredBody)."""
    return "N1" if b"nonXMLBody" in xml else "N3"


_default: Validator | None = None
_default_lock = threading.Lock()


class Isolated:
    """A :class:`Validator` in a process of its own, for servers (ADR 0021). SaxonC holds
    the GIL while it compiles (20-30 s per process) and while it transforms (about 1 s
    per N3): in the server's process that stalls its event loop and every other request
    — and uvicorn's multi-worker supervisor kills a worker whose loop does not answer.
    Here the server's threads only wait on a pipe; a dead validator process is replaced
    once, a second death is an error."""

    def __init__(self, kit: Path, cache: Path | None = None, timeout: float = 900.0) -> None:
        self.kit = kit
        self._cache = cache
        self._timeout = timeout
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        for attempt in (1, 2):
            with self._lock:
                if self._pool is None:
                    self._pool = ProcessPoolExecutor(
                        1, mp_context=multiprocessing.get_context("spawn"),
                        initializer=_child_init,
                        initargs=(str(self.kit), str(self._cache or "")))
                pool = self._pool
            try:
                return pool.submit(fn, *args).result(timeout=self._timeout)
            except BrokenProcessPool:
                with self._lock:
                    if self._pool is pool:
                        self._pool = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def validate(self, xml: bytes, schematrons: Sequence[str] | None = None) -> Report:
        """As :meth:`Validator.validate`, in the validator's process."""
        names = tuple(schematrons) if schematrons is not None else None
        report: Report = self._call(_child_validate, xml, names)
        return report

    def warm(self, names: Iterable[str] = BY_LEVEL["N3"]) -> None:
        self._call(_child_warm, tuple(names))

    def compiled(self) -> list[str]:
        names: list[str] = self._call(_child_compiled)
        return names

    def close(self, wait: bool = False) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=wait, cancel_futures=True)
                self._pool = None


_child: Validator | None = None


def _child_init(kit: str, cache: str) -> None:
    global _child
    _child = Validator(Path(kit), Path(cache) if cache else None)
    parent = os.getppid()

    def orphaned() -> None:  # the server was killed: nobody will ask again (no stray)
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=orphaned, name="parent-watch", daemon=True).start()


def _child_validate(xml: bytes, names: tuple[str, ...] | None) -> Report:
    assert _child is not None
    return _child.validate(xml, names)


def _child_warm(names: tuple[str, ...]) -> None:
    assert _child is not None
    _child.warm(names)


def _child_compiled() -> list[str]:
    assert _child is not None
    return _child.compiled()


def default() -> Validator:
    """The process's validator over the kit found by :func:`references`."""
    global _default
    with _default_lock:
        if _default is None:
            kit = references()
            if kit is None:
                raise Unavailable("kit CDA de l'ANS introuvable (TELEIMG_ANS_CDA ou "
                                  "../shared/references/ans-cda)")
            try:
                import saxonche  # noqa: F401
            except ImportError as exc:
                raise Unavailable("saxonche (SaxonC-HE) n'est pas installé") from exc
            from adapters.cda import service

            # the host's validation service when there is one (ADR 0021 §7): one Saxon
            # compilation for every process, not one each
            _default = service.shared(kit) or Validator(kit)
        return _default
