"""The web console (issue 30): pages for people, served by the same server, French first.

A transport like HTTP/FHIR, HL7 v2 or DICOM: every page builds :class:`FhirRequest`s with
the signed-in user's token and calls ``FhirServer.handle`` (:mod:`adapters.console.fhir`),
so a page shows exactly what the API would answer that user — the care relationship,
masking and consent decisions included — and every access is audited like an API call.
Mounted on the HTTP app by the composition root (:func:`adapters.console.web.mount`).
ADR 0023, docs/console/README.md.
"""
