"""The adapters' named system principals and their rights (issue 28 item 5, ADR 0022).

Each component that keeps the server's own records acts through the guard
(:func:`fhir_server.security.system.as_system`) as one of these, with only the
``system/`` scopes its task needs (R-SEC-2: the right is role ∩ scope). An adapter
acting *for a message or a study* is the peer's principal instead (``hl7:…`` with
``ris``, ``dicom:…`` with ``pacs``: ADR 0010, 0011).
"""

from __future__ import annotations

from fhir_server.security.system import server_principal

# the HL7 v2 message journal: records (Basic) and raw messages (Binary), ADR 0010
HL7_JOURNAL = server_principal("hl7-journal", "system/Basic.cruds system/Binary.cruds")
# the delivery outbox: its delivery Tasks (ADR 0013)
DELIVERY_OUTBOX = server_principal("delivery-outbox", "system/Task.cruds")
# the CDA publisher: a report's documents and the report versions they number (ADR 0012)
CDA_PUBLISHER = server_principal(
    "cda-publisher", "system/DiagnosticReport.rs system/DocumentReference.cruds "
    "system/Binary.cruds")
# an identity to check, flagged in a unit of its own (R-EXAM-1)
IDENTITY_FLAGS = server_principal("identity-flags", "system/Flag.c")
# the queue gauges of /metrics: counts only (issue 29)
QUEUE_GAUGES = server_principal("queue-gauges", "system/Task.s system/Basic.s")
# FHIR Subscriptions (issue 31): the notifications (Task) and each subscription's state
# (Basic: its owner, its event count), the Subscriptions' status, and the versions a
# full-resource notification carries (decided visible to the owner at the event)
SUBSCRIPTION_OUTBOX = server_principal(
    "subscription-outbox", "system/Task.cruds system/Basic.cruds system/Subscription.rs "
    "system/*.r")
