"""The server layer (issue 28): :class:`dispatch.FhirServer` authorises, runs, audits and
renders one interaction, above the interactions it dispatches to and below the
transports (``fhir_server.http``, the adapters) that call it."""
