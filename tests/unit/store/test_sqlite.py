"""Embedded store: durability settings, migrations, and index-driven query plans."""

import sqlite3
from functools import partial
from pathlib import Path

from fhir_server.search.query import QueryParser
from fhir_server.store.sqlite import MIGRATIONS, SqlCompiler, SqliteStore
from fhir_server.store.sqlite.records import read_date_widths


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
    compiler = SqlCompiler(partial(read_date_widths, store._conn()))
    where, args = compiler.where("r", "Patient", q.terms)
    plan = " ".join(str(row[3]) for row in store._conn().execute(
        f"EXPLAIN QUERY PLAN SELECT r.pk FROM resource r WHERE {where} ORDER BY r.pk LIMIT 21",
        args))
    assert "idx_token_code" in plan
    assert "SCAN r" not in plan


def _version_1_file(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in (MIGRATIONS / "0001_initial.sql").read_text().split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    return conn


def test_migration_2_backfills_date_widths(tmp_path: Path) -> None:
    conn = _version_1_file(tmp_path / "t.db")
    conn.execute("INSERT INTO idx_date (pk, p, low, high) VALUES (1, 'X.d', 0, 86400)")
    conn.close()
    reopened = SqliteStore(tmp_path / "t.db")
    assert reopened._conn().execute("SELECT w FROM date_width WHERE p = 'X.d'").fetchone() == (
        86400,)
    assert reopened._conn().execute("PRAGMA user_version").fetchone()[0] >= 2


def test_migration_3_moves_audit_events_to_the_journal_tables_in_chain_order(
        tmp_path: Path) -> None:
    conn = _version_1_file(tmp_path / "t.db")
    for pk, rid in ((1, "b"), (2, "p"), (3, "a")):
        rtype = "Patient" if rid == "p" else "AuditEvent"
        conn.execute("INSERT INTO resource (pk, type, id, vid, updated, body) "
                     "VALUES (?, ?, ?, 1, 0, ?)", (pk, rtype, rid, b"{}"))
        conn.execute("INSERT INTO history (type, id, vid, updated, method, body) "
                     "VALUES (?, ?, 1, 0, 'POST', ?)", (rtype, rid, b"{}"))
        conn.execute("INSERT INTO idx_token (pk, p, code) VALUES (?, ?, 'x')",
                     (pk, f"{rtype}.k"))
    conn.close()
    store = SqliteStore(tmp_path / "t.db")
    db = store._conn()
    assert [r[0] for r in db.execute("SELECT id FROM audit_resource ORDER BY pk")] == ["b", "a"]
    assert db.execute("SELECT COUNT(*) FROM audit_idx_token").fetchone() == (2,)
    assert [r[0] for r in db.execute("SELECT type FROM resource")] == ["Patient"]
    assert [r[0] for r in db.execute("SELECT type FROM history")] == ["Patient"]
    assert store.read("AuditEvent", "a") is not None
    page = store.history("AuditEvent", None, None, 10, None)
    assert [i.id for i in page.items] == ["a", "b"] and page.total == 2


def test_audit_chain_head_lookup_uses_an_index_not_a_scan(tmp_path: Path) -> None:
    """The chain head is read before every audit append (R-SEC-3): a scan of the journal
    there made each append cost O(events)."""
    store = SqliteStore(tmp_path / "t.db")
    plan = " ".join(str(row[3]) for row in store._conn().execute(
        "EXPLAIN QUERY PLAN SELECT seq FROM audit_history WHERE 1 AND type = ? "
        "ORDER BY seq DESC LIMIT 2", ("AuditEvent",)))
    assert "audit_resource_type_pk" in plan and "TEMP B-TREE" not in plan


def test_audit_journal_lives_in_its_own_file_so_appends_keep_clinical_caches(
        tmp_path: Path) -> None:
    """ADR 0015: SQLite resets a connection's page cache of a file whenever another
    connection commits to it. Audit appends commit to the journal file only, so a reader's
    cache of the clinical file survives them (``data_version`` unchanged)."""
    from fhir_server.audit.chain import append

    store = SqliteStore(tmp_path / "t.db")
    assert (tmp_path / "t-audit.db").exists()
    main_tables = {r[0] for r in store._conn().execute(
        "SELECT name FROM main.sqlite_master WHERE type = 'table'")}
    assert "resource" in main_tables and not any(t.startswith("audit_") or t == "journal_state"
                                                  for t in main_tables)
    event = {"resourceType": "AuditEvent", "action": "R", "outcome": "0",
             "recorded": "2026-11-22T10:00:00.000Z"}
    append(store, [event])
    store.index_journal()  # the first event's dates widen date_width (main file), once
    reader = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    before = reader.execute("PRAGMA data_version").fetchone()[0]
    append(store, [event, event])
    assert store.index_journal() == 2
    assert reader.execute("PRAGMA data_version").fetchone()[0] == before
    with store.write():
        store._conn().execute("INSERT INTO date_width (p, w) VALUES ('X.d', 1)")
    assert reader.execute("PRAGMA data_version").fetchone()[0] != before


def test_migration_5_is_rerun_safely_after_a_crash_between_the_two_files(
        tmp_path: Path) -> None:
    """The copy into the journal file commits apart from the main file's version: run it
    twice (as after a crash before the version was set) and nothing is doubled or lost."""
    conn = _version_1_file(tmp_path / "t.db")
    conn.execute("INSERT INTO resource (pk, type, id, vid, updated, body) "
                 "VALUES (1, 'AuditEvent', 'a', 1, 0, x'7b7d')")
    conn.execute("INSERT INTO history (type, id, vid, updated, method, body) "
                 "VALUES ('AuditEvent', 'a', 1, 0, 'POST', x'7b7d')")
    conn.execute("INSERT INTO idx_token (pk, p, code) VALUES (1, 'AuditEvent.k', 'x')")
    for name in ("0002", "0003", "0004", "0005"):
        conn.execute(f"ATTACH DATABASE '{tmp_path / 't-audit.db'}' AS journal") \
            if name == "0005" else None
        script = next(MIGRATIONS.glob(f"{name}_*.sql")).read_text()
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 4")  # crashed before setting 5
    conn.close()
    store = SqliteStore(tmp_path / "t.db")
    db = store._conn()
    assert db.execute("SELECT COUNT(*) FROM journal.audit_resource").fetchone() == (1,)
    assert db.execute("SELECT COUNT(*) FROM journal.audit_idx_token").fetchone() == (1,)
    assert db.execute("PRAGMA user_version").fetchone()[0] >= 6
    assert store.read("AuditEvent", "a") is not None


def test_records_continue_a_trail_chained_event_by_event_before_them_R_SEC_3(
        tmp_path: Path) -> None:
    """ADR 0016: a store upgraded with AuditEvents chained one by one keeps them
    verifiable, and its first record links to the last of them."""
    import orjson

    from fhir_server.audit.chain import CHAIN_URL, GENESIS, append, head, link_hash, verify

    store = SqliteStore(tmp_path / "t.db")
    previous = GENESIS
    with store.write():
        for seq in (1, 2):
            event = {"resourceType": "AuditEvent", "id": f"old{seq}", "action": "R",
                     "extension": [{"url": CHAIN_URL, "extension": [
                         {"url": "sequence", "valueString": str(seq)},
                         {"url": "previous", "valueString": previous}]}]}
            previous = link_hash(previous, event)
            event["extension"][0]["extension"].append({"url": "hash", "valueString": previous})
            store._conn().execute(
                "INSERT INTO audit_resource (type, id, vid, updated, body) "
                "VALUES ('AuditEvent', ?, 1, 0, ?)", (event["id"], orjson.dumps(event)))
    assert head(store) == (2, previous)
    append(store, [{"resourceType": "AuditEvent", "action": "E", "outcome": "0"}])
    assert head(store)[0] == 3
    assert orjson.loads(store.journal_records(0, 1)[0][1])["previous"] == previous
    report = verify(store)
    assert report.ok and report.checked == 3 and report.head_sequence == 3
