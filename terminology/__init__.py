"""Our code systems, value sets and concept maps (FHIR JSON in ``resources/``) and the
terminology service that answers ``$lookup``, ``$validate-code``, ``$expand`` and
``$translate`` over them (issue 4)."""
