-- Schema version 3: AuditEvents move to their own append-only tables (ADR 0006).
-- One row per event and one search index per table: no history copy (an AuditEvent has
-- one version, its history is the row itself) and no pk/text indexes (rows are never
-- re-indexed). Appending an event costs a third of a clinical write.
CREATE TABLE audit_resource (
    pk      INTEGER PRIMARY KEY,
    type    TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    vid     INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    body    BLOB,
    UNIQUE (type, id)
);
CREATE INDEX audit_resource_type_pk ON audit_resource (type, pk);
CREATE VIEW audit_history AS
    SELECT pk AS seq, type, id, vid, updated, 'POST' AS method, body FROM audit_resource;
CREATE TABLE audit_idx_token (pk INTEGER NOT NULL, p TEXT NOT NULL, system TEXT, code TEXT, text TEXT);
CREATE INDEX audit_idx_token_code ON audit_idx_token (p, code, system);
CREATE TABLE audit_idx_string (pk INTEGER NOT NULL, p TEXT NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL);
CREATE INDEX audit_idx_string_norm ON audit_idx_string (p, norm);
CREATE TABLE audit_idx_date (pk INTEGER NOT NULL, p TEXT NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL);
CREATE INDEX audit_idx_date_low ON audit_idx_date (p, low);
CREATE TABLE audit_idx_number (pk INTEGER NOT NULL, p TEXT NOT NULL, value REAL NOT NULL);
CREATE INDEX audit_idx_number_value ON audit_idx_number (p, value);
CREATE TABLE audit_idx_quantity (pk INTEGER NOT NULL, p TEXT NOT NULL, value REAL NOT NULL,
                                 system TEXT, code TEXT, unit TEXT);
CREATE INDEX audit_idx_quantity_value ON audit_idx_quantity (p, value);
CREATE TABLE audit_idx_uri (pk INTEGER NOT NULL, p TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX audit_idx_uri_value ON audit_idx_uri (p, value);
CREATE TABLE audit_idx_reference (pk INTEGER NOT NULL, p TEXT NOT NULL, rtype TEXT, rid TEXT,
                                  url TEXT, idsys TEXT, idval TEXT);
CREATE INDEX audit_idx_reference_target ON audit_idx_reference (p, rid, rtype);
CREATE INDEX audit_idx_reference_ident ON audit_idx_reference (p, idval);
CREATE TABLE audit_sort_key (pk INTEGER NOT NULL, p TEXT NOT NULL, asc_key, desc_key,
                             PRIMARY KEY (pk, p)) WITHOUT ROWID;
CREATE INDEX audit_sort_key_asc ON audit_sort_key (p, asc_key);
-- existing events move over in chain (write) order with their index rows
INSERT INTO audit_resource (type, id, vid, updated, deleted, body)
    SELECT h.type, h.id, h.vid, h.updated, 0, h.body FROM history h
    WHERE h.type = 'AuditEvent' AND h.body IS NOT NULL ORDER BY h.seq;
CREATE TEMP TABLE audit_pk_map AS
    SELECT r.pk AS old, a.pk AS new FROM resource r
    JOIN audit_resource a ON a.type = r.type AND a.id = r.id WHERE r.type = 'AuditEvent';
INSERT INTO audit_idx_token SELECT m.new, t.p, t.system, t.code, t.text FROM idx_token t JOIN audit_pk_map m ON m.old = t.pk;
INSERT INTO audit_idx_string SELECT m.new, t.p, t.norm, t.exact FROM idx_string t JOIN audit_pk_map m ON m.old = t.pk;
INSERT INTO audit_idx_date SELECT m.new, t.p, t.low, t.high FROM idx_date t JOIN audit_pk_map m ON m.old = t.pk;
INSERT INTO audit_idx_number SELECT m.new, t.p, t.value FROM idx_number t JOIN audit_pk_map m ON m.old = t.pk;
INSERT INTO audit_idx_quantity SELECT m.new, t.p, t.value, t.system, t.code, t.unit FROM idx_quantity t JOIN audit_pk_map m ON m.old = t.pk;
INSERT INTO audit_idx_uri SELECT m.new, t.p, t.value FROM idx_uri t JOIN audit_pk_map m ON m.old = t.pk;
INSERT INTO audit_idx_reference SELECT m.new, t.p, t.rtype, t.rid, t.url, t.idsys, t.idval FROM idx_reference t JOIN audit_pk_map m ON m.old = t.pk;
INSERT INTO audit_sort_key SELECT m.new, t.p, t.asc_key, t.desc_key FROM sort_key t JOIN audit_pk_map m ON m.old = t.pk WHERE t.p IN ('AuditEvent.date', 'AuditEvent._lastUpdated');
DELETE FROM idx_token WHERE pk IN (SELECT old FROM audit_pk_map);
DELETE FROM idx_string WHERE pk IN (SELECT old FROM audit_pk_map);
DELETE FROM idx_date WHERE pk IN (SELECT old FROM audit_pk_map);
DELETE FROM idx_number WHERE pk IN (SELECT old FROM audit_pk_map);
DELETE FROM idx_quantity WHERE pk IN (SELECT old FROM audit_pk_map);
DELETE FROM idx_uri WHERE pk IN (SELECT old FROM audit_pk_map);
DELETE FROM idx_reference WHERE pk IN (SELECT old FROM audit_pk_map);
DELETE FROM sort_key WHERE pk IN (SELECT old FROM audit_pk_map);
DELETE FROM resource WHERE type = 'AuditEvent';
DELETE FROM history WHERE type = 'AuditEvent';
DROP TABLE audit_pk_map
