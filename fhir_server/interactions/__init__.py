"""One module per FHIR interaction (FHIR R4 http.html); each is ``(server, request) -> response``."""
