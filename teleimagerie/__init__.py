"""The composition root (issue 28 item 1): the one package that names both the core
(:mod:`fhir_server`) and the adapters (:mod:`adapters`) — the command line
(:mod:`teleimagerie.cli`), the wiring of the adapters' handlers, routes and search
parameters into the core (:mod:`teleimagerie.wiring`) and the listener processes'
entry point (:mod:`teleimagerie.listen`). Nothing imports it but its entry points."""
