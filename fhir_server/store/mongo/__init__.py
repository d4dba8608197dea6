"""The MongoDB store (ADR 0003): :mod:`.compiler` turns a search into a plan,
:mod:`.store` executes it and keeps the resources, :mod:`.journal` the audit journal,
:mod:`.records` says how both are laid out in documents."""

from fhir_server.store.mongo.compiler import MongoCompiler, MongoPlan
from fhir_server.store.mongo.records import INDEX_ATTEMPTS, ensure_indexes
from fhir_server.store.mongo.store import MongoStore

__all__ = ["INDEX_ATTEMPTS", "MongoCompiler", "MongoPlan", "MongoStore", "ensure_indexes"]
