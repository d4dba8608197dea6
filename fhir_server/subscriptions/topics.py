"""The topics a subscription may name (Subscriptions R5 Backport IG, topic-based
subscriptions on R4: ``Subscription.criteria`` holds the topic's canonical URL, filters go
in ``_criteria``'s ``backport-filter-criteria`` extensions). Issue 31."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.core.canonical import url

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
FILTER_CRITERIA = f"{BACKPORT}/StructureDefinition/backport-filter-criteria"
PAYLOAD_CONTENT = f"{BACKPORT}/StructureDefinition/backport-payload-content"
TOPIC_CANONICAL = f"{BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
STATUS_PROFILE = f"{BACKPORT}/StructureDefinition/backport-subscription-status-r4"
NOTIFICATION_PROFILE = f"{BACKPORT}/StructureDefinition/backport-subscription-notification-r4"


@dataclass(frozen=True)
class Topic:
    url: str
    title: str
    description: str
    focus: tuple[str, ...]  # the resource types a notification's focus may be
    triggers: str  # when it fires, in words (the requirement behind it)

    def as_basic(self) -> dict[str, Any]:
        """The topic in the backport's R4 form: a Basic carrying the SubscriptionTopic
        elements as extensions (there is no SubscriptionTopic resource in R4)."""
        ext = f"{BACKPORT}/StructureDefinition/"
        return {"resourceType": "Basic", "id": self.url.rsplit("/", 1)[1],
                "code": {"coding": [{"system": "http://hl7.org/fhir/fhir-types",
                                     "code": "SubscriptionTopic"}]},
                "extension": [
                    {"url": "http://hl7.org/fhir/5.0/StructureDefinition/"
                            "extension-SubscriptionTopic.url", "valueUri": self.url},
                    {"url": "http://hl7.org/fhir/5.0/StructureDefinition/"
                            "extension-SubscriptionTopic.title", "valueString": self.title},
                    {"url": "http://hl7.org/fhir/5.0/StructureDefinition/"
                            "extension-SubscriptionTopic.status", "valueCode": "active"},
                    {"url": "http://hl7.org/fhir/5.0/StructureDefinition/"
                            "extension-SubscriptionTopic.description",
                     "valueMarkdown": f"{self.description} {self.triggers}"},
                    *({"url": "http://hl7.org/fhir/5.0/StructureDefinition/"
                              "extension-SubscriptionTopic.resourceTrigger.resource",
                       "valueUri": f"http://hl7.org/fhir/StructureDefinition/{t}"}
                      for t in self.focus),
                    {"url": f"{ext}backport-topic-canonical", "valueCanonical": self.url}]}


REQUEST_STATE = url("SubscriptionTopic", "request-state-changed")
REPORT = url("SubscriptionTopic", "report-issued")
DOCUMENT = url("SubscriptionTopic", "document-available")
DEAD_LETTER = url("SubscriptionTopic", "delivery-dead-lettered")
TOPICS: dict[str, Topic] = {t.url: t for t in (
    Topic(REQUEST_STATE, "Changement d'état d'une demande",
          "A téléimagerie request (ServiceRequest) moved along its workflow; the "
          "notification's focus is the request, its Task the additional context.",
          ("ServiceRequest", "Task"), "Fires on every transition (R-VAL-*)."),
    Topic(REPORT, "Compte rendu final, amendé ou retiré",
          "A DiagnosticReport became final, was amended, or was set to entered-in-error.",
          ("DiagnosticReport",), "Fires on final, amended and entered-in-error (R-REP-5, "
          "R-REP-6)."),
    Topic(DOCUMENT, "Document disponible pour un patient (MHD)",
          "A report's documents (DocumentReference, IHE MHD) are available for a patient.",
          ("DocumentReference",), "Fires when a report version's CDA documents are stored "
          "(R-REP-5, ADR 0014)."),
    Topic(DEAD_LETTER, "Diffusion en lettre morte",
          "A report delivery (Task diffusion-cr) was abandoned after its last attempt.",
          ("Task",), "Fires when a delivery enters lettre-morte (R-INT-2, ADR 0013)."),
)}
