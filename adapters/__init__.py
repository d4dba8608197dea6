"""The adapters between the outside and the FHIR core (ADR 0001, 0010-0014).

``hl7v2/`` the MLLP listener and the ANS TLR / PAM-FR flows, ``dicom/`` Part 10 import,
C-STORE SCP and STOW-RS, ``cda/`` the report documents, ``delivery/`` their delivery to
the DMP, the RIS and MSSanté, ``provisioning/`` the directory load. Shared: one
transaction per inbound unit (``transaction.py``), the exchange AuditEvents
(``exchange.py``), the outbox senders' loop (``passes.py``), queue gauges (``queues.py``)
and ``TELEIMG_*`` settings (``settings.py``)."""
