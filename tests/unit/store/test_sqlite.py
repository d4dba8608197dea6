"""Embedded store: durability settings, migrations, and index-driven query plans."""

from pathlib import Path

from fhir_server.search.query import QueryParser
from fhir_server.store.sqlite import SqlCompiler, SqliteStore


def test_wal_full_sync_and_schema_version(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    conn = store._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    SqliteStore(tmp_path / "t.db")  # re-opening does not re-run migrations


def test_token_search_uses_an_index_not_a_scan(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    q = QueryParser().parse("Patient", [("identifier", "urn:x|1")])
    where, args = SqlCompiler(store._conn()).where("r", "Patient", q.terms)
    plan = " ".join(str(row[3]) for row in store._conn().execute(
        f"EXPLAIN QUERY PLAN SELECT r.pk FROM resource r WHERE {where} ORDER BY r.pk LIMIT 21",
        args))
    assert "idx_token_code" in plan
    assert "SCAN r" not in plan


def test_migration_2_backfills_date_widths(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    conn = store._conn()
    with store.write():
        conn.execute("INSERT INTO idx_date (pk, p, low, high) VALUES (1, 'X.d', 0, 86400)")
        conn.execute("DROP TABLE date_width")  # as a version-1 file
        conn.execute("PRAGMA user_version = 1")
    store.close()
    reopened = SqliteStore(tmp_path / "t.db")
    assert reopened._conn().execute("SELECT w FROM date_width WHERE p = 'X.d'").fetchone() == (
        86400,)
    assert reopened._conn().execute("PRAGMA user_version").fetchone()[0] == 2
