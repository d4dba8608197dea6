"""URL and method -> interaction (FHIR R4 http.html summary table)."""

import pytest

from fhir_server.core.errors import FhirError
from fhir_server.core.model import Interaction
from fhir_server.interactions.routing import route


@pytest.mark.parametrize("method,path,interaction", [
    ("GET", "metadata", Interaction.CAPABILITIES),
    ("GET", "Patient/1", Interaction.READ),
    ("GET", "Patient/1/_history/2", Interaction.VREAD),
    ("GET", "Patient/1/_history", Interaction.HISTORY_INSTANCE),
    ("GET", "Patient/_history", Interaction.HISTORY_TYPE),
    ("GET", "_history", Interaction.HISTORY_SYSTEM),
    ("GET", "Patient", Interaction.SEARCH_TYPE),
    ("POST", "Patient/_search", Interaction.SEARCH_TYPE),
    ("POST", "Patient", Interaction.CREATE),
    ("PUT", "Patient/1", Interaction.UPDATE),
    ("PUT", "Patient", Interaction.UPDATE),
    ("PATCH", "Patient/1", Interaction.PATCH),
    ("DELETE", "Patient/1", Interaction.DELETE),
    ("DELETE", "Patient", Interaction.DELETE),
    ("POST", "", Interaction.BATCH),
    ("GET", "", Interaction.SEARCH_SYSTEM),
    ("POST", "_search", Interaction.SEARCH_SYSTEM),
    ("GET", "Patient/1/Observation", Interaction.SEARCH_COMPARTMENT),
    ("GET", "Patient/1/*", Interaction.SEARCH_COMPARTMENT),
    ("POST", "Patient/1/Observation/_search", Interaction.SEARCH_COMPARTMENT),
])
def test_route(method: str, path: str, interaction: Interaction) -> None:
    assert route(method, path, []).interaction == interaction


@pytest.mark.parametrize("method,path,status", [
    ("GET", "Medication/1", 404), ("POST", "Patient/1", 405), ("PUT", "", 405),
    ("DELETE", "metadata", 405), ("GET", "_search", 405), ("POST", "Patient/1/Observation", 405),
    ("GET", "Patient/1/Medication", 404), ("GET", "Practitioner/1/Observation", 405),
])
def test_route_errors(method: str, path: str, status: int) -> None:
    with pytest.raises(FhirError) as exc:
        route(method, path, [])
    assert exc.value.status == status
