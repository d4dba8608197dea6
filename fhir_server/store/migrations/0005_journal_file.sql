-- Schema version 5: the audit journal moves to its own database file, attached to every
-- connection as "journal" (ADR 0015). SQLite drops a connection's page cache whenever
-- another connection commits to the same file, and the journal is appended to several times
-- a second under load, so clinical reads kept re-reading their pages. Commits to the
-- journal file now leave the clinical file's cache alone.
-- idempotent: this script writes the journal file only and may run again after a crash
-- (each copy empties its target first), and 0006 then drops the old tables from the main
-- file in a unit of its own. WAL commits are atomic per file, never across files, so
-- the data is never absent from both.
CREATE TABLE IF NOT EXISTS journal.audit_resource (
    pk      INTEGER PRIMARY KEY,
    type    TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    vid     INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    body    BLOB,
    UNIQUE (type, id)
);
CREATE INDEX IF NOT EXISTS journal.audit_resource_type_pk ON audit_resource (type, pk);
CREATE VIEW IF NOT EXISTS journal.audit_history AS
    SELECT pk AS seq, type, id, vid, updated, 'POST' AS method, body FROM audit_resource;
CREATE TABLE IF NOT EXISTS journal.audit_idx_token (pk INTEGER NOT NULL, p TEXT NOT NULL, system TEXT, code TEXT, text TEXT);
CREATE INDEX IF NOT EXISTS journal.audit_idx_token_code ON audit_idx_token (p, code, system);
CREATE TABLE IF NOT EXISTS journal.audit_idx_string (pk INTEGER NOT NULL, p TEXT NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS journal.audit_idx_string_norm ON audit_idx_string (p, norm);
CREATE TABLE IF NOT EXISTS journal.audit_idx_date (pk INTEGER NOT NULL, p TEXT NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS journal.audit_idx_date_low ON audit_idx_date (p, low);
CREATE TABLE IF NOT EXISTS journal.audit_idx_number (pk INTEGER NOT NULL, p TEXT NOT NULL, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS journal.audit_idx_number_value ON audit_idx_number (p, value);
CREATE TABLE IF NOT EXISTS journal.audit_idx_quantity (pk INTEGER NOT NULL, p TEXT NOT NULL, value REAL NOT NULL,
                                 system TEXT, code TEXT, unit TEXT);
CREATE INDEX IF NOT EXISTS journal.audit_idx_quantity_value ON audit_idx_quantity (p, value);
CREATE TABLE IF NOT EXISTS journal.audit_idx_uri (pk INTEGER NOT NULL, p TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS journal.audit_idx_uri_value ON audit_idx_uri (p, value);
CREATE TABLE IF NOT EXISTS journal.audit_idx_reference (pk INTEGER NOT NULL, p TEXT NOT NULL, rtype TEXT, rid TEXT,
                                  url TEXT, idsys TEXT, idval TEXT);
CREATE INDEX IF NOT EXISTS journal.audit_idx_reference_target ON audit_idx_reference (p, rid, rtype);
CREATE INDEX IF NOT EXISTS journal.audit_idx_reference_ident ON audit_idx_reference (p, idval);
CREATE TABLE IF NOT EXISTS journal.audit_sort_key (pk INTEGER NOT NULL, p TEXT NOT NULL, asc_key, desc_key,
                             PRIMARY KEY (pk, p)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS journal.audit_sort_key_asc ON audit_sort_key (p, asc_key);
CREATE TABLE IF NOT EXISTS journal.journal_state (name TEXT PRIMARY KEY, indexed_upto INTEGER NOT NULL);
DELETE FROM journal.audit_resource;
INSERT INTO journal.audit_resource SELECT * FROM main.audit_resource;
DELETE FROM journal.audit_idx_token;
INSERT INTO journal.audit_idx_token SELECT * FROM main.audit_idx_token;
DELETE FROM journal.audit_idx_string;
INSERT INTO journal.audit_idx_string SELECT * FROM main.audit_idx_string;
DELETE FROM journal.audit_idx_date;
INSERT INTO journal.audit_idx_date SELECT * FROM main.audit_idx_date;
DELETE FROM journal.audit_idx_number;
INSERT INTO journal.audit_idx_number SELECT * FROM main.audit_idx_number;
DELETE FROM journal.audit_idx_quantity;
INSERT INTO journal.audit_idx_quantity SELECT * FROM main.audit_idx_quantity;
DELETE FROM journal.audit_idx_uri;
INSERT INTO journal.audit_idx_uri SELECT * FROM main.audit_idx_uri;
DELETE FROM journal.audit_idx_reference;
INSERT INTO journal.audit_idx_reference SELECT * FROM main.audit_idx_reference;
DELETE FROM journal.audit_sort_key;
INSERT INTO journal.audit_sort_key SELECT * FROM main.audit_sort_key;
DELETE FROM journal.journal_state;
INSERT INTO journal.journal_state SELECT * FROM main.journal_state
