"""One module per FHIR interaction (FHIR R4 http.html): ``(server, request) -> response``."""
