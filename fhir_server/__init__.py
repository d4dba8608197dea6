"""Téléimagerie FHIR R4 server: a transport-agnostic core, two stores, an HTTP adapter."""

FHIR_VERSION = "4.0.1"
__version__ = "0.1.0"
