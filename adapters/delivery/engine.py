"""Planning and sending report deliveries (issue 8; R-REP-5, R-REP-6, R-CONS-5, R-SEC-5,
R-INT-1, R-INT-2).

:class:`Planner` runs in the report's write unit (called by the CDA publisher): one
delivery per channel and recipient — the DMP (N3 over XDS.b), the requesting site's RIS
(N1 in MDM^T02/T10 over MLLP, when a route exists) and each professional on the
distribution list (MSSanté mail with the PDF and the XDM archive).

:class:`Sender` works the outbox: before each attempt it checks what may hold a delivery
(the patient's opposition, an identity the DMP must not receive, a document masked from
professionals for MSSanté, a channel not configured, no MSSanté address, the previous
version not yet settled); then it marks the
attempt durably (a lease: a crash mid-send retries later, with the same document ids,
MSH-10 and Message-ID so the peer sees a duplicate, not a second document), sends, and
records the outcome: sent, retry with exponential backoff, dead letter after
``max_attempts``, or refused for good. Every attempt and every hold is audited.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapters.cda import codes, metadata
from adapters.cda.document import identifier
from adapters.delivery.outbox import (
    Delivery,
    Outbox,
    backoff,
    delivery_id,
    later,
    now,
    register_all,
)
from adapters.delivery.settings import DeliverySettings
from adapters.exchange import DCM, ENTITY_TYPE, OBJECT_ROLE, event
from adapters.passes import repeat
from fhir_server import logs
from fhir_server.security import masking
from fhir_server.workflow.events import DocumentsAvailable, DocumentsWithdrawn, Events
from fhir_server.workflow.identity import status as identity_status
from fhir_server.workflow.origin import finess, origin
from fhir_server.workflow.records import load, ref_of

if TYPE_CHECKING:
    from adapters.cda.sources import Sources
    from adapters.hl7v2.settings import Hl7Settings
    from fhir_server.server.dispatch import FhirServer

log = logging.getLogger("teleimagerie.delivery")
QUALIFIED = frozenset({"VALI", "QUAL"})  # identities the DMP may receive (INS réf. §3)
EVENT_TYPE = "urn:ihe:event-type-code"
SUBTYPES = {
    "dmp": {"system": EVENT_TYPE, "code": "ITI-41",
            "display": "Provide and Register Document Set-b"},
    "mssante": {"system": EVENT_TYPE, "code": "ITI-32",
                "display": "Distribute Document Set on Media"},
}
UPDATE = {"system": EVENT_TYPE, "code": "ITI-57", "display": "Update Document Set"}


# -- planning --------------------------------------------------------------------------------
def recipients(server: FhirServer, patient: str, request: dict[str, Any],
               author: str | None) -> list[str]:
    """The professionals a report is mailed to: the distribution list (R-REP-5) without
    the patient and the imager who wrote it. Opposed ones stay: their delivery is visibly
    held (R-CONS-5), not silently dropped."""
    from fhir_server.workflow.reports import distribution

    return [ref for role, ref in distribution(server, patient, request)
            if role != "patient" and ref != author and
            ref.split("/")[0] in ("Practitioner", "PractitionerRole", "Organization")]


def mss_address(server: FhirServer, ref: str | None, settings: DeliverySettings) -> str:
    """The recipient's MSSanté address: an e-mail telecom on a secure messaging domain
    (R-SEC-5: never a personal mailbox)."""
    resource = load(server, ref) or {}
    points = list(resource.get("telecom") or [])
    if resource.get("resourceType") == "PractitionerRole":
        points += (load(server, ref_of(resource.get("practitioner"))) or {}).get(
            "telecom") or []
    for point in points:
        value = str(point.get("value") or "").removeprefix("mailto:")
        if point.get("system") == "email" and settings.secure(value):
            return value
    return ""


class Planner:
    """Plans the deliveries of one document version, in the report's write unit."""

    def __init__(self, settings: DeliverySettings, hl7: Hl7Settings) -> None:
        register_all()  # before the first delivery is indexed
        self.settings = settings
        self.hl7 = hl7

    def subscribe(self, events: Events) -> None:
        events.subscribe(DocumentsAvailable, lambda server, e: self.plan(
            server, e.sources, e.documents))
        events.subscribe(DocumentsWithdrawn, lambda server, e: self.withdraw(
            server, e.report, e.request))

    def plan(self, server: FhirServer, src: Sources,
             documents: dict[str, dict[str, Any]]) -> list[Delivery]:
        """The deliveries of a version's ``documents`` (one per channel and recipient)."""
        outbox = Outbox(server)
        planned = []
        patient = f"Patient/{src.patient['id']}"
        report = f"DiagnosticReport/{src.report_id}"
        request = f"ServiceRequest/{src.request['id']}" if src.request else None

        def add(channel: str, recipient: str | None, address: str, level: str) -> None:
            key = recipient or address or channel
            d = Delivery(id=delivery_id(src.report_id, src.version, channel, key),
                         channel=channel, recipient=recipient, address=address,
                         document=f"DocumentReference/{documents[level]['id']}",
                         patient=patient, report=report, version=src.version, request=request)
            if src.version > 1:
                previous = delivery_id(src.report_id, src.version - 1, channel, key)
                if outbox.get(previous) is not None:
                    d.previous = previous
            if outbox.add(d):
                planned.append(d)

        channels = self.settings.channels
        if "dmp" in channels:
            add("dmp", None, "DMP", "N3")
        if "ris" in channels:  # always planned: an origin without a route waits, visibly
            add("ris", f"Organization/{src.site['id']}" if src.site else None,
                finess(src.site), "N1")
        if "mssante" in channels:
            author = f"Practitioner/{src.author['id']}" if src.author else None
            for ref in recipients(server, patient, src.request or {}, author):
                add("mssante", ref, mss_address(server, ref, self.settings), "N3")
        return planned

    def withdraw(self, server: FhirServer, report: str, request: str) -> list[Delivery]:
        """The report was entered in error: what waits is cancelled; what was sent — or
        may have been, an attempt was made — is withdrawn from the same recipient by a
        ``suppression`` delivery naming the latest such version (it waits for that one
        to settle). In the report's write unit, like the planning."""
        outbox = Outbox(server)
        reached: dict[tuple[str, str], Delivery] = {}
        for d in outbox.find([("based-on", request)], limit=1000):
            if d.report != report or d.action != "transmission":
                continue
            if not d.settled:
                d.to("annule", "compte rendu retiré (entered-in-error)")
                outbox.update(d)
            key = (d.channel, d.recipient or d.address or d.channel)
            if (d.sent or d.attempts) and (key not in reached or
                                            reached[key].version < d.version):
                reached[key] = d
        planned = []
        for (channel, recipient), d in sorted(reached.items()):
            w = Delivery(id=delivery_id(report.split("/", 1)[1], d.version, channel,
                                        recipient, "suppression"),
                         channel=channel, recipient=d.recipient, address=d.address,
                         document=d.document, patient=d.patient, report=report,
                         version=d.version, request=d.request, previous=d.id,
                         action="suppression")
            if outbox.add(w):
                planned.append(w)
        return planned


# -- sending ---------------------------------------------------------------------------------
@dataclass
class Outcome:
    result: str  # sent | retry | rejected
    detail: str
    peer: str = ""
    response: str = ""


Channel = Callable[[Delivery], Awaitable[Outcome]]


class Sender:
    """Works the outbox; one pass with :meth:`run_once`, forever with :meth:`run`."""

    def __init__(self, server: FhirServer, settings: DeliverySettings, hl7: Hl7Settings,
                 check: Callable[[bytes], str | None] | None = None) -> None:
        from adapters.delivery import channels

        register_all()
        self.server = server
        # the document's first failed ANS schematron rule, None when conformant (issue 26;
        # adapters.cda.check.delivery_check); None: documents are not checked here
        self.check = check
        self.settings = settings
        self.hl7 = hl7
        self.outbox = Outbox(server)
        self.channels: dict[str, Channel] = channels.make(self)
        self.wake = asyncio.Event()

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking store or socket work off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def run_once(self) -> int:
        due = await self.call(self.outbox.due)
        for d in due:
            await self.process(d)
        return len(due)

    async def run(self, interval: float = 2.0) -> None:
        await repeat(self.run_once, self.wake, interval, log)

    async def process(self, d: Delivery) -> None:
        fresh = await self.call(self.outbox.get, d.id)
        if fresh is None or fresh.settled:
            return  # cancelled (report withdrawn) since it was listed as due
        held = await self.call(self.hold, d)
        if held is not None:
            state, detail = held
            changed = (state, detail) != (d.state, d.detail)
            d.to(state, detail, later(self.settings.recheck))
            await self.call(self.outbox.update, d)
            if changed:
                log.warning("diffusion %s (%s) : %s — %s", d.id, d.channel, state, detail)
                self._audit(d, Outcome("held", detail))
            return
        d.attempts += 1
        # the lease: durable before anything leaves, so a crash is retried, not lost
        d.next_attempt = later(self.settings.timeout * 2 + 5)
        await self.call(self.outbox.update, d)
        channel = self.channels[d.channel]
        try:
            outcome = await channel(d)
        except Exception as exc:  # a bug or an unreadable stored document: keep, retry
            log.error("diffusion %s: unexpected error %s", d.id, logs.failure(exc))
            outcome = Outcome("retry", f"erreur interne : {exc}")
        self.settle(d, outcome)
        await self.call(self.outbox.update, d)
        self._audit(d, outcome)

    def settle(self, d: Delivery, outcome: Outcome) -> None:
        d.response = outcome.response or d.response
        if outcome.result == "sent":
            d.to("envoye", outcome.detail)
            d.sent = now()
        elif outcome.result == "rejected":
            d.to("rejete", outcome.detail)
        elif d.attempts >= self.settings.max_attempts:
            d.to("lettre-morte", f"{d.attempts} essais ; dernier : {outcome.detail}")
        else:
            delay = backoff(self.settings, d.attempts)
            d.to("nouvel-essai", outcome.detail, later(delay))
            # the peer's own error text stays on the Task: it may name the patient (R-SEC-6)
            log.warning("diffusion %s (%s) : nouvel essai %d dans %.0f s (détail sur "
                        "Task/%s)", d.id, d.channel, d.attempts, delay, d.id)

    # -- what may hold a delivery ----------------------------------------------------------
    def hold(self, d: Delivery) -> tuple[str, str] | None:
        if d.previous:
            prev = self.outbox.get(d.previous)
            if prev is not None and not prev.settled:
                return "version-precedente", f"Task/{prev.id} ({prev.state})"
        if d.action == "suppression":
            # withdrawing is never held by an opposition or the identity: only the way out
            return self._unconfigured(d)
        invalid = self.invalid(d)
        if invalid:  # R-REP-6, R-INT-1: the DMP would refuse it; a person must correct it
            return "document-invalide", invalid
        if d.channel == "ris":
            self.follow_origin(d)
        held = self._hold_dmp(d) if d.channel == "dmp" else \
            self._hold_mss(d) if d.channel == "mssante" else None
        return held or self._unconfigured(d)

    def _hold_dmp(self, d: Delivery) -> tuple[str, str] | None:
        """The patient's opposition (R-CONS-5), an unqualified identity (R-EXAM-1)."""
        if self.opposed(d, "dmp"):
            return "bloque-opposition", "le patient s'oppose à l'alimentation de son DMP"
        qualified = self.qualified(load(self.server, d.patient) or {})
        return ("identite-non-qualifiee", qualified) if qualified else None

    def _hold_mss(self, d: Delivery) -> tuple[str, str] | None:
        """The patient's opposition, the document's masking, no MSSanté address."""
        if d.recipient and self.opposed(d, d.recipient):
            return "bloque-opposition", f"le patient s'oppose au partage avec {d.recipient}"
        if self.masked(d):
            return "bloque-masquage", "document masqué aux professionnels de santé " \
                "(MASQUE_PS) : il n'est pas adressé par MSSanté"
        if not d.address:
            d.address = mss_address(self.server, d.recipient, self.settings)
        if not d.address:
            return "adresse-absente", f"{d.recipient} n'a pas d'adresse MSSanté " \
                f"({', '.join(self.settings.mss_domains)})"
        return None

    def invalid(self, d: Delivery) -> str:
        """The first rule the delivered document fails ('' when it passes or is not
        checked here): the CDA XSD and every ANS schematron rule (issue 26)."""
        if self.check is None:
            return ""
        xml, _ = self.read(d.document)
        problem = self.check(xml)
        return f"{d.document} : {problem}" if problem else ""

    def follow_origin(self, d: Delivery) -> None:
        """A RIS delivery not sent yet goes to whoever asked *now* (R-REP-5, ADR 0019): a
        request whose structure was added or corrected after the report was signed
        redirects what still waits, instead of holding it on the old answer forever."""
        request = load(self.server, d.request) if d.request else None
        if request is None:
            return
        _, org, key = origin(self.server, request)
        d.recipient = f"Organization/{org['id']}" if org and org.get("id") else None
        d.address = key

    def _unconfigured(self, d: Delivery) -> tuple[str, str] | None:
        if d.channel == "ris" and not d.address:
            return ("canal-non-configure", "structure demandeuse inconnue : la demande ne "
                    "nomme ni requester Organization / PractitionerRole (actif).organization, "
                    "ni performer Organization, ni un requester Practitioner rattaché à une "
                    "seule structure, ou cette structure n'a pas d'identifiant FINESS")
        missing = {"dmp": self.settings.dmp_ready, "mssante": self.settings.mss_ready,
                   "ris": "" if self.hl7.route(d.address) is not None else
                   f"une route TELEIMG_HL7_ROUTES pour le FINESS {d.address} "
                   f"(« {d.address}=hôte:port »)"}.get(d.channel, "")
        return ("canal-non-configure", f"à renseigner : {missing}") if missing else None

    @staticmethod
    def qualified(patient: dict[str, Any]) -> str:
        """Empty when the DMP may receive this identity, else why not."""
        status = identity_status(patient)
        ins = identifier(patient, *codes.INS_OIDS)
        if not ins:
            return "pas d'INS"
        if status not in QUALIFIED:
            return f"statut d'identité {status or 'absent'} (VALI ou QUAL requis)"
        return ""

    # -- helpers the channels share --------------------------------------------------------
    def read(self, ref: str) -> tuple[bytes, metadata.Metadata]:
        """A DocumentReference's document and its XDS metadata, with the masking codes
        its ``securityLabel`` carries (set from the report when it was published)."""
        reference = load(self.server, ref) or {}
        url = ((reference.get("content") or [{}])[0].get("attachment") or {}).get("url")
        binary = load(self.server, url) or {}
        xml = base64.b64decode(binary.get("data") or "")
        return xml, metadata.read(xml, masking.labels(reference))

    def sibling(self, d: Delivery, level: str) -> bytes:
        """The same report version's other document (the N1 of an N3)."""
        from adapters.cda.publish import resource_id

        report_id = d.report.split("/", 1)[1]
        ref = resource_id("DocumentReference", report_id, level, d.version)
        return self.read(f"DocumentReference/{ref}")[0]

    @staticmethod
    def pdf_of(n1: bytes) -> bytes | None:
        found = re.search(rb'representation="B64"[^>]*>([^<]+)<', n1)
        return base64.b64decode(found.group(1)) if found else None

    def masked(self, d: Delivery) -> bool:
        """Masked from professionals: MSSanté may not carry it to one (CI-SIS
        *Transmission de documents CDA en HL7v2*, règles de gestion MSSanté)."""
        return masking.MASQUE_PS in masking.labels(load(self.server, d.document) or {})

    def opposed(self, d: Delivery, target: str) -> bool:
        from fhir_server.workflow.consent import sharing_opposed

        return sharing_opposed(self.server, d.patient, d.request, target)

    def _audit(self, d: Delivery, outcome: Outcome) -> None:
        if self.server.audit is None:
            return
        entities: list[dict[str, Any]] = [{"what": {"reference": f"Task/{d.id}"},
                     "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                     "role": {"system": OBJECT_ROLE, "code": "4",
                              "display": "Domain Resource"},
                     "description": f"{d.action} {d.channel} v{d.version} "
                                    f"essai {d.attempts}"},
                    {"what": {"reference": d.document},
                     "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                     "role": {"system": OBJECT_ROLE, "code": "20", "display": "Job"}}]
        code = {"sent": "0", "held": "4", "retry": "4", "rejected": "8"}[outcome.result]
        withdraw = d.action == "suppression"
        subtype = (UPDATE if withdraw and d.channel == "dmp" else SUBTYPES.get(d.channel)) or {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0003",
            "code": "T04" if withdraw else "T10" if d.version > 1 else "T02",
            "display": "MDM"}
        remote = {"display": {"dmp": "DMP", "ris": f"RIS {d.address}"}.get(
            d.channel, d.address or d.recipient or "?")}
        if d.recipient:
            remote["reference"] = d.recipient
        self.server.audit.record([event(
            {"system": DCM, "code": "110106", "display": "Export"}, "R", code, remote,
            outcome.peer, self.server.name, False, entities, patient=d.patient,
            error="" if outcome.result == "sent" else outcome.detail,
            subtype=[subtype])], durable=True)

