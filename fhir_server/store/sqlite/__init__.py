"""The embedded store (SQLite, ADR 0003): :mod:`.compiler` turns a search into a plan,
:mod:`.store` executes it and keeps the resources, :mod:`.journal` the audit journal,
:mod:`.records` says how both are laid out in tables."""

from fhir_server.store.sqlite.compiler import SqlCompiler, SqlPlan
from fhir_server.store.sqlite.records import MIGRATIONS
from fhir_server.store.sqlite.store import SqliteStore

__all__ = ["MIGRATIONS", "SqlCompiler", "SqlPlan", "SqliteStore"]
