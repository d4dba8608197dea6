"""FHIR Bulk Data Access IG v2 ``$export`` (issue 31): the job record and its files
(:mod:`.jobs`), the export itself (:mod:`.run`); the HTTP operations are
:mod:`fhir_server.interactions.export`'s (ADR 0025)."""
